//! MCV (§6.3.1), Collision (§6.3.2) and Markov (§6.3.3).

use super::{Collision, Markov, Mcv, ZALPHA};

/// §6.3.1: p_u = min(1, p̂ + Z·sqrt(p̂(1−p̂)/(L−1))).
pub(crate) fn mcv(data: &[u8], k: usize) -> Mcv {
    let mut counts = vec![0u64; k.max(256)];
    for &s in data {
        counts[usize::from(s)] += 1;
    }
    let mode = counts.iter().copied().max().unwrap_or(0);
    let l = data.len() as f64;
    let p_hat = mode as f64 / l;
    let p_u = (p_hat + ZALPHA * ((p_hat * (1.0 - p_hat)) / (l - 1.0)).sqrt()).min(1.0);
    Mcv { mode, p_hat, p_u, h: -p_u.log2() }
}

/// §6.3.2, in the reference tool's closed form: X̄' = −2p² + 2p + 2.
pub(super) fn collision(d: &[u8]) -> Option<Collision> {
    let l = d.len();
    let (mut i, mut v, mut s) = (0usize, 0u64, 0.0f64);
    while i + 1 < l {
        let t = if d[i] == d[i + 1] {
            2
        } else if i + 2 < l {
            3
        } else {
            break;
        };
        v += 1;
        s += f64::from(t * t);
        i += t as usize;
    }
    if v < 2 {
        return None;
    }
    let x_bar = i as f64 / v as f64;
    let sigma = ((s - i as f64 * x_bar) / (v - 1) as f64).sqrt();
    let x_bar_prime = (x_bar - (ZALPHA * sigma) / (v as f64).sqrt()).max(2.0);
    let (p, h) = if x_bar_prime < 2.5 {
        let p = 0.5 + (1.25 - 0.5 * x_bar_prime).sqrt();
        (p, -p.log2())
    } else {
        (0.5, 1.0)
    };
    Some(Collision { v, sum_t: i as u64, x_bar, sigma, x_bar_prime, p, h })
}

/// §6.3.3: the most likely 128-bit sequence under a first-order Markov model.
pub(super) fn markov(d: &[u8]) -> Markov {
    let l = d.len();
    let (mut c0, mut c00, mut c10) = (0u64, 0u64, 0u64);
    for w in d.windows(2) {
        if w[0] == 0 {
            c0 += 1;
            c00 += u64::from(w[1] == 0);
        } else {
            c10 += u64::from(w[1] == 0);
        }
    }
    let c1 = (l as u64 - 1) - c0;
    let (p00, p01) = if c0 > 0 {
        let p = c00 as f64 / c0 as f64;
        (p, 1.0 - p)
    } else {
        (0.0, 0.0)
    };
    let (p10, p11) = if c1 > 0 {
        let p = c10 as f64 / c1 as f64;
        (p, 1.0 - p)
    } else {
        (0.0, 0.0)
    };
    if d.last() == Some(&0) {
        c0 += 1;
    }
    let p0 = c0 as f64 / l as f64;
    let p1 = 1.0 - p0;
    let mut h = 128.0f64;
    if p00 > 0.0 {
        h = h.min(-p0.log2() - 127.0 * p00.log2());
    }
    if p01 > 0.0 && p10 > 0.0 {
        h = h.min(-p0.log2() - 64.0 * p01.log2() - 63.0 * p10.log2());
    }
    if p01 > 0.0 && p11 > 0.0 {
        h = h.min(-p0.log2() - p01.log2() - 126.0 * p11.log2());
    }
    if p10 > 0.0 && p00 > 0.0 {
        h = h.min(-p1.log2() - p10.log2() - 126.0 * p00.log2());
    }
    if p10 > 0.0 && p01 > 0.0 {
        h = h.min(-p1.log2() - 64.0 * p10.log2() - 63.0 * p01.log2());
    }
    if p11 > 0.0 {
        h = h.min(-p1.log2() - 127.0 * p11.log2());
    }
    Markov {
        p0,
        p1,
        transitions: [p00, p01, p10, p11],
        p_hat_max: (-h).exp2(),
        h: (h / 128.0).min(1.0),
    }
}
