//! ML-KEM (FIPS 203) and ML-DSA (FIPS 204) keys, held as their seeds.
//!
//! A private key is its seed: 64 bytes (d ‖ z) for ML-KEM, 32 bytes (ξ) for
//! ML-DSA. The expanded forms are derived when needed and dropped (zeroized by
//! the crates' `zeroize` feature) right after. Every random input (the seed,
//! ML-KEM's m, ML-DSA's rnd) comes from the caller, that is, from the
//! health-tested DRBG.

use std::fmt;

use ml_dsa::{EncodedVerifyingKey, KeyExport as _, Keypair as _, MlDsa44, MlDsa65, MlDsa87};
use ml_kem::{Decapsulate as _, MlKem512, MlKem768, MlKem1024};
use zeroize::Zeroizing;

/// A supported algorithm and parameter set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Algorithm {
    /// ML-KEM-512.
    #[serde(rename = "ml-kem-512")]
    MlKem512,
    /// ML-KEM-768.
    #[serde(rename = "ml-kem-768")]
    MlKem768,
    /// ML-KEM-1024.
    #[serde(rename = "ml-kem-1024")]
    MlKem1024,
    /// ML-DSA-44.
    #[serde(rename = "ml-dsa-44")]
    MlDsa44,
    /// ML-DSA-65.
    #[serde(rename = "ml-dsa-65")]
    MlDsa65,
    /// ML-DSA-87.
    #[serde(rename = "ml-dsa-87")]
    MlDsa87,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AlgError {
    /// An input has the wrong length for this parameter set.
    #[error("{what} must be {want} bytes for {alg}, got {got}")]
    Length {
        /// Which input.
        what: &'static str,
        /// The algorithm.
        alg: &'static str,
        /// Expected length.
        want: usize,
        /// Given length.
        got: usize,
    },
    /// The operation does not apply to this kind of key.
    #[error("{op} needs an {need} key; this is {alg}")]
    WrongKind {
        /// The operation.
        op: &'static str,
        /// What it needs.
        need: &'static str,
        /// The key's algorithm.
        alg: &'static str,
    },
    /// The ML-DSA context string is longer than 255 bytes.
    #[error("context must be at most 255 bytes, got {0}")]
    Context(usize),
    /// A public key failed the FIPS 203 modulus check.
    #[error("invalid {0} public key")]
    InvalidPublicKey(&'static str),
    /// A pairwise-consistency test failed: the key pair is not used.
    #[error("pairwise-consistency test failed for a new {0} key")]
    Consistency(&'static str),
}

impl Algorithm {
    /// Every algorithm, in a fixed order.
    pub const ALL: [Self; 6] = [
        Self::MlKem512,
        Self::MlKem768,
        Self::MlKem1024,
        Self::MlDsa44,
        Self::MlDsa65,
        Self::MlDsa87,
    ];

    /// The name used in the API and on disk, e.g. `ml-kem-768`.
    pub fn name(self) -> &'static str {
        match self {
            Self::MlKem512 => "ml-kem-512",
            Self::MlKem768 => "ml-kem-768",
            Self::MlKem1024 => "ml-kem-1024",
            Self::MlDsa44 => "ml-dsa-44",
            Self::MlDsa65 => "ml-dsa-65",
            Self::MlDsa87 => "ml-dsa-87",
        }
    }

    /// Parse a name; case and `_`/`-` are not significant (`ML-KEM-768`, `ml_kem_768`).
    pub fn parse(s: &str) -> Option<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL.into_iter().find(|a| a.name() == norm)
    }

    /// ML-KEM (true) or ML-DSA (false).
    pub fn is_kem(self) -> bool {
        matches!(self, Self::MlKem512 | Self::MlKem768 | Self::MlKem1024)
    }

    /// Length of the seed that is the private key.
    pub fn seed_len(self) -> usize {
        if self.is_kem() { 64 } else { 32 }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Run `$body` with `$P` the ML-KEM parameter type of `$alg`, or `$else` for ML-DSA.
macro_rules! with_kem {
    ($alg:expr, $P:ident => $body:expr, $else:expr) => {
        match $alg {
            Algorithm::MlKem512 => {
                type $P = MlKem512;
                $body
            }
            Algorithm::MlKem768 => {
                type $P = MlKem768;
                $body
            }
            Algorithm::MlKem1024 => {
                type $P = MlKem1024;
                $body
            }
            _ => $else,
        }
    };
}

/// Run `$body` with `$P` the ML-DSA parameter type of `$alg`, or `$else` for ML-KEM.
macro_rules! with_dsa {
    ($alg:expr, $P:ident => $body:expr, $else:expr) => {
        match $alg {
            Algorithm::MlDsa44 => {
                type $P = MlDsa44;
                $body
            }
            Algorithm::MlDsa65 => {
                type $P = MlDsa65;
                $body
            }
            Algorithm::MlDsa87 => {
                type $P = MlDsa87;
                $body
            }
            _ => $else,
        }
    };
}

fn length(what: &'static str, alg: Algorithm, want: usize, got: usize) -> AlgError {
    AlgError::Length { what, alg: alg.name(), want, got }
}

fn wrong(op: &'static str, need: &'static str, alg: Algorithm) -> AlgError {
    AlgError::WrongKind { op, need, alg: alg.name() }
}

/// A private key: its algorithm and seed. Zeroized on drop; `Debug` shows the
/// algorithm only.
pub struct PrivateKey {
    alg: Algorithm,
    seed: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// The key whose seed is `seed` (64 bytes for ML-KEM, 32 for ML-DSA).
    pub fn from_seed(alg: Algorithm, seed: &[u8]) -> Result<Self, AlgError> {
        if seed.len() != alg.seed_len() {
            return Err(length("seed", alg, alg.seed_len(), seed.len()));
        }
        Ok(Self { alg, seed: Zeroizing::new(seed.to_vec()) })
    }

    /// The algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The seed, for sealing. Callers keep it in zeroizing memory.
    pub fn seed(&self) -> &[u8] {
        &self.seed
    }

    /// The encoded public key (ML-KEM encapsulation key, ML-DSA verifying key).
    pub fn public_key(&self) -> Vec<u8> {
        with_kem!(self.alg, P => {
            let seed = ml_kem::Seed::try_from(&self.seed[..]).expect("length checked at construction");
            let dk = ml_kem::DecapsulationKey::<P>::from_seed(seed);
            dk.encapsulation_key().to_bytes().to_vec()
        }, with_dsa!(self.alg, P => {
            let seed = ml_dsa::Seed::try_from(&self.seed[..]).expect("length checked at construction");
            let sk = ml_dsa::SigningKey::<P>::from_seed(&seed);
            sk.verifying_key().encode().to_vec()
        }, unreachable!("every algorithm is ML-KEM or ML-DSA")))
    }

    /// The expanded key, for many operations.
    pub fn expand(&self) -> ExpandedKey {
        let kem_seed =
            || ml_kem::Seed::try_from(&self.seed[..]).expect("length checked at construction");
        let dsa_seed =
            || ml_dsa::Seed::try_from(&self.seed[..]).expect("length checked at construction");
        match self.alg {
            Algorithm::MlKem512 => {
                ExpandedKey::MlKem512(Box::new(ml_kem::DecapsulationKey::<MlKem512>::from_seed(
                    kem_seed(),
                )))
            }
            Algorithm::MlKem768 => {
                ExpandedKey::MlKem768(Box::new(ml_kem::DecapsulationKey::<MlKem768>::from_seed(
                    kem_seed(),
                )))
            }
            Algorithm::MlKem1024 => {
                ExpandedKey::MlKem1024(Box::new(ml_kem::DecapsulationKey::<MlKem1024>::from_seed(
                    kem_seed(),
                )))
            }
            Algorithm::MlDsa44 => ExpandedKey::MlDsa44(Box::new(
                ml_dsa::SigningKey::<MlDsa44>::from_seed(&dsa_seed()),
            )),
            Algorithm::MlDsa65 => ExpandedKey::MlDsa65(Box::new(
                ml_dsa::SigningKey::<MlDsa65>::from_seed(&dsa_seed()),
            )),
            Algorithm::MlDsa87 => ExpandedKey::MlDsa87(Box::new(
                ml_dsa::SigningKey::<MlDsa87>::from_seed(&dsa_seed()),
            )),
        }
    }

    /// ML-DSA.Sign (FIPS 204 Algorithm 2, hedged): `rnd` is 32 fresh random bytes.
    pub fn sign(&self, msg: &[u8], ctx: &[u8], rnd: &[u8; 32]) -> Result<Vec<u8>, AlgError> {
        let ctx_len = u8::try_from(ctx.len()).map_err(|_| AlgError::Context(ctx.len()))?;
        with_dsa!(self.alg, P => {
            let seed = ml_dsa::Seed::try_from(&self.seed[..]).expect("length checked at construction");
            let sk = ml_dsa::SigningKey::<P>::from_seed(&seed);
            // M' = 0 ‖ |ctx| ‖ ctx ‖ M (pure ML-DSA, §5.2).
            let sig = sk.expanded_key().sign_internal(&[&[0, ctx_len], ctx, msg], &(*rnd).into());
            Ok(sig.encode().to_vec())
        }, Err(wrong("sign", "ML-DSA", self.alg)))
    }

    /// ML-KEM.Decaps: the 32-byte shared secret for ciphertext `ct` (an invalid
    /// ciphertext of the right length gives the implicit-rejection secret).
    pub fn decapsulate(&self, ct: &[u8]) -> Result<Zeroizing<[u8; 32]>, AlgError> {
        with_kem!(self.alg, P => {
            let seed = ml_kem::Seed::try_from(&self.seed[..]).expect("length checked at construction");
            let dk = ml_kem::DecapsulationKey::<P>::from_seed(seed);
            let want = ciphertext_len(self.alg);
            let k = dk.decapsulate_slice(ct).map_err(|_| length("ciphertext", self.alg, want, ct.len()))?;
            Ok(Zeroizing::new(k.into()))
        }, Err(wrong("decapsulate", "ML-KEM", self.alg)))
    }
}

/// A private key expanded once from its seed, for repeated use (a PKCS#11
/// session's signing key). The crates zeroize the expanded forms on drop;
/// `Debug` shows the algorithm only.
pub enum ExpandedKey {
    /// ML-KEM-512.
    MlKem512(Box<ml_kem::DecapsulationKey<MlKem512>>),
    /// ML-KEM-768.
    MlKem768(Box<ml_kem::DecapsulationKey<MlKem768>>),
    /// ML-KEM-1024.
    MlKem1024(Box<ml_kem::DecapsulationKey<MlKem1024>>),
    /// ML-DSA-44.
    MlDsa44(Box<ml_dsa::SigningKey<MlDsa44>>),
    /// ML-DSA-65.
    MlDsa65(Box<ml_dsa::SigningKey<MlDsa65>>),
    /// ML-DSA-87.
    MlDsa87(Box<ml_dsa::SigningKey<MlDsa87>>),
}

impl fmt::Debug for ExpandedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpandedKey").field("alg", &self.alg()).finish_non_exhaustive()
    }
}

