//! Known-answer tests of ML-KEM and ML-DSA, run at start-up: NIST ACVP vectors
//! (FIPS 203 / FIPS 204 internal projections) stored as files in
//! `pqc/acvp/` (see the README there) and compiled in. The daemon refuses to
//! serve keys if any answer differs.

use ml_dsa::{ExpandedSigningKey, MlDsa44, MlDsa65, MlDsa87};
use serde::Deserialize;

use crate::{Algorithm, Error, PrivateKey, encapsulate};

const KEM_KEYGEN: &str = include_str!("../acvp/ml-kem-keygen.json");
const KEM_ENCAP_DECAP: &str = include_str!("../acvp/ml-kem-encap-decap.json");
const DSA_KEYGEN: &str = include_str!("../acvp/ml-dsa-keygen.json");
const DSA_SIGGEN: &str = include_str!("../acvp/ml-dsa-siggen.json");

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

/// One vector file: its name in errors and its text.
#[derive(Clone, Copy)]
struct Source {
    file: &'static str,
    text: &'static str,
}

const KEM_KEYGEN_FILE: Source = Source { file: "ml-kem-keygen.json", text: KEM_KEYGEN };
const KEM_ENCAP_DECAP_FILE: Source =
    Source { file: "ml-kem-encap-decap.json", text: KEM_ENCAP_DECAP };
const DSA_KEYGEN_FILE: Source = Source { file: "ml-dsa-keygen.json", text: DSA_KEYGEN };
const DSA_SIGGEN_FILE: Source = Source { file: "ml-dsa-siggen.json", text: DSA_SIGGEN };

impl Source {
    fn parse<T: serde::de::DeserializeOwned>(self) -> Result<File<T>, Error> {
        serde_json::from_str(self.text)
            .map_err(|source| Error::KatParse { file: self.file, source })
    }

    fn malformed(self, id: u32, field: &'static str) -> Error {
        Error::KatMalformed { file: self.file, id, field }
    }

    fn mismatch(self, alg: Algorithm, id: u32) -> Error {
        Error::KatMismatch { file: self.file, alg: alg.name(), id }
    }

    fn hex(self, id: u32, field: &'static str, s: &str) -> Result<Vec<u8>, Error> {
        ::hex::decode(s).map_err(|_| self.malformed(id, field))
    }

    fn hex32(self, id: u32, field: &'static str, s: &str) -> Result<[u8; 32], Error> {
        self.hex(id, field, s)?.try_into().map_err(|_| self.malformed(id, field))
    }

