//! t-Tuple (§6.3.5) and LRS (§6.3.6) estimates from one suffix array.
//!
//! `Q[t]` (the count of the most common t-tuple) and `S[t]` (Σ C(count, 2) over
//! all t-tuples, i.e. pairs of equal t-tuples) are read off the LCP intervals
//! of the suffix array: an interval of `size` suffixes with LCP h, whose parent
//! interval has LCP h', is one group of equal t-tuples for every t in (h', h].

use super::ZALPHA;

/// Occurrences the most common t-tuple needs for t to count (§6.3.5).
const CUTOFF: u64 = 35;

/// t-Tuple estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TupleResult {
    /// The largest t whose most common t-tuple occurs at least 35 times.
    pub t: u64,
    /// p̂_max.
    pub p_hat_max: f64,
    /// p_u.
    pub p_u: f64,
    /// Min-entropy per symbol.
    pub h: f64,
}

/// LRS estimate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrsResult {
    /// The smallest t whose most common t-tuple occurs fewer than 35 times.
    pub u: u64,
    /// Length of the longest repeated substring.
    pub v: u64,
    /// p̂.
    pub p_hat: f64,
    /// p_u.
    pub p_u: f64,
    /// Min-entropy per symbol.
    pub h: f64,
}

/// Both estimates; each is `None` where the reference tool fails it.
pub(super) fn tuple_and_lrs(d: &[u8]) -> (Option<TupleResult>, Option<LrsResult>) {
    let n = d.len();
    if n < 2 {
        return (None, None);
    }
    let (q, s) = tuple_counts(d);
    let v = q.len() - 1;
    if v == 0 {
        return (None, None);
    }
    let u = (1..=v).find(|&t| q[t] < CUTOFF).unwrap_or(v + 1);
    let bound = |p: f64| (p + ZALPHA * (p * (1.0 - p) / (n as f64 - 1.0)).sqrt()).min(1.0);
    let tuple = (u > 1).then(|| {
        let mut pmax = -1.0f64;
        for (i, &qi) in q.iter().enumerate().take(u).skip(1) {
            let p = (qi as f64 / (n - i + 1) as f64).powf(1.0 / i as f64);
            if p > pmax {
                pmax = p;
            }
        }
        let p_u = bound(pmax);
        TupleResult { t: (u - 1) as u64, p_hat_max: pmax, p_u, h: -p_u.log2() }
    });
    let lrs = (v >= u).then(|| {
        let mut pmax = 0.0f64;
        for (i, &si) in s.iter().enumerate().take(v + 1).skip(u) {
            let choices = ((n - i) as u128 * (n - i + 1) as u128 / 2) as f64;
            let p = (si as f64 / choices).powf(1.0 / i as f64);
            if pmax < p {
                pmax = p;
            }
        }
        let p_u = bound(pmax);
        LrsResult { u: u as u64, v: v as u64, p_hat: pmax, p_u, h: -p_u.log2() }
    });
    (tuple, lrs)
}

/// `Q[t]` and `S[t]` for t = 0..=v (index 0 unused), v = longest repeated substring.
pub(super) fn tuple_counts(d: &[u8]) -> (Vec<u64>, Vec<u64>) {
    if d.len() >= 1024
        && d.iter().all(|&b| b <= 1)
        && let Some(counts) = binary_tuple_counts(d)
    {
        return counts;
    }
    suffix_array_counts(d)
}

/// Bits per window in the binary fast path.
const WIDTH: usize = 64;

/// The same counts for 0/1 data whose longest repeat is shorter than 64 bits
/// (any random bitstring of realistic length): every position's next 64 bits
/// as a u64, sorted, stand in for the suffix array, and the LCP of neighbours
/// is a count of leading zeros. The last 63 positions, too short for a full
/// window, are added per t by binary search. `None` if a repeat reaches 64.
fn binary_tuple_counts(d: &[u8]) -> Option<(Vec<u64>, Vec<u64>)> {
    let n = d.len();
    let m = n - (WIDTH - 1);
    let mut keys = Vec::with_capacity(m);
    let mut w = d[..WIDTH].iter().fold(0u64, |a, &b| (a << 1) | u64::from(b));
    keys.push(w);
    for p in 1..m {
        w = (w << 1) | u64::from(d[p + WIDTH - 1]);
        keys.push(w);
    }
    keys.sort_unstable();
    let mut lcp = vec![0usize; m];
    for i in 1..m {
        let l = (keys[i - 1] ^ keys[i]).leading_zeros() as usize;
        if l >= WIDTH {
            return None;
        }
        lcp[i] = l;
    }
    let (mut q, mut s) = interval_counts(&lcp, WIDTH);
    // Every full window occurs at least once for every t.
    for qt in q.iter_mut().skip(1) {
        *qt = (*qt).max(1);
    }
    // The tails: position p covers t ≤ n − p.
    for t in 1..=WIDTH {
        let mut extra: Vec<u64> = (m..n)
            .filter(|&p| n - p >= t)
            .map(|p| d[p..p + t].iter().fold(0u64, |a, &b| (a << 1) | u64::from(b)))
            .collect();
        extra.sort_unstable();
        for group in extra.chunk_by(|a, b| a == b) {
            let e = group.len() as u64;
            let lo = group[0] << (WIDTH - t);
            let hi = lo | (u64::MAX >> t);
            let c = (keys.partition_point(|&k| k <= hi) - keys.partition_point(|&k| k < lo)) as u64;
            let total = c + e;
            s[t] += total * (total - 1) / 2 - c * c.saturating_sub(1) / 2;
            q[t] = q[t].max(total);
        }
    }
    let v = (1..=WIDTH).rev().find(|&t| q[t] >= 2).unwrap_or(0);
    if v >= WIDTH {
        return None;
    }
    q.truncate(v + 1);
    s.truncate(v + 1);
    Some((q, s))
}

