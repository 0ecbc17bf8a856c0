//! Known-answer tests of ML-KEM and ML-DSA, run at start-up: NIST ACVP vectors
//! (FIPS 203 / FIPS 204 internal projections) stored as files in
//! `daemon/tests/data/acvp/` and compiled in. The daemon refuses to serve keys
//! if any answer differs.

use ml_dsa::{ExpandedSigningKey, MlDsa44, MlDsa65, MlDsa87};
use serde::Deserialize;

use super::alg::{Algorithm, PrivateKey, encapsulate};

const KEM_KEYGEN: &str = include_str!("../../tests/data/acvp/ml-kem-keygen.json");
const KEM_ENCAP_DECAP: &str = include_str!("../../tests/data/acvp/ml-kem-encap-decap.json");
const DSA_KEYGEN: &str = include_str!("../../tests/data/acvp/ml-dsa-keygen.json");
const DSA_SIGGEN: &str = include_str!("../../tests/data/acvp/ml-dsa-siggen.json");

#[derive(Deserialize)]
struct File<T> {
    #[serde(rename = "testGroups")]
    groups: Vec<Group<T>>,
}

#[derive(Deserialize)]
struct Group<T> {
    #[serde(rename = "parameterSet")]
    parameter_set: String,
    #[serde(default)]
    function: Option<String>,
    #[serde(default)]
    dk: Option<String>,
    tests: Vec<T>,
}

#[derive(Deserialize)]
struct KemKeyGen {
    #[serde(rename = "tcId")]
    id: u32,
    d: String,
    z: String,
    ek: String,
}

#[derive(Deserialize)]
struct KemEncapDecap {
    #[serde(rename = "tcId")]
    id: u32,
    #[serde(default)]
    ek: Option<String>,
    #[serde(default)]
    m: Option<String>,
    c: String,
    k: String,
}

#[derive(Deserialize)]
struct DsaKeyGen {
    #[serde(rename = "tcId")]
    id: u32,
    seed: String,
    pk: String,
}

#[derive(Deserialize)]
struct DsaSigGen {
    #[serde(rename = "tcId")]
    id: u32,
    sk: String,
    message: String,
    #[serde(default)]
    rnd: Option<String>,
    signature: String,
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    ::hex::decode(s).map_err(|e| format!("bad hex in a vector: {e}"))
}

fn alg(name: &str) -> Result<Algorithm, String> {
    Algorithm::parse(name).ok_or_else(|| format!("unknown parameter set {name}"))
}

/// Counts of vectors checked, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KatReport {
    /// Key generations (both algorithms).
    pub keygen: usize,
    /// ML-KEM encapsulations and decapsulations.
    pub kem: usize,
    /// ML-DSA signatures.
    pub sign: usize,
}

