//! The crate's one error type: a TPM structure that does not parse, a policy
//! or verifier state that cannot be read. A verification that runs and
//! refuses the evidence is a [`Failure`](crate::Failure), not an `Error`.

use std::path::PathBuf;

/// Why a TPM structure, a policy or the verifier state could not be read.
/// Carries names, sizes and offsets, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ends before a field does.
    #[error("{what}: needs {need} more bytes at offset {offset}, {have} left")]
    Truncated {
        /// The structure or field being read.
        what: &'static str,
        /// Where the field starts.
        offset: usize,
        /// Bytes the field needs.
        need: usize,
        /// Bytes left in the input.
        have: usize,
    },
    /// Bytes are left after the structure: it is not the one its size says.
    #[error("{what}: {extra} bytes left over after the structure")]
    Trailing {
        /// The structure.
        what: &'static str,
        /// How many bytes are left.
        extra: usize,
    },
    /// A size field is larger than the TPM specification allows for it.
    #[error("{what}: size {size} is above the limit of {max}")]
    TooLarge {
        /// The field.
        what: &'static str,
        /// The size read.
        size: usize,
        /// The largest size allowed.
        max: usize,
    },
    /// A selector (algorithm, curve, structure tag) this crate does not
    /// accept: only ECC P-256 AKs signing with ECDSA-SHA256 are supported.
    #[error("{what}: value {value:#06x} is not supported ({expected})")]
    Unsupported {
        /// The field.
        what: &'static str,
        /// The value read.
        value: u32,
        /// What is accepted.
        expected: &'static str,
    },
    /// The coordinates are not a point of the P-256 curve.
    #[error("{what}: the x, y coordinates are not a point of the P-256 curve")]
    NotOnCurve {
        /// The structure.
        what: &'static str,
    },
    /// The policy is not valid TOML or has unknown or mistyped keys.
    #[error("the verifier policy does not parse: {0}")]
    PolicyParse(#[source] toml::de::Error),
    /// A policy value is out of range or malformed.
    #[error("policy key `{key}`: {reason}")]
    PolicyValue {
        /// The policy key.
        key: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A policy or verifier state file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The verifier state file is not the JSON this crate writes.
    #[error(
        "verifier state {path} does not parse (restore it from a backup: without it, replayed nonces and rolled-back TPM counters go unseen): {source}"
    )]
    StateParse {
        /// The state file.
        path: PathBuf,
        /// The parser's reason.
        #[source]
        source: serde_json::Error,
    },
    /// Enrollment refused: the EK chain, or the credential it needs.
    #[error("enrollment: {0}")]
    Enroll(String),
}
