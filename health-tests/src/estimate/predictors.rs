//! Predictor estimates (§6.3.7–§6.3.10) and their shared bound (§6.3.7 step 5+).

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

use super::{ZALPHA, bisect};

/// Contexts are packed into a u128 that no attacker chooses the layout of
/// (they are the caller's own samples, hashed once per run); SipHash's
/// flooding resistance buys nothing here and costs half the run time.
#[derive(Default)]
struct ContextHasher(u64);

impl Hasher for ContextHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(23) ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u128(&mut self, x: u128) {
        self.write_u64(x as u64);
        self.write_u64((x >> 64) as u64);
        self.0 ^= self.0 >> 29;
    }
}

type Map = HashMap<u128, Node, BuildHasherDefault<ContextHasher>>;

/// What a predictor found and the min-entropy it implies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    /// Correct predictions of the winning sub-predictor, C.
    pub c: u64,
    /// Longest run of correct predictions plus one, r.
    pub r: u64,
    /// Predictions made, N.
    pub n: u64,
    /// P_global = C / N.
    pub p_global: f64,
    /// Its 99% upper bound P_global'.
    pub p_global_prime: f64,
    /// P_local, where it raises the bound.
    pub p_local: Option<f64>,
    /// Min-entropy per symbol.
    pub h: f64,
}

/// Tally of correct predictions and runs.
#[derive(Default)]
struct Score {
    c: u64,
    run: u64,
    max_run: u64,
}

impl Score {
    fn hit(&mut self) {
        self.c += 1;
        self.run += 1;
        self.max_run = self.max_run.max(self.run);
    }

    fn miss(&mut self) {
        self.run = 0;
    }
}

/// `predictionEstimate` of the reference tool: the larger of P_global' and
/// P_local, floored at 1/k.
fn estimate(score: &Score, n: u64, k: usize) -> Prediction {
    let (c, r) = (score.c, score.max_run + 1);
    let nf = n as f64;
    let p_global = c as f64 / nf;
    let p_global_prime = if p_global > 0.0 {
        (p_global + ZALPHA * ((p_global * (1.0 - p_global)) / (nf - 1.0)).sqrt()).min(1.0)
    } else {
        1.0 - 0.01f64.powf(1.0 / nf)
    };
    let mut cur = (1.0 / k as f64).max(p_global_prime);
    let log_alpha = 0.99f64.ln();
    let mut p_local = None;
    if cur < 1.0 && pef(cur, r, n) > log_alpha {
        let p = bisect(|p| pef(p, r, n), log_alpha, cur, 1.0, 1.0);
        p_local = Some(p);
        cur = cur.max(p);
    }
    Prediction { c, r, n, p_global, p_global_prime, p_local, h: -cur.log2() }
}

/// ln P(longest run < r in N predictions with success probability p), the
/// function whose root is P_local (SP 800-90B §6.3.7), in x − 1 form so that
/// neither p^r (far below f64's range) nor 1 − x loses precision.
fn pef(p: f64, r: u64, n: u64) -> f64 {
    let q = 1.0 - p;
    let (rf, ln_p, ln_q) = (r as f64, p.ln(), q.ln());
    // x = 1 + q·p^r·x^(r+1), iterated from x = 1 as the reference does.
    let mut y = 0.0f64;
    for _ in 0..66 {
        let next = (ln_q + rf * ln_p + (rf + 1.0) * y.ln_1p()).exp();
        let done = next - y <= (1.0 + next) * f64::EPSILON / 2048.0;
        y = next;
        if done {
            break;
        }
    }
    (q - p * y).ln() - ((1.0 - rf * y) * q).ln() - (n as f64 + 1.0) * y.ln_1p()
}