/// Run every stored vector; the first mismatch is an error naming it.
pub fn run() -> Result<KatReport, String> {
    let mut r = KatReport::default();
    let parse = |what: &str, e: serde_json::Error| format!("{what}: {e}");
    let f: File<KemKeyGen> =
        serde_json::from_str(KEM_KEYGEN).map_err(|e| parse("ML-KEM keyGen", e))?;
    for g in &f.groups {
        let a = alg(&g.parameter_set)?;
        for t in &g.tests {
            let mut seed = hex(&t.d)?;
            seed.extend(hex(&t.z)?);
            let key = PrivateKey::from_seed(a, &seed).map_err(|e| e.to_string())?;
            if key.public_key() != hex(&t.ek)? {
                return Err(format!("{a} keyGen vector {} gives another ek", t.id));
            }
            r.keygen += 1;
        }
    }
    let f: File<KemEncapDecap> =
        serde_json::from_str(KEM_ENCAP_DECAP).map_err(|e| parse("ML-KEM encapDecap", e))?;
    for g in &f.groups {
        let a = alg(&g.parameter_set)?;
        for t in &g.tests {
            let ok = match (g.function.as_deref(), &t.ek, &t.m, &g.dk) {
                (Some("encapsulation"), Some(ek), Some(m), _) => {
                    let m: [u8; 32] = hex(m)?.try_into().map_err(|_| "m is not 32 bytes")?;
                    let (c, k) = encapsulate(a, &hex(ek)?, &m).map_err(|e| e.to_string())?;
                    c == hex(&t.c)? && k[..] == hex(&t.k)?[..]
                }
                (Some("decapsulation"), _, _, Some(dk)) => {
                    decaps_expanded(a, &hex(dk)?, &hex(&t.c)?)?
                        .is_some_and(|k| k[..] == hex(&t.k).unwrap_or_default()[..])
                }
                _ => return Err(format!("{a} encapDecap vector {} has an unknown shape", t.id)),
            };
            if !ok {
                return Err(format!("{a} encapDecap vector {} gives another answer", t.id));
            }
            r.kem += 1;
        }
    }
    let f: File<DsaKeyGen> =
        serde_json::from_str(DSA_KEYGEN).map_err(|e| parse("ML-DSA keyGen", e))?;
    for g in &f.groups {
        let a = alg(&g.parameter_set)?;
        for t in &g.tests {
            let key = PrivateKey::from_seed(a, &hex(&t.seed)?).map_err(|e| e.to_string())?;
            if key.public_key() != hex(&t.pk)? {
                return Err(format!("{a} keyGen vector {} gives another pk", t.id));
            }
            r.keygen += 1;
        }
    }
    let f: File<DsaSigGen> =
        serde_json::from_str(DSA_SIGGEN).map_err(|e| parse("ML-DSA sigGen", e))?;
    for g in &f.groups {
        let a = alg(&g.parameter_set)?;
        for t in &g.tests {
            let rnd: [u8; 32] = match &t.rnd {
                Some(r) => hex(r)?.try_into().map_err(|_| "rnd is not 32 bytes")?,
                None => [0; 32],
            };
            let sig = sign_expanded(a, &hex(&t.sk)?, &hex(&t.message)?, &rnd)?;
            if sig != hex(&t.signature)? {
                return Err(format!("{a} sigGen vector {} gives another signature", t.id));
            }
            r.sign += 1;
        }
    }
    Ok(r)
}

/// Decapsulate with an expanded (FIPS 203 encoded) decapsulation key, the form
/// the ACVP vectors use.
#[allow(deprecated)]
fn decaps_expanded(a: Algorithm, dk: &[u8], c: &[u8]) -> Result<Option<[u8; 32]>, String> {
    use ml_kem::Decapsulate as _;
    macro_rules! go {
        ($P:ty) => {{
            let enc =
                ml_kem::ExpandedDecapsulationKey::<$P>::try_from(dk).map_err(|_| "dk length")?;
            let key =
                ml_kem::DecapsulationKey::<$P>::from_expanded(&enc).map_err(|_| "dk invalid")?;
            key.decapsulate_slice(c).ok().map(Into::into)
        }};
    }
    Ok(match a {
        Algorithm::MlKem512 => go!(ml_kem::MlKem512),
        Algorithm::MlKem768 => go!(ml_kem::MlKem768),
        Algorithm::MlKem1024 => go!(ml_kem::MlKem1024),
        _ => return Err(format!("{a} is not ML-KEM")),
    })
}

/// ML-DSA.Sign_internal with an expanded signing key, as the ACVP vectors use.
#[allow(deprecated)]
fn sign_expanded(a: Algorithm, sk: &[u8], msg: &[u8], rnd: &[u8; 32]) -> Result<Vec<u8>, String> {
    macro_rules! go {
        ($P:ty) => {{
            let enc =
                ml_dsa::ExpandedSigningKeyBytes::<$P>::try_from(sk).map_err(|_| "sk length")?;
            let key = ExpandedSigningKey::<$P>::from_expanded(&enc);
            key.sign_internal(&[msg], &(*rnd).into()).encode().to_vec()
        }};
    }
    Ok(match a {
        Algorithm::MlDsa44 => go!(MlDsa44),
        Algorithm::MlDsa65 => go!(MlDsa65),
        Algorithm::MlDsa87 => go!(MlDsa87),
        _ => return Err(format!("{a} is not ML-DSA")),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_stored_vector_passes() {
        let r = super::run().unwrap();
        // 2 keyGen per parameter set and algorithm; 2 encapsulation and 2
        // decapsulation per ML-KEM set; 2 signatures per ML-DSA set.
        assert_eq!(r, super::KatReport { keygen: 12, kem: 12, sign: 6 });
    }
}
