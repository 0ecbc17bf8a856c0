//! SP 800-90B §5: the IID track, as NIST's `ea_iid` 1.1.7 runs it.
//!
//! - §5.1 permutation tests: 19 statistics on the data and on up to 10,000
//!   shuffles; a statistic is decided once more than five shuffles rank on
//!   each side of (or tie with) the original, and the data passes only if
//!   every statistic is decided (`permutation.rs`);
//! - §5.2.1/§5.2.2 chi-square independence and goodness-of-fit tests
//!   (`chi_square.rs`);
//! - §5.2.4 longest-repeated-substring test (`lrs.rs`);
//! - the IID min-entropy: the MCV estimate (§6.3.1) on the literal symbols
//!   and on the bitstring.

use self::{
    chi_square::{binary_fit, binary_independence, goodness_of_fit, independence},
    lrs::lrs_test,
    permutation::{Ctx, shuffle_tests, statistics},
};
use super::{Mcv, Symbols, simple::mcv};

mod chi_square;
mod lrs;
mod permutation;

/// Shuffles at most (SP 800-90B §5.1).
pub const PERMUTATIONS: u32 = 10_000;
/// Names of the 19 statistics, as the reference tool prints them.
pub const NAMES: [&str; 19] = [
    "excursion",
    "numDirectionalRuns",
    "lenDirectionalRuns",
    "numIncreasesDecreases",
    "numRunsMedian",
    "lenRunsMedian",
    "avgCollision",
    "maxCollision",
    "periodicity(1)",
    "periodicity(2)",
    "periodicity(8)",
    "periodicity(16)",
    "periodicity(32)",
    "covariance(1)",
    "covariance(2)",
    "covariance(8)",
    "covariance(16)",
    "covariance(32)",
    "compression",
];
/// The JSON key of statistic `j`: its name without parentheses
/// (`periodicity(8)` → `periodicity8`), as the reference tool writes it.
pub fn json_key(j: usize) -> String {
    NAMES[j].replace(['(', ')'], "")
}

/// A chi-square test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChiSquare {
    /// Statistic T.
    pub t: f64,
    /// Degrees of freedom.
    pub df: i64,
    /// p-value (upper regularised incomplete gamma).
    pub p: f64,
}

impl ChiSquare {
    /// Passes at the 0.001 level.
    pub fn passed(&self) -> bool {
        self.p >= 0.001
    }
}

/// The LRS test (§5.2.4).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IidLrs {
    /// Collision probability Σ p_i².
    pub p_col: f64,
    /// Length of the longest repeated substring.
    pub w: u64,
    /// Pr(X ≥ 1).
    pub pr: f64,
    /// Verdict.
    pub passed: bool,
}

/// The permutation tests (§5.1).
#[derive(Clone, Debug, PartialEq)]
pub struct Permutation {
    /// The 19 statistics of the unshuffled data.
    pub unpermuted: [f64; 19],
    /// Per statistic: shuffles above, equal to, below the original.
    pub counts: [[u32; 3]; 19],
    /// Shuffles made.
    pub rounds: u32,
}

impl Permutation {
    /// Whether statistic `j` was decided (ranked inside the middle 99.9%).
    pub fn decided(&self, j: usize) -> bool {
        let c = self.counts[j];
        c[0] + c[1] > 5 && c[1] + c[2] > 5
    }

    /// Pass iff every statistic was decided.
    pub fn passed(&self) -> bool {
        (0..19).all(|j| self.decided(j))
    }
}

