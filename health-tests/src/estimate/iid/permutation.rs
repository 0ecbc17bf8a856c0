//! SP 800-90B §5.1 permutation tests: the 19 statistics of an arrangement of
//! the samples, and the shuffles (up to [`PERMUTATIONS`]) that rank them.

use std::io::Write;

use super::{PERMUTATIONS, Permutation};
use crate::estimate::Symbols;

const LAGS: [usize; 5] = [1, 2, 8, 16, 32];

/// What the statistics of every arrangement need of the unshuffled data.
pub(super) struct Ctx {
    pub(super) binary: bool,
    k: usize,
    pub(super) median: f64,
    pub(super) raw_mean: f64,
    /// raw_mean = mean_mant / 2^mean_shift exactly.
    mean_mant: i128,
    mean_shift: i32,
}

impl Ctx {
    pub(super) fn new(sym: &Symbols) -> Self {
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
pub(super) fn statistics(ctx: &Ctx, data: &[u8], raw: &[u8], active: &[bool; 19]) -> [f64; 19] {
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
pub(super) fn shuffle_tests(
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