/// §6.3.7 MultiMCW: most common value in windows of 63, 255, 1023, 4095.
pub(super) fn multi_mcw(d: &[u8], k: usize) -> Option<Prediction> {
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

/// §6.3.8 Lag: predict the symbol seen ℓ steps back, ℓ = 1..128.
pub(super) fn lag(d: &[u8], k: usize) -> Option<Prediction> {
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

/// Next-symbol counts under one context, with the running prediction
/// (highest count, ties to the larger symbol). The first symbol is stored
/// inline: most contexts of random data are seen once, and an allocation per
/// context dominated the run time.
struct Node {
    first: (u8, u32),
    rest: Vec<(u8, u32)>,
    best: (u8, u32),
}

impl Node {
    fn with(sym: u8) -> Self {
        Self { first: (sym, 1), rest: Vec::new(), best: (sym, 1) }
    }

    /// Count `sym`; returns whether it was a new (context, symbol) pair.
    fn bump(&mut self, sym: u8, allow_new: bool) -> bool {
        let c = if self.first.0 == sym {
            self.first.1 += 1;
            self.first.1
        } else {
            match self.rest.iter_mut().find(|e| e.0 == sym) {
                Some(e) => {
                    e.1 += 1;
                    e.1
                }
                None if allow_new => {
                    self.rest.push((sym, 1));
                    1
                }
                None => return false,
            }
        };
        if c > self.best.1 || (c == self.best.1 && sym > self.best.0) {
            self.best = (sym, c);
        }
        c == 1
    }
}

fn key(ctx: &[u8]) -> u128 {
    ctx.iter().fold(0u128, |a, &b| (a << 8) | u128::from(b))
}

/// MultiMMC's scoreboard over its 16 orders and the current winner.
#[derive(Default)]
struct Orders {
    board: [u64; 16],
    winner: usize,
}

impl Orders {
    /// Order `o` made a prediction, right or not; `cur_winner` was the winner
    /// when this sample's predictions began. Only the winner's predictions
    /// count for C and the runs; a later order that ties the winner's score
    /// takes over (§6.3.9).
    fn predicted(&mut self, o: usize, right: bool, cur_winner: usize, score: &mut Score) {
        if right {
            self.board[o] += 1;
            if self.board[o] >= self.board[self.winner] {
                self.winner = o;
            }
            if o == cur_winner {
                score.hit();
            }
        } else if o == cur_winner {
            score.miss();
        }
    }
}

/// §6.3.9 MultiMMC: Markov models of order 1..16, at most 100,000
/// (context, next) pairs each.
pub(super) fn multi_mmc(d: &[u8], k: usize) -> Option<Prediction> {
    const ORDERS: usize = 16;
    const MAX_ENTRIES: usize = 100_000;
    let l = d.len();
    if l < 3 || (k == 2 && l < 18) {
        return None;
    }
    let n = l - 2;
    if k == 2 {
        return Some(estimate(&multi_mmc_binary(d), n as u64, k));
    }
    let mut maps: Vec<Map> = (0..ORDERS).map(|_| Map::default()).collect();
    let mut entries = [0usize; ORDERS];
    for o in 0..ORDERS.min(n) {
        maps[o].insert(key(&d[..=o]), Node::with(d[o + 1]));
        entries[o] = 1;
    }
    let mut orders = Orders::default();
    let mut score = Score::default();
    for i in 2..l {
        let cur_winner = orders.winner;
        let x = d[i];
        let mut found = true;
        for o in 0..=ORDERS.saturating_sub(1).min(i - 2) {
            if !found && entries[o] >= MAX_ENTRIES {
                // Nothing to look up and no room to add: this order is done for i.
                continue;
            }
            let ctx = key(&d[i - o - 1..i]);
            let node = if found { maps[o].get_mut(&ctx) } else { None };
            found = node.is_some();
            match node {
                Some(node) => {
                    orders.predicted(o, node.best.0 == x, cur_winner, &mut score);
                    if node.bump(x, entries[o] < MAX_ENTRIES) {
                        entries[o] += 1;
                    }
                }
                None => {
                    if entries[o] < MAX_ENTRIES {
                        maps[o].insert(ctx, Node::with(x));
                        entries[o] += 1;
                    }
                }
            }
        }
    }
    Some(estimate(&score, n as u64, k))
}

/// §6.3.10 LZ78Y: contexts of length 1..16, at most 65,536 contexts in all.
pub(super) fn lz78y(d: &[u8], k: usize) -> Option<Prediction> {
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
    for i in B + 1..l {
        let x = d[i];
        let (mut have, mut max_count, mut pred) = (false, 0u32, 0u8);
        for j in (1..=B).rev() {
            let ctx = key(&d[i - j..i]);
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
        if have && pred == x {
            score.hit();
        } else {
            score.miss();
        }
    }
    Some(estimate(&score, (l - B - 1) as u64, k))
}

/// MultiMMC on 0/1 data: each order's counts in a flat table indexed by the
/// context bits. Same rules as the general version; a binary context predicts
/// 1 on a tie.
fn multi_mmc_binary(d: &[u8]) -> Score {
    const ORDERS: usize = 16;
    const MAX_ENTRIES: u32 = 100_000;
    let l = d.len();
    // counts[o][2 * ctx + next], ctx = the o + 1 bits before, oldest first.
    let mut counts: Vec<Vec<u32>> = (0..ORDERS).map(|o| vec![0u32; 2 << (o + 1)]).collect();
    let mut entries = [0u32; ORDERS];
    let ctx_of = |end: usize, len: usize| {
        d[end - len..end].iter().fold(0usize, |a, &b| (a << 1) | usize::from(b))
    };
    for o in 0..ORDERS.min(l - 2) {
        counts[o][2 * ctx_of(o + 1, o + 1) + usize::from(d[o + 1])] = 1;
        entries[o] = 1;
    }
    let mut orders = Orders::default();
    let mut score = Score::default();
    // The 16 bits before i, the most recent in bit 0.
    let mut hist = usize::from(d[0]);
    for i in 2..l {
        hist = ((hist << 1) | usize::from(d[i - 1])) & ((1 << ORDERS) - 1);
        let cur_winner = orders.winner;
        let x = usize::from(d[i]);
        let mut found = true;
        for o in 0..=15usize.min(i - 2) {
            let ctx = hist & ((2 << o) - 1);
            let c = &mut counts[o][2 * ctx..2 * ctx + 2];
            found = found && (c[0] + c[1] > 0);
            if found {
                let pred = usize::from(c[0] <= c[1]);
                orders.predicted(o, pred == x, cur_winner, &mut score);
            }
            if c[x] > 0 {
                c[x] += 1;
            } else if entries[o] < MAX_ENTRIES {
                c[x] = 1;
                entries[o] += 1;
            }
        }
    }
    score
}

/// LZ78Y on 0/1 data: contexts of length j in a flat table of 2^j slots.
fn lz78y_binary(d: &[u8]) -> Score {
    const B: usize = 16;
    const MAX_DICT: usize = 65_536;
    let l = d.len();
    // [count0, count1, present] per context.
    let mut tables: Vec<Vec<[u32; 3]>> = (0..=B).map(|j| vec![[0u32; 3]; 1 << j]).collect();
    let ctx_of = |end: usize, len: usize| {
        d[end - len..end].iter().fold(0usize, |a, &b| (a << 1) | usize::from(b))
    };
    for j in 1..=B {
        let e = &mut tables[j][ctx_of(B, j)];
        e[usize::from(d[B])] = 1;
        e[2] = 1;
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
        for j in (1..=B).rev() {
            let e = &mut tables[j][hist & ((1 << j) - 1)];
            if e[2] == 1 {
                // Highest count, ties to the larger symbol.
                let (y, c) = if e[1] >= e[0] { (1, e[1]) } else { (0, e[0]) };
                if c > max_count {
                    max_count = c;
                    pred = y;
                    have = true;
                }
                e[x] += 1;
            } else if size < MAX_DICT {
                e[x] = 1;
                e[2] = 1;
                size += 1;
            }
        }
        if have && pred == x {
            score.hit();
        } else {
            score.miss();
        }
    }
    score
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