/// The IID assessment of one sample file.
#[derive(Clone, Debug, PartialEq)]
pub struct Iid {
    /// Word size.
    pub word_size: u32,
    /// Distinct symbols.
    pub alphabet: usize,
    /// Samples.
    pub samples: usize,
    /// Mean of the (unranked) sample values.
    pub raw_mean: f64,
    /// Median of the ranked symbols (0.5 for binary data).
    pub median: f64,
    /// Two distinct symbols.
    pub binary: bool,
    /// MCV on the literal symbols.
    pub mcv_literal: Mcv,
    /// MCV on the bitstring (absent for binary data).
    pub mcv_bitstring: Option<Mcv>,
    /// H_original.
    pub h_original: f64,
    /// H_bitstring (1 for binary data).
    pub h_bitstring: f64,
    /// min(word size, H_original, word size × H_bitstring).
    pub h_assessed: f64,
    /// §5.2.1.
    pub chi_independence: ChiSquare,
    /// §5.2.2.
    pub chi_fit: ChiSquare,
    /// §5.2.4.
    pub lrs: IidLrs,
    /// §5.1.
    pub permutation: Permutation,
}

/// Run the IID track; `seed` seeds the shuffles (xoshiro256**).
pub fn iid(sym: &Symbols, seed: [u8; 32]) -> Iid {
    iid_with_progress(sym, seed, &mut |_| {})
}

/// [`iid`], calling `progress` with a description at every shuffle round
/// (a display should throttle itself).
pub fn iid_with_progress(sym: &Symbols, seed: [u8; 32], progress: &mut dyn FnMut(&str)) -> Iid {
    let ctx = Ctx::new(sym);
    progress("chi-square and LRS tests");
    let mut out = unshuffled(sym, &ctx);
    shuffle_tests(&ctx, sym, seed, &mut out.permutation, progress);
    out
}

/// Everything but the shuffles (their counts stay zero).
pub fn deterministic(sym: &Symbols) -> Iid {
    unshuffled(sym, &Ctx::new(sym))
}

fn unshuffled(sym: &Symbols, ctx: &Ctx) -> Iid {
    let n = sym.literal.len();
    let ws = f64::from(sym.word_size);
    let mcv_literal = mcv(&sym.literal, sym.alphabet);
    let mcv_bitstring = (!ctx.binary).then(|| mcv(&sym.bits, 2));
    let h_original = mcv_literal.h;
    let h_bitstring = mcv_bitstring.map_or(1.0, |m| m.h);
    let mut h_assessed = ws;
    if !ctx.binary {
        h_assessed = h_assessed.min(ws * h_bitstring);
    }
    h_assessed = h_assessed.min(h_original);
    let p = proportions(&sym.literal, sym.alphabet);
    let (chi_independence, chi_fit) = if ctx.binary {
        (binary_independence(&sym.literal), binary_fit(&sym.literal))
    } else {
        (independence(&sym.literal, &p), goodness_of_fit(&sym.literal, &p))
    };
    Iid {
        word_size: sym.word_size,
        alphabet: sym.alphabet,
        samples: n,
        raw_mean: ctx.raw_mean,
        median: ctx.median,
        binary: ctx.binary,
        mcv_literal,
        mcv_bitstring,
        h_original,
        h_bitstring,
        h_assessed,
        chi_independence,
        chi_fit,
        lrs: lrs_test(&sym.literal, &p),
        permutation: Permutation {
            unpermuted: statistics(ctx, &sym.literal, &sym.raw, &[true; 19]),
            counts: [[0; 3]; 19],
            rounds: 0,
        },
    }
}

/// `p[s]` built as the reference does: 1/n added once per occurrence.
fn proportions(data: &[u8], k: usize) -> Vec<f64> {
    let mut counts = vec![0u64; k.max(2)];
    for &s in data {
        counts[usize::from(s)] += 1;
    }
    let inc = 1.0 / data.len() as f64;
    counts
        .iter()
        .map(|&c| {
            let mut p = 0.0;
            for _ in 0..c {
                p += inc;
            }
            p
        })
        .collect()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod edge_tests {
    use super::*;

    #[test]
    fn tiny_inputs_finish() {
        for data in [vec![0u8, 1], vec![1, 0, 1], vec![3, 200], vec![0, 1, 2], vec![5, 5, 5, 9]] {
            let sym = Symbols::new(&data, None).unwrap();
            let r = iid(&sym, [1; 32]);
            assert!(r.permutation.rounds <= PERMUTATIONS);
        }
    }
}