    fn alg(self, name: &str) -> Result<Algorithm, Error> {
        Algorithm::parse(name).ok_or(self.malformed(0, "parameterSet"))
    }
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
pub fn run() -> Result<KatReport, Error> {
    let mut r = KatReport::default();
    let src = KEM_KEYGEN_FILE;
    for g in &src.parse::<KemKeyGen>()?.groups {
        let a = src.alg(&g.parameter_set)?;
        for t in &g.tests {
            let mut seed = zeroize::Zeroizing::new(src.hex(t.id, "d", &t.d)?);
            seed.extend(src.hex(t.id, "z", &t.z)?);
            let key = PrivateKey::from_seed(a, &seed)?;
            if key.public_key() != src.hex(t.id, "ek", &t.ek)? {
                return Err(src.mismatch(a, t.id));
            }
            r.keygen += 1;
        }
    }
    let src = KEM_ENCAP_DECAP_FILE;
    for g in &src.parse::<KemEncapDecap>()?.groups {
        let a = src.alg(&g.parameter_set)?;
        for t in &g.tests {
            let want_k = src.hex(t.id, "k", &t.k)?;
            let ok = match (g.function.as_deref(), &t.ek, &t.m, &g.dk) {
                (Some("encapsulation"), Some(ek), Some(m), _) => {
                    let m = src.hex32(t.id, "m", m)?;
                    let (c, k) = encapsulate(a, &src.hex(t.id, "ek", ek)?, &m)?;
                    c == src.hex(t.id, "c", &t.c)? && k[..] == want_k[..]
                }
                (Some("decapsulation"), _, _, Some(dk)) => {
                    let dk = src.hex(t.id, "dk", dk)?;
                    let c = src.hex(t.id, "c", &t.c)?;
                    decaps_expanded(a, &dk, &c)
                        .ok_or(src.malformed(t.id, "dk"))?
                        .is_some_and(|k| k[..] == want_k[..])
                }
                _ => return Err(src.malformed(t.id, "function")),
            };
            if !ok {
                return Err(src.mismatch(a, t.id));
            }
            r.kem += 1;
        }
    }
    let src = DSA_KEYGEN_FILE;
    for g in &src.parse::<DsaKeyGen>()?.groups {
        let a = src.alg(&g.parameter_set)?;
        for t in &g.tests {
            let key = PrivateKey::from_seed(a, &src.hex(t.id, "seed", &t.seed)?)?;
            if key.public_key() != src.hex(t.id, "pk", &t.pk)? {
                return Err(src.mismatch(a, t.id));
            }
            r.keygen += 1;
        }
    }
    let src = DSA_SIGGEN_FILE;
    for g in &src.parse::<DsaSigGen>()?.groups {
        let a = src.alg(&g.parameter_set)?;
        for t in &g.tests {
            let rnd = match &t.rnd {
                Some(r) => src.hex32(t.id, "rnd", r)?,
                None => [0; 32],
            };
            let sk = src.hex(t.id, "sk", &t.sk)?;
            let sig = sign_expanded(a, &sk, &src.hex(t.id, "message", &t.message)?, &rnd)
                .ok_or(src.malformed(t.id, "sk"))?;
            if sig != src.hex(t.id, "signature", &t.signature)? {
                return Err(src.mismatch(a, t.id));
            }
            r.sign += 1;
        }
    }
    Ok(r)
}

/// Decapsulate with an expanded (FIPS 203 encoded) decapsulation key, the form
/// the ACVP vectors use: `None` if `a` is not ML-KEM or `dk` is not a key of
/// it, else the shared secret if `c` has the right length.
#[allow(deprecated)]
fn decaps_expanded(a: Algorithm, dk: &[u8], c: &[u8]) -> Option<Option<[u8; 32]>> {
    use ml_kem::Decapsulate as _;
    macro_rules! go {
        ($P:ty) => {{
            let enc = ml_kem::ExpandedDecapsulationKey::<$P>::try_from(dk).ok()?;
            let key = ml_kem::DecapsulationKey::<$P>::from_expanded(&enc).ok()?;
            key.decapsulate_slice(c).ok().map(Into::into)
        }};
    }
    Some(match a {
        Algorithm::MlKem512 => go!(ml_kem::MlKem512),
        Algorithm::MlKem768 => go!(ml_kem::MlKem768),
        Algorithm::MlKem1024 => go!(ml_kem::MlKem1024),
        _ => return None,
    })
}

/// ML-DSA.Sign_internal with an expanded signing key, as the ACVP vectors use;
/// `None` if `a` is not ML-DSA or `sk` has the wrong length.
#[allow(deprecated)]
fn sign_expanded(a: Algorithm, sk: &[u8], msg: &[u8], rnd: &[u8; 32]) -> Option<Vec<u8>> {
    macro_rules! go {
        ($P:ty) => {{
            let enc = ml_dsa::ExpandedSigningKeyBytes::<$P>::try_from(sk).ok()?;
            let key = ExpandedSigningKey::<$P>::from_expanded(&enc);
            key.sign_internal(&[msg], &(*rnd).into()).encode().to_vec()
        }};
    }
    Some(match a {
        Algorithm::MlDsa44 => go!(MlDsa44),
        Algorithm::MlDsa65 => go!(MlDsa65),
        Algorithm::MlDsa87 => go!(MlDsa87),
        _ => return None,
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
