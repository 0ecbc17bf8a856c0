//! Attested keys: the evidence a qkeyd node hands the gateway about a key,
//! and the offline verifier the gateway runs on it.
//!
//! A node states what it knows about a key (id, algorithm, public part,
//! seal backend, the entropy sources and their trust at generation time, a
//! timestamp and the gateway's nonce) in a canonical [`Statement`], signs it
//! with its ML-DSA-87 identity key, and — with a TPM — binds the statement
//! into a TPM2_Quote by its attestation key (AK): the quote's `extraData` is
//! [`extra_data`]`(nonce, statement)`. [`Evidence`] carries all of it.
//!
//! [`verify()`] checks a document against the gateway's nonce, a [`Policy`]
//! and the [`VerifierState`] (nonces seen, TPM counters per AK), and names
//! the first check that fails ([`Check`]); [`check_quote`] checks a TPM
//! quote alone, as `verify` checks the one in a document. Every signature
//! is checked over the raw bytes before anything they sign is read. The TPM
//! structures are parsed by hand in [`tpm`], bounds-checked, with trailing
//! bytes refused.
//!
//! The crate does not talk to a TPM (the daemon makes quotes), does no
//! networking and runs no async runtime; its only I/O is reading a policy
//! file and loading and saving the state file when asked.
//!
//! [`gateway::open`] takes a key a node delivered to the gateway: it verifies
//! the evidence, checks that it binds this delivery, decapsulates with the
//! gateway's ML-KEM key and unwraps. That key and the ML-KEM shared secret
//! are the only secrets the crate holds; they are zeroized on drop and never
//! formatted. Everything else it reads is public, and failures name fields,
//! sizes and public values only. An AK is trusted because the policy names
//! it (enrollment, [`enroll`]); with `ek_roots`, the document's EK
//! certificate must also be the one enrolled with that AK and lead to a
//! trusted EK CA.
#![forbid(unsafe_code)]

pub mod enroll;
mod error;
pub mod evidence;
pub mod gateway;
pub mod policy;
mod state;
pub mod tpm;
mod verify;

pub use error::Error;
pub use evidence::{Evidence, Statement, extra_data, fingerprint};
pub use policy::Policy;
pub use state::{Counters, VerifierState};
pub use verify::{
    Check, Failure, MAX_CLOCK_SKEW_SECS, NONCE_LEN, QuoteFacts, Verified, check_quote, verify,
};
