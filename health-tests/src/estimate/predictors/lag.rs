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
        if x == d[i - winner] {
            score.hit();
        } else {
            score.miss();
        }
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

/// Lag on 0/1 data. The 128 scoreboards are kept as bit-sliced counters (one
/// u128 per bit of the score, lag ℓ in bit ℓ − 1), so adding the lags that
/// matched is a few word operations, and so is finding the lags whose score
/// equals the high score. The winner rule is the sequential one of the
/// general version, restated for a whole step:
/// - if some matched lag was at the high score, the high score rises by one
///   and the largest such lag wins;
/// - otherwise, if some matched lag was one below it, the largest such wins;
/// - otherwise the winner stays.
fn lag_binary(d: &[u8]) -> Score {
    // Scores stay below 2^32: at most 256 MiB of samples, 8 bits each.
    const PLANES: usize = 32;
    let mut planes = [0u128; PLANES];
    let equal = |planes: &[u128; PLANES], value: u64| -> u128 {
        let mut eq = u128::MAX;
        for (b, &plane) in planes.iter().enumerate() {
            eq &= if (value >> b) & 1 == 1 { plane } else { !plane };
        }
        eq
    };
    let (mut winner, mut high) = (1usize, 0u64);
    let mut score = Score::default();
    // Bit ℓ − 1 holds the sample ℓ steps back.
    let mut hist = 0u128;
    for i in 1..d.len() {
        hist = (hist << 1) | u128::from(d[i - 1]);
        let x = d[i];
        if x == d[i - winner] {
            score.hit();
        } else {
            score.miss();
        }
        let valid = if i >= 128 { u128::MAX } else { (1u128 << i) - 1 };
        let matched = if x == 1 { hist } else { !hist } & valid;
        if matched == 0 {
            continue;
        }
        let leaders = equal(&planes, high) & matched;
        if leaders != 0 {
            high += 1;
            winner = 128 - leaders.leading_zeros() as usize;
        } else if high > 0 {
            let near = equal(&planes, high - 1) & matched;
            if near != 0 {
                winner = 128 - near.leading_zeros() as usize;
            }
        }
        // planes += matched, bit-sliced.
        let mut carry = matched;
        for plane in &mut planes {
            if carry == 0 {
                break;
            }
            let sum = *plane ^ carry;
            carry &= *plane;
            *plane = sum;
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
            if d[i] == d[i - winner] {
                score.hit();
            } else {
                score.miss();
            }
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
