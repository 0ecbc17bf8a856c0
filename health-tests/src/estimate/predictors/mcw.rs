//! §6.3.7 MultiMCW.

use super::{Prediction, Score, estimate};

/// §6.3.7 MultiMCW: most common value in windows of 63, 255, 1023, 4095.
pub(in crate::estimate) fn multi_mcw(d: &[u8], k: usize) -> Option<Prediction> {
    const W: [usize; 4] = [63, 255, 1023, 4095];
    let l = d.len();
    if l < 4096 {
        return None;
    }
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
        if freq[winner] == x {
            score.hit();
        } else {
            score.miss();
        }
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
    Some(estimate(&score, (l - 63) as u64, k))
}
