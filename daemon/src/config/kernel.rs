//! `[kernel]`: crediting the kernel's entropy pool from health-tested sources.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, error::range};

/// Kernel feeding (`[kernel] feed = true`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct KernelFeed {
    /// The share of a block's assessed min-entropy credited to the kernel.
    pub(crate) credit_fraction: f64,
    /// Time between feeds.
    pub(crate) interval: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawKernel {
    feed: bool,
    credit_fraction: f64,
    interval_secs: f64,
}

impl Default for RawKernel {
    fn default() -> Self {
        Self { feed: false, credit_fraction: 0.5, interval_secs: 10.0 }
    }
}

impl RawKernel {
    pub(super) fn check(self) -> Result<Option<KernelFeed>, ConfigError> {
        range(
            self.credit_fraction > 0.0 && self.credit_fraction <= 1.0,
            "kernel.credit_fraction",
            "in (0, 1]",
            self.credit_fraction,
        )?;
        range(
            (0.1..=86_400.0).contains(&self.interval_secs),
            "kernel.interval_secs",
            "0.1..=86400",
            self.interval_secs,
        )?;
        Ok(self.feed.then(|| KernelFeed {
            credit_fraction: self.credit_fraction,
            interval: Duration::from_secs_f64(self.interval_secs),
        }))
    }
}
