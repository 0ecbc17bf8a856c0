//! `qkeyd_fuzz::fuzz::qkd_messages`: see its documentation in daemon/src/fuzz.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qkeyd_fuzz::fuzz::qkd_messages(data));
