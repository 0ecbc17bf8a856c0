//! PKCS#11 mechanisms and attribute templates through the module's own copy-in
//! and template checks: `qkeyd_pkcs11::fuzzing::templates`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qkeyd_pkcs11::fuzzing::templates(data));