/// Sign M' = 0 ‖ |ctx| ‖ ctx ‖ M (pure ML-DSA, FIPS 204 §5.2) with an expanded key.
fn sign_with<P: ml_dsa::MlDsaParams>(
    sk: &ml_dsa::SigningKey<P>,
    msg: &[u8],
    ctx: &[u8],
    rnd: &[u8; 32],
) -> Result<Vec<u8>, AlgError> {
    let ctx_len = u8::try_from(ctx.len()).map_err(|_| AlgError::Context(ctx.len()))?;
    let sig = sk.expanded_key().sign_internal(&[&[0, ctx_len], ctx, msg], &(*rnd).into());
    Ok(sig.encode().to_vec())
}

impl ExpandedKey {
    /// The algorithm.
    pub fn alg(&self) -> Algorithm {
        match self {
            Self::MlKem512(_) => Algorithm::MlKem512,
            Self::MlKem768(_) => Algorithm::MlKem768,
            Self::MlKem1024(_) => Algorithm::MlKem1024,
            Self::MlDsa44(_) => Algorithm::MlDsa44,
            Self::MlDsa65(_) => Algorithm::MlDsa65,
            Self::MlDsa87(_) => Algorithm::MlDsa87,
        }
    }

    /// ML-DSA.Sign, as [`PrivateKey::sign`]; `rnd` all zero is the
    /// deterministic variant.
    pub fn sign(&self, msg: &[u8], ctx: &[u8], rnd: &[u8; 32]) -> Result<Vec<u8>, AlgError> {
        match self {
            Self::MlDsa44(k) => sign_with(k, msg, ctx, rnd),
            Self::MlDsa65(k) => sign_with(k, msg, ctx, rnd),
            Self::MlDsa87(k) => sign_with(k, msg, ctx, rnd),
            _ => Err(wrong("sign", "ML-DSA", self.alg())),
        }
    }

