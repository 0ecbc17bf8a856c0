//! Cutoff arithmetic for the continuous health tests (SP 800-90B §4.4).

use crate::Error;

/// APT window for non-binary samples (SP 800-90B §4.4.2).
pub const WINDOW_NON_BINARY: usize = 1024;
/// APT window for binary (1-bit) samples.
pub const WINDOW_BINARY: usize = 512;

/// Both test cutoffs for one source at one false-positive rate.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Cutoffs {
    /// RCT: a run of this many identical samples is a failure.
    pub rct: u32,
    /// APT: this many copies of the window's first sample inside one window is a failure.
    pub apt: u32,
    /// APT window length W.
    pub window: usize,
}

impl Cutoffs {
    /// Cutoffs for a source with `bits` per sample claiming `h` bits of min-entropy
    /// per sample, at false-positive rate α = 2^`alpha_log2`.
    pub fn new(bits: u32, h: f64, alpha_log2: f64) -> Result<Self, Error> {
        check(bits, h, alpha_log2)?;
        let window = apt_window(bits);
        Ok(Self { rct: rct_cutoff(h, alpha_log2), apt: apt_cutoff(h, alpha_log2, window), window })
    }
}

/// The APT window W for a sample width: 512 for binary samples, else 1024.
pub fn apt_window(bits: u32) -> usize {
    if bits == 1 { WINDOW_BINARY } else { WINDOW_NON_BINARY }
}

/// RCT cutoff C = 1 + ⌈−log2 α / H⌉ (SP 800-90B §4.4.1).
///
/// `alpha_log2` is log2 α, e.g. −20.
pub fn rct_cutoff(h: f64, alpha_log2: f64) -> u32 {
    let c = 1.0 + (-alpha_log2 / h).ceil();
    // Saturate rather than wrap: an absurdly small H yields a test that never fires,
    // which `check` prevents for configured sources.
    if c >= f64::from(u32::MAX) { u32::MAX } else { c as u32 }
}

/// APT cutoff C = 1 + CRITBINOM(W, 2^−H, 1 − α) (SP 800-90B §4.4.2).
pub fn apt_cutoff(h: f64, alpha_log2: f64, window: usize) -> u32 {
    let k = critbinom(window as u64, (-h).exp2(), alpha_log2.exp2());
    u32::try_from(k).unwrap_or(u32::MAX).saturating_add(1)
}

/// The smallest k with P(X ≤ k) ≥ 1 − α for X ~ Binomial(n, p): Excel's
/// `CRITBINOM(n, p, 1 − α)`, which SP 800-90B uses.
///
/// The upper tail P(X > k) is summed directly, from the top, in f64, so that
/// 1 − α never has to be formed and rounded near 1; the binomial terms come from
/// a log-space recurrence so that (1 − p)^n cannot underflow for n = 1024.
pub fn critbinom(n: u64, p: f64, alpha: f64) -> u64 {
    if p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    let ln_p = p.ln();
    let ln_q = (-p).ln_1p();
    // log pmf(j) for j = 0..=n.
    let mut log_pmf = Vec::with_capacity(n as usize + 1);
    let mut acc = n as f64 * ln_q;
    log_pmf.push(acc);
    for j in 0..n {
        acc += ((n - j) as f64).ln() - ((j + 1) as f64).ln() + ln_p - ln_q;
        log_pmf.push(acc);
    }
    // tail = P(X > k), grown from k = n downwards.
    let mut tail = 0.0_f64;
    for k in (0..=n).rev() {
        let with_k = tail + log_pmf[k as usize].exp();
        if with_k > alpha {
            // P(X > k) = tail ≤ α but P(X > k − 1) > α: k is the smallest.
            return k;
        }
        tail = with_k;
    }
    0
}

