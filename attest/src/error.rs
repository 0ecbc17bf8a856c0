//! The crate's one error type: a TPM structure that does not parse.

/// Why a TPM structure could not be read.
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
}
