//! The evidence document ("qkeyd-evidence/1") and the canonical statement
//! ("qkeyd-statement/1") it carries, as serde types.
//!
//! Field order is struct order: it is the key order of the canonical JSON.
//! Binary fields are standard padded base64 (hex where the format says
//! hex). Every type refuses unknown fields when it is parsed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sha3::{Digest as _, Sha3_256};

/// `format` of an evidence document.
pub const EVIDENCE_FORMAT: &str = "qkeyd-evidence/1";
/// `format` of a statement.
pub const STATEMENT_FORMAT: &str = "qkeyd-statement/1";
/// The ML-DSA context string of a statement's signature (FIPS 204 `ctx`), so
/// that no signature the identity key makes for anything else verifies as one.
pub const STATEMENT_CONTEXT: &[u8] = b"qkeyd-statement/1";
/// The domain-separation prefix of [`extra_data`].
pub const EXTRA_DATA_LABEL: &[u8] = b"qkeyd-attest/1\0";
/// The PCR bank quoted.
pub const PCR_BANK_SHA256: &str = "sha256";
/// The prefix of every fingerprint.
pub const FINGERPRINT_PREFIX: &str = "sha3-256:";

/// The evidence document a node hands the gateway.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// [`EVIDENCE_FORMAT`].
    pub format: String,
    /// The canonical statement bytes ([`Statement::to_canonical_bytes`]).
    #[serde(with = "b64")]
    pub statement: Vec<u8>,
    /// ML-DSA-87 signature over `statement`, with an empty context.
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    /// The node's ML-DSA-87 attestation key.
    pub identity: Identity,
    /// The TPM quote binding the statement, `None` on a node without a TPM.
    pub tpm: Option<TpmEvidence>,
}

/// The node's attestation identity.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The ML-DSA-87 public key (2592 bytes).
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// [`fingerprint`] of `public_key`.
    pub fingerprint: String,
}

/// A TPM2_Quote over the statement, by the node's attestation key (AK).
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TpmEvidence {
    /// The marshalled `TPMS_ATTEST` (the `TPM2B_ATTEST` body, without size).
    #[serde(with = "b64")]
    pub attest: Vec<u8>,
    /// The marshalled `TPMT_SIGNATURE` over `attest`.
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
    /// The quoted bank: [`PCR_BANK_SHA256`].
    pub pcr_bank: String,
    /// The quoted PCRs' values by index.
    #[serde(with = "hex_map")]
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    /// The AK's marshalled `TPM2B_PUBLIC` (with its 2-byte size).
    #[serde(with = "b64")]
    pub ak_public: Vec<u8>,
    /// The AK as an SPKI PEM, for people and tools; it must be the key of
    /// `ak_public`.
    pub ak_pem: String,
    /// The AK's Name: `0x000b || SHA-256(TPMT_PUBLIC)`.
    #[serde(with = "hex_bytes")]
    pub ak_name: Vec<u8>,
    /// The EK certificate and its issuers, DER.
    #[serde(with = "b64_list")]
    pub ek_chain: Vec<Vec<u8>>,
}

/// What the node states about a key; signed by the identity key and bound
/// into the quote's `extraData`.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// [`STATEMENT_FORMAT`].
    pub format: String,
    /// The identity key's fingerprint.
    pub node: String,
    /// The gateway's nonce, 16 to 64 bytes.
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    /// When the node made the statement (Unix seconds).
    pub issued_unix: u64,
    /// The key.
    pub key: KeyInfo,
    /// Where the key is sealed.
    pub sealer: SealerInfo,
    /// The entropy the key was made from.
    pub provenance: Provenance,
    /// The pool's sources now.
    pub pool: PoolInfo,
    /// The key delivered to the gateway, when it is.
    pub gateway: Option<GatewayDelivery>,
}

/// The key a statement is about.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyInfo {
    /// The key id (`k-...`).
    pub id: String,
    /// The key version.
    pub version: u32,
    /// The algorithm's API name (`ml-kem-768`, `ml-dsa-65`, ...).
    pub alg: String,
    /// The public key.
    #[serde(with = "b64")]
    pub public_key: Vec<u8>,
    /// [`fingerprint`] of `public_key`.
    pub fingerprint: String,
    /// When the key was made (Unix seconds).
    pub created_unix: u64,
}

/// The kind of sealer holding a key.
#[derive(Clone, Copy, Debug, Deserialize, Eq, Hash, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SealerKind {
    /// A TPM 2.0.
    Tpm,
    /// A PKCS#11 HSM.
    Hsm,
    /// A key file sealed in software.
    Soft,
}

impl SealerKind {
    /// The name used in statements and policies.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tpm => "tpm",
            Self::Hsm => "hsm",
            Self::Soft => "soft",
        }
    }
}

/// The sealer of the key.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SealerInfo {
    /// The kind.
    pub kind: SealerKind,
    /// The HSM token's label.
    pub token_label: Option<String>,
    /// The HSM token's serial.
    pub token_serial: Option<String>,
    /// Whether the node has a TPM (and so must send a quote).
    pub tpm: bool,
}

/// What the pool serves from.
#[derive(Clone, Copy, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Serving {
    /// The health-tested entropy sources.
    Sources,
    /// The operating system's generator, the sources having failed.
    OsFallback,
}

