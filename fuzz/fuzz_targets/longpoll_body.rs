#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fluxwire::fuzzing::longpoll_body(data));
