//! The health of one QKD link's key stream, judged as an entropy source's
//! samples are: every key's bytes go through SP 800-90B's start-up test,
//! RCT and APT (8-bit samples at the link's claimed min-entropy per byte)
//! and the drift detector's trust score; on top, a key or key_ID seen
//! before on the link is refused. A key is usable only if every byte of it
//! passed and the link is trusted.
//!
//! As for a source: an intermittent RCT/APT failure restarts the start-up
//! test (its keys are not used), a permanent one takes the link out until
//! an operator acts, and trust below `min_trust` takes it out until clean
//! windows bring trust back.

use std::collections::{HashSet, VecDeque};

use qkeyd_health::{FailureKind, HealthMonitor, HealthParams, MonitorState, drift::DriftDetector};
use sha2::{Digest as _, Sha256};

/// How many key ids and key digests a link remembers to catch repeats.
pub(crate) const REMEMBERED: usize = 1 << 16;

/// Why a key was not used.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Refusal {
    /// Its key_ID was delivered before on this link.
    RepeatedKeyId,
    /// Its bytes were delivered before on this link (under another key_ID).
    RepeatedKey,
    /// A health test failed on its bytes.
    HealthTest(FailureKind),
    /// The link is in its start-up test (after a start or a failure).
    Startup,
    /// The link's trust is below `min_trust`.
    Distrusted,
    /// A permanent health-test failure took the link out.
    Failed,
}

impl Refusal {
    /// A short name, for metrics and logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::RepeatedKeyId => "repeated_key_id",
            Self::RepeatedKey => "repeated_key",
            Self::HealthTest(FailureKind::Rct) => "rct",
            Self::HealthTest(FailureKind::Apt) => "apt",
            Self::Startup => "startup",
            Self::Distrusted => "distrusted",
            Self::Failed => "failed",
        }
    }
}

/// A bounded memory of items seen: the oldest is forgotten first.
#[derive(Debug)]
pub(crate) struct Recent<T: std::hash::Hash + Eq + Clone> {
    set: HashSet<T>,
    order: VecDeque<T>,
}

impl<T: std::hash::Hash + Eq + Clone> Recent<T> {
    pub(crate) fn new() -> Self {
        Self { set: HashSet::new(), order: VecDeque::new() }
    }

    /// Whether `item` is remembered.
    pub(crate) fn contains(&self, item: &T) -> bool {
        self.set.contains(item)
    }

    /// Remember `item`; false if it was already remembered.
    pub(crate) fn insert(&mut self, item: T) -> bool {
        if !self.set.insert(item.clone()) {
            return false;
        }
        self.order.push_back(item);
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// One link's health.
#[derive(Debug)]
pub(crate) struct LinkHealth {
    monitor: HealthMonitor,
    drift: DriftDetector,
    ids: Recent<String>,
    digests: Recent<[u8; 16]>,
    usable: u64,
}

impl LinkHealth {
    /// A link claiming `claimed_h` bits of min-entropy per key byte, out of
    /// use below `min_trust`.
    pub(crate) fn new(claimed_h: f64, min_trust: f64) -> Result<Self, qkeyd_health::Error> {
        Ok(Self {
            monitor: HealthMonitor::new(HealthParams::new(8, claimed_h))?,
            drift: DriftDetector::new(8, claimed_h, min_trust),
            ids: Recent::new(),
            digests: Recent::new(),
            usable: 0,
        })
    }

    /// Check one delivered key; `Ok` if it may be used.
    pub(crate) fn check(&mut self, key_id: &str, key: &[u8]) -> Result<(), Refusal> {
        if !self.ids.insert(key_id.to_owned()) {
            return Err(Refusal::RepeatedKeyId);
        }
        let digest: [u8; 32] = Sha256::digest(key).into();
        let mut short = [0u8; 16];
        short.copy_from_slice(&digest[..16]);
        if !self.digests.insert(short) {
            return Err(Refusal::RepeatedKey);
        }
        if self.monitor.state() == MonitorState::Failed {
            return Err(Refusal::Failed);
        }
        let feed = self.monitor.feed(key);
        if let Some(f) = feed.failure {
            // The samples around a failure are not scored with later ones.
            self.drift.discard_window();
            if self.monitor.state() == MonitorState::Failed {
                self.drift.hard_failure();
            }
            return Err(Refusal::HealthTest(f.kind));
        }
        self.drift.feed(&key[feed.usable.clone()]);
        if feed.usable != (0..key.len()) {
            return Err(Refusal::Startup);
        }
        if self.drift.distrusted() {
            return Err(Refusal::Distrusted);
        }
        self.usable += 1;
        Ok(())
    }

    /// The trust score, 0..=1.
    pub(crate) fn trust(&self) -> f64 {
        self.drift.trust()
    }

    /// Whether the link is in its start-up test (no key usable yet).
    pub(crate) fn in_startup(&self) -> bool {
        matches!(self.monitor.state(), MonitorState::Startup { .. })
    }

    /// Whether the link is out of use (distrusted or permanently failed).
    pub(crate) fn out_of_use(&self) -> bool {
        self.drift.distrusted() || self.monitor.state() == MonitorState::Failed
    }

    /// Keys found usable so far.
    pub(crate) fn usable(&self) -> u64 {
        self.usable
    }

    /// RCT and APT failures so far.
    pub(crate) fn test_failures(&self) -> (u64, u64) {
        let c = self.monitor.counts();
        (c.rct_failures, c.apt_failures)
    }
}

#[cfg(test)]
mod tests;
