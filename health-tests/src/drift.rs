//! Drift and trust scores for a live source.
//!
//! The continuous tests (§4.4) catch gross failures. A source that slowly
//! loses entropy, one symbol becoming more likely over a million samples,
//! trips them only late. This detector looks at consecutive windows of usable
//! samples and asks each one the Most Common Value question (§6.3.1): is the
//! most common symbol more frequent than the claimed min-entropy allows?
//!
//! Per window of W samples, with p = 2^-H (the claimed largest probability):
//!
//! z = (count_max / W − p) / sqrt(p (1 − p) / W)
//!
//! For a source that honours its claim, z is the largest of k roughly normal
//! deviates, about sqrt(2 ln k) (2.8 for k = 256), and exceeds κ, which is
//! sqrt(2 ln k) plus 1.7 (4.5 for k = 256), about once in 10^5 windows. A one-sided CUSUM,
//! S ← max(0, S + z − κ), accumulates evidence; drift = min(1, S / 20) and
//! trust = 1 − drift, or 0 after a permanent (hard) health-test failure.
//! Intermittent failures are not counted here: at α = 2^-20 a healthy source
//! has one every few hundred thousand samples, and the quarantine they cause
//! already keeps its samples out.
//!
//! A source whose trust fell below the operator's minimum stays out until a
//! fresh assessment passes: [`RECOVERY_WINDOWS`] consecutive windows with
//! z ≤ κ and, when full assessments are enabled
//! ([`DriftDetector::require_full_assessment`]), a full §6.3 assessment of
//! samples taken after trust was lost. Then the evidence is cleared.
//!
//! Full assessments also run periodically on a healthy source
//! ([`DriftDetector::full_assessment`]). The §6.3 estimators are lower bounds
//! with a wide spread: on 1M uniform bytes the final min(H) ranges from about
//! 6.6 to 7.4 bits (t-Tuple and the bitstring Compression estimate flip
//! between quantised values). A full assessment therefore fails only when it
//! is more than a calibrated margin below the claim; a failure counts as
//! decisive evidence of drift.

/// Samples per window.
pub const WINDOW: usize = 8192;
/// Consecutive clean windows that make a fresh, healthy assessment.
pub const RECOVERY_WINDOWS: u32 = 8;
/// CUSUM level at which drift reaches 1.
const DECISION: f64 = 20.0;
/// Margin above the expected maximum deviate of k symbols.
const SLACK: f64 = 1.7;

/// The outcome of one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowScore {
    /// Standardised excess of the most common symbol over the claim.
    pub z: f64,
    /// Min-entropy per sample implied by this window's MCV estimate (§6.3.1).
    pub h_estimate: f64,
    /// Drift score after this window, 0..=1.
    pub drift: f64,
    /// Trust score after this window, 0..=1.
    pub trust: f64,
}

/// Drift and trust for one source.
#[derive(Clone, Debug)]
pub struct DriftDetector {
    mask: u8,
    p_claim: f64,
    kappa: f64,
    counts: Vec<u32>,
    seen: usize,
    cusum: f64,
    hard_failure: bool,
    distrusted: bool,
    clean_run: u32,
    min_trust: f64,
    claimed_h: f64,
    /// Bits below the claim a full assessment may fall; `None`: recovery
    /// needs clean windows only.
    full_margin: Option<f64>,
    /// Distrusted, and no full assessment of fresh samples has passed yet.
    awaiting_full: bool,
    windows: u64,
    last: Option<WindowScore>,
}

impl DriftDetector {
    /// A detector for samples of `bits` bits claiming `claimed_h` bits each;
    /// trust below `min_trust` takes the source out.
    pub fn new(bits: u32, claimed_h: f64, min_trust: f64) -> Self {
        let k = 1usize << bits.clamp(1, 8);
        Self {
            mask: if bits >= 8 { 0xff } else { (1u8 << bits) - 1 },
            p_claim: (-claimed_h).exp2(),
            kappa: (2.0 * (k as f64).ln()).sqrt() + SLACK,
            counts: vec![0; k],
            seen: 0,
            cusum: 0.0,
            hard_failure: false,
            distrusted: false,
            clean_run: 0,
            min_trust,
            claimed_h,
            full_margin: None,
            awaiting_full: false,
            windows: 0,
            last: None,
        }
    }

