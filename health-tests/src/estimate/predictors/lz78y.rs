//! §6.3.10 LZ78Y.

use super::{Map, Node, Prediction, Score, estimate, key, suffix};

/// §6.3.10 LZ78Y: contexts of length 1..16, at most 65,536 contexts in all.
pub(in crate::estimate) fn lz78y(d: &[u8], k: usize) -> Option<Prediction> {
    const B: usize = 16;
    const MAX_DICT: usize = 65_536;
    let l = d.len();
    if l < 18 || (k == 2 && l < 19) {
        return None;
    }
    if k == 2 {
        return Some(estimate(&lz78y_binary(d), (l - B - 1) as u64, k));
    }
    let mut maps: Vec<Map> = (0..=B).map(|_| Map::default()).collect();
    for j in 1..=B {
        maps[j].insert(key(&d[B - j..B]), Node::with(d[B]));
    }
    let mut size = B;
    let mut score = Score::default();
    // The 16 symbols before i, the most recent in the low byte.
    let mut hist = key(&d[1..=B]);
    for i in B + 1..l {
        if i > B + 1 {
            hist = (hist << 8) | u128::from(d[i - 1]);
        }
        let x = d[i];
        let (mut have, mut max_count, mut pred) = (false, 0u32, 0u8);
        for j in (1..=B).rev() {
            let ctx = suffix(hist, j);
            match maps[j].get_mut(&ctx) {
                Some(node) => {
                    if node.best.1 > max_count {
                        max_count = node.best.1;
                        pred = node.best.0;
                        have = true;
                    }
                    node.bump(x, true);
                }
                None => {
                    if size < MAX_DICT {
                        maps[j].insert(ctx, Node::with(x));
                        size += 1;
                    }
                }
            }
        }
        score.record(have && pred == x);
    }
    Some(estimate(&score, (l - B - 1) as u64, k))
}

/// LZ78Y on 0/1 data: contexts of length j in a flat table of 2^j slots,
/// each the pair of next-bit counts (a context is in the dictionary iff a
/// count is non-zero: entering it counts its first successor).
fn lz78y_binary(d: &[u8]) -> Score {
    const B: usize = 16;
    const MAX_DICT: usize = 65_536;
    let l = d.len();
    let mut tables: Vec<Vec<[u32; 2]>> = (0..=B).map(|j| vec![[0u32; 2]; 1 << j]).collect();
    let ctx_of = |end: usize, len: usize| {
        d[end - len..end].iter().fold(0usize, |a, &b| (a << 1) | usize::from(b))
    };
    for j in 1..=B {
        tables[j][ctx_of(B, j)][usize::from(d[B])] = 1;
    }
    let mut size = B;
    let mut score = Score::default();
    let mut hist = ctx_of(B + 1, B);
    for i in B + 1..l {
        if i > B + 1 {
            hist = ((hist << 1) | usize::from(d[i - 1])) & ((1 << B) - 1);
        }
        let x = usize::from(d[i]);
        let (mut have, mut max_count, mut pred) = (false, 0u32, 0usize);
        let full = size == MAX_DICT;
        for j in (1..=B).rev() {
            let e = &mut tables[j][hist & ((1 << j) - 1)];
            let present = e[0] + e[1] > 0;
            if present || full {
                // Branch-free: once the dictionary is full, whether a long
                // context is in it is a coin flip on random data.
                // Highest count, ties to the larger symbol.
                let (y, c) = if e[1] >= e[0] { (1, e[1]) } else { (0, e[0]) };
                let better = present & (c > max_count);
                max_count = if better { c } else { max_count };
                pred = if better { y } else { pred };
                have |= better;
                e[x] += u32::from(present);
            } else if size < MAX_DICT {
                e[x] = 1;
                size += 1;
            }
        }
        score.record(have && pred == x);
    }
    score
}
