//! SP 800-90B §6.3 non-IID min-entropy estimators, computed as NIST's reference
//! tool (`ea_non_iid`, v1.1.7) computes them, so that its answers can be
//! reproduced: the same input conventions, the same integer intermediates, and
//! real values within 1e-9 relative (most agree to the last digit).
//!
//! Input conventions, as in the reference tool:
//! - one sample per byte; the word size is the position of the highest set bit
//!   of all samples OR-ed together, unless given;
//! - literal symbols are masked to the word size and, if fewer than 2^ws values
//!   occur, ranked to 0..k−1;
//! - the bitstring is built from the masked (unranked) symbols, most significant
//!   bit first;
//! - with exactly two distinct symbols the data is binary: Collision, Markov and
//!   Compression run on the literal symbols and no bitstring is assessed.

// The estimators index by sample position exactly as SP 800-90B writes them;
// iterator rewrites would hide the correspondence with the spec.
#![allow(clippy::needless_range_loop)]

mod compression;
pub mod iid;
mod predictors;
pub mod report;
mod simple;
mod tuple;

use crate::Error;

pub use predictors::Prediction;
pub use tuple::{LrsResult, TupleResult};

/// Z for a 99% one-sided bound: the reference tool's 2.5758293035489008,
/// which is this same f64.
pub(crate) const ZALPHA: f64 = 2.575_829_303_548_901;

/// Samples prepared for assessment.
#[derive(Clone, Debug)]
pub struct Symbols {
    /// Bits per sample used.
    pub word_size: u32,
    /// Number of distinct symbols.
    pub alphabet: usize,
    /// Ranked literal symbols (0..alphabet).
    pub literal: Vec<u8>,
    /// The bitstring, one bit per byte, most significant bit of each sample first.
    pub bits: Vec<u8>,
    /// The samples masked to the word size, not ranked.
    pub raw: Vec<u8>,
}

impl Symbols {
    /// Prepare raw samples. `word_size` overrides detection (1..=8).
    pub fn new(raw: &[u8], word_size: Option<u32>) -> Result<Self, Error> {
        if raw.is_empty() {
            return Err(Error::Assessment("no samples".into()));
        }
        let or = raw.iter().fold(0u8, |a, &b| a | b);
        let detected = 8 - or.leading_zeros();
        let ws = match word_size {
            None => detected,
            Some(w) if !(1..=8).contains(&w) => return Err(Error::BitsPerSample { bits: w }),
            Some(w) if detected > w => {
                return Err(Error::Assessment(format!(
                    "samples are wider than --bits {w}: a sample has bit {} set",
                    detected - 1
                )));
            }
            Some(w) => w,
        };
        let mask = if ws >= 8 { 0xff } else { (1u8 << ws) - 1 };
        let mut present = [false; 256];
        for &b in raw {
            present[usize::from(b & mask)] = true;
        }
        let mut rank = [0u8; 256];
        let mut k = 0usize;
        for (v, &p) in present.iter().enumerate() {
            if p {
                rank[v] = k as u8;
                k += 1;
            }
        }
        if k < 2 {
            return Err(Error::Assessment(
                "only one distinct symbol: the data has no entropy to assess".into(),
            ));
        }
        let literal = raw.iter().map(|&b| rank[usize::from(b & mask)]).collect();
        let masked: Vec<u8> = raw.iter().map(|&b| b & mask).collect();
        let bits = if k > 2 {
            let mut bits = Vec::with_capacity(raw.len() * ws as usize);
            for &s in &masked {
                for j in (0..ws).rev() {
                    bits.push((s >> j) & 1);
                }
            }
            bits
        } else {
            Vec::new()
        };
        Ok(Self { word_size: ws, alphabet: k, literal, bits, raw: masked })
    }

    /// Whether the data is binary (two distinct symbols).
    pub fn is_binary(&self) -> bool {
        self.alphabet == 2
    }
}

/// Most Common Value estimate (§6.3.1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mcv {
    /// Count of the most common symbol.
    pub mode: u64,
    /// p̂.
    pub p_hat: f64,
    /// Upper bound p_u.
    pub p_u: f64,
    /// Min-entropy per symbol.
    pub h: f64,
}

