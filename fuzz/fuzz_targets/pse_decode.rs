#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| paid_wire_fuzz::pse_decode(data));
