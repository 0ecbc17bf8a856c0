//! §6.3.8 Lag.

use super::{Prediction, Score, estimate};

/// §6.3.8 Lag: predict the symbol seen ℓ steps back, ℓ = 1..128.
pub(in crate::estimate) fn lag(d: &[u8], k: usize) -> Option<Prediction> {
    let l = d.len();
    if l < 3 {
        return None;
    }
    let score = if k == 2 { lag_binary(d) } else { lag_symbols(d, k) };
    Some(estimate(&score, (l - 1) as u64, k))
}

/// Lags 1..=128.
const D: u32 = 128;

/// `m` aged by `by` steps: bit ℓ − 1 moves to bit ℓ − 1 + by, and lags past
/// 128 drop out.
fn aged(m: u128, by: usize) -> u128 {
    if by >= D as usize { 0 } else { m << by }
}

/// Lag on symbols. For each symbol, a mask of the lags at which it was seen
/// (bit ℓ − 1), kept as of the step it was last seen and aged on use, gives
/// the lags that predicted each sample in two word operations; only those
/// (about 128/k of them) touch the scoreboard. The winner rule is that of the
/// sequential scan over lags 1..=128, which depends only on the set of lags
/// that matched (`high` is always the highest score):
/// - a matched lag at the high score raises it by one, and the largest such
///   lag wins;
/// - otherwise the largest matched lag one below the high score wins;
/// - otherwise the winner stays.
fn lag_symbols(d: &[u8], k: usize) -> Score {
    // Per symbol: (lags it was seen at, the step that mask is for).
    let mut seen = vec![(0u128, 0usize); k.max(256)];
    let mut board = [0u64; D as usize + 1];
    let (mut winner, mut high) = (1usize, 0u64);
    let mut score = Score::default();
    for i in 1..d.len() {
        let y = usize::from(d[i - 1]);
        let (m, at) = seen[y];
        seen[y] = (aged(m, i - at) | 1, i);
        let x = d[i];
        score.record(x == d[i - winner]);
        let (m, at) = seen[usize::from(x)];
        let mut matched = aged(m, i - at);
        let (mut leader, mut near) = (0usize, 0usize);
        while matched != 0 {
            let lag = matched.trailing_zeros() as usize + 1;
            matched &= matched - 1;
            let b = board[lag];
            if b == high {
                leader = lag;
            } else if b + 1 == high {
                near = lag;
            }
            board[lag] = b + 1;
        }
        if leader != 0 {
            high += 1;
            winner = leader;
        } else if near != 0 {
            winner = near;
        }
    }
    score
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

    /// The sequential Lag loop of SP 800-90B, the reference for the fast ones.
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
            let d = super::super::test_stream(len, 2, bias, 4, &mut x);
            let s = lag_binary(&d);
            assert_eq!((s.c, s.max_run), lag_scalar(&d), "len {len} bias {bias}");
        }
    }

    #[test]
    fn masked_lag_matches_the_scalar_rule() {
        let mut x = 11u64;
        for (len, k, period) in [
            (3usize, 3u64, 0u64),
            (300, 3, 0),
            (20_000, 3, 0),
            (20_000, 16, 0),
            (20_000, 256, 0),
            (20_000, 16, 37),
            (20_000, 256, 130),
            (20_000, 200, 1),
        ] {
            let d = super::super::test_stream(len, k, period, 4, &mut x);
            let s = lag_symbols(&d, k as usize);
            assert_eq!((s.c, s.max_run), lag_scalar(&d), "len {len} k {k} period {period}");
        }
    }
}
