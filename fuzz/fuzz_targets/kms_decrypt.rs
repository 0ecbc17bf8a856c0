//! `qkeyd_fuzz::fuzz::kms_decrypt`: see its documentation in daemon/src/fuzz.rs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qkeyd_fuzz::fuzz::kms_decrypt(data));
