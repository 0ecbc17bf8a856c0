//! `qkeyd_fuzz::fuzz::rest_api`: see its documentation in daemon/src/fuzz.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qkeyd_fuzz::fuzz::rest_api(data));
