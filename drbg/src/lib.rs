//! CTR_DRBG with AES-256 and no derivation function (SP 800-90A §10.2.1),
//! shared by the daemon's pool and the PKCS#11 module's per-process DRBG, and
//! its known-answer tests against NIST CAVP vectors ([`kat`]).
//!
//! No derivation function means every entropy input must be full entropy of
//! seedlen = 384 bits; the pool's SHA3-384 conditioner provides exactly that,
//! and the module seeds from the pool's output.
#![forbid(unsafe_code)]

pub mod kat;

use aes::{
    Aes256,
    cipher::{Array, BlockCipherEncrypt, KeyInit},
};
use zeroize::{Zeroize, Zeroizing};

/// Key length: 256 bits.
const KEY_LEN: usize = 32;
/// Block length: 128 bits.
const BLOCK_LEN: usize = 16;
/// seedlen = keylen + blocklen = 384 bits.
pub const SEED_LEN: usize = KEY_LEN + BLOCK_LEN;
/// Largest single request, 2^19 bits (SP 800-90A Table 3, max_number_of_bits_per_request).
pub const MAX_REQUEST: usize = 1 << 16;

/// Why a DRBG call was refused.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
pub enum DrbgError {
    /// More than [`MAX_REQUEST`] bytes in one generate call.
    #[error("request of {0} bytes exceeds the per-request maximum")]
    RequestTooLarge(usize),
    /// Additional input or personalization longer than seedlen.
    #[error("additional input of {0} bytes exceeds seedlen")]
    InputTooLong(usize),
    /// The reseed counter passed the reseed interval: reseed first.
    #[error("reseed required")]
    ReseedRequired,
}

/// A CTR_DRBG instance. The working state (Key, V) is zeroized on drop and is
/// never printed.
pub struct CtrDrbg {
    cipher: Aes256,
    key: Zeroizing<[u8; KEY_LEN]>,
    v: Zeroizing<[u8; BLOCK_LEN]>,
    reseed_counter: u64,
    reseed_interval: u64,
}

impl std::fmt::Debug for CtrDrbg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtrDrbg")
            .field("reseed_counter", &self.reseed_counter)
            .finish_non_exhaustive()
    }
}

impl CtrDrbg {
    /// CTR_DRBG_Instantiate_algorithm (§10.2.1.3.1): `entropy` must be full
    /// entropy; `personalization` is at most seedlen bytes.
    pub fn new(
        entropy: &[u8; SEED_LEN],
        personalization: &[u8],
        reseed_interval: u64,
    ) -> Result<Self, DrbgError> {
        let mut seed = Zeroizing::new(pad(personalization)?);
        xor_into(&mut seed, entropy);
        let zero = [0u8; KEY_LEN];
        let mut drbg = Self {
            cipher: Aes256::new(&Array::from(zero)),
            key: Zeroizing::new(zero),
            v: Zeroizing::new([0; BLOCK_LEN]),
            reseed_counter: 1,
            reseed_interval,
        };
        drbg.update(&seed);
        Ok(drbg)
    }

    /// CTR_DRBG_Reseed_algorithm (§10.2.1.4.1).
    pub fn reseed(&mut self, entropy: &[u8; SEED_LEN], additional: &[u8]) -> Result<(), DrbgError> {
        let mut seed = Zeroizing::new(pad(additional)?);
        xor_into(&mut seed, entropy);
        self.update(&seed);
        self.reseed_counter = 1;
        Ok(())
    }

    /// Generate requests since the last (re)seed, plus one (the spec's counter).
    pub fn reseed_counter(&self) -> u64 {
        self.reseed_counter
    }

    /// Whether the next generate call would be refused for want of a reseed.
    pub fn needs_reseed(&self) -> bool {
        self.reseed_counter > self.reseed_interval
    }

    /// CTR_DRBG_Generate_algorithm (§10.2.1.5.1): fill `out` (at most
    /// [`MAX_REQUEST`] bytes).
    pub fn generate(&mut self, out: &mut [u8], additional: &[u8]) -> Result<(), DrbgError> {
        if out.len() > MAX_REQUEST {
            return Err(DrbgError::RequestTooLarge(out.len()));
        }
        if self.needs_reseed() {
            return Err(DrbgError::ReseedRequired);
        }
        let additional = if additional.is_empty() {
            Zeroizing::new([0u8; SEED_LEN])
        } else {
            let a = Zeroizing::new(pad(additional)?);
            self.update(&a);
            a
        };
        self.keystream(out);
        self.update(&additional);
        self.reseed_counter += 1;
        Ok(())
    }

    /// Fill `out` with AES(Key, V+1) || AES(Key, V+2) || …, advancing V.
    /// The counter blocks are written into `out` and encrypted in place, in
    /// one call, so the AES backend (AES-NI, VAES) can pipeline all of them.
    fn keystream(&mut self, out: &mut [u8]) {
        let mut v = u128::from_be_bytes(*self.v);
        let (blocks, tail) = out.as_chunks_mut::<BLOCK_LEN>();
        for b in blocks.iter_mut() {
            v = v.wrapping_add(1);
            *b = v.to_be_bytes();
        }
        self.cipher.encrypt_blocks(Array::cast_slice_from_core_mut(blocks));
        if !tail.is_empty() {
            v = v.wrapping_add(1);
            let mut last = Array::from(v.to_be_bytes());
            self.cipher.encrypt_block(&mut last);
            tail.copy_from_slice(&last[..tail.len()]);
            last.zeroize();
        }
        *self.v = v.to_be_bytes();
    }

    /// CTR_DRBG_Update (§10.2.1.2).
    fn update(&mut self, provided: &[u8; SEED_LEN]) {
        let mut temp = Zeroizing::new([0u8; SEED_LEN]);
        self.keystream(&mut temp[..]);
        xor_into(&mut temp, provided);
        self.key.copy_from_slice(&temp[..KEY_LEN]);
        self.v.copy_from_slice(&temp[KEY_LEN..]);
        // Key the cipher from the zeroizing buffer itself, not a stack copy.
        self.cipher = Aes256::new((&*self.key).into());
    }
}

fn pad(input: &[u8]) -> Result<[u8; SEED_LEN], DrbgError> {
    if input.len() > SEED_LEN {
        return Err(DrbgError::InputTooLong(input.len()));
    }
    let mut out = [0u8; SEED_LEN];
    out[..input.len()].copy_from_slice(input);
    Ok(out)
}

fn xor_into(dst: &mut [u8; SEED_LEN], src: &[u8; SEED_LEN]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

#[cfg(test)]
mod tests;
