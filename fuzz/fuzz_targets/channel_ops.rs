#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| paid_wire_fuzz::channel_ops(data));
