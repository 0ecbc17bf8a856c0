//! Entropy sources.

pub mod chardev;
pub mod os;
pub mod pkcs11;
pub mod sim;
#[cfg(feature = "tpm")]
pub mod tpm;

use crate::Error;

/// What a source's samples are and what they are claimed to be worth.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceInfo {
    /// The operator's name for the source (unique in a config).
    pub name: String,
    /// Backend kind: `os`, `chardev`, `tpm`, `pkcs11` or `sim`.
    pub kind: &'static str,
    /// Where the samples come from (device path, `getrandom`, `simulated`).
    pub identity: String,
    /// Bits per sample, 1..=8; each sample is one byte, low bits significant.
    pub bits_per_sample: u32,
    /// Claimed min-entropy per sample, in bits.
    pub claimed_h: f64,
}

/// A noise source giving raw samples, one per byte.
///
/// `read` blocks until at least one sample is available and may return fewer
/// than `buf.len()` samples. An error with [`Error::is_transient`] means "try
/// again later"; the caller backs off and calls `read` again.
pub trait EntropySource: Send {
    /// The source's description.
    fn info(&self) -> &SourceInfo;

    /// Read raw samples into `buf`; returns how many were written (≥ 1).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error>;
}
