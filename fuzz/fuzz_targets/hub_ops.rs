#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| paid_wire_fuzz::hub_ops(data));
