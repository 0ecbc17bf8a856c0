//! The crate's one error type.

/// Why a key operation or a known-answer check failed. Carries lengths and
/// names, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input has the wrong length for this parameter set.
    #[error("{what} must be {want} bytes for {alg}, got {got}")]
    Length {
        /// Which input.
        what: &'static str,
        /// The algorithm.
        alg: &'static str,
        /// Expected length.
        want: usize,
        /// Given length.
        got: usize,
    },
    /// The operation does not apply to this kind of key.
    #[error("{op} needs an {need} key; this is {alg}")]
    WrongKind {
        /// The operation.
        op: &'static str,
        /// What it needs.
        need: &'static str,
        /// The key's algorithm.
        alg: &'static str,
    },
    /// The ML-DSA context string is longer than 255 bytes.
    #[error("context must be at most 255 bytes, got {0}")]
    Context(usize),
    /// A public key failed the FIPS 203 modulus check.
    #[error("invalid {0} public key")]
    InvalidPublicKey(&'static str),
    /// A pairwise-consistency test failed: the key pair is not used.
    #[error("pairwise-consistency test failed for a new {0} key")]
    Consistency(&'static str),
    /// A stored known-answer file is not the JSON it should be.
    #[cfg(feature = "keys")]
    #[error("known-answer file {file} does not parse")]
    KatParse {
        /// The vector file.
        file: &'static str,
        /// The parser's reason.
        #[source]
        source: serde_json::Error,
    },
    /// A known-answer vector has a field that is not what its test needs
    /// (bad hex, a wrong length, an unknown parameter set or shape).
    #[error("known-answer file {file}: vector {id} is malformed ({field})")]
    KatMalformed {
        /// The vector file.
        file: &'static str,
        /// The vector's `tcId` (0 for a group field).
        id: u32,
        /// The field.
        field: &'static str,
    },
    /// A known-answer vector gave another answer: the implementation is wrong.
    #[error("{alg} {file} vector {id} gives another answer")]
    KatMismatch {
        /// The vector file.
        file: &'static str,
        /// The parameter set.
        alg: &'static str,
        /// The vector's `tcId`.
        id: u32,
    },
}