/// `Q` and `S` from an LCP array over sorted suffixes (`lcp[i]` relates
/// entries i − 1 and i), for t = 0..=max (index 0 unused).
fn interval_counts(lcp: &[usize], max: usize) -> (Vec<u64>, Vec<u64>) {
    let n = lcp.len();
    // best[h]: largest interval with LCP exactly h; ds: difference array for S.
    let mut best = vec![0u64; max + 2];
    let mut ds = vec![0i128; max + 2];
    let mut stack: Vec<(usize, usize)> = vec![(0, 0)];
    for i in 1..=n {
        let cur = if i < n { lcp[i] } else { 0 };
        let mut lb = i - 1;
        while let Some(&(top_h, top_lb)) = stack.last() {
            if cur >= top_h {
                break;
            }
            stack.pop();
            let size = (i - top_lb) as u64;
            let parent = cur.max(stack.last().map_or(0, |x| x.0));
            best[top_h] = best[top_h].max(size);
            let pairs = i128::from(size) * i128::from(size - 1) / 2;
            ds[parent + 1] += pairs;
            ds[top_h + 1] -= pairs;
            lb = top_lb;
        }
        if stack.last().is_none_or(|&(top_h, _)| cur > top_h) {
            stack.push((cur, lb));
        }
    }
    let mut q = vec![0u64; max + 1];
    let mut run = 0u64;
    for t in (1..=max).rev() {
        run = run.max(best[t]);
        q[t] = run;
    }
    let mut s = vec![0u64; max + 1];
    let mut acc = 0i128;
    for t in 1..=max {
        acc += ds[t];
        s[t] = acc as u64;
    }
    (q, s)
}

/// The general path: suffix array (divsufsort) and Kasai's LCP.
fn suffix_array_counts(d: &[u8]) -> (Vec<u64>, Vec<u64>) {
    let n = d.len();
    let sa: Vec<usize> =
        divsufsort::sort(d).into_parts().1.into_iter().map(|x| x as usize).collect();
    // Kasai: lcp[i] = LCP(suffix sa[i-1], suffix sa[i]).
    let mut rank = vec![0usize; n];
    for (i, &p) in sa.iter().enumerate() {
        rank[p] = i;
    }
    let mut lcp = vec![0usize; n];
    let mut h = 0usize;
    for p in 0..n {
        let r = rank[p];
        if r > 0 {
            let j = sa[r - 1];
            while p + h < n && j + h < n && d[p + h] == d[j + h] {
                h += 1;
            }
            lcp[r] = h;
            h = h.saturating_sub(1);
        } else {
            h = 0;
        }
    }
    drop(rank);
    let v = lcp.iter().copied().max().unwrap_or(0);
    interval_counts(&lcp, v)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn binary_fast_path_matches_suffix_array() {
        let mut x = 99u64;
        for len in [1024usize, 5000, 100_003] {
            let d: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 63) as u8
                })
                .collect();
            assert_eq!(binary_tuple_counts(&d), Some(suffix_array_counts(&d)), "len {len}");
        }
        // A repeat of 64 bits or more falls back.
        let mut d = vec![0u8; 2000];
        d[1000..1100].fill(1);
        d[1500..1600].fill(1);
        assert_eq!(binary_tuple_counts(&d), None);
        assert_eq!(tuple_counts(&d), suffix_array_counts(&d));
    }

    #[test]
    fn counts_match_brute_force() {
        let mut x = 7u32;
        let d: Vec<u8> = (0..3000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 3) as u8
            })
            .collect();
        let (q, s) = suffix_array_counts(&d);
        let v = q.len() - 1;
        for t in 1..=v + 1 {
            let mut m: HashMap<&[u8], u64> = HashMap::new();
            for w in d.windows(t) {
                *m.entry(w).or_default() += 1;
            }
            let qmax = m.values().copied().max().unwrap();
            let pairs: u64 = m.values().map(|c| c * (c - 1) / 2).sum();
            if t <= v {
                assert_eq!(q[t], qmax, "Q[{t}]");
                assert_eq!(s[t], pairs, "S[{t}]");
            } else {
                assert_eq!(qmax, 1, "nothing repeats beyond v");
            }
        }
    }
}
