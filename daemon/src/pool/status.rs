//! Per-source status shared between a source's thread and the pool.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use qkeyd_drivers::SourceInfo;
use qkeyd_health::{Cutoffs, Failure, FailureKind, Severity, TestCounts};

use super::lock;

/// A source's state as the pool sees it.
#[derive(Clone, Copy, Debug, Eq, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SourceState {
    /// Running its first start-up test.
    Startup,
    /// Passed start-up, no failure since: its samples are used.
    Healthy,
    /// Failed intermittently; re-running start-up. Not used.
    Quarantined,
    /// Failed permanently; out until an operator restarts the daemon.
    Failed,
    /// The device is gone (vanished, FIFO writer closed); retried with back-off.
    Unavailable,
    /// Passing the health tests, but its trust score fell below the minimum
    /// (its entropy drifted from the claim). Not used until a fresh
    /// assessment passes.
    Distrusted,
}

/// One drift window's scores, for the status page's chart.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub(crate) struct TrustPoint {
    /// When the window closed, Unix seconds.
    pub(crate) unix: f64,
    /// Samples read by then.
    pub(crate) sample: u64,
    /// Drift score, 0..1.
    pub(crate) drift: f64,
    /// Trust score, 0..1.
    pub(crate) trust: f64,
}

/// Drift windows kept per source: at the default monitor rate (a window of
/// 8,192 samples every 2 s) about ten minutes.
pub(crate) const HISTORY_KEPT: usize = 300;

/// A failure as /v1/health shows it.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub(crate) struct FailureSnapshot {
    /// `rct` or `apt`.
    pub(crate) test: &'static str,
    /// `intermittent` or `permanent`.
    pub(crate) severity: &'static str,
    /// Index of the tripping sample in the source's stream.
    pub(crate) sample: u64,
}

impl From<Failure> for FailureSnapshot {
    fn from(f: Failure) -> Self {
        Self {
            test: match f.kind {
                FailureKind::Rct => "rct",
                FailureKind::Apt => "apt",
            },
            severity: match f.severity {
                Severity::Intermittent => "intermittent",
                Severity::Permanent => "permanent",
            },
            sample: f.sample,
        }
    }
}

/// The last full §6.3 assessment of a live source, as /v1/health shows it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub(crate) struct AssessmentSnapshot {
    /// Samples assessed.
    pub(crate) samples: usize,
    /// H_original, bits per sample.
    pub(crate) h_original: f64,
    /// H_bitstring, bits per bit.
    pub(crate) h_bitstring: f64,
    /// Final min(H), bits per sample.
    pub(crate) h_assessed: f64,
    /// The lowest passing result: claimed H minus the margin.
    pub(crate) floor: f64,
    /// Whether `h_assessed` reached the floor.
    pub(crate) passed: bool,
    /// Whether all samples were taken after the source last lost trust.
    pub(crate) fresh: bool,
    /// CPU time of the estimators.
    pub(crate) seconds: f64,
    /// Entropy credited per sample from then on: min(claimed H, h_assessed).
    pub(crate) credited_h: f64,
}