    /// ML-KEM.Decaps, as [`PrivateKey::decapsulate`].
    pub fn decapsulate(&self, ct: &[u8]) -> Result<Zeroizing<[u8; 32]>, AlgError> {
        let alg = self.alg();
        let bad = |_| length("ciphertext", alg, ciphertext_len(alg), ct.len());
        let k = match self {
            Self::MlKem512(k) => k.decapsulate_slice(ct).map_err(bad)?,
            Self::MlKem768(k) => k.decapsulate_slice(ct).map_err(bad)?,
            Self::MlKem1024(k) => k.decapsulate_slice(ct).map_err(bad)?,
            _ => return Err(wrong("decapsulate", "ML-KEM", alg)),
        };
        Ok(Zeroizing::new(k.into()))
    }
}

/// Length of an ML-KEM ciphertext.
pub fn ciphertext_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::MlKem512 => 768,
        Algorithm::MlKem768 => 1088,
        Algorithm::MlKem1024 => 1568,
        _ => 0,
    }
}

/// Length of an encoded public key.
pub fn public_key_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::MlKem512 => 800,
        Algorithm::MlKem768 => 1184,
        Algorithm::MlKem1024 => 1568,
        Algorithm::MlDsa44 => 1312,
        Algorithm::MlDsa65 => 1952,
        Algorithm::MlDsa87 => 2592,
    }
}

