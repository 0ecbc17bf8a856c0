//! Repetition Count Test, SP 800-90B §4.4.1.

use crate::{Severity, Trip};

/// How many samples the fast path looks at per step. A block with no two equal
/// neighbours cannot extend a run, so it is skipped with one vector compare.
const BLOCK: usize = 32;

/// Running state of the Repetition Count Test with two cutoffs.
///
/// `run` counts how many times the most recent sample value has repeated,
/// including itself (the spec's B). As in §4.4.1, every sample with B ≥ C is a
/// failure: intermittent from the intermittent cutoff on, permanent from the
/// permanent cutoff on.
#[derive(Clone, Copy)]
pub struct Rct {
    intermittent: u32,
    permanent: u32,
    mask: u8,
    last: Option<u8>,
    run: u32,
}

impl Rct {
    /// A fresh test. `mask` keeps the sample's symbol bits.
    pub fn new(intermittent: u32, permanent: u32, mask: u8) -> Self {
        Self { intermittent, permanent, mask, last: None, run: 0 }
    }

    /// The current run length B.
    pub fn run(&self) -> u32 {
        self.run
    }

    /// Process `samples` in order. Stops right after the first sample that
    /// reaches a cutoff and reports it; otherwise consumes all of them.
    pub fn scan(&mut self, samples: &[u8]) -> Option<Trip> {
        let mut i = 0;
        while i < samples.len() {
            let end = (i + BLOCK).min(samples.len());
            let block = &samples[i..end];
            if self.mask == u8::MAX && self.last.is_some() && block.len() == BLOCK {
                // Fast path for full-width samples: if no sample equals its
                // predecessor, every run restarts and nothing can trip.
                let prev = self.last.unwrap_or_default();
                let mut eq = u8::from(block[0] == prev);
                for k in 1..BLOCK {
                    eq |= u8::from(block[k] == block[k - 1]);
                }
                if eq == 0 {
                    self.last = Some(block[BLOCK - 1]);
                    self.run = 1;
                    i = end;
                    continue;
                }
            }
            for (k, &raw) in block.iter().enumerate() {
                let x = raw & self.mask;
                if self.last == Some(x) {
                    self.run = self.run.saturating_add(1);
                    let severity = if self.run >= self.permanent {
                        Some(Severity::Permanent)
                    } else if self.run >= self.intermittent {
                        Some(Severity::Intermittent)
                    } else {
                        None
                    };
                    if let Some(severity) = severity {
                        return Some(Trip { index: i + k, severity });
                    }
                } else {
                    self.last = Some(x);
                    self.run = 1;
                }
            }
            i = end;
        }
        None
    }
}

/// Shows cutoffs and run length, never the sample value.
impl std::fmt::Debug for Rct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rct")
            .field("intermittent", &self.intermittent)
            .field("permanent", &self.permanent)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_past_the_cutoff_trips() {
        let mut rct = Rct::new(4, 6, 0xff);
        let mut s = vec![1u8, 2, 3];
        s.extend([7; 10]);
        let t = rct.scan(&s).unwrap();
        // Samples 3,4,5,6 are the first four 7s.
        assert_eq!(t, Trip { index: 6, severity: Severity::Intermittent });
        // B = 5 ≥ C: the next 7 fails again.
        assert_eq!(rct.scan(&s[7..]).unwrap(), Trip { index: 0, severity: Severity::Intermittent });
        assert_eq!(rct.scan(&s[8..]).unwrap(), Trip { index: 0, severity: Severity::Permanent });
        assert_eq!(rct.scan(&s[9..]).unwrap(), Trip { index: 0, severity: Severity::Permanent });
        // A new value ends the run.
        assert!(rct.scan(&[8, 9]).is_none());
        assert!(!format!("{rct:?}").contains("last"), "no sample values in Debug");
    }

    #[test]
    fn run_spans_calls_and_blocks() {
        let mut rct = Rct::new(5, 9, 0xff);
        let mut s: Vec<u8> = (0..31).collect();
        s.extend([200; 3]);
        assert!(rct.scan(&s).is_none());
        assert_eq!(rct.run(), 3);
        let t = rct.scan(&[200, 200]).unwrap();
        assert_eq!(t.index, 1);
    }

    #[test]
    fn mask_ignores_high_bits() {
        let mut rct = Rct::new(3, 5, 0b1);
        assert_eq!(rct.scan(&[0x11, 0x21, 0xf1]).unwrap().index, 2);
    }

    #[test]
    fn fast_path_agrees_with_scalar() {
        // A pseudo-random stream with planted runs, scanned whole and byte by byte.
        let mut x = 0x1234_5678_u32;
        let mut s = Vec::new();
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            s.push((x >> 24) as u8);
            if i % 5000 == 4999 {
                s.extend([9; 4]);
            }
        }
        let trips = |step: usize| {
            let mut rct = Rct::new(4, 8, 0xff);
            let mut out = Vec::new();
            let mut at = 0;
            while at < s.len() {
                let end = (at + step).min(s.len());
                let mut pos = at;
                while let Some(t) = rct.scan(&s[pos..end]) {
                    out.push(pos + t.index);
                    pos += t.index + 1;
                }
                at = end;
            }
            out
        };
        let whole = trips(s.len());
        assert_eq!(whole, trips(1));
        assert_eq!(whole, trips(33));
        assert!(whole.len() >= 4, "planted runs must trip: {whole:?}");
    }
}