/// One source in /v1/health. Counts and positions only: no sample values.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct SourceSnapshot {
    /// Configured name.
    pub(crate) name: String,
    /// Backend kind.
    pub(crate) kind: &'static str,
    /// Device path or other identity.
    pub(crate) identity: String,
    /// Current state.
    pub(crate) state: SourceState,
    /// Bits per sample.
    pub(crate) bits_per_sample: u32,
    /// Claimed min-entropy per sample.
    pub(crate) claimed_h: f64,
    /// RCT cutoff at the configured α.
    pub(crate) rct_cutoff: u32,
    /// APT cutoff at the configured α.
    pub(crate) apt_cutoff: u32,
    /// APT window.
    pub(crate) apt_window: usize,
    /// RCT cutoff at the permanent α.
    pub(crate) rct_cutoff_permanent: u32,
    /// APT cutoff at the permanent α.
    pub(crate) apt_cutoff_permanent: u32,
    /// Samples read and tested.
    pub(crate) samples: u64,
    /// Samples that passed and went to the conditioner.
    pub(crate) usable_samples: u64,
    /// RCT failures (both levels).
    pub(crate) rct_failures: u64,
    /// APT failures (both levels).
    pub(crate) apt_failures: u64,
    /// Start-up tests passed.
    pub(crate) startups_passed: u64,
    /// Times the device went away.
    pub(crate) disconnects: u64,
    /// Seed blocks the DRBG took from this source.
    pub(crate) seeds_used: u64,
    /// Samples a second read and scored while the pool takes no seed (0: the
    /// source is read only for seeds).
    pub(crate) monitor_rate: u32,
    /// Trust below this takes the source out (`[health] min_trust`).
    pub(crate) min_trust: f64,
    /// Seconds since samples were last read from the device.
    pub(crate) sample_age_secs: Option<f64>,
    /// Drift score 0..1 (0 = as claimed).
    pub(crate) drift_score: f64,
    /// Trust score 0..1 (1 = fully trusted).
    pub(crate) trust_score: f64,
    /// Min-entropy per sample estimated on the last drift window (MCV, §6.3.1).
    pub(crate) window_h_estimate: Option<f64>,
    /// Drift windows scored.
    pub(crate) drift_windows: u64,
    /// Sample index at which trust last fell below the minimum.
    pub(crate) distrusted_at_sample: Option<u64>,
    /// Full assessments completed, and how many failed.
    pub(crate) full_assessments: u64,
    /// Full assessments that fell below the floor.
    pub(crate) full_assessments_failed: u64,
    /// The last full assessment.
    pub(crate) last_full_assessment: Option<AssessmentSnapshot>,
    /// The most recent failure.
    pub(crate) last_failure: Option<FailureSnapshot>,
    /// The first failures since start (at most 16), oldest first.
    pub(crate) failures: Vec<FailureSnapshot>,
    /// The most recent device error, as text (never sample data).
    pub(crate) last_error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    state: SourceState,
    /// Incremented at every failure or disconnect; blocks made in an older
    /// epoch are discarded.
    epoch: u64,
    counts: TestCounts,
    monitor_rate: u32,
    min_trust: f64,
    last_read: Option<Instant>,
    disconnects: u64,
    drift: f64,
    trust: f64,
    window_h: Option<f64>,
    drift_windows: u64,
    distrusted_at: Option<u64>,
    full_assessments: u64,
    full_assessments_failed: u64,
    last_assessment: Option<AssessmentSnapshot>,
    last_failure: Option<Failure>,
    first_failures: Vec<Failure>,
    last_error: Option<String>,
    history: VecDeque<TrustPoint>,
}

/// Failures kept in `first_failures`.
const FAILURES_KEPT: usize = 16;

/// A source's status, written by its thread, read by the pool and the API.
#[derive(Debug)]
pub(crate) struct SourceStatus {
    info: SourceInfo,
    cutoffs: Cutoffs,
    permanent: Cutoffs,
    inner: Mutex<Inner>,
}

impl SourceStatus {
    /// A source in start-up.
    pub(crate) fn new(info: SourceInfo, cutoffs: Cutoffs, permanent: Cutoffs) -> Self {
        Self {
            info,
            cutoffs,
            permanent,
            inner: Mutex::new(Inner {
                state: SourceState::Startup,
                epoch: 0,
                counts: TestCounts::default(),
                monitor_rate: 0,
                min_trust: 0.0,
                last_read: None,
                disconnects: 0,
                drift: 0.0,
                trust: 1.0,
                window_h: None,
                drift_windows: 0,
                distrusted_at: None,
                full_assessments: 0,
                full_assessments_failed: 0,
                last_assessment: None,
                last_failure: None,
                first_failures: Vec::new(),
                last_error: None,
                history: VecDeque::new(),
            }),
        }
    }

    /// The source's description.
    pub(crate) fn info(&self) -> &SourceInfo {
        &self.info
    }

    /// Current state.
    pub(crate) fn state(&self) -> SourceState {
        lock(&self.inner).state
    }

    /// Current epoch.
    pub(crate) fn epoch(&self) -> u64 {
        lock(&self.inner).epoch
    }

    /// Whether a block made in `epoch` may be used now.
    pub(crate) fn accepts(&self, epoch: u64) -> bool {
        let inner = lock(&self.inner);
        inner.state == SourceState::Healthy && inner.epoch == epoch
    }

    /// Record how the source is scored: the rate at which it is sampled
    /// while idle, and the trust below which it is taken out.
    pub(crate) fn set_scoring(&self, rate: u32, min_trust: f64) {
        let mut inner = lock(&self.inner);
        inner.monitor_rate = rate;
        inner.min_trust = min_trust;
    }

