//! Vetted conditioning (SP 800-90B §3.1.5.1.1) with entropy accounting.
//!
//! SHA3-384 is a vetted conditioning function. A block is released only once
//! its input carries at least n_out + 64 = 448 bits of claimed min-entropy, the
//! margin SP 800-90C asks for before a conditioned output may be counted as
//! full entropy; the 384-bit output then seeds the CTR_DRBG (seedlen = 384)
//! without a derivation function.

use std::{fmt, ops::RangeInclusive};

use sha3::{Digest, Sha3_384};
use zeroize::Zeroizing;

use qkeyd_drbg::SEED_LEN;

/// Claimed min-entropy a block's input must carry: n_out + 64 bits.
pub(crate) const INPUT_ENTROPY_BITS: f64 = (SEED_LEN * 8 + 64) as f64;

/// A conditioned, full-entropy seed block and where it came from.
pub(crate) struct SeedBlock {
    /// 384 bits of full entropy. Never printed.
    pub(crate) bytes: Zeroizing<[u8; SEED_LEN]>,
    /// Where the input samples came from.
    pub(crate) provenance: Provenance,
}

impl fmt::Debug for SeedBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeedBlock").field("provenance", &self.provenance).finish_non_exhaustive()
    }
}

/// Which samples a seed block was derived from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Provenance {
    /// Index of the source in the pool.
    pub(crate) source: usize,
    /// The source's failure epoch when the block was made: a block from an
    /// earlier epoch predates a failure and is thrown away.
    pub(crate) epoch: u64,
    /// First and last sample (indices in the source's stream) hashed in.
    pub(crate) samples: RangeInclusive<u64>,
    /// How many samples were hashed in (samples set aside between the first
    /// and the last are not).
    pub(crate) count: u64,
    /// Claimed min-entropy of the input, bits.
    pub(crate) input_entropy_bits: f64,
}

/// Accumulates healthy samples of one source into seed blocks.
pub(crate) struct Conditioner {
    source: usize,
    claimed_h: f64,
    hasher: Sha3_384,
    first: Option<u64>,
    samples: u64,
}

impl fmt::Debug for Conditioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conditioner")
            .field("source", &self.source)
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}

impl Conditioner {
    /// A conditioner for source number `source` claiming `claimed_h` bits per sample.
    pub(crate) fn new(source: usize, claimed_h: f64) -> Self {
        Self { source, claimed_h, hasher: Sha3_384::new(), first: None, samples: 0 }
    }

    /// Credit `h` bits per sample from now on (the lower of the claim and the
    /// last full assessment). A partly filled block is dropped when the credit
    /// changes, so every block is accounted at one rate. Returns whether it changed.
    pub(crate) fn set_credit(&mut self, h: f64) -> bool {
        if h == self.claimed_h || h.is_nan() || h <= 0.0 {
            return false;
        }
        self.discard();
        self.claimed_h = h;
        true
    }

    /// Samples needed per block at this claim.
    pub(crate) fn samples_per_block(&self) -> u64 {
        (INPUT_ENTROPY_BITS / self.claimed_h).ceil() as u64
    }

    /// Absorb healthy `samples`, the first of which is sample `first_index` of
    /// the source's stream; call `emit` for every completed block.
    pub(crate) fn absorb(
        &mut self,
        samples: &[u8],
        first_index: u64,
        epoch: u64,
        mut emit: impl FnMut(SeedBlock),
    ) {
        let per_block = self.samples_per_block();
        let mut at = 0usize;
        while at < samples.len() {
            let want = (per_block - self.samples) as usize;
            let take = want.min(samples.len() - at);
            self.first.get_or_insert(first_index + at as u64);
            self.hasher.update(&samples[at..at + take]);
            self.samples += take as u64;
            at += take;
            if self.samples == per_block {
                let first = self.first.take().unwrap_or_default();
                let last = first_index + at as u64 - 1;
                // Hash straight into the zeroizing buffer: no stray copy of the seed.
                let mut bytes = Zeroizing::new([0u8; SEED_LEN]);
                std::mem::take(&mut self.hasher).finalize_into((&mut *bytes).into());
                emit(SeedBlock {
                    bytes,
                    provenance: Provenance {
                        source: self.source,
                        epoch,
                        samples: first..=last,
                        count: per_block,
                        input_entropy_bits: per_block as f64 * self.claimed_h,
                    },
                });
                self.samples = 0;
            }
        }
    }

    /// Throw away a partly filled block (after a health failure).
    pub(crate) fn discard(&mut self) {
        // Dropping the hasher zeroizes its state (sha3's `zeroize` feature).
        self.hasher = Sha3_384::new();
        self.first = None;
        self.samples = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_need_448_bits_of_claimed_entropy() {
        let mut c = Conditioner::new(0, 8.0);
        assert_eq!(c.samples_per_block(), 56);
        assert_eq!(Conditioner::new(0, 7.5).samples_per_block(), 60);
        assert_eq!(Conditioner::new(0, 1.0).samples_per_block(), 448);
        let mut blocks = Vec::new();
        c.absorb(&[1; 100], 1000, 0, |b| blocks.push(b));
        c.absorb(&[2; 12], 1100, 0, |b| blocks.push(b));
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].provenance.samples, 1000..=1055);
        assert_eq!(blocks[1].provenance.samples, 1056..=1111);
        assert!(blocks[0].provenance.input_entropy_bits >= INPUT_ENTROPY_BITS);
        // SHA3-384 of the 56 input samples.
        let expect = Sha3_384::digest([1u8; 56]);
        assert_eq!(blocks[0].bytes[..], expect[..]);
    }

    #[test]
    fn a_lower_credit_needs_more_samples() {
        let mut c = Conditioner::new(0, 8.0);
        let mut blocks = Vec::new();
        c.absorb(&[1; 30], 0, 0, |b| blocks.push(b));
        assert!(c.set_credit(7.0));
        assert!(!c.set_credit(7.0));
        assert!(!c.set_credit(0.0), "no credit is no change, not a division by zero");
        assert_eq!(c.samples_per_block(), 64);
        c.absorb(&[2; 64], 30, 0, |b| blocks.push(b));
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].provenance.samples, 30..=93, "the partial block was dropped");
        assert_eq!(blocks[0].provenance.input_entropy_bits, 448.0);
    }

    #[test]
    fn discard_drops_partial_input() {
        let mut c = Conditioner::new(3, 8.0);
        let mut blocks = Vec::new();
        c.absorb(&[5; 50], 0, 0, |b| blocks.push(b));
        c.discard();
        c.absorb(&[6; 56], 60, 1, |b| blocks.push(b));
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].provenance.samples, 60..=115);
        assert_eq!(blocks[0].provenance.epoch, 1);
        assert_eq!(blocks[0].bytes[..], Sha3_384::digest([6u8; 56])[..]);
        assert!(!format!("{:?}", blocks[0]).contains("bytes"));
    }
}