pub(crate) fn check(bits: u32, h: f64, alpha_log2: f64) -> Result<(), Error> {
    if !(1..=8).contains(&bits) {
        return Err(Error::BitsPerSample { bits });
    }
    // A claim below 1/64 bit per sample would need an RCT run of thousands; no
    // physical source we support claims that little, and a typo should not
    // silently disable the test.
    if !(h.is_finite() && h >= 1.0 / 64.0 && h <= f64::from(bits)) {
        return Err(Error::ClaimedEntropy { h, bits });
    }
    let alpha = alpha_log2.exp2();
    if !(alpha_log2.is_finite() && alpha > 0.0 && alpha < 1.0 && alpha_log2 >= -200.0) {
        return Err(Error::Alpha { alpha });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values given with the entropy-spine issue (α = 2^-20, W = 1024), which
    /// agree with SP 800-90B §4.4 and its Table 2.
    #[test]
    fn known_cutoffs_alpha_2_20_window_1024() {
        for (h, rct, apt) in [(8.0, 4, 18), (7.0, 4, 26), (4.0, 6, 105), (1.0, 21, 589)] {
            assert_eq!(rct_cutoff(h, -20.0), rct, "RCT for H={h}");
            assert_eq!(apt_cutoff(h, -20.0, 1024), apt, "APT for H={h}");
        }
    }

    /// Binary samples use W = 512; H = 1 gives 256 + 4.9σ, which the forward
    /// CDF check below confirms is the CRITBINOM quantile.
    #[test]
    fn binary_window_cutoffs() {
        assert_eq!(apt_window(1), 512);
        assert_eq!(apt_window(2), 1024);
        assert_eq!(apt_cutoff(1.0, -20.0, 512), 311);
    }

    #[test]
    fn cutoffs_new_validates() {
        assert!(matches!(Cutoffs::new(0, 1.0, -20.0), Err(Error::BitsPerSample { .. })));
        assert!(matches!(Cutoffs::new(8, 9.0, -20.0), Err(Error::ClaimedEntropy { .. })));
        assert!(matches!(Cutoffs::new(8, f64::NAN, -20.0), Err(Error::ClaimedEntropy { .. })));
        assert!(matches!(Cutoffs::new(8, 8.0, 0.0), Err(Error::Alpha { .. })));
        let c = Cutoffs::new(8, 8.0, -20.0).unwrap();
        assert_eq!((c.rct, c.apt, c.window), (4, 18, 1024));
    }

    proptest! {
        /// Smaller α never lowers a cutoff; more claimed entropy never raises one.
        #[test]
        fn cutoffs_are_monotone(h in 0.1f64..8.0, a in 10.0f64..60.0, dh in 0.0f64..1.0) {
            prop_assert!(rct_cutoff(h, -a) <= rct_cutoff(h, -a - 1.0));
            prop_assert!(apt_cutoff(h, -a, 1024) <= apt_cutoff(h, -a - 1.0, 1024));
            let h2 = (h + dh).min(8.0);
            prop_assert!(rct_cutoff(h2, -a) <= rct_cutoff(h, -a));
            prop_assert!(apt_cutoff(h2, -a, 1024) <= apt_cutoff(h, -a, 1024));
        }

        /// CRITBINOM's defining property, checked against an independent
        /// forward CDF for small n.
        #[test]
        fn critbinom_matches_forward_cdf(n in 1u64..200, p in 0.01f64..0.9, e in 1.0f64..12.0) {
            let alpha = (-e).exp2();
            let k = critbinom(n, p, alpha);
            let cdf = |k: u64| -> f64 {
                let mut c = 0.0;
                let mut term = (1.0 - p).powi(n as i32);
                for j in 0..=k {
                    c += term;
                    term *= (n - j) as f64 / (j + 1) as f64 * p / (1.0 - p);
                }
                c
            };
            prop_assert!(cdf(k) >= 1.0 - alpha - 1e-12);
            if k > 0 {
                prop_assert!(cdf(k - 1) < 1.0 - alpha + 1e-12);
            }
        }
    }
}
