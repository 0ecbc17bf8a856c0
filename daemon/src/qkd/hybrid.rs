//! How a delivered key is made from its parts: the QKD key from the KME and
//! the ML-KEM-1024 shared secret from encapsulating to the peer node's
//! transport key.
//!
//! The default combiner is a concatenation KDF in the style of ETSI TS 103
//! 744: HKDF-SHA256 with no salt, the ML-KEM secret ‖ the QKD key as input
//! keying material, and as info
//!
//! ```text
//! "qkeyd-qkd-hybrid/1" 0x00 key_ID 0x00 master_SAE_ID 0x00 slave_SAE_ID 0x00
//!     size_in_bits (u32, big-endian) SHA-256(ML-KEM ciphertext)
//! ```
//!
//! so that a key is bound to its id, both SAEs, its size and the exact
//! ciphertext. An attacker must know both secrets to learn it. The keys of
//! one `enc_keys` request share one encapsulation (and so one ML-KEM
//! secret); each has a QKD key of its own.
//!
//! `qubip-compat` combiners, for interop with pilots that combine the two
//! secrets directly (256-bit keys only): `qubip-xor` is secret ⊕ QKD key;
//! `qubip-hmac-sha256` is HMAC-SHA256 keyed with the QKD key over the
//! secret; `qubip-xor-hmac-sha256` is HMAC-SHA256 keyed with secret ⊕ QKD
//! key over the key_ID.
//!
//! Without ML-KEM (`[danger] qkd_without_ml_kem`), the same HKDF runs over
//! the QKD key alone and the hash of an empty ciphertext.

use hmac::{KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::config::Combiner;

/// The label that starts the HKDF info.
pub(crate) const LABEL: &[u8] = b"qkeyd-qkd-hybrid/1";

/// Bytes of a QKD key drawn for one delivered key.
pub(crate) const QKD_KEY_LEN: usize = 32;

/// What a delivered key is bound to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Context<'a> {
    /// The delivered key's id (a UUID).
    pub(crate) key_id: &'a str,
    /// The SAE that asked for it with `enc_keys`.
    pub(crate) master: &'a str,
    /// The SAE that fetches it with `dec_keys`.
    pub(crate) slave: &'a str,
    /// Its size in bits (a multiple of 8).
    pub(crate) size_bits: u32,
    /// The ML-KEM ciphertext (empty without ML-KEM).
    pub(crate) ciphertext: &'a [u8],
}

impl Context<'_> {
    /// The HKDF info.
    pub(crate) fn info(&self) -> Vec<u8> {
        let mut info = Vec::with_capacity(LABEL.len() + 128);
        info.extend_from_slice(LABEL);
        for part in [self.key_id, self.master, self.slave] {
            info.push(0);
            info.extend_from_slice(part.as_bytes());
        }
        info.push(0);
        info.extend_from_slice(&self.size_bits.to_be_bytes());
        info.extend_from_slice(&Sha256::digest(self.ciphertext));
        info
    }
}

/// Why a key cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CombineError {
    /// The combiner makes 256-bit keys only.
    #[error("{combiner} makes 256-bit keys only")]
    Size {
        /// The combiner's name.
        combiner: &'static str,
    },
    /// A qubip-compat combiner has nothing to combine without ML-KEM.
    #[error("{combiner} needs an ML-KEM secret")]
    NoSecret {
        /// The combiner's name.
        combiner: &'static str,
    },
    /// More than HKDF-SHA256 can make (255 × 32 bytes).
    #[error("a key of {0} bits is beyond HKDF-SHA256's output")]
    TooLong(u32),
}

/// The delivered key: `secret` is the ML-KEM shared secret (`None` without
/// ML-KEM), `qkd` the QKD key.
pub(crate) fn combine(
    combiner: Combiner,
    secret: Option<&[u8; 32]>,
    qkd: &[u8; QKD_KEY_LEN],
    ctx: &Context<'_>,
) -> Result<Zeroizing<Vec<u8>>, CombineError> {
    let len = usize::try_from(ctx.size_bits / 8).unwrap_or(usize::MAX);
    if len > 255 * 32 {
        return Err(CombineError::TooLong(ctx.size_bits));
    }
    let secret = match (combiner, secret) {
        (Combiner::Hkdf, secret) => {
            let mut ikm = Zeroizing::new(Vec::with_capacity(64));
            if let Some(s) = secret {
                ikm.extend_from_slice(s);
            }
            ikm.extend_from_slice(qkd);
            let mut out = Zeroizing::new(vec![0u8; len]);
            hkdf::Hkdf::<Sha256>::new(None, &ikm)
                .expand(&ctx.info(), &mut out)
                .expect("the length was checked against HKDF-SHA256's limit");
            return Ok(out);
        }
        (_, Some(secret)) => secret,
        (c, None) => return Err(CombineError::NoSecret { combiner: c.as_str() }),
    };
    if ctx.size_bits != 256 {
        return Err(CombineError::Size { combiner: combiner.as_str() });
    }
    let mut xor = Zeroizing::new([0u8; 32]);
    for (x, (a, b)) in xor.iter_mut().zip(secret.iter().zip(qkd)) {
        *x = a ^ b;
    }
    let hmac = |key: &[u8], msg: &[u8]| -> Zeroizing<Vec<u8>> {
        let mut m = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(msg);
        Zeroizing::new(m.finalize().into_bytes().to_vec())
    };
    Ok(match combiner {
        Combiner::QubipXor => Zeroizing::new(xor.to_vec()),
        Combiner::QubipHmac => hmac(qkd, secret),
        // `Hkdf` returned above.
        Combiner::QubipXorHmac | Combiner::Hkdf => hmac(&xor[..], ctx.key_id.as_bytes()),
    })
}

/// The label of a key confirmation.
pub(crate) const CONFIRM_LABEL: &[u8] = b"qkeyd-qkd-confirm/1";

/// The key confirmation the issuing node sends with a ciphertext:
/// HMAC-SHA256(key = the ML-KEM secret, "qkeyd-qkd-confirm/1" ‖
/// SHA-256(ciphertext)), first 16 bytes. The receiving node recomputes it
/// from the secret it decapsulated: ML-KEM's implicit rejection turns a
/// ciphertext for another key (a stale or replaced transport key, a
/// changed ciphertext) into a different secret, never an error, and a
/// mismatch here is what keeps that from becoming two different keys.
pub(crate) fn confirmation(secret: &[u8; 32], ciphertext: &[u8]) -> [u8; 16] {
    let mut m = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(CONFIRM_LABEL);
    m.update(&Sha256::digest(ciphertext));
    let mut out = [0u8; 16];
    out.copy_from_slice(&m.finalize().into_bytes()[..16]);
    out
}

/// A random (version 4) UUID from 16 random bytes.
pub(crate) fn uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests;
