//! Private keys held as their seeds, and the FIPS 203/204 operations.
//!
//! A private key is its seed: 64 bytes (d ‖ z) for ML-KEM, 32 bytes (ξ) for
//! ML-DSA. The expanded forms are derived when needed and dropped (zeroized by
//! the crates' `zeroize` feature) right after. Every random input (the seed,
//! ML-KEM's m, ML-DSA's rnd) comes from the caller.

use std::fmt;

use ml_dsa::{EncodedVerifyingKey, KeyExport as _, Keypair as _, MlDsa44, MlDsa65, MlDsa87};
use ml_kem::{Decapsulate as _, MlKem512, MlKem768, MlKem1024};
use zeroize::Zeroizing;

use crate::{Algorithm, Error};

/// An ML-KEM shared secret: 32 bytes, zeroized on drop.
pub type SharedSecret = Zeroizing<[u8; 32]>;

/// Run `$kem` with `$P` the ML-KEM parameter type of key `$key` and `$s` its
/// seed, or `$dsa` with `$P` the ML-DSA type and `$s` its seed.
macro_rules! with_seed {
    ($key:expr, $P:ident, $s:ident => kem: $kem:expr, dsa: $dsa:expr) => {
        match &$key.0 {
            Inner::MlKem512($s) => {
                let _ = &$s;
                #[allow(dead_code)]
                type $P = MlKem512;
                $kem
            }
            Inner::MlKem768($s) => {
                let _ = &$s;
                #[allow(dead_code)]
                type $P = MlKem768;
                $kem
            }
            Inner::MlKem1024($s) => {
                let _ = &$s;
                #[allow(dead_code)]
                type $P = MlKem1024;
                $kem
            }
            Inner::MlDsa44($s) => {
                let _ = &$s;
                #[allow(dead_code)]
                type $P = MlDsa44;
                $dsa
            }
            Inner::MlDsa65($s) => {
                let _ = &$s;
                #[allow(dead_code)]
                type $P = MlDsa65;
                $dsa
            }
            Inner::MlDsa87($s) => {
                let _ = &$s;
                #[allow(dead_code)]
                type $P = MlDsa87;
                $dsa
            }
        }
    };
}

/// Run `$kem` with `$P` the ML-KEM parameter type of `$alg`, or `$dsa` with
/// `$P` the ML-DSA one.
macro_rules! with_params {
    ($alg:expr, $P:ident => kem: $kem:expr, dsa: $dsa:expr) => {
        match $alg {
            Algorithm::MlKem512 => {
                #[allow(dead_code)]
                type $P = MlKem512;
                $kem
            }
            Algorithm::MlKem768 => {
                #[allow(dead_code)]
                type $P = MlKem768;
                $kem
            }
            Algorithm::MlKem1024 => {
                #[allow(dead_code)]
                type $P = MlKem1024;
                $kem
            }
            Algorithm::MlDsa44 => {
                #[allow(dead_code)]
                type $P = MlDsa44;
                $dsa
            }
            Algorithm::MlDsa65 => {
                #[allow(dead_code)]
                type $P = MlDsa65;
                $dsa
            }
            Algorithm::MlDsa87 => {
                #[allow(dead_code)]
                type $P = MlDsa87;
                $dsa
            }
        }
    };
}

fn length(what: &'static str, alg: Algorithm, want: usize, got: usize) -> Error {
    Error::Length { what, alg: alg.name(), want, got }
}

fn wrong(op: &'static str, need: &'static str, alg: Algorithm) -> Error {
    Error::WrongKind { op, need, alg: alg.name() }
}

/// An ML-KEM seed, d ‖ z (64 bytes), zeroized on drop.
type KemSeed = Zeroizing<ml_kem::Seed>;
/// An ML-DSA seed, ξ (32 bytes), zeroized on drop.
type DsaSeed = Zeroizing<ml_dsa::Seed>;

/// A private key: its parameter set and seed, sized by the type. Zeroized on
/// drop; `Debug` shows the algorithm only. Not `Clone`: each copy of a seed
/// is one more to account for.
pub struct PrivateKey(Inner);

