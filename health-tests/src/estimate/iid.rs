//! SP 800-90B §5: the IID track, as NIST's `ea_iid` 1.1.7 runs it.
//!
//! - §5.1 permutation tests: 19 statistics on the data and on up to 10,000
//!   shuffles; a statistic is decided once more than five shuffles rank on
//!   each side of (or tie with) the original, and the data passes only if
//!   every statistic is decided;
//! - §5.2.1/§5.2.2 chi-square independence and goodness-of-fit tests;
//! - §5.2.4 longest-repeated-substring test;
//! - the IID min-entropy: the MCV estimate (§6.3.1) on the literal symbols
//!   and on the bitstring.

use std::io::Write;

use super::{Mcv, Symbols, simple::mcv, tuple::tuple_counts};

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
const LAGS: [usize; 5] = [1, 2, 8, 16, 32];

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

struct Ctx {
    binary: bool,
    k: usize,
    median: f64,
    raw_mean: f64,
    /// raw_mean = mean_mant / 2^mean_shift exactly.
    mean_mant: i128,
    mean_shift: i32,
}

impl Ctx {
    fn new(sym: &Symbols) -> Self {
        let n = sym.raw.len();
        let sum: i64 = sym.raw.iter().map(|&b| i64::from(b)).sum();
        let raw_mean = sum as f64 / n as f64;
        let binary = sym.alphabet == 2;
        let median = if binary {
            0.5
        } else {
            let mut v = sym.literal.clone();
            v.sort_unstable();
            if n % 2 == 1 {
                f64::from(v[n / 2])
            } else {
                (f64::from(v[n / 2]) + f64::from(v[n / 2 - 1])) / 2.0
            }
        };
        let (mean_mant, mean_shift) = exact(raw_mean);
        Self { binary, k: sym.alphabet, median, raw_mean, mean_mant, mean_shift }
    }
}

/// x = m / 2^s with integer m, for a finite non-negative double.
fn exact(x: f64) -> (i128, i32) {
    if x == 0.0 {
        return (0, 0);
    }
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let (mant, e) = if exp == 0 { (frac, -1074) } else { (frac | (1 << 52), exp - 1075) };
    if e >= 0 { (i128::from(mant) << e, 0) } else { (i128::from(mant), -e) }
}

/// The 19 statistics of one arrangement; inactive ones are 0.
fn statistics(ctx: &Ctx, data: &[u8], raw: &[u8], active: &[bool; 19]) -> [f64; 19] {
    let mut t = [0.0f64; 19];
    let conv1;
    let conv2;
    let (x1, x2, xc, table): (&[u8], &[u8], &[u8], usize) = if ctx.binary {
        conv1 = data.chunks(8).map(|c| c.iter().sum::<u8>()).collect::<Vec<u8>>();
        conv2 = data
            .chunks(8)
            .map(|c| c.iter().enumerate().fold(0u8, |a, (i, &b)| a | (b << (7 - i))))
            .collect::<Vec<u8>>();
        (&conv1, &conv2, &conv1, 256)
    } else {
        (data, data, raw, ctx.k)
    };
    if active[0] {
        t[0] = excursion(ctx, raw);
    }
    if active[1] || active[2] || active[3] {
        let n = x1.len().saturating_sub(1);
        let up = |i: usize| x1[i] <= x1[i + 1];
        let (runs, longest, ups) = runs_of((0..n).map(up), n);
        t[1] = runs as f64;
        t[2] = longest as f64;
        t[3] = ups.max(n as u64 - ups) as f64;
    }
    if active[4] || active[5] {
        let med = ctx.median;
        let (runs, longest, _) = runs_of(data.iter().map(|&v| f64::from(v) >= med), data.len());
        t[4] = runs as f64;
        t[5] = longest as f64;
    }
    if active[6] || active[7] {
        let (sum, count, max) = collisions(x2, table);
        t[6] = f64::from(sum as i32) / f64::from(count as i32);
        t[7] = max as f64;
    }
    for (j, &p) in LAGS.iter().enumerate() {
        if active[8 + j] {
            t[8 + j] =
                (0..x1.len().saturating_sub(p)).filter(|&i| x1[i] == x1[i + p]).count() as f64;
        }
        if active[13 + j] {
            let s: u64 = (0..xc.len().saturating_sub(p))
                .map(|i| u64::from(xc[i]) * u64::from(xc[i + p]))
                .sum();
            t[13 + j] = s as f64;
        }
    }
    if active[18] {
        t[18] = compressed_len(raw) as f64;
    }
    t
}