/// The entropy a key was made from.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// What the pool served from when the key was made.
    pub serving: Serving,
    /// The DRBG's reseed counter then.
    pub reseed_counter: u64,
    /// The source whose seed block the key was drawn after (a fresh reseed
    /// for every key), or `os-fallback`.
    pub seed_source: String,
    /// The sources then.
    pub sources: Vec<SourceReport>,
}

/// The pool now.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolInfo {
    /// What the pool serves from, when known.
    pub serving: Option<Serving>,
    /// The sources.
    pub sources: Vec<SourceReport>,
}

/// One entropy source's health.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceReport {
    /// The source's name.
    pub name: String,
    /// Its health state (`healthy`, ...).
    pub state: String,
    /// Its trust score, 0 to 1.
    pub trust: f64,
    /// Its drift.
    pub drift: f64,
}

/// A key encapsulated to the gateway.
#[derive(Clone, Debug, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayDelivery {
    /// Hex SHA3-256 of the gateway's ML-KEM public key.
    pub recipient_sha3: String,
    /// Hex SHA3-256 of the ciphertext.
    pub ciphertext_sha3: String,
    /// The delivered key's id.
    pub key_id: String,
    /// The delivered key's length in bytes.
    pub length: u32,
    /// What the key is for.
    pub purpose: String,
}

impl Evidence {
    /// The document as JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Plain structs with string keys and finite numbers: serde_json
        // cannot fail on them.
        serde_json::to_vec(self).expect("evidence serializes")
    }

    /// Parse a document, refusing unknown fields and malformed base64.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

impl Statement {
    /// The canonical bytes: compact JSON, keys in struct order, floats in
    /// Rust's shortest round-trip form. These bytes are what is signed.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        // As above; a non-finite float would come out as `null` and fail
        // `from_canonical_bytes`.
        serde_json::to_vec(self).expect("statement serializes")
    }

    /// Parse statement bytes and check they are canonical: the bytes this
    /// crate would write for the parsed value, so one statement has one
    /// encoding.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, String> {
        let statement: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if statement.to_canonical_bytes() != bytes {
            return Err("the statement is not in canonical form (compact JSON, keys in the \
                        format's order, shortest floats)"
                .into());
        }
        Ok(statement)
    }
}

/// `"sha3-256:" || hex(SHA3-256(bytes))`: the fingerprint of a public key.
pub fn fingerprint(bytes: &[u8]) -> String {
    format!("{FINGERPRINT_PREFIX}{}", hex::encode(Sha3_256::digest(bytes)))
}

/// The quote's `extraData`:
/// `SHA-256("qkeyd-attest/1\0" || nonce || SHA3-256(statement_bytes))`.
/// It fits any SHA-256 AK's `TPM2B_DATA` and binds both the gateway's nonce
/// and the exact statement.
pub fn extra_data(nonce: &[u8], statement_bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(EXTRA_DATA_LABEL);
    h.update(nonce);
    h.update(Sha3_256::digest(statement_bytes));
    h.finalize().into()
}

/// Standard padded base64 for `Vec<u8>` fields (`#[serde(with = "b64")]`),
/// as every qkeyd document writes binary fields.
pub mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    /// Write `v` as a base64 string.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    /// Read a base64 string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD.decode(text.as_bytes()).map_err(|e| D::Error::custom(format!("bad base64: {e}")))
    }
}

/// A list of base64 strings.
mod b64_list {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|b| STANDARD.encode(b)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                STANDARD
                    .decode(t.as_bytes())
                    .map_err(|e| D::Error::custom(format!("bad base64: {e}")))
            })
            .collect()
    }
}

/// Lowercase hex for `Vec<u8>`.
mod hex_bytes {
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(text.as_bytes()).map_err(|e| D::Error::custom(format!("bad hex: {e}")))
    }
}

/// A map of PCR index (a decimal string key) to hex value.
mod hex_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(
        v: &BTreeMap<u32, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(v.iter().map(|(k, b)| (k.to_string(), hex::encode(b))))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, Vec<u8>>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (k, v) in raw {
            let index = k.parse::<u32>().ok().filter(|i| i.to_string() == k).ok_or_else(|| {
                D::Error::custom(format!("PCR index `{k}` is not a decimal number"))
            })?;
            let value = hex::decode(v.as_bytes())
                .map_err(|e| D::Error::custom(format!("PCR {k}: bad hex: {e}")))?;
            out.insert(index, value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_data_is_the_specified_hash() {
        let nonce = [7u8; 16];
        let statement = b"{\"format\":\"qkeyd-statement/1\"}";
        let mut input = b"qkeyd-attest/1\0".to_vec();
        input.extend_from_slice(&nonce);
        input.extend_from_slice(&Sha3_256::digest(statement));
        let want: [u8; 32] = Sha256::digest(&input).into();
        assert_eq!(extra_data(&nonce, statement), want);
        assert_ne!(extra_data(&[8u8; 16], statement), want);
    }

    #[test]
    fn fingerprint_is_prefixed_hex_sha3() {
        assert_eq!(
            fingerprint(b""),
            "sha3-256:a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a"
        );
    }
}
