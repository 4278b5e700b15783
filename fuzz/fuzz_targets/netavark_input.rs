#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| p4lb_fuzz::netavark_input(data));
