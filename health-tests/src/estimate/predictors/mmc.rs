//! §6.3.9 MultiMMC.

use super::{Map, Node, Prediction, Score, estimate, key, suffix};

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
        // Branch-free where the outcome is a coin flip on random data.
        self.board[o] += u64::from(right);
        let takes_over = right & (self.board[o] >= self.board[self.winner]);
        self.winner = if takes_over { o } else { self.winner };
        if o == cur_winner {
            score.record(right);
        }
    }
}

/// §6.3.9 MultiMMC: Markov models of order 1..16, at most 100,000
/// (context, next) pairs each.
pub(in crate::estimate) fn multi_mmc(d: &[u8], k: usize) -> Option<Prediction> {
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
    // The (up to 16) symbols before i, the most recent in the low byte.
    let mut hist = u128::from(d[0]);
    for i in 2..l {
        hist = (hist << 8) | u128::from(d[i - 1]);
        let cur_winner = orders.winner;
        let x = d[i];
        let mut found = true;
        for o in 0..=ORDERS.saturating_sub(1).min(i - 2) {
            if !found && entries[o] >= MAX_ENTRIES {
                // Nothing to look up and no room to add: this order is done for i.
                continue;
            }
            let ctx = suffix(hist, o + 1);
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

/// MultiMMC on 0/1 data: each order's counts in a flat table indexed by the
/// context bits. Same rules as the general version; a binary context predicts
/// 1 on a tie.
///
/// An order's counts evolve independently of the other orders (its cap on
/// entries is its own), and only the scoreboard ties them together. So the
/// data is taken in chunks, and each order runs over a whole chunk on its own
/// table, leaving per sample whether it had the context and whether it
/// predicted right; a second pass feeds those bits through the scoreboard.
/// One table at a time stays in cache, where sixteen tables taken in turn at
/// every sample (1 MiB in all) did not.
fn multi_mmc_binary(d: &[u8]) -> Score {
    const ORDERS: usize = 16;
    const CHUNK: usize = 4096;
    let l = d.len();
    // counts[o][ctx][next], ctx = the o + 1 bits before, oldest first.
    let mut counts: Vec<Vec<[u32; 2]>> =
        (0..ORDERS).map(|o| vec![[0u32; 2]; 1 << (o + 1)]).collect();
    let mut entries = [0u32; ORDERS];
    let ctx_of = |end: usize, len: usize| {
        d[end - len..end].iter().fold(0usize, |a, &b| (a << 1) | usize::from(b))
    };
    for o in 0..ORDERS.min(l - 2) {
        counts[o][ctx_of(o + 1, o + 1)][usize::from(d[o + 1])] = 1;
        entries[o] = 1;
    }
    let mut board = [0u64; ORDERS];
    let (mut winner, mut winner_board) = (0usize, 0u64);
    let mut score = Score::default();
    // Per sample of the chunk: bit o = order o had the context, bit 16 + o =
    // it predicted right.
    let mut bits = vec![0u32; CHUNK];
    let mut start = 2;
    while start < l {
        let end = (start + CHUNK).min(l);
        bits[..end - start].fill(0);
        for o in 0..ORDERS {
            // Order o predicts from sample o + 2 on.
            let from = start.max(o + 2);
            if from < end {
                let hist = ctx_of(from, (o + 1).min(from));
                let out = &mut bits[from - start..end - start];
                order_pass(&mut counts[o], &mut entries[o], o, hist, &d[from..end], out);
            }
        }
        for &b in &bits[..end - start] {
            let present = b & 0xffff;
            // An order predicts only if every lower order had its context.
            let found = present & !(present + 1);
            let right = (b >> 16) & found;
            let cur_winner = winner;
            if found >> cur_winner & 1 == 1 {
                score.record(right >> cur_winner & 1 == 1);
            }
            // Orders::predicted for the right ones, lowest first; a wrong
            // prediction changes no score.
            let mut m = right;
            while m != 0 {
                let o = m.trailing_zeros() as usize;
                m &= m - 1;
                let b = board[o] + 1;
                board[o] = b;
                winner_board = if o == winner { b } else { winner_board };
                if b >= winner_board {
                    winner = o;
                    winner_board = b;
                }
            }
        }
        start = end;
    }
    score
}

/// One MultiMMC order over `d`: for each sample, set bit `o` of its `out`
/// word if the context (the low bits of `hist`) was known, and bit 16 + o if
/// its prediction was then right; count the sample under its context.
fn order_pass(
    table: &mut [[u32; 2]],
    entries: &mut u32,
    o: usize,
    mut hist: usize,
    d: &[u8],
    out: &mut [u32],
) {
    const MAX_ENTRIES: u32 = 100_000;
    let mask = table.len() - 1;
    assert!(table.len().is_power_of_two());
    for (w, &x) in out.iter_mut().zip(d) {
        let x = usize::from(x);
        let c = &mut table[hist & mask];
        let present = c[0] + c[1] > 0;
        let right = present & (usize::from(c[0] <= c[1]) == x);
        *w |= (u32::from(present) << o) | (u32::from(right) << (16 + o));
        if c[x] > 0 {
            c[x] += 1;
        } else if *entries < MAX_ENTRIES {
            c[x] = 1;
            *entries += 1;
        }
        hist = (hist << 1) | x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary variant sample by sample, all orders at once: the reference
    /// for the order-by-order one.
    fn multi_mmc_binary_sequential(d: &[u8]) -> Score {
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
        // The scoreboard, with the winner's score kept beside it so that the
        // winner rule does not wait on a load through `winner` at every order.
        let mut board = [0u64; ORDERS];
        let (mut winner, mut winner_board) = (0usize, 0u64);
        let mut score = Score::default();
        // The 16 bits before i, the most recent in bit 0.
        let mut hist = usize::from(d[0]);
        for i in 2..l {
            hist = ((hist << 1) | usize::from(d[i - 1])) & ((1 << ORDERS) - 1);
            let cur_winner = winner;
            let x = usize::from(d[i]);
            let mut found = true;
            for o in 0..=15usize.min(i - 2) {
                let ctx = hist & ((2 << o) - 1);
                let c = &mut counts[o][2 * ctx..2 * ctx + 2];
                found = found && (c[0] + c[1] > 0);
                if found {
                    // Orders::predicted, with board[winner] in a register.
                    let right = usize::from(c[0] <= c[1]) == x;
                    let b = board[o] + u64::from(right);
                    board[o] = b;
                    winner_board = if o == winner { b } else { winner_board };
                    let takes_over = right & (b >= winner_board);
                    winner = if takes_over { o } else { winner };
                    winner_board = if takes_over { b } else { winner_board };
                    if o == cur_winner {
                        score.record(right);
                    }
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

    #[test]
    fn order_by_order_matches_sample_by_sample() {
        let mut x = 13u64;
        for (len, period) in [
            (18usize, 0u64),
            (40, 0),
            (5000, 0),
            (4098, 0),
            (300_000, 0),
            (300_000, 7),
            (50_000, 1),
        ] {
            let d = super::super::test_stream(len, 2, period, 5, &mut x);
            let (a, b) = (multi_mmc_binary(&d), multi_mmc_binary_sequential(&d));
            assert_eq!((a.c, a.max_run), (b.c, b.max_run), "len {len} period {period}");
        }
    }
}
