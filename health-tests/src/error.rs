use thiserror::Error;

/// Why health-test parameters were rejected.
#[derive(Clone, Debug, Error, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Samples must carry between 1 and 8 bits.
    #[error("bits per sample must be 1..=8, got {bits}")]
    BitsPerSample {
        /// The rejected width.
        bits: u32,
    },
    /// The claimed min-entropy must be positive and at most the sample width.
    #[error("claimed min-entropy must be in (0, {bits}] bits per sample, got {h}")]
    ClaimedEntropy {
        /// The rejected claim.
        h: f64,
        /// The sample width it was checked against.
        bits: u32,
    },
    /// A false-positive probability must lie strictly between 0 and 1.
    #[error("false-positive probability must be in (0, 1), got {alpha}")]
    Alpha {
        /// The rejected probability.
        alpha: f64,
    },
    /// Samples that cannot be assessed (empty, one symbol, wider than declared).
    #[error("cannot assess: {0}")]
    Assessment(String),
    /// The permanent-failure α must be smaller than the intermittent one.
    #[error("permanent α ({permanent}) must be smaller than intermittent α ({intermittent})")]
    AlphaOrder {
        /// Intermittent α.
        intermittent: f64,
        /// Permanent α.
        permanent: f64,
    },
}
