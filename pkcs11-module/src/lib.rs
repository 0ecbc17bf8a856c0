//! qkeyd's PKCS#11 module, `libqkeyd_pkcs11.so`.
//!
//! Nothing is exported yet: the module (C_GetFunctionList, C_GetInterface,
//! C_GenerateRandom from the daemon's pool, ML-KEM/ML-DSA with daemon-sealed
//! keys) is the work of a later issue. The crate exists so the workspace has its
//! final shape: this is the only crate that will be allowed `unsafe`, and only
//! in `src/ffi/`.
#![deny(unsafe_code)]
