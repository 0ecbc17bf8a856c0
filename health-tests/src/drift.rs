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
//! z ≤ κ, after which the evidence is cleared.

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
            windows: 0,
            last: None,
        }
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
            if self.clean_run >= RECOVERY_WINDOWS {
                self.distrusted = false;
                self.cusum = 0.0;
                self.clean_run = 0;
            }
        } else if self.trust() < self.min_trust {
            self.distrusted = true;
            self.clean_run = 0;
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
    fn hard_failure_forces_zero_trust() {
        let mut d = DriftDetector::new(8, 8.0, 0.89);
        d.hard_failure();
        assert_eq!(d.trust(), 0.0);
        d.feed(&stream(4, WINDOW * 20, |_| 0.0));
        assert_eq!(d.trust(), 0.0);
        assert!(d.distrusted());
    }
}
