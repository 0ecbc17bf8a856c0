//! SP 800-90B health tests for qkeyd.
//!
//! This crate holds the statistics that decide whether raw samples from a noise
//! source may be used: the Repetition Count Test (§4.4.1), the Adaptive Proportion
//! Test (§4.4.2), their cutoffs computed from a source's claimed min-entropy, and
//! the start-up/continuous state machine that wraps them ([`HealthMonitor`]).
//!
//! It does no I/O, starts no threads and knows nothing about devices, pools or
//! transports: callers feed it slices of samples and act on the verdicts.
//!
//! # Samples
//!
//! A sample is one `u8` whose low `bits_per_sample` bits (1..=8) are the symbol,
//! the same layout NIST's reference tool reads. Higher bits are ignored.
//!
//! # Two failure levels
//!
//! Following jitterentropy, each test runs with two false-positive rates: the
//! configured α (default 2^-20) marks an *intermittent* failure, after which the
//! source is quarantined and must pass a fresh start-up test; a much smaller α
//! (default 2^-60, jitterentropy's permanent level) marks a *permanent* failure, as does a run of failed
//! start-up retries. A permanently failed source stays out until an operator acts.
//!
//! # Secrets
//!
//! Verdicts carry counts, positions and cutoffs, never sample values: raw entropy
//! samples may seed keys and must not reach logs or metrics.
#![forbid(unsafe_code)]

mod apt;
mod cutoff;
pub mod drift;
mod error;
pub mod estimate;
mod monitor;
mod rct;

pub use apt::Apt;
pub use cutoff::{
    Cutoffs, WINDOW_BINARY, WINDOW_NON_BINARY, apt_cutoff, apt_window, critbinom, rct_cutoff,
};
pub use error::Error;
pub use monitor::{
    Failure, FailureKind, Feed, HealthMonitor, HealthParams, MonitorState, STARTUP_SAMPLES,
    Severity, TestCounts,
};
pub use rct::Rct;

/// A test event inside a scanned slice: which sample tripped which level.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Trip {
    /// Index, in the slice just scanned, of the sample that reached the cutoff.
    pub index: usize,
    /// Which cutoff it reached.
    pub severity: Severity,
}
