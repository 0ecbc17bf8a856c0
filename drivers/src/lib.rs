//! The hardware edge of qkeyd: entropy sources and sealers.
//!
//! Every source implements [`EntropySource`]: a blocking `read` of raw samples,
//! plus a description of what one sample is worth ([`SourceInfo`]). Sources do
//! not test, condition or buffer their output; the daemon runs each source on a
//! thread of its own, behind the SP 800-90B health tests of `qkeyd-health`.
//!
//! Backends:
//! - [`source::os::OsSource`]: `getrandom(2)`, the fallback that runs anywhere;
//! - [`source::chardev::CharDevSource`]: any character device or FIFO giving raw
//!   samples (Linux `/dev/hwrng`, IDQ Quantis `/dev/qrandomN`, other QRNG cards),
//!   reopened when the device vanishes and comes back;
//! - [`source::sim::SimSource`]: a simulated QRNG with fault injection (stuck,
//!   biased, drifting, short reads, vanishing), for tests and demonstrations.
//!
//! Sealers ([`seal`]) protect key seeds at rest: in software, in an HSM through
//! PKCS#11, or (feature `tpm`) in a TPM 2.0.
//!
//! This crate never logs or formats sample values or secrets.
#![forbid(unsafe_code)]

#[cfg(feature = "tpm")]
pub mod attest;
mod error;
pub mod seal;
pub mod source;

pub use error::Error;
pub use source::{EntropySource, SourceInfo};