    /// Take full §6.3 assessments into account: one more than `margin_bits`
    /// below the claim is decisive drift, and a distrusted source needs a
    /// passing one on fresh samples to come back.
    #[must_use]
    pub fn require_full_assessment(mut self, margin_bits: f64) -> Self {
        self.full_margin = Some(margin_bits);
        self
    }

    /// Whether a distrusted source is waiting for a full assessment of
    /// samples taken after trust was lost.
    pub fn awaiting_full_assessment(&self) -> bool {
        self.distrusted && self.awaiting_full
    }

    /// Consecutive clean windows of a distrusted source (0 while the excess persists).
    pub fn clean_run(&self) -> u32 {
        self.clean_run
    }

    /// The lowest full-assessment result that passes.
    pub fn full_assessment_floor(&self) -> f64 {
        self.claimed_h - self.full_margin.unwrap_or(f64::INFINITY)
    }

    /// Record a full assessment's final min(H). `fresh`: its samples were all
    /// taken after the last loss of trust (only such a result can bring a
    /// source back; a failing one counts either way). Returns whether it passed.
    pub fn full_assessment(&mut self, h_min: f64, fresh: bool) -> bool {
        let passed = h_min >= self.full_assessment_floor();
        if self.hard_failure {
            return passed;
        }
        if !passed {
            self.cusum = DECISION;
            if !self.distrusted {
                self.distrusted = true;
                self.clean_run = 0;
            }
            self.awaiting_full = self.full_margin.is_some();
        } else if self.distrusted && fresh {
            self.awaiting_full = false;
            if self.clean_run >= RECOVERY_WINDOWS {
                self.recover();
            }
        }
        passed
    }

    fn recover(&mut self) {
        self.distrusted = false;
        self.cusum = 0.0;
        self.clean_run = 0;
    }

    /// Current drift score (0 = as claimed, 1 = clearly drifted).
    pub fn drift(&self) -> f64 {
        (self.cusum / DECISION).min(1.0)
    }

    /// Current trust score (1 = fully trusted, 0 = not at all).
    pub fn trust(&self) -> f64 {
        if self.hard_failure { 0.0 } else { 1.0 - self.drift() }
    }

    /// Whether the source is out for lack of trust (until a fresh assessment passes).
    pub fn distrusted(&self) -> bool {
        self.distrusted
    }

    /// Windows scored so far.
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// The last window's score.
    pub fn last(&self) -> Option<WindowScore> {
        self.last
    }

    /// A permanent health-test failure: trust is 0 from now on.
    pub fn hard_failure(&mut self) {
        self.hard_failure = true;
        self.distrusted = true;
    }

    /// Drop a partly filled window (the samples around a failure or a
    /// disconnect must not be scored together with later ones).
    pub fn discard_window(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.seen = 0;
    }

    /// Score usable samples; returns the last window completed by them.
    pub fn feed(&mut self, samples: &[u8]) -> Option<WindowScore> {
        let mut out = None;
        for &s in samples {
            self.counts[usize::from(s & self.mask)] += 1;
            self.seen += 1;
            if self.seen == WINDOW {
                out = Some(self.close_window());
            }
        }
        out
    }

