#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fluxwire::fuzzing::upgrade_request(data));
