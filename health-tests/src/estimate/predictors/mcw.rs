//! §6.3.7 MultiMCW.

use super::{Prediction, Score, estimate};

/// §6.3.7 MultiMCW: most common value in windows of 63, 255, 1023, 4095.
pub(in crate::estimate) fn multi_mcw(d: &[u8], k: usize) -> Option<Prediction> {
    let l = d.len();
    if l < 4096 {
        return None;
    }
    let score = if k == 2 { mcw_binary(d) } else { mcw_general(d, k) };
    Some(estimate(&score, (l - 63) as u64, k))
}

const W: [usize; 4] = [63, 255, 1023, 4095];

fn mcw_general(d: &[u8], k: usize) -> Score {
    let l = d.len();
    let ks = k.max(2);
    let mut cnt = vec![[0u32; 4]; ks];
    let mut last = vec![[0usize; 4]; ks];
    let mut freq = [0u8; 4];
    let mut maxc = [0u32; 4];
    for i in 0..4095 {
        let s = usize::from(d[i]);
        for j in 0..4 {
            if i < W[j] {
                cnt[s][j] += 1;
                if maxc[j] <= cnt[s][j] {
                    maxc[j] = cnt[s][j];
                    freq[j] = d[i];
                }
                last[s][j] = i;
            }
        }
    }
    let mut board = [0u64; 4];
    let mut winner = 0usize;
    let mut score = Score::default();
    for i in 63..l {
        let x = d[i];
        score.record(freq[winner] == x);
        for j in 0..4 {
            if i >= W[j] && freq[j] == x {
                board[j] += 1;
                if board[j] >= board[winner] {
                    winner = j;
                }
            }
        }
        let xs = usize::from(x);
        for j in 0..4 {
            if i < W[j] {
                continue;
            }
            let out = d[i - W[j]];
            cnt[usize::from(out)][j] -= 1;
            cnt[xs][j] += 1;
            last[xs][j] = i;
            if out != freq[j] && maxc[j] <= cnt[xs][j] {
                freq[j] = x;
                maxc[j] = cnt[xs][j];
            } else if out == freq[j] {
                maxc[j] -= 1;
                let mut maxpos = i - W[j];
                for s in 0..ks {
                    if cnt[s][j] > maxc[j] || (cnt[s][j] == maxc[j] && last[s][j] >= maxpos) {
                        maxc[j] = cnt[s][j];
                        freq[j] = s as u8;
                        maxpos = last[s][j];
                    }
                }
            }
        }
    }
    score
}

/// MultiMCW on 0/1 data. The windows have odd lengths, so a full window's
/// two counts never tie and its most common value is its majority: the
/// count of ones in each window is all the state there is.
fn mcw_binary(d: &[u8]) -> Score {
    let l = d.len();
    // Ones in d[i - W[j]..i] (from 0 while the window is filling).
    let mut ones = [0u32; 4];
    for j in 0..4 {
        ones[j] = d[..63.min(W[j])].iter().map(|&b| u32::from(b)).sum();
    }
    let mut board = [0u64; 4];
    let mut winner = 0usize;
    let mut score = Score::default();
    for i in 63..l {
        let x = d[i];
        let mut pred = [0u8; 4];
        for j in 0..4 {
            pred[j] = u8::from(2 * ones[j] as usize > W[j]);
        }
        score.record(pred[winner] == x);
        for j in 0..4 {
            let right = i >= W[j] && pred[j] == x;
            board[j] += u64::from(right);
            let takes_over = right & (board[j] >= board[winner]);
            winner = if takes_over { j } else { winner };
        }
        for j in 0..4 {
            ones[j] += u32::from(x);
            if i >= W[j] {
                ones[j] -= u32::from(d[i - W[j]]);
            }
        }
    }
    score
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_mcw_matches_the_general_rule() {
        let mut x = 7u64;
        for (len, period) in [(4096usize, 0u64), (5000, 0), (60_000, 0), (60_000, 5), (60_000, 700)]
        {
            let d = super::super::test_stream(len, 2, period, 3, &mut x);
            let (a, b) = (mcw_binary(&d), mcw_general(&d, 2));
            assert_eq!((a.c, a.max_run), (b.c, b.max_run), "len {len} period {period}");
        }
    }
}