/// Collision estimate (§6.3.2), binary data only.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Collision {
    /// Number of collisions found, v.
    pub v: u64,
    /// Σ t_i.
    pub sum_t: u64,
    /// X̄.
    pub x_bar: f64,
    /// σ̂.
    pub sigma: f64,
    /// X̄'.
    pub x_bar_prime: f64,
    /// p (0.5 when no p could be found).
    pub p: f64,
    /// Min-entropy per bit.
    pub h: f64,
}

/// Markov estimate (§6.3.3), binary data only.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Markov {
    /// P(0), P(1).
    pub p0: f64,
    /// P(1).
    pub p1: f64,
    /// Transition probabilities P00, P01, P10, P11.
    pub transitions: [f64; 4],
    /// Probability of the most likely 128-bit sequence.
    pub p_hat_max: f64,
    /// Min-entropy per bit.
    pub h: f64,
}

/// Compression estimate (§6.3.4), binary data only.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Compression {
    /// X̄.
    pub x_bar: f64,
    /// σ̂.
    pub sigma: f64,
    /// X̄'.
    pub x_bar_prime: f64,
    /// p (1/64 when none found).
    pub p: f64,
    /// Min-entropy per bit.
    pub h: f64,
}

/// Every estimator's answer on one data set (literal symbols or bitstring).
/// An estimator that does not apply or cannot run is `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Estimates {
    /// §6.3.1.
    pub mcv: Option<Mcv>,
    /// §6.3.2.
    pub collision: Option<Collision>,
    /// §6.3.3.
    pub markov: Option<Markov>,
    /// §6.3.4.
    pub compression: Option<Compression>,
    /// §6.3.5.
    pub t_tuple: Option<TupleResult>,
    /// §6.3.6.
    pub lrs: Option<LrsResult>,
    /// §6.3.7.
    pub multi_mcw: Option<Prediction>,
    /// §6.3.8.
    pub lag: Option<Prediction>,
    /// §6.3.9.
    pub multi_mmc: Option<Prediction>,
    /// §6.3.10.
    pub lz78y: Option<Prediction>,
}

impl Estimates {
    /// Run every estimator that applies. `binary_tests` adds Collision, Markov and
    /// Compression (for the bitstring, or for binary literal data).
    fn run(data: &[u8], k: usize, binary_tests: bool, progress: &mut dyn FnMut(&str)) -> Self {
        progress("Most Common Value");
        let mut e = Self { mcv: Some(simple::mcv(data, k)), ..Self::default() };
        if binary_tests {
            progress("Collision, Markov");
            e.collision = simple::collision(data);
            e.markov = Some(simple::markov(data));
            progress("Compression");
            e.compression = compression::compression(data);
        }
        progress("t-Tuple, LRS");
        let (t, l) = tuple::tuple_and_lrs(data);
        e.t_tuple = t;
        e.lrs = l;
        progress("MultiMCW");
        e.multi_mcw = predictors::multi_mcw(data, k);
        progress("Lag");
        e.lag = predictors::lag(data, k);
        progress("MultiMMC");
        e.multi_mmc = predictors::multi_mmc(data, k);
        progress("LZ78Y");
        e.lz78y = predictors::lz78y(data, k);
        e
    }

    /// The smallest min-entropy among the estimates that ran (`cap` if none).
    pub fn min_h(&self, cap: f64) -> f64 {
        [
            self.mcv.map(|x| x.h),
            self.collision.map(|x| x.h),
            self.markov.map(|x| x.h),
            self.compression.map(|x| x.h),
            self.t_tuple.map(|x| x.h),
            self.lrs.map(|x| x.h),
            self.multi_mcw.map(|x| x.h),
            self.lag.map(|x| x.h),
            self.multi_mmc.map(|x| x.h),
            self.lz78y.map(|x| x.h),
        ]
        .into_iter()
        .flatten()
        .fold(cap, f64::min)
    }
}

