//! Predictor estimates (§6.3.7–§6.3.10) and their shared bound (§6.3.7 step 5+).

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

use super::{ZALPHA, bisect};

mod lag;
mod lz78y;
mod mcw;
mod mmc;

pub(super) use lag::lag;
pub(super) use lz78y::lz78y;
pub(super) use mcw::multi_mcw;
pub(super) use mmc::multi_mmc;

/// Contexts are packed into a u128 that no attacker chooses the layout of
/// (they are the caller's own samples, hashed once per run); SipHash's
/// flooding resistance buys nothing here and costs half the run time.
#[derive(Default)]
struct ContextHasher(u64);

impl Hasher for ContextHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(23) ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u128(&mut self, x: u128) {
        self.write_u64(x as u64);
        self.write_u64((x >> 64) as u64);
        self.0 ^= self.0 >> 29;
    }
}

type Map = HashMap<u128, Node, BuildHasherDefault<ContextHasher>>;

/// What a predictor found and the min-entropy it implies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// Correct predictions of the winning sub-predictor, C.
    pub c: u64,
    /// Longest run of correct predictions plus one, r.
    pub r: u64,
    /// Predictions made, N.
    pub n: u64,
    /// P_global = C / N.
    pub p_global: f64,
    /// Its 99% upper bound P_global'.
    pub p_global_prime: f64,
    /// P_local, where it raises the bound.
    pub p_local: Option<f64>,
    /// Min-entropy per symbol.
    pub h: f64,
}

/// Tally of correct predictions and runs.
#[derive(Default)]
struct Score {
    c: u64,
    run: u64,
    max_run: u64,
}

impl Score {
    /// Record one prediction. Branch-free: on random data whether a
    /// prediction is right is a coin flip, and a mispredicted branch per
    /// sample was a large part of every predictor's time.
    fn record(&mut self, right: bool) {
        let r = u64::from(right);
        self.c += r;
        self.run = (self.run + 1) * r;
        self.max_run = self.max_run.max(self.run);
    }
}

/// `predictionEstimate` of the reference tool: the larger of P_global' and
/// P_local, floored at 1/k.
fn estimate(score: &Score, n: u64, k: usize) -> Prediction {
    let (c, r) = (score.c, score.max_run + 1);
    let nf = n as f64;
    let p_global = c as f64 / nf;
    let p_global_prime = if p_global > 0.0 {
        (p_global + ZALPHA * ((p_global * (1.0 - p_global)) / (nf - 1.0)).sqrt()).min(1.0)
    } else {
        1.0 - 0.01f64.powf(1.0 / nf)
    };
    let mut cur = (1.0 / k as f64).max(p_global_prime);
    let log_alpha = 0.99f64.ln();
    let mut p_local = None;
    if cur < 1.0 && pef(cur, r, n) > log_alpha {
        let p = bisect(|p| pef(p, r, n), log_alpha, cur, 1.0, 1.0);
        p_local = Some(p);
        cur = cur.max(p);
    }
    Prediction { c, r, n, p_global, p_global_prime, p_local, h: -cur.log2() }
}

/// ln P(longest run < r in N predictions with success probability p), the
/// function whose root is P_local (SP 800-90B §6.3.7), in x − 1 form so that
/// neither p^r (far below f64's range) nor 1 − x loses precision.
fn pef(p: f64, r: u64, n: u64) -> f64 {
    let q = 1.0 - p;
    let (rf, ln_p, ln_q) = (r as f64, p.ln(), q.ln());
    // x = 1 + q·p^r·x^(r+1), iterated from x = 1 as the reference does.
    let mut y = 0.0f64;
    for _ in 0..66 {
        let next = (ln_q + rf * ln_p + (rf + 1.0) * y.ln_1p()).exp();
        let done = next - y <= (1.0 + next) * f64::EPSILON / 2048.0;
        y = next;
        if done {
            break;
        }
    }
    (q - p * y).ln() - ((1.0 - rf * y) * q).ln() - (n as f64 + 1.0) * y.ln_1p()
}

/// Next-symbol counts under one context, with the running prediction
/// (highest count, ties to the larger symbol).
struct Node {
    best: (u8, u32),
    counts: Counts,
}

/// Most contexts of random data are seen once, so the first successor is
/// stored inline (an allocation per context dominated the run time); a
/// context with many successors (short contexts of 8-bit data have up to
/// 256) gets a table instead of a list to search.
enum Counts {
    One(u8, u32),
    Few(Vec<(u8, u32)>),
    Dense(Box<[u32; 256]>),
}

/// Successors a list holds before it becomes a table.
const FEW: usize = 12;

impl Node {
    fn with(sym: u8) -> Self {
        Self { best: (sym, 1), counts: Counts::One(sym, 1) }
    }

    /// Count `sym`; returns whether it was a new (context, symbol) pair.
    /// With `allow_new` false, a symbol not seen under this context is not
    /// counted.
    fn bump(&mut self, sym: u8, allow_new: bool) -> bool {
        let c = match &mut self.counts {
            Counts::One(s, c) if *s == sym => {
                *c += 1;
                *c
            }
            Counts::One(..) if !allow_new => return false,
            Counts::One(s, c) => {
                self.counts = Counts::Few(vec![(*s, *c), (sym, 1)]);
                1
            }
            Counts::Few(v) => match v.iter().position(|e| e.0 == sym) {
                Some(at) => {
                    v[at].1 += 1;
                    v[at].1
                }
                None if !allow_new => return false,
                None if v.len() < FEW => {
                    v.push((sym, 1));
                    1
                }
                None => {
                    let mut t = Box::new([0u32; 256]);
                    for &(s, c) in v.iter() {
                        t[usize::from(s)] = c;
                    }
                    t[usize::from(sym)] = 1;
                    self.counts = Counts::Dense(t);
                    1
                }
            },
            Counts::Dense(t) => {
                let e = &mut t[usize::from(sym)];
                if *e == 0 && !allow_new {
                    return false;
                }
                *e += 1;
                *e
            }
        };
        if c > self.best.1 || (c == self.best.1 && sym > self.best.0) {
            self.best = (sym, c);
        }
        c == 1
    }
}

/// The last `len` symbols of a history that holds the most recent symbol in
/// its low byte: the same key [`key`] gives the slice.
fn suffix(hist: u128, len: usize) -> u128 {
    if len >= 16 { hist } else { hist & ((1u128 << (8 * len)) - 1) }
}

fn key(ctx: &[u8]) -> u128 {
    ctx.iter().fold(0u128, |a, &b| (a << 8) | u128::from(b))
}

/// A test stream for the fast paths: `len` symbols of 0..k from a xorshift
/// generator whose state is `x`; with `period > 0`, all but one sample in
/// `mix` follow a square wave instead (`i / period mod k`), so that long
/// lags, contexts and windows win.
#[cfg(test)]
fn test_stream(len: usize, k: u64, period: u64, mix: u64, x: &mut u64) -> Vec<u8> {
    (0..len)
        .map(|i| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            if period > 0 && !x.is_multiple_of(mix) {
                ((i as u64 / period) % k) as u8
            } else if k == 2 {
                (*x >> 63) as u8
            } else {
                ((*x >> 32) % k) as u8
            }
        })
        .collect()
}