/// max_i |S_i − (i+1)·mean|, rounded once, as the reference computes it.
fn excursion(ctx: &Ctx, raw: &[u8]) -> f64 {
    let (m, s) = (ctx.mean_mant, ctx.mean_shift);
    let mut v: i128 = 0;
    let mut max: i128 = 0;
    for &x in raw {
        v += (i128::from(x) << s) - m;
        max = max.max(v.abs());
    }
    (max as f64) * (-f64::from(s)).exp2()
}

/// (number of runs, longest run, count of `true`) of a ±1 sequence.
fn runs_of(seq: impl Iterator<Item = bool>, len: usize) -> (u64, u64, u64) {
    if len == 0 {
        return (0, 1, 0);
    }
    let (mut runs, mut longest, mut cur, mut trues) = (1u64, 1u64, 0u64, 0u64);
    let mut prev = None;
    for s in seq {
        trues += u64::from(s);
        match prev {
            Some(p) if p == s => cur += 1,
            Some(_) => {
                runs += 1;
                cur = 1;
            }
            None => cur = 1,
        }
        longest = longest.max(cur);
        prev = Some(s);
    }
    (runs, longest, trues)
}

/// (Σ, count, max) of the collision-window lengths.
fn collisions(x: &[u8], table: usize) -> (u64, u64, u64) {
    let mut seen = vec![false; table.max(256)];
    let (mut i, mut sum, mut count, mut max) = (0usize, 0u64, 0u64, 0u64);
    'outer: while i < x.len() {
        let mut j = 0;
        loop {
            if i + j >= x.len() {
                break 'outer;
            }
            let v = usize::from(x[i + j]);
            if seen[v] {
                let len = (j + 1) as u64;
                sum += len;
                count += 1;
                max = max.max(len);
                for &y in &x[i..i + j] {
                    seen[usize::from(y)] = false;
                }
                i += j + 1;
                break;
            }
            seen[v] = true;
            j += 1;
        }
    }
    (sum, count, max)
}

/// bzip2 (level 5) length of the values written in decimal, space-separated.
fn compressed_len(raw: &[u8]) -> usize {
    let mut text = Vec::with_capacity(raw.len() * 4);
    for (i, &v) in raw.iter().enumerate() {
        if i > 0 {
            text.push(b' ');
        }
        let _ = write!(text, "{v}");
    }
    let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(5));
    let ok = enc.write_all(&text).is_ok();
    match (ok, enc.finish()) {
        (true, Ok(out)) => out.len(),
        _ => 0,
    }
}

/// Shuffle (Fisher–Yates, xoshiro256** with Lemire's bounded draw) and count.
fn shuffle_tests(
    ctx: &Ctx,
    sym: &Symbols,
    seed: [u8; 32],
    perm: &mut Permutation,
    progress: &mut dyn FnMut(&str),
) {
    let mut rng = Xoshiro::from_seed(seed);
    // Ranked symbol and raw value move together: shuffle them as one u16,
    // which halves the random memory traffic of the swaps.
    let mut packed: Vec<u16> = sym
        .literal
        .iter()
        .zip(&sym.raw)
        .map(|(&d, &r)| (u16::from(r) << 8) | u16::from(d))
        .collect();
    let mut data = vec![0u8; packed.len()];
    let mut raw = vec![0u8; packed.len()];
    let mut active = [true; 19];
    for _ in 0..PERMUTATIONS {
        if !active.iter().any(|&a| a) {
            break;
        }
        for i in (1..packed.len()).rev() {
            let r = rng.range(i as u64) as usize;
            packed.swap(r, i);
        }
        for ((d, r), &p) in data.iter_mut().zip(raw.iter_mut()).zip(&packed) {
            *d = p as u8;
            *r = (p >> 8) as u8;
        }
        perm.rounds += 1;
        let open = active.iter().filter(|&&a| a).count();
        progress(&format!(
            "permutation round {} of at most {PERMUTATIONS}, {open} of 19 statistics undecided",
            perm.rounds
        ));
        let t = statistics(ctx, &data, &raw, &active);
        for j in 0..19 {
            if !active[j] {
                continue;
            }
            let c = &mut perm.counts[j];
            if t[j] > perm.unpermuted[j] {
                c[0] += 1;
            } else if t[j] == perm.unpermuted[j] {
                c[1] += 1;
            } else {
                c[2] += 1;
            }
            if c[0] + c[1] > 5 && c[1] + c[2] > 5 {
                active[j] = false;
            }
        }
    }
}

struct Xoshiro([u64; 4]);

