//! ML-KEM (FIPS 203) and ML-DSA (FIPS 204) as qkeyd uses them.
//!
//! [`Algorithm`] is the one name of a parameter set across qkeyd: the vault,
//! the REST API, the PKCS#11 module's wire protocol and the module itself use
//! it. With the `keys` feature (on by default) the crate also holds private keys
//! as their seeds ([`PrivateKey`]), does the FIPS 203/204 operations on them,
//! and checks the NIST ACVP known-answer vectors ([`kat`]).
//!
//! It draws no randomness of its own: every random input (a seed, ML-KEM's m,
//! ML-DSA's rnd) is passed in by the caller, which takes it from the
//! health-tested DRBG. It does no I/O and logs nothing. Secret values (seeds,
//! expanded keys, shared secrets) are zeroized on drop and their `Debug`
//! output shows the algorithm or a length only; errors carry lengths and
//! names, never key material.
#![forbid(unsafe_code)]

mod alg;
mod error;
#[cfg(feature = "keys")]
pub mod kat;
#[cfg(feature = "keys")]
mod key;

pub use alg::Algorithm;
pub use error::Error;
#[cfg(feature = "keys")]
pub use key::{ExpandedKey, PrivateKey, SharedSecret, encapsulate, pairwise_consistency, verify};