    fn close_window(&mut self) -> WindowScore {
        let n = WINDOW as f64;
        let max = self.counts.iter().copied().max().unwrap_or(0);
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.seen = 0;
        self.windows += 1;
        let p_hat = f64::from(max) / n;
        let z = (p_hat - self.p_claim) / (self.p_claim * (1.0 - self.p_claim) / n).sqrt();
        let p_u =
            (p_hat + 2.575_829_303_548_901 * (p_hat * (1.0 - p_hat) / (n - 1.0)).sqrt()).min(1.0);
        self.cusum = (self.cusum + z - self.kappa).max(0.0);
        if self.hard_failure {
            // Permanent: no assessment brings it back; an operator restarts.
        } else if self.distrusted {
            self.clean_run = if z <= self.kappa { self.clean_run + 1 } else { 0 };
            if self.clean_run >= RECOVERY_WINDOWS && !self.awaiting_full {
                self.recover();
            }
        } else if self.trust() < self.min_trust {
            self.distrusted = true;
            self.clean_run = 0;
            self.awaiting_full = self.full_margin.is_some();
        }
        let score =
            WindowScore { z, h_estimate: -p_u.log2(), drift: self.drift(), trust: self.trust() };
        self.last = Some(score);
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(seed: u64, n: usize, p_zero: impl Fn(usize) -> f64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                if u < p_zero(i) { 0 } else { (x >> 3) as u8 }
            })
            .collect()
    }

    #[test]
    fn uniform_stays_trusted() {
        let mut d = DriftDetector::new(8, 8.0, 0.89);
        let s = stream(1, 2_000_000, |_| 0.0);
        let mut min_trust = 1.0f64;
        for c in s.chunks(4096) {
            if let Some(w) = d.feed(c) {
                min_trust = min_trust.min(w.trust);
                // One window is short: its MCV estimate is biased low, about 6.8 bits.
                assert!(w.h_estimate > 6.0 && w.h_estimate < 8.0, "{w:?}");
            }
        }
        assert!(min_trust >= 0.95, "{min_trust}");
        assert_eq!(d.windows(), 2_000_000 / WINDOW as u64);
        assert!(!d.distrusted());
    }

    #[test]
    fn slow_bias_is_caught_and_recovery_needs_fresh_windows() {
        let mut d = DriftDetector::new(8, 8.0, 0.89);
        // P(0) grows from 0 to 0.25 over 1M samples.
        let s = stream(2, 1_000_000, |i| 0.25 * i as f64 / 1e6);
        let mut caught = None;
        for (i, c) in s.chunks(WINDOW).enumerate() {
            d.feed(c);
            if d.distrusted() {
                caught = Some((i + 1) * WINDOW);
                break;
            }
        }
        let at = caught.expect("drift detected");
        eprintln!("drift caught at sample {at}");
        // By then P(0) is about 0.25 * at / 1e6.
        assert!(at < 80_000, "caught at sample {at}");
        // Healthy again: 8 clean windows, not fewer, bring it back.
        let clean = stream(3, WINDOW * RECOVERY_WINDOWS as usize, |_| 0.0);
        let mut back_after = None;
        for (i, c) in clean.chunks(WINDOW).enumerate() {
            d.feed(c);
            if !d.distrusted() {
                back_after = Some(i + 1);
                break;
            }
        }
        assert_eq!(back_after, Some(RECOVERY_WINDOWS as usize));
        assert!(d.trust() >= 0.95);
    }

    #[test]
    fn recovery_waits_for_a_fresh_full_assessment() {
        let mut d = DriftDetector::new(8, 7.9, 0.89).require_full_assessment(1.5);
        assert_eq!(d.full_assessment_floor(), 6.4);
        // A healthy-looking full assessment keeps a trusted source trusted.
        assert!(d.full_assessment(6.9, false));
        assert!(!d.distrusted());
        // One far below the claim is decisive.
        assert!(!d.full_assessment(2.1, false));
        assert!(d.distrusted());
        assert_eq!(d.trust(), 0.0);
        assert!(d.awaiting_full_assessment());
        // Clean windows alone do not bring it back ...
        d.feed(&stream(5, WINDOW * 2 * RECOVERY_WINDOWS as usize, |_| 0.0));
        assert!(d.distrusted());
        // ... nor does a passing assessment of samples from before the loss ...
        assert!(d.full_assessment(7.2, false));
        assert!(d.distrusted());
        // ... but a passing one on fresh samples, after clean windows, does.
        assert!(d.full_assessment(7.2, true));
        assert!(!d.distrusted());
        assert!(d.trust() >= 0.95);
    }

    #[test]
    fn fresh_assessment_then_clean_windows_also_recovers() {
        let mut d = DriftDetector::new(8, 8.0, 0.89).require_full_assessment(1.5);
        d.feed(&stream(6, WINDOW * 12, |_| 0.3));
        assert!(d.distrusted() && d.awaiting_full_assessment());
        assert!(d.full_assessment(7.0, true));
        assert!(d.distrusted(), "needs clean windows too");
        d.feed(&stream(7, WINDOW * RECOVERY_WINDOWS as usize, |_| 0.0));
        assert!(!d.distrusted());
    }

    #[test]
    fn hard_failure_forces_zero_trust() {
        let mut d = DriftDetector::new(8, 8.0, 0.89);
        d.hard_failure();
        assert_eq!(d.trust(), 0.0);
        d.feed(&stream(4, WINDOW * 20, |_| 0.0));
        assert_eq!(d.trust(), 0.0);
        assert!(d.distrusted());
    }
}
