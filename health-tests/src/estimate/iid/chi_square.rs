//! SP 800-90B §5.2.1/§5.2.2 chi-square tests: independence and goodness of
//! fit, for non-binary and binary data, with their p-values from the upper
//! regularised incomplete gamma function.

use super::ChiSquare;

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

pub(super) fn independence(data: &[u8], p: &[f64]) -> ChiSquare {
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

pub(super) fn goodness_of_fit(data: &[u8], p: &[f64]) -> ChiSquare {
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

pub(super) fn binary_independence(data: &[u8]) -> ChiSquare {
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

pub(super) fn binary_fit(data: &[u8]) -> ChiSquare {
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
mod tests {
    use super::*;

    #[test]
    fn igamc_handles_bad_arguments() {
        assert!(igamc(4.5, f64::NAN).is_nan());
        assert_eq!(igamc(4.5, f64::INFINITY), 0.0);
        assert_eq!(igamc(0.0, 3.0), 1.0);
        // Q(1, x) = e^-x.
        assert!((igamc(1.0, 2.0) - (-2.0f64).exp()).abs() < 1e-15);
    }
}
