#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fluxwire::fuzzing::decode_v2_binary(data));
