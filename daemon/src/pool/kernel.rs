//! Crediting the kernel's entropy pool (`[kernel] feed = true`).
//!
//! Every interval one seed block, taken like a DRBG seed (its source healthy
//! now, its epoch current), is written to the kernel with `RNDADDENTROPY`.
//! The credit is conservative and assessed, never claimed: the block's
//! samples times the lowest min-entropy per sample measured on its source
//! (the last full SP 800-90B assessment and the last drift window's MCV
//! estimate; never above the claim), capped at the block's 384 bits, times
//! the configured fraction. Since a block hashes at least 448 bits' worth of
//! samples at the credited rate, the cap is what binds unless a measurement
//! falls more than 14 % below that rate. A source not yet measured is not fed
//! from. Nothing is fed while the pool
//! cannot serve from its sources: fail-closed and the OS fallback both skip.

use std::{collections::VecDeque, io};

use qkeyd_drbg::SEED_LEN;

use super::{Pool, Serving, lock};

/// How the pool hands bytes to the kernel: `RNDADDENTROPY` in the daemon, a
/// recorder in tests. Arguments: the bytes and the bits credited.
pub(crate) type KernelSink = Box<dyn Fn(&[u8], u32) -> io::Result<()> + Send + Sync>;

/// Kernel feeding, for /v1/health and metrics.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub(crate) struct KernelFeedSnapshot {
    /// The share of assessed entropy credited.
    pub(crate) credit_fraction: f64,
    /// Seconds between feeds.
    pub(crate) interval_secs: f64,
    /// Feeds the kernel accepted.
    pub(crate) feeds: u64,
    /// Bytes written to the kernel.
    pub(crate) bytes: u64,
    /// Bits credited in all.
    pub(crate) credited_bits: u64,
    /// Feeds skipped because the pool could not serve from its sources.
    pub(crate) skipped_unhealthy: u64,
    /// Feeds skipped because the block's source had no measurement yet.
    pub(crate) skipped_unassessed: u64,
    /// Feeds the kernel refused (e.g. without `CAP_SYS_ADMIN`).
    pub(crate) errors: u64,
    /// The most recent feeds the kernel accepted, oldest first.
    pub(crate) log: VecDeque<KernelFeedRecord>,
}

/// Feeds kept in [`KernelFeedSnapshot::log`].
const FEED_LOG: usize = 64;

/// One feed.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct KernelFeedRecord {
    /// The source the block came from.
    pub(crate) source: String,
    /// Samples hashed into the block.
    pub(crate) samples: u64,
    /// The min-entropy per sample the credit was computed from.
    pub(crate) assessed_h: f64,
    /// Bits credited.
    pub(crate) credited_bits: u32,
    /// Seconds since the pool started.
    pub(crate) at_secs: f64,
}

/// What one call of [`Pool::feed_kernel`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Fed {
    /// Written, with this credit.
    Credited(u32),
    /// Skipped: the pool cannot serve from its sources.
    Unhealthy,
    /// Skipped: the block's source has not been measured yet.
    Unassessed,
    /// The kernel refused.
    Refused,
}

/// Bits to credit for `samples` samples at `h` bits each: `fraction` of
/// their min-entropy, capped at the block's length.
pub(crate) fn credit_bits(fraction: f64, samples: u64, h: f64) -> u32 {
    let assessed = (samples as f64 * h.max(0.0)).min((SEED_LEN * 8) as f64);
    (fraction.clamp(0.0, 1.0) * assessed).floor() as u32
}

impl Pool {
    /// Feed one seed block to the kernel through `sink`, if feeding is on
    /// and the pool is healthy. Never credits more than [`credit_bits`].
    pub(crate) fn feed_kernel(&self, sink: &KernelSink) -> Fed {
        let Some(settings) = self.config.kernel_feed else {
            return Fed::Unhealthy;
        };
        let skip = |fed: Fed| {
            let mut k = lock(&self.kernel);
            match fed {
                Fed::Unassessed => k.skipped_unassessed += 1,
                Fed::Refused => k.errors += 1,
                _ => k.skipped_unhealthy += 1,
            }
            fed
        };
        if self.serving() != Some(Serving::Sources) {
            return skip(Fed::Unhealthy);
        }
        let Ok((bytes, record, source)) = self.take_block() else {
            return skip(Fed::Unhealthy);
        };
        let status = &self.sources[source];
        let snap = status.snapshot();
        let measured = [snap.last_full_assessment.map(|a| a.h_assessed), snap.window_h_estimate];
        let Some(h) = measured.into_iter().flatten().reduce(f64::min) else {
            return skip(Fed::Unassessed);
        };
        // Never above the claim either.
        let h = h.min(snap.claimed_h);
        let samples = record.samples_hashed.unwrap_or(0);
        let credit = credit_bits(settings.credit_fraction, samples, h);
        if let Err(e) = sink(&bytes[..], credit) {
            // Said once: a missing CAP_SYS_ADMIN would otherwise fill the log.
            if lock(&self.kernel).errors == 0 {
                tracing::warn!(error = %e, "the kernel refused entropy (RNDADDENTROPY needs CAP_SYS_ADMIN); counted in qkeyd_kernel_feeds_skipped_total");
            }
            return skip(Fed::Refused);
        }
        let mut k = lock(&self.kernel);
        k.feeds += 1;
        k.bytes += bytes.len() as u64;
        k.credited_bits += u64::from(credit);
        if k.log.len() == FEED_LOG {
            k.log.pop_front();
        }
        k.log.push_back(KernelFeedRecord {
            source: record.source,
            samples,
            assessed_h: h,
            credited_bits: credit,
            at_secs: self.started.elapsed().as_secs_f64(),
        });
        Fed::Credited(credit)
    }

    /// Kernel feeding's figures, if it is on.
    pub(crate) fn kernel_feed(&self) -> Option<KernelFeedSnapshot> {
        let settings = self.config.kernel_feed?;
        Some(KernelFeedSnapshot {
            credit_fraction: settings.credit_fraction,
            interval_secs: settings.interval.as_secs_f64(),
            ..lock(&self.kernel).clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_is_the_fraction_of_assessed_entropy_capped_at_the_block() {
        assert_eq!(credit_bits(0.5, 56, 6.5), 182);
        assert_eq!(credit_bits(0.5, 56, 7.0), 192, "56 × 7 = 392, capped at 384");
        assert_eq!(credit_bits(1.0, 56, 8.0), 384, "capped at 384 bits");
        assert_eq!(credit_bits(0.25, 64, 7.0), 96);
        assert_eq!(credit_bits(0.5, 56, 0.0), 0);
        assert_eq!(credit_bits(0.5, 56, f64::NAN), 0);
    }
}
