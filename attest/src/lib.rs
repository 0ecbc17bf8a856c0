//! Attested keys: the evidence a qkeyd node hands the gateway about a key.
//!
//! A node states what it knows about a key (id, algorithm, public part,
//! seal backend, the entropy sources and their trust at generation time, a
//! timestamp and the gateway's nonce) in a canonical [`Statement`], signs it
//! with its ML-DSA-87 identity key, and — with a TPM — binds the statement
//! into a TPM2_Quote by its attestation key (AK): the quote's `extraData` is
//! [`extra_data`]`(nonce, statement)`. [`Evidence`] carries all of it.
//!
//! The TPM structures are parsed by hand in [`tpm`], bounds-checked, with
//! trailing bytes refused. The crate does not talk to a TPM (the daemon
//! makes quotes), does no I/O and runs no async runtime. It holds no
//! secrets: everything it reads is public, and errors name fields, sizes
//! and public values only.
#![forbid(unsafe_code)]

mod error;
pub mod evidence;
pub mod tpm;

pub use error::Error;
pub use evidence::{Evidence, Statement, extra_data, fingerprint};
