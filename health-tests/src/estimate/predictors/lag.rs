//! §6.3.8 Lag.

use super::{Prediction, Score, estimate};

/// §6.3.8 Lag: predict the symbol seen ℓ steps back, ℓ = 1..128.
pub(in crate::estimate) fn lag(d: &[u8], k: usize) -> Option<Prediction> {
    const D: usize = 128;
    let l = d.len();
    if l < 3 {
        return None;
    }
    if k == 2 {
        return Some(estimate(&lag_binary(d), (l - 1) as u64, k));
    }
    let mut board = [0u64; D + 1];
    let (mut winner, mut high) = (1usize, 0u64);
    let mut score = Score::default();
    for i in 1..l {
        let x = d[i];
        score.record(x == d[i - winner]);
        for lag in 1..=i.min(D) {
            if d[i - lag] == x {
                board[lag] += 1;
                if board[lag] >= high {
                    winner = lag;
                    high = board[lag];
                }
            }
        }
    }
    Some(estimate(&score, (l - 1) as u64, k))
}

/// Lag on 0/1 data, with the 128 scoreboards bit-sliced: lag ℓ is bit ℓ − 1
/// of each plane, and the planes hold each lag's deficit `high − score` in
/// binary, so the lags at the high score (deficit 0) and one below it
/// (deficit 1) are a few word operations away, and adding the lags that
/// matched is a carry chain that usually stops after a plane or two. The
/// winner rule is the sequential one of the general version, restated for a
/// whole step:
/// - if some matched lag was at the high score, the high score rises by one
///   and the largest such lag wins; every lag that did not match falls one
///   further behind;
/// - otherwise, if some matched lag was one below it, the largest such wins;
///   every matched lag comes one closer;
/// - otherwise the winner stays (the matched lags still come one closer).
fn lag_binary(d: &[u8]) -> Score {
    // Deficits stay below 2^32: at most 256 MiB of samples, 8 bits each.
    const PLANES: usize = 32;
    let mut planes = [0u128; PLANES];
    // Planes in use: every deficit is below 2^used.
    let mut used = 0usize;
    let mut winner = 1usize;
    let mut score = Score::default();
    // Bit ℓ − 1 holds the sample ℓ steps back.
    let mut hist = 0u128;
    for i in 1..d.len() {
        hist = (hist << 1) | u128::from(d[i - 1]);
        let x = d[i];
        score.record(x == d[i - winner]);
        let valid = if i >= 128 { u128::MAX } else { (1u128 << i) - 1 };
        let matched = if x == 1 { hist } else { !hist } & valid;
        if matched == 0 {
            continue;
        }
        let high_bits = planes[1..used.max(1)].iter().fold(0u128, |a, &p| a | p);
        let zero = !(planes[0] | high_bits);
        let leaders = zero & matched;
        if leaders != 0 {
            winner = 128 - leaders.leading_zeros() as usize;
            // Deficit + 1 for every lag that did not match.
            let mut carry = !matched;
            let mut k = 0;
            while carry != 0 {
                let p = planes[k];
                planes[k] = p ^ carry;
                carry &= p;
                k += 1;
            }
            // The last plane the carry reached now has a bit set.
            used = used.max(k);
        } else {
            let near = planes[0] & !high_bits & matched;
            if near != 0 {
                winner = 128 - near.leading_zeros() as usize;
            }
            // Deficit − 1 for every matched lag (each is at least 1).
            let mut borrow = matched;
            for plane in &mut planes[..used] {
                if borrow == 0 {
                    break;
                }
                let diff = *plane ^ borrow;
                borrow &= !*plane;
                *plane = diff;
            }
            while used > 0 && planes[used - 1] == 0 {
                used -= 1;
            }
        }
    }
    score
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The general Lag loop, kept as the reference for the bit-sliced one.
    fn lag_scalar(d: &[u8]) -> (u64, u64) {
        let mut board = [0u64; 129];
        let (mut winner, mut high) = (1usize, 0u64);
        let mut score = Score::default();
        for i in 1..d.len() {
            score.record(d[i] == d[i - winner]);
            for lag in 1..=i.min(128) {
                if d[i - lag] == d[i] {
                    board[lag] += 1;
                    if board[lag] >= high {
                        winner = lag;
                        high = board[lag];
                    }
                }
            }
        }
        (score.c, score.max_run)
    }

    #[test]
    fn bit_sliced_lag_matches_the_scalar_rule() {
        let mut x = 5u64;
        for (len, bias) in [(3usize, 0u64), (200, 0), (20_000, 0), (20_000, 3), (20_000, 60)] {
            let d: Vec<u8> = (0..len)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    // Some streams periodic, to make long lags win.
                    if bias > 0 && !x.is_multiple_of(4) {
                        ((i as u64 / bias) % 2) as u8
                    } else {
                        (x >> 63) as u8
                    }
                })
                .collect();
            let s = lag_binary(&d);
            assert_eq!((s.c, s.max_run), lag_scalar(&d), "len {len} bias {bias}");
        }
    }
}