enum Inner {
    MlKem512(KemSeed),
    MlKem768(KemSeed),
    MlKem1024(KemSeed),
    MlDsa44(DsaSeed),
    MlDsa65(DsaSeed),
    MlDsa87(DsaSeed),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("alg", &self.alg()).finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// The key whose seed is `seed` (64 bytes for ML-KEM, 32 for ML-DSA).
    pub fn from_seed(alg: Algorithm, seed: &[u8]) -> Result<Self, Error> {
        let wrong_length = |_| length("seed", alg, alg.seed_len(), seed.len());
        let kem = || ml_kem::Seed::try_from(seed).map(Zeroizing::new).map_err(wrong_length);
        let dsa = || ml_dsa::Seed::try_from(seed).map(Zeroizing::new).map_err(wrong_length);
        Ok(Self(match alg {
            Algorithm::MlKem512 => Inner::MlKem512(kem()?),
            Algorithm::MlKem768 => Inner::MlKem768(kem()?),
            Algorithm::MlKem1024 => Inner::MlKem1024(kem()?),
            Algorithm::MlDsa44 => Inner::MlDsa44(dsa()?),
            Algorithm::MlDsa65 => Inner::MlDsa65(dsa()?),
            Algorithm::MlDsa87 => Inner::MlDsa87(dsa()?),
        }))
    }

    /// The algorithm.
    pub fn alg(&self) -> Algorithm {
        match self.0 {
            Inner::MlKem512(_) => Algorithm::MlKem512,
            Inner::MlKem768(_) => Algorithm::MlKem768,
            Inner::MlKem1024(_) => Algorithm::MlKem1024,
            Inner::MlDsa44(_) => Algorithm::MlDsa44,
            Inner::MlDsa65(_) => Algorithm::MlDsa65,
            Inner::MlDsa87(_) => Algorithm::MlDsa87,
        }
    }

    /// The seed, for sealing. Callers keep any copy in zeroizing memory.
    pub fn seed(&self) -> &[u8] {
        with_seed!(self, _P, s => kem: s.as_slice(), dsa: s.as_slice())
    }

    /// The encoded public key (ML-KEM encapsulation key, ML-DSA verifying key).
    pub fn public_key(&self) -> Vec<u8> {
        with_seed!(self, P, s => kem: {
            let dk = ml_kem::DecapsulationKey::<P>::from_seed(**s);
            dk.encapsulation_key().to_bytes().to_vec()
        }, dsa: {
            let sk = ml_dsa::SigningKey::<P>::from_seed(s);
            sk.verifying_key().encode().to_vec()
        })
    }

    /// The expanded key, for many operations.
    pub fn expand(&self) -> ExpandedKey {
        match &self.0 {
            Inner::MlKem512(s) => ExpandedKey::MlKem512(Box::new(ml_kem::DecapsulationKey::<
                MlKem512,
            >::from_seed(**s))),
            Inner::MlKem768(s) => ExpandedKey::MlKem768(Box::new(ml_kem::DecapsulationKey::<
                MlKem768,
            >::from_seed(**s))),
            Inner::MlKem1024(s) => ExpandedKey::MlKem1024(Box::new(ml_kem::DecapsulationKey::<
                MlKem1024,
            >::from_seed(**s))),
            Inner::MlDsa44(s) => {
                ExpandedKey::MlDsa44(Box::new(ml_dsa::SigningKey::<MlDsa44>::from_seed(s)))
            }
            Inner::MlDsa65(s) => {
                ExpandedKey::MlDsa65(Box::new(ml_dsa::SigningKey::<MlDsa65>::from_seed(s)))
            }
            Inner::MlDsa87(s) => {
                ExpandedKey::MlDsa87(Box::new(ml_dsa::SigningKey::<MlDsa87>::from_seed(s)))
            }
        }
    }

    /// ML-DSA.Sign (FIPS 204 Algorithm 2, hedged): `rnd` is 32 fresh random bytes.
    pub fn sign(&self, msg: &[u8], ctx: &[u8], rnd: &[u8; 32]) -> Result<Vec<u8>, Error> {
        with_seed!(self, P, s => kem: Err(wrong("sign", "ML-DSA", self.alg())), dsa: {
            sign_with(&ml_dsa::SigningKey::<P>::from_seed(s), msg, ctx, rnd)
        })
    }