/// ML-DSA.Verify with context `ctx`. A signature of the wrong length is
/// simply invalid (false); a malformed public key is an error.
pub fn verify(
    alg: Algorithm,
    pk: &[u8],
    msg: &[u8],
    ctx: &[u8],
    sig: &[u8],
) -> Result<bool, AlgError> {
    if ctx.len() > 255 {
        return Err(AlgError::Context(ctx.len()));
    }
    with_dsa!(alg, P => {
        let enc = EncodedVerifyingKey::<P>::try_from(pk)
            .map_err(|_| length("public key", alg, public_key_len(alg), pk.len()))?;
        let vk = ml_dsa::VerifyingKey::<P>::decode(&enc);
        let Ok(sig) = ml_dsa::Signature::<P>::try_from(sig) else { return Ok(false) };
        Ok(vk.verify_with_context(msg, ctx, &sig))
    }, Err(wrong("verify", "ML-DSA", alg)))
}

/// ML-KEM.Encaps with the 32 random bytes `m`: (ciphertext, shared secret).
pub fn encapsulate(
    alg: Algorithm,
    pk: &[u8],
    m: &[u8; 32],
) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), AlgError> {
    with_kem!(alg, P => {
        let key = ml_kem::Key::<ml_kem::EncapsulationKey<P>>::try_from(pk)
            .map_err(|_| length("public key", alg, public_key_len(alg), pk.len()))?;
        let ek = ml_kem::EncapsulationKey::<P>::new(&key)
            .map_err(|_| AlgError::InvalidPublicKey(alg.name()))?;
        let (ct, k) = ek.encapsulate_deterministic(&(*m).into());
        Ok((ct.to_vec(), Zeroizing::new(k.into())))
    }, Err(wrong("encapsulate", "ML-KEM", alg)))
}