impl Xoshiro {
    fn from_seed(seed: [u8; 32]) -> Self {
        let mut s = [0u64; 4];
        for (i, c) in seed.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            s[i] = u64::from_le_bytes(b);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Self(s)
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in [0, s] (Lemire).
    fn range(&mut self, s: u64) -> u64 {
        let mut x = self.next();
        if s == u64::MAX {
            return x;
        }
        let s = s + 1;
        let mut m = u128::from(x) * u128::from(s);
        let mut l = m as u64;
        if l < s {
            let t = s.wrapping_neg() % s;
            while l < t {
                x = self.next();
                m = u128::from(x) * u128::from(s);
                l = m as u64;
            }
        }
        (m >> 64) as u64
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

/// Bin expectations sorted by (E, tuple): a bin closes once it holds ≥ 5; a
/// last bin under 5 merges into the one before. Returns the bin of each tuple
/// and the bins' expectations.
fn bins(expected: &[f64]) -> (Vec<usize>, Vec<f64>) {
    let mut order: Vec<usize> = (0..expected.len()).collect();
    order.sort_by(|&a, &b| expected[a].total_cmp(&expected[b]).then(a.cmp(&b)));
    let mut bin_of = vec![0usize; expected.len()];
    let mut bins = Vec::new();
    let mut cur = 0.0f64;
    let mut members: Vec<usize> = Vec::new();
    for &e in &order {
        if cur >= 5.0 {
            bins.push(cur);
            cur = 0.0;
            members.clear();
        }
        bin_of[e] = bins.len();
        members.push(e);
        cur += expected[e];
    }
    if !bins.is_empty() && cur < 5.0 {
        let last = bins.len() - 1;
        bins[last] += cur;
        for &m in &members {
            bin_of[m] = last;
        }
    } else {
        bins.push(cur);
    }
    (bin_of, bins)
}

fn chi(observed: &[f64], expected: &[f64]) -> f64 {
    observed.iter().zip(expected).map(|(o, e)| (o - e).powi(2) / e).sum()
}

fn result(t: f64, df: i64) -> ChiSquare {
    ChiSquare { t, df, p: igamc(df as f64 / 2.0, t / 2.0) }
}

fn independence(data: &[u8], p: &[f64]) -> ChiSquare {
    let k = p.len();
    let n = data.len();
    let half = (n as f64 * 0.5).floor();
    let expected: Vec<f64> = (0..k * k).map(|t| p[t / k] * p[t % k] * half).collect();
    let (bin_of, bins) = bins(&expected);
    let mut observed = vec![0.0f64; bins.len()];
    let mut j = 0;
    while j + 1 < n {
        observed[bin_of[usize::from(data[j]) * k + usize::from(data[j + 1])]] += 1.0;
        j += 2;
    }
    result(chi(&observed, &bins), bins.len() as i64 - k as i64)
}

fn goodness_of_fit(data: &[u8], p: &[f64]) -> ChiSquare {
    let n = data.len();
    let tenth = (n as f64 / 10.0).floor();
    let expected: Vec<f64> = p.iter().map(|&x| x * tenth).collect();
    let (bin_of, bins) = bins(&expected);
    let b = n / 10;
    let mut t = 0.0;
    for block in data.chunks_exact(b.max(1)).take(10) {
        let mut observed = vec![0.0f64; bins.len()];
        for &s in block {
            observed[bin_of[usize::from(s)]] += 1.0;
        }
        t += chi(&observed, &bins);
    }
    result(t, 9 * (bins.len() as i64 - 1))
}

fn binary_independence(data: &[u8]) -> ChiSquare {
    let n = data.len();
    let p1 = data.iter().map(|&b| f64::from(b)).sum::<f64>() / n as f64;
    let p0 = 1.0 - p1;
    let minp = p0.min(p1);
    let mut m = 11usize;
    while m > 1 {
        if minp.powi(m as i32) * (n / m) as f64 >= 5.0 {
            break;
        }
        m -= 1;
    }
    if m == 1 {
        return ChiSquare { t: 0.0, df: 0, p: 1.0 };
    }
    let blocks = n / m;
    let mut occ = vec![0u64; 1 << m];
    for c in data.chunks_exact(m).take(blocks) {
        occ[c.iter().fold(0usize, |a, &b| (a << 1) | usize::from(b))] += 1;
    }
    let mut t = 0.0;
    for (i, &o) in occ.iter().enumerate() {
        let w = i.count_ones() as i32;
        let e = p1.powi(w) * p0.powi(m as i32 - w) * blocks as f64;
        t += (o as f64 - e).powi(2) / e;
    }
    result(t, (1i64 << m) - 2)
}

fn binary_fit(data: &[u8]) -> ChiSquare {
    let n = data.len();
    let sub = n / 10;
    let ones = data.iter().filter(|&&b| b == 1).count() as f64;
    let p = ones / n as f64;
    let (e0, e1) = ((1.0 - p) * sub as f64, p * sub as f64);
    let mut t = 0.0;
    for block in data.chunks_exact(sub.max(1)).take(10) {
        let o1 = block.iter().filter(|&&b| b == 1).count() as f64;
        let o0 = sub as f64 - o1;
        t += (o0 - e0).powi(2) / e0 + (o1 - e1).powi(2) / e1;
    }
    result(t, 9)
}

fn lrs_test(data: &[u8], p: &[f64]) -> IidLrs {
    let p_col: f64 = p.iter().map(|x| x * x).sum();
    let w = (tuple_counts(data).0.len() - 1) as u64;
    if p_col > 1.0 - f64::EPSILON / 2048.0 {
        return IidLrs { p_col: 1.0, w, pr: 1.0, passed: true };
    }
    let m = (data.len() as u64 - w + 1) as f64;
    let pairs = (m * m - m) / 2.0;
    let log_no = (-p_col.powi(w as i32)).ln_1p();
    let passed = 0.999f64.ln() >= pairs * log_no;
    IidLrs { p_col, w, pr: -(pairs * log_no).exp_m1(), passed }
}

/// Upper regularised incomplete gamma Q(a, x) (Cephes `igamc` algorithm).
fn igamc(a: f64, x: f64) -> f64 {
    const MACHEP: f64 = 1.110_223_024_625_156_5e-16;
    const BIG: f64 = 4.503_599_627_370_496e15;
    const BIGINV: f64 = 2.220_446_049_250_313e-16;
    if x.is_nan() || a.is_nan() {
        // A statistic from too few samples (an empty expected bin): no p-value.
        return f64::NAN;
    }
    if x <= 0.0 || a <= 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    if x < 1.0 || x < a {
        return 1.0 - igam(a, x);
    }
    let ax = a.mul_add(x.ln(), -x) - libm::lgamma(a);
    if ax < -709.782_712_893_384 {
        return 0.0;
    }
    let ax = ax.exp();
    let (mut y, mut z, mut c) = (1.0 - a, x + (1.0 - a) + 1.0, 0.0);
    let (mut pkm2, mut qkm2, mut pkm1, mut qkm1) = (1.0, x, x + 1.0, z * x);
    let mut ans = pkm1 / qkm1;
    // Converges in tens of steps for the arguments the tests produce; the
    // cap only guards against a pathological input.
    for _ in 0..100_000 {
        c += 1.0;
        y += 1.0;
        z += 2.0;
        let yc = y * c;
        let pk = pkm1.mul_add(z, -(pkm2 * yc));
        let qk = qkm1.mul_add(z, -(qkm2 * yc));
        let t = if qk != 0.0 {
            let r = pk / qk;
            let t = ((ans - r) / r).abs();
            ans = r;
            t
        } else {
            1.0
        };
        pkm2 = pkm1;
        pkm1 = pk;
        qkm2 = qkm1;
        qkm1 = qk;
        if pk.abs() > BIG {
            pkm2 *= BIGINV;
            pkm1 *= BIGINV;
            qkm2 *= BIGINV;
            qkm1 *= BIGINV;
        }
        if t <= MACHEP {
            break;
        }
    }
    ans * ax
}

fn igam(a: f64, x: f64) -> f64 {
    const MACHEP: f64 = 1.110_223_024_625_156_5e-16;
    if x <= 0.0 || a <= 0.0 {
        return 0.0;
    }
    if x > 1.0 && x > a {
        return 1.0 - igamc(a, x);
    }
    let ax = a.mul_add(x.ln(), -x) - libm::lgamma(a);
    if ax < -709.782_712_893_384 {
        return 0.0;
    }
    let ax = ax.exp();
    let (mut r, mut c, mut ans) = (a, 1.0, 1.0);
    for _ in 0..100_000 {
        r += 1.0;
        c *= x / r;
        ans += c;
        if c / ans <= MACHEP {
            break;
        }
    }
    ans * ax / a
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod edge_tests {
    use super::*;

    #[test]
    fn igamc_handles_bad_arguments() {
        assert!(igamc(4.5, f64::NAN).is_nan());
        assert_eq!(igamc(4.5, f64::INFINITY), 0.0);
        assert_eq!(igamc(0.0, 3.0), 1.0);
        // Q(1, x) = e^-x.
        assert!((igamc(1.0, 2.0) - (-2.0f64).exp()).abs() < 1e-15);
    }

    #[test]
    fn tiny_inputs_finish() {
        for data in [vec![0u8, 1], vec![1, 0, 1], vec![3, 200], vec![0, 1, 2], vec![5, 5, 5, 9]] {
            let sym = Symbols::new(&data, None).unwrap();
            let r = iid(&sym, [1; 32]);
            assert!(r.permutation.rounds <= PERMUTATIONS);
        }
    }
}