    /// ML-KEM.Decaps (FIPS 203 Algorithm 18): the 32-byte shared secret for
    /// ciphertext `ct` (an invalid ciphertext of the right length gives the
    /// implicit-rejection secret).
    pub fn decapsulate(&self, ct: &[u8]) -> Result<SharedSecret, Error> {
        let alg = self.alg();
        with_seed!(self, P, s => kem: {
            let dk = ml_kem::DecapsulationKey::<P>::from_seed(**s);
            let k = dk.decapsulate_slice(ct).map_err(|_| length("ciphertext", alg, alg.output_len(), ct.len()))?;
            Ok(Zeroizing::new(k.into()))
        }, dsa: Err(wrong("decapsulate", "ML-KEM", alg)))
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
) -> Result<Vec<u8>, Error> {
    let ctx_len = u8::try_from(ctx.len()).map_err(|_| Error::Context(ctx.len()))?;
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
    pub fn sign(&self, msg: &[u8], ctx: &[u8], rnd: &[u8; 32]) -> Result<Vec<u8>, Error> {
        match self {
            Self::MlDsa44(k) => sign_with(k, msg, ctx, rnd),
            Self::MlDsa65(k) => sign_with(k, msg, ctx, rnd),
            Self::MlDsa87(k) => sign_with(k, msg, ctx, rnd),
            _ => Err(wrong("sign", "ML-DSA", self.alg())),
        }
    }

    /// ML-KEM.Decaps, as [`PrivateKey::decapsulate`].
    pub fn decapsulate(&self, ct: &[u8]) -> Result<SharedSecret, Error> {
        let alg = self.alg();
        let bad = |_| length("ciphertext", alg, alg.output_len(), ct.len());
        let k = match self {
            Self::MlKem512(k) => k.decapsulate_slice(ct).map_err(bad)?,
            Self::MlKem768(k) => k.decapsulate_slice(ct).map_err(bad)?,
            Self::MlKem1024(k) => k.decapsulate_slice(ct).map_err(bad)?,
            _ => return Err(wrong("decapsulate", "ML-KEM", alg)),
        };
        Ok(Zeroizing::new(k.into()))
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
) -> Result<bool, Error> {
    if ctx.len() > 255 {
        return Err(Error::Context(ctx.len()));
    }
    with_params!(alg, P => kem: Err(wrong("verify", "ML-DSA", alg)), dsa: {
        let enc = EncodedVerifyingKey::<P>::try_from(pk)
            .map_err(|_| length("public key", alg, alg.public_key_len(), pk.len()))?;
        let vk = ml_dsa::VerifyingKey::<P>::decode(&enc);
        let Ok(sig) = ml_dsa::Signature::<P>::try_from(sig) else { return Ok(false) };
        Ok(vk.verify_with_context(msg, ctx, &sig))
    })
}

/// ML-KEM.Encaps with the 32 random bytes `m`: (ciphertext, shared secret).
pub fn encapsulate(
    alg: Algorithm,
    pk: &[u8],
    m: &[u8; 32],
) -> Result<(Vec<u8>, SharedSecret), Error> {
    with_params!(alg, P => kem: {
        let key = ml_kem::Key::<ml_kem::EncapsulationKey<P>>::try_from(pk)
            .map_err(|_| length("public key", alg, alg.public_key_len(), pk.len()))?;
        let ek = ml_kem::EncapsulationKey::<P>::new(&key)
            .map_err(|_| Error::InvalidPublicKey(alg.name()))?;
        let (ct, k) = ek.encapsulate_deterministic(&(*m).into());
        Ok((ct.to_vec(), Zeroizing::new(k.into())))
    }, dsa: Err(wrong("encapsulate", "ML-KEM", alg)))
}

/// The pairwise-consistency test of a new key pair (FIPS 140-3 IG 10.3.A):
/// sign and verify, or encapsulate and decapsulate. `rnd` is fresh randomness.
pub fn pairwise_consistency(key: &PrivateKey, rnd: &[u8; 32]) -> Result<(), Error> {
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
    if ok { Ok(()) } else { Err(Error::Consistency(alg.name())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_set_works_end_to_end() {
        for a in Algorithm::ALL {
            let seed: Vec<u8> = (0..a.seed_len() as u8).collect();
            let key = PrivateKey::from_seed(a, &seed).unwrap();
            let pk = key.public_key();
            assert_eq!(pk.len(), a.public_key_len(), "{a}");
            pairwise_consistency(&key, &[9; 32]).unwrap();
            if a.is_kem() {
                let (ct, k) = encapsulate(a, &pk, &[1; 32]).unwrap();
                assert_eq!(ct.len(), a.output_len());
                assert_eq!(key.decapsulate(&ct).unwrap()[..], k[..]);
                assert!(matches!(key.decapsulate(&ct[1..]), Err(Error::Length { .. })));
                assert!(matches!(key.sign(b"m", b"", &[0; 32]), Err(Error::WrongKind { .. })));
            } else {
                let sig = key.sign(b"msg", b"ctx", &[2; 32]).unwrap();
                assert!(verify(a, &pk, b"msg", b"ctx", &sig).unwrap());
                assert!(!verify(a, &pk, b"msg", b"other", &sig).unwrap());
                assert!(!verify(a, &pk, b"msg", b"ctx", &sig[1..]).unwrap());
                assert!(matches!(key.sign(b"m", &[0; 256], &[0; 32]), Err(Error::Context(256))));
                assert!(matches!(verify(a, &pk[1..], b"m", b"", &sig), Err(Error::Length { .. })));
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
            Err(Error::Length { want: 64, got: 32, .. })
        ));
    }
}
