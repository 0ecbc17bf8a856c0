//! `libqkeyd_pkcs11.so`: qkeyd's PKCS#11 3.2 module.
//!
//! Applications get one slot with one token, `qkeyd`. C_GenerateRandom comes
//! from a per-process CTR_DRBG seeded from the daemon's health-tested pool;
//! ML-KEM and ML-DSA keys are made, used and kept by the daemon, whose vault
//! seals token keys with its HSM/TPM/soft sealer. The private halves never
//! enter the application's memory. The daemon is reached over a unix socket
//! (`QKEYD_MODULE_SOCKET`, else `/run/qkeyd/module.sock`), connected on first
//! use, and trusted only if it runs as the expected uid: `QKEYD_MODULE_SERVER_UID`,
//! else the owner of the socket's directory (an abstract socket needs the former).
//!
//! Layout: `ffi` is the C ABI and the only place with `unsafe`; `token` holds
//! the state and every operation in safe Rust; `object` the objects and
//! templates; `client` the daemon connection; `peer` which socket it is and
//! whether its server is trusted; `rng` the DRBG. Nothing starts a thread, and
//! loading the library does nothing until C_Initialize.
#![deny(unsafe_code)]

mod client;
mod ffi;
mod object;
mod peer;
mod pid;
mod rng;
mod stored;
mod template;
mod token;

/// The hook of the template fuzz target in `fuzz/` (only with `--cfg fuzzing`).
#[cfg(fuzzing)]
#[doc(hidden)]
pub use ffi::fuzzing;
pub use ffi::{C_GetFunctionList, C_GetInterface, C_GetInterfaceList};