/// The non-IID assessment of one sample file.
#[derive(Clone, Debug, PartialEq)]
pub struct NonIid {
    /// Word size used.
    pub word_size: u32,
    /// Distinct symbols.
    pub alphabet: usize,
    /// Samples assessed.
    pub samples: usize,
    /// Estimates on the literal symbols.
    pub literal: Estimates,
    /// Estimates on the bitstring (absent for binary data).
    pub bitstring: Option<Estimates>,
    /// min over the literal estimates and the word size.
    pub h_original: f64,
    /// min over the bitstring estimates and 1 (1 for binary data).
    pub h_bitstring: f64,
    /// min(word size, H_original, word size × H_bitstring).
    pub h_assessed: f64,
}

/// Run the non-IID track (§6.3) on prepared symbols.
pub fn non_iid(sym: &Symbols) -> NonIid {
    non_iid_with_progress(sym, &mut |_| {})
}

/// [`non_iid`], calling `progress` with a description before each step (for
/// a progress display on long runs).
pub fn non_iid_with_progress(sym: &Symbols, progress: &mut dyn FnMut(&str)) -> NonIid {
    let ws = f64::from(sym.word_size);
    let bitstring = (!sym.is_binary()).then(|| {
        Estimates::run(&sym.bits, 2, true, &mut |step| progress(&format!("bitstring: {step}")))
    });
    let literal = Estimates::run(&sym.literal, sym.alphabet, sym.is_binary(), &mut |step| {
        progress(&format!("literal: {step}"))
    });
    let h_original = literal.min_h(ws);
    let h_bitstring = bitstring.as_ref().map_or(1.0, |b| b.min_h(1.0));
    let mut h_assessed = ws;
    if bitstring.is_some() {
        h_assessed = h_assessed.min(h_bitstring * ws);
    }
    h_assessed = h_assessed.min(h_original);
    NonIid {
        word_size: sym.word_size,
        alphabet: sym.alphabet,
        samples: sym.literal.len(),
        literal,
        bitstring,
        h_original,
        h_bitstring,
        h_assessed,
    }
}

/// `relEpsilonEqual(A, B, DBL_MIN, DBL_EPSILON, 4)` of the reference tool: the
/// stopping test of its bisection, which decides where a search ends.
pub(crate) fn rel_eps_equal(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return false;
    }
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() {
        return false;
    }
    let (a, b) = if a.abs() <= b.abs() { (a, b) } else { (b, a) };
    let diff = (b - a).abs();
    if a.abs() < f64::MIN_POSITIVE
        || diff < f64::MIN_POSITIVE
        || diff.is_infinite()
        || b.abs() * f64::EPSILON < f64::MIN_POSITIVE
    {
        return diff <= f64::MIN_POSITIVE;
    }
    if diff <= b.abs() * f64::EPSILON {
        return true;
    }
    if a.is_sign_negative() != b.is_sign_negative() {
        return false;
    }
    b.abs().to_bits() - a.abs().to_bits() <= 4
}

fn inclosed(x: f64, a: f64, b: f64) -> bool {
    if a > b { b <= x && x <= a } else { a <= x && x <= b }
}

fn inopen(x: f64, a: f64, b: f64) -> bool {
    if a > b { b < x && x < a } else { a < x && x < b }
}

/// The reference tool's bisection for a decreasing `f` and target `t` on
/// [ldom, hdom]; `fail` is returned when its invariants break.
pub(crate) fn bisect(f: impl Fn(f64) -> f64, t: f64, ldom: f64, hdom: f64, fail: f64) -> f64 {
    let (mut lb, mut hb) = (ldom, hdom);
    let (mut lv, mut hv) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut p = (lb + hb) / 2.0;
    let mut pv = f(p);
    for _ in 0..1076 {
        if rel_eps_equal(pv, t) {
            return p;
        }
        if t < pv {
            lb = p;
            lv = pv;
        } else {
            hb = p;
            hv = pv;
        }
        if lb >= hb {
            return lb.max(hb).min(hdom);
        }
        if !(inclosed(lb, ldom, hdom) && inclosed(hb, ldom, hdom)) {
            return fail;
        }
        if !inclosed(t, lv, hv) {
            return fail;
        }
        let last = p;
        p = (lb + hb) / 2.0;
        if !inopen(p, lb, hb) || last == p {
            return hb;
        }
        pv = f(p);
        if !inclosed(pv, lv, hv) {
            return hb;
        }
    }
    p
}

#[cfg(test)]
mod tests;
