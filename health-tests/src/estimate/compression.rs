//! Compression estimate (§6.3.4), binary data only.
//!
//! The reference tool keeps B^i in 80-bit long double; f64 with the same
//! summation order (Kahan) lands within about 1e-13 of it. log2(i) comes from a
//! table shared by the bisection's G evaluations (about 90 of them).

use std::cell::RefCell;

use super::{Compression, ZALPHA, bisect};

const B: usize = 6;
const D: usize = 1000;
/// Relative size below which the tail of G's series is dropped (2^-70).
const TAIL: f64 = 8.470_329_472_543_003e-22;

struct Kahan {
    sum: f64,
    comp: f64,
}

impl Kahan {
    fn new() -> Self {
        Self { sum: 0.0, comp: 0.0 }
    }

    fn add(&mut self, x: f64) {
        let y = x - self.comp;
        let t = self.sum + y;
        self.comp = (t - self.sum) - y;
        self.sum = t;
    }
}

pub(super) fn compression(d: &[u8]) -> Option<Compression> {
    let n = d.len() / B;
    if n <= D {
        return None;
    }
    let block =
        |i: usize| d[B * i..B * i + B].iter().fold(0usize, |a, &b| (a << 1) | usize::from(b & 1));
    let mut dict = [0usize; 64];
    for i in 0..D {
        dict[block(i)] = i + 1;
    }
    let v = n - D;
    let (mut x, mut s) = (Kahan::new(), Kahan::new());
    for i in D..n {
        let b = block(i);
        let dist = (i + 1) - dict[b];
        let l = (dist as f64).log2();
        x.add(l);
        s.add(l * l);
        dict[b] = i + 1;
    }
    let x_bar = x.sum / v as f64;
    let sigma = 0.5907 * (s.sum / (v as f64 - 1.0) - x_bar * x_bar).sqrt();
    let x_bar_prime = x_bar - (ZALPHA * sigma) / (v as f64).sqrt();

    // log2(i), extended as far as a G evaluation reaches (see below).
    let log2 = RefCell::new((0..=D).map(|i| (i as f64).log2()).collect::<Vec<f64>>());
    let log2_n = (n as f64).log2();
    let g = |z: f64| -> f64 {
        let mut log2 = log2.borrow_mut();
        let bterm = 1.0 - z;
        let mut bi = bterm;
        let mut a = Kahan::new();
        for l in &log2[2..=D] {
            a.add(l * bi);
            bi *= bterm;
        }
        let ad1 = a.sum;
        let mut f = Kahan::new();
        let mut truncated = false;
        for i in D + 1..n {
            if i == log2.len() {
                let grow = (i + 4096).min(n + 1);
                log2.extend((i..grow).map(|j| (j as f64).log2()));
            }
            let ai = log2[i] * bi;
            a.add(ai);
            let scaled = (n - i) as f64 * ai;
            if scaled > 0.0 {
                f.add(scaled);
            } else {
                truncated = true;
                break;
            }
            bi *= bterm;
            // The terms left are below log2(n)·B^i/z (for A) and n times that
            // (for F), a geometric tail. Once both are under 2^-70 of the
            // sums so far they cannot move an f64 result, and the loop stops
            // instead of crawling through denormals (B^i sticks at the
            // smallest one instead of reaching 0) to the end of the data.
            if i % 256 == 0 {
                let tail = log2_n * bi / z;
                if tail * n as f64 <= f.sum * TAIL && tail <= (a.sum - ad1) * TAIL {
                    truncated = true;
                    break;
                }
            }
        }
        f.add((n - D) as f64 * ad1);
        if !truncated {
            // log2_n, not the table: with n = D + 1 the loop above never ran
            // and the table stops at D.
            a.add(log2_n * bi);
        }
        ((1.0 / v as f64) * z) * (z * f.sum + (a.sum - ad1))
    };
    let expected = |p: f64| g(p) + 63.0 * g((1.0 - p) / 63.0);
    let ldom = 1.0 / 64.0;
    let p = if expected(ldom) > x_bar_prime {
        bisect(expected, x_bar_prime, ldom, 1.0, ldom)
    } else {
        -1.0
    };
    let (p, h) = if p > ldom { (p, -p.log2() / B as f64) } else { (ldom, 1.0) };
    Some(Compression { x_bar, sigma, x_bar_prime, p, h })
}