    /// Record that samples were just read from the device.
    pub(crate) fn sampled(&self) {
        lock(&self.inner).last_read = Some(Instant::now());
    }

    /// Record progress: new counts (cumulative) and state.
    pub(crate) fn update(&self, state: SourceState, counts: TestCounts) {
        let mut inner = lock(&self.inner);
        inner.state = state;
        inner.counts = counts;
    }

    /// Record the drift detector's view.
    pub(crate) fn set_drift(&self, drift: f64, trust: f64, window_h: Option<f64>, windows: u64) {
        let mut inner = lock(&self.inner);
        inner.drift = drift;
        inner.trust = trust;
        inner.window_h = window_h;
        // Called every round; the chart gets a point per closed window.
        let closed = windows != inner.drift_windows;
        inner.drift_windows = windows;
        if !closed {
            return;
        }
        if inner.history.len() == HISTORY_KEPT {
            inner.history.pop_front();
        }
        let sample = inner.counts.samples;
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        inner.history.push_back(TrustPoint { unix, sample, drift, trust });
    }

    /// The last [`HISTORY_KEPT`] drift windows' scores, oldest first.
    pub(crate) fn history(&self) -> Vec<TrustPoint> {
        lock(&self.inner).history.iter().copied().collect()
    }

    /// Record a finished full assessment.
    pub(crate) fn set_assessment(&self, a: AssessmentSnapshot) {
        let mut inner = lock(&self.inner);
        inner.full_assessments += 1;
        inner.full_assessments_failed += u64::from(!a.passed);
        inner.last_assessment = Some(a);
    }

    /// Trust fell below the minimum at `sample`: out, and queued blocks go stale.
    pub(crate) fn distrust(&self, sample: u64) {
        let mut inner = lock(&self.inner);
        inner.epoch += 1;
        inner.state = SourceState::Distrusted;
        inner.distrusted_at = Some(sample);
    }

    /// Record a health failure: state changes and earlier blocks go stale.
    pub(crate) fn fail(&self, failure: Failure) {
        let mut inner = lock(&self.inner);
        inner.epoch += 1;
        inner.last_failure = Some(failure);
        if inner.first_failures.len() < FAILURES_KEPT {
            inner.first_failures.push(failure);
        }
        inner.state = match failure.severity {
            Severity::Intermittent => SourceState::Quarantined,
            Severity::Permanent => SourceState::Failed,
        };
    }

    /// Record that the device went away.
    pub(crate) fn disconnect(&self, error: String) {
        let mut inner = lock(&self.inner);
        if inner.state != SourceState::Unavailable {
            inner.disconnects += 1;
        }
        inner.epoch += 1;
        inner.state = SourceState::Unavailable;
        inner.last_error = Some(error);
    }

    /// A copy for reporting.
    pub(crate) fn snapshot(&self) -> SourceSnapshot {
        let inner = lock(&self.inner);
        SourceSnapshot {
            name: self.info.name.clone(),
            kind: self.info.kind,
            identity: self.info.identity.clone(),
            state: inner.state,
            bits_per_sample: self.info.bits_per_sample,
            claimed_h: self.info.claimed_h,
            rct_cutoff: self.cutoffs.rct,
            apt_cutoff: self.cutoffs.apt,
            apt_window: self.cutoffs.window,
            rct_cutoff_permanent: self.permanent.rct,
            apt_cutoff_permanent: self.permanent.apt,
            samples: inner.counts.samples,
            usable_samples: inner.counts.usable,
            rct_failures: inner.counts.rct_failures,
            apt_failures: inner.counts.apt_failures,
            startups_passed: inner.counts.startups_passed,
            disconnects: inner.disconnects,
            // Filled in by the pool, which counts seeds beside its seed log.
            seeds_used: 0,
            monitor_rate: inner.monitor_rate,
            min_trust: inner.min_trust,
            sample_age_secs: inner.last_read.map(|t| t.elapsed().as_secs_f64()),
            drift_score: inner.drift,
            trust_score: inner.trust,
            window_h_estimate: inner.window_h,
            drift_windows: inner.drift_windows,
            distrusted_at_sample: inner.distrusted_at,
            full_assessments: inner.full_assessments,
            full_assessments_failed: inner.full_assessments_failed,
            last_full_assessment: inner.last_assessment,
            last_failure: inner.last_failure.map(Into::into),
            failures: inner.first_failures.iter().copied().map(Into::into).collect(),
            last_error: inner.last_error.clone(),
        }
    }
}