/// The pairwise-consistency test of a new key pair (FIPS 140-3 IG 10.3.A):
/// sign and verify, or encapsulate and decapsulate. `rnd` is fresh randomness.
pub fn pairwise_consistency(key: &PrivateKey, rnd: &[u8; 32]) -> Result<(), AlgError> {
    let alg = key.alg();
    let pk = key.public_key();
    let ok = if alg.is_kem() {
        let (ct, k) = encapsulate(alg, &pk, rnd)?;
        key.decapsulate(&ct)?[..] == k[..]
    } else {
        let msg = b"qkeyd pairwise-consistency test";
        let sig = key.sign(msg, b"pct", rnd)?;
        verify(alg, &pk, msg, b"pct", &sig)? && !verify(alg, &pk, b"other", b"pct", &sig)?
    };
    if ok { Ok(()) } else { Err(AlgError::Consistency(alg.name())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_parse_loosely() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.name()), Some(a));
            assert_eq!(Algorithm::parse(&a.name().to_uppercase().replace('-', "_")), Some(a));
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.name()));
        }
        assert_eq!(Algorithm::parse("rsa-2048"), None);
    }

    #[test]
    fn every_parameter_set_works_end_to_end() {
        for a in Algorithm::ALL {
            let seed: Vec<u8> = (0..a.seed_len() as u8).collect();
            let key = PrivateKey::from_seed(a, &seed).unwrap();
            let pk = key.public_key();
            assert_eq!(pk.len(), public_key_len(a), "{a}");
            pairwise_consistency(&key, &[9; 32]).unwrap();
            if a.is_kem() {
                let (ct, k) = encapsulate(a, &pk, &[1; 32]).unwrap();
                assert_eq!(ct.len(), ciphertext_len(a));
                assert_eq!(key.decapsulate(&ct).unwrap()[..], k[..]);
                assert!(matches!(key.decapsulate(&ct[1..]), Err(AlgError::Length { .. })));
                assert!(matches!(key.sign(b"m", b"", &[0; 32]), Err(AlgError::WrongKind { .. })));
            } else {
                let sig = key.sign(b"msg", b"ctx", &[2; 32]).unwrap();
                assert!(verify(a, &pk, b"msg", b"ctx", &sig).unwrap());
                assert!(!verify(a, &pk, b"msg", b"other", &sig).unwrap());
                assert!(!verify(a, &pk, b"msg", b"ctx", &sig[1..]).unwrap());
                assert!(matches!(key.sign(b"m", &[0; 256], &[0; 32]), Err(AlgError::Context(256))));
                assert!(matches!(
                    verify(a, &pk[1..], b"m", b"", &sig),
                    Err(AlgError::Length { .. })
                ));
            }
            let x = key.expand();
            assert_eq!(x.alg(), a);
            if a.is_kem() {
                let (ct, k) = encapsulate(a, &pk, &[3; 32]).unwrap();
                assert_eq!(x.decapsulate(&ct).unwrap()[..], k[..]);
                assert_eq!(x.decapsulate(&ct).unwrap()[..], key.decapsulate(&ct).unwrap()[..]);
            } else {
                // The same rnd gives the same signature either way.
                assert_eq!(
                    x.sign(b"m", b"c", &[5; 32]).unwrap(),
                    key.sign(b"m", b"c", &[5; 32]).unwrap()
                );
            }
            assert!(!format!("{key:?}").contains("seed"));
            assert!(!format!("{x:?}").contains("seed"));
        }
        assert!(matches!(
            PrivateKey::from_seed(Algorithm::MlKem768, &[0; 32]),
            Err(AlgError::Length { want: 64, got: 32, .. })
        ));
    }
}
