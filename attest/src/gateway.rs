//! Keys for the gateway: a symmetric key a node makes for the gateway,
//! encapsulated to the gateway's ML-KEM key, wrapped, and attested.
//!
//! The node answers `POST /v1/gateway/keys` with a [`GatewayResponse`]:
//!
//! - `ciphertext`: ML-KEM-768 or -1024 encapsulation to the gateway's
//!   `recipient` key, giving a shared secret `ss`;
//! - the [`Transcript`]: the canonical JSON of
//!   `{key_id, length, purpose, recipient_sha3, ciphertext_sha3, nonce, expires_unix}`;
//! - the wrapping key: HKDF-SHA256 with salt `SHA3-256(transcript)`, input
//!   `ss` and info [`HKDF_INFO`], 32 bytes ([`wrapping_key`]);
//! - `wrapped_key`: `iv (12) ‖ AES-256-GCM(key) ‖ tag (16)` under the
//!   wrapping key, with the transcript as associated data ([`wrap`]);
//! - `evidence`: a "qkeyd-evidence/1" document whose statement's `gateway`
//!   names the recipient's and the ciphertext's SHA3-256, the key id, length
//!   and purpose, and whose `key` is the delivered key: id `key_id`, version
//!   1, algorithm [`GATEWAY_KEY_ALG`] and an empty public key (a symmetric
//!   key has no public part; its fingerprint is SHA3-256 of nothing, and the
//!   statement never carries a hash of the key itself). Its provenance is
//!   the fresh draw the key material came from.
//!
//! [`open`] is the gateway's side: it verifies the evidence
//! ([`verify()`](crate::verify())), checks every binding between the
//! evidence, the response and the gateway's own key, decapsulates, derives
//! and unwraps. Each refusal names its check: `gateway_response`,
//! `gateway_binding`, `expired` or `unwrap` after the evidence's own.

use std::fmt;
use std::ops::RangeInclusive;

use aes_gcm::aead::{Aead as _, Payload};
use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce};
/// The ML-KEM crate the recipient keys are of, for the gateway's own keys.
pub use ml_kem;
use ml_kem::{Decapsulate as _, DecapsulationKey768, DecapsulationKey1024, KeyExport as _};
use serde::{Deserialize, Serialize};
use sha3::{Digest as _, Sha3_256};
use zeroize::Zeroizing;

use crate::evidence::{self, Evidence, Statement};
use crate::policy::Policy;
use crate::state::VerifierState;
use crate::verify::{Check, Failure, verify};

/// The `key.alg` of a statement about a gateway key.
pub const GATEWAY_KEY_ALG: &str = "aes-256-gcm-wrapped";
/// HKDF's `info` for the wrapping key.
pub const HKDF_INFO: &[u8] = b"qkeyd-gateway-key/1";
/// The lengths of a gateway key, in bytes.
pub const KEY_LEN: RangeInclusive<usize> = 16..=64;
/// The longest purpose label, in bytes.
pub const PURPOSE_MAX: usize = 64;
/// AES-GCM's IV at the start of `wrapped_key`.
pub const IV_LEN: usize = 12;
/// AES-GCM's tag at the end of `wrapped_key`.
pub const TAG_LEN: usize = 16;
/// ML-KEM-768's encapsulation key length.
pub const ML_KEM_768_KEY_LEN: usize = 1184;
/// ML-KEM-1024's encapsulation key length.
pub const ML_KEM_1024_KEY_LEN: usize = 1568;

/// Whether `purpose` is a valid label: 1 to [`PURPOSE_MAX`] bytes of
/// printable ASCII, without `"` and `\` (it is quoted in logs as it is).
pub fn valid_purpose(purpose: &str) -> bool {
    (1..=PURPOSE_MAX).contains(&purpose.len())
        && purpose.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// Lowercase hex of SHA3-256(`bytes`): how the statement, the transcript
/// and the audit log name the recipient key and the ciphertext.
pub fn sha3_hex(bytes: &[u8]) -> String {
    hex::encode(Sha3_256::digest(bytes))
}

/// What the wrapping binds: every field of the delivery the gateway relies
/// on. Field order is the canonical key order.
#[derive(Clone, Debug, Eq, PartialEq, Serialize)]
pub struct Transcript<'a> {
    /// The key id (`g-` and 32 hex digits).
    pub key_id: &'a str,
    /// The key's length in bytes.
    pub length: u32,
    /// What the key is for.
    pub purpose: &'a str,
    /// [`sha3_hex`] of the recipient's encapsulation key.
    pub recipient_sha3: &'a str,
    /// [`sha3_hex`] of the ML-KEM ciphertext.
    pub ciphertext_sha3: &'a str,
    /// The gateway's nonce (standard base64 in the JSON).
    #[serde(serialize_with = "b64::serialize")]
    pub nonce: &'a [u8],
    /// When the key expires (Unix seconds).
    pub expires_unix: u64,
}

impl Transcript<'_> {
    /// The canonical bytes: compact JSON, keys in struct order. They are the
    /// AES-GCM associated data, and their SHA3-256 is HKDF's salt.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        // Strings and integers only: serde_json cannot fail on them.
        serde_json::to_vec(self).expect("transcript serializes")
    }
}

/// The answer of `POST /v1/gateway/keys`. Binary fields are standard base64.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayResponse {
    /// The key id (`g-` and 32 hex digits).
    pub key_id: String,
    /// The key's length in bytes.
    pub length: u32,
    /// What the key is for.
    pub purpose: String,
    /// The ML-KEM ciphertext to the recipient.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    /// `iv ‖ AES-256-GCM(key) ‖ tag`.
    #[serde(with = "b64")]
    pub wrapped_key: Vec<u8>,
    /// When the key expires (Unix seconds); the gateway must not use it after.
    pub expires_unix: u64,
    /// The evidence document ("qkeyd-evidence/1") about this delivery.
    pub evidence: Evidence,
}

/// HKDF-SHA256(salt = SHA3-256(`transcript`), ikm = `shared_secret`,
/// info = [`HKDF_INFO`]), 32 bytes: the AES-256-GCM key that wraps the
/// delivered key.
pub fn wrapping_key(shared_secret: &[u8; 32], transcript: &[u8]) -> Zeroizing<[u8; 32]> {
    let salt = Sha3_256::digest(transcript);
    let mut okm = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), shared_secret)
        .expand(HKDF_INFO, &mut okm[..])
        .expect("32 bytes is within HKDF-SHA256's output limit");
    okm
}

/// Wrap `key` for the recipient: `iv ‖ AES-256-GCM(key) ‖ tag` under
/// [`wrapping_key`], with `transcript` as associated data. `iv` must be
/// fresh random bytes (one wrapping key is used once, but the IV is random
/// all the same).
pub fn wrap(shared_secret: &[u8; 32], transcript: &[u8], key: &[u8], iv: &[u8; IV_LEN]) -> Vec<u8> {
    let wk = wrapping_key(shared_secret, transcript);
    let body = Aes256Gcm::new_from_slice(&wk[..])
        .expect("a 32-byte key")
        .encrypt(&Nonce::from(*iv), Payload { msg: key, aad: transcript })
        .expect("AES-GCM encrypts any input below 2^36 bytes");
    let mut out = Vec::with_capacity(IV_LEN + body.len());
    out.extend_from_slice(iv);
    out.extend_from_slice(&body);
    out
}

/// The inverse of [`wrap`]; `None` when the tag does not verify.
fn unwrap(
    shared_secret: &[u8; 32],
    transcript: &[u8],
    wrapped: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let (iv, body) = wrapped.split_first_chunk::<IV_LEN>()?;
    let wk = wrapping_key(shared_secret, transcript);
    Aes256Gcm::new_from_slice(&wk[..])
        .expect("a 32-byte key")
        .decrypt(&Nonce::from(*iv), Payload { msg: body, aad: transcript })
        .ok()
        .map(Zeroizing::new)
}

/// The gateway's own ML-KEM key, to which the node encapsulated.
#[derive(Clone, Copy)]
pub enum RecipientKey<'a> {
    /// ML-KEM-768.
    MlKem768(&'a DecapsulationKey768),
    /// ML-KEM-1024.
    MlKem1024(&'a DecapsulationKey1024),
}

impl fmt::Debug for RecipientKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MlKem768(_) => f.write_str("RecipientKey(ml-kem-768)"),
            Self::MlKem1024(_) => f.write_str("RecipientKey(ml-kem-1024)"),
        }
    }
}

impl<'a> From<&'a DecapsulationKey768> for RecipientKey<'a> {
    fn from(k: &'a DecapsulationKey768) -> Self {
        Self::MlKem768(k)
    }
}

impl<'a> From<&'a DecapsulationKey1024> for RecipientKey<'a> {
    fn from(k: &'a DecapsulationKey1024) -> Self {
        Self::MlKem1024(k)
    }
}

impl RecipientKey<'_> {
    /// The encapsulation key to send as `recipient`.
    pub fn encapsulation_key(&self) -> Vec<u8> {
        match self {
            Self::MlKem768(k) => k.encapsulation_key().to_bytes().to_vec(),
            Self::MlKem1024(k) => k.encapsulation_key().to_bytes().to_vec(),
        }
    }

    /// ML-KEM.Decaps; `None` if the ciphertext has another length than this
    /// parameter set's.
    fn decapsulate(&self, ct: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
        let mut k = match self {
            Self::MlKem768(k) => k.decapsulate_slice(ct).ok()?,
            Self::MlKem1024(k) => k.decapsulate_slice(ct).ok()?,
        };
        let out = Zeroizing::new(k.into());
        zeroize::Zeroize::zeroize(k.as_mut_slice());
        Some(out)
    }
}

/// A key delivered to the gateway, verified and unwrapped. `Debug` shows
/// everything but the key.
pub struct GatewayKey {
    /// The key id.
    pub key_id: String,
    /// The key, zeroized on drop.
    pub key: Zeroizing<Vec<u8>>,
    /// What the node was told the key is for; the caller checks it is what
    /// it asked for.
    pub purpose: String,
    /// When the key expires (Unix seconds).
    pub expires_unix: u64,
    /// The verified statement (provenance, sealer, node).
    pub statement: Statement,
}

impl fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayKey")
            .field("key_id", &self.key_id)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("purpose", &self.purpose)
            .field("expires_unix", &self.expires_unix)
            .finish_non_exhaustive()
    }
}

fn fail<T>(check: Check, detail: impl Into<String>) -> Result<T, Failure> {
    Err(Failure { check, detail: detail.into() })
}

fn ensure(ok: bool, check: Check, detail: impl FnOnce() -> String) -> Result<(), Failure> {
    if ok { Ok(()) } else { fail(check, detail()) }
}

/// Open a node's answer to `POST /v1/gateway/keys`: verify its evidence
/// against `nonce`, `policy` and `state` at `now_unix`, check that the
/// evidence, the answer and `recipient` agree, decapsulate, derive and
/// unwrap.
///
/// The evidence is verified as [`verify()`] does, except that the only key
/// algorithm accepted is [`GATEWAY_KEY_ALG`] (the policy's `algorithms` name
/// vault keys). Then, each a refusal under its own name:
/// `gateway_response` (the answer parses), `gateway_binding` (the statement
/// is about this delivery: its `gateway` names the recipient's own key, this
/// ciphertext, key id, length and purpose, and `key` is the delivered key),
/// `expired` (`now_unix` is before `expires_unix`) and `unwrap` (the
/// ciphertext decapsulates and the AES-GCM tag over the transcript holds:
/// this also binds the expiry and the nonce). `state` changes only when all
/// of them pass.
pub fn open(
    response_json: &[u8],
    recipient: RecipientKey<'_>,
    nonce: &[u8],
    policy: &Policy,
    state: &mut VerifierState,
    now_unix: u64,
) -> Result<GatewayKey, Failure> {
    let r: GatewayResponse = serde_json::from_slice(response_json).or_else(|e| {
        fail(Check::GatewayResponse, format!("the gateway key answer does not parse: {e}"))
    })?;
    let evidence_json = r.evidence.to_json();

    // The evidence, with the gateway key's algorithm as the only one.
    let gateway_policy = Policy { algorithms: vec![GATEWAY_KEY_ALG.to_owned()], ..policy.clone() };
    let mut trial = state.clone();
    let verified = verify(&evidence_json, nonce, &gateway_policy, &mut trial, now_unix)?;
    let statement = verified.statement;

    // Every binding between the statement, the answer and our own key.
    let Some(g) = &statement.gateway else {
        return fail(Check::GatewayBinding, "the evidence is about a vault key, not a gateway key");
    };
    let binding = |ok: bool, what: &str| {
        ensure(ok, Check::GatewayBinding, || {
            format!("{what} differs between the answer and the signed statement")
        })
    };
    let recipient_sha3 = sha3_hex(&recipient.encapsulation_key());
    ensure(g.recipient_sha3 == recipient_sha3, Check::GatewayBinding, || {
        format!(
            "the key was encapsulated to recipient {}, not to this gateway's key {recipient_sha3}",
            g.recipient_sha3
        )
    })?;
    let ciphertext_sha3 = sha3_hex(&r.ciphertext);
    binding(g.ciphertext_sha3 == ciphertext_sha3, "the ciphertext")?;
    binding(g.key_id == r.key_id && statement.key.id == r.key_id, "the key id")?;
    binding(g.length == r.length, "the length")?;
    binding(g.purpose == r.purpose, "the purpose")?;
    let key = &statement.key;
    ensure(key.public_key.is_empty() && key.version == 1, Check::GatewayBinding, || {
        "the statement's key has a public part or a version: it is not a delivered key".into()
    })?;
    let length = usize::try_from(r.length).unwrap_or(usize::MAX);
    ensure(KEY_LEN.contains(&length), Check::GatewayBinding, || {
        format!("the length {} is outside 16..=64 bytes", r.length)
    })?;
    ensure(r.wrapped_key.len() == IV_LEN + length + TAG_LEN, Check::GatewayBinding, || {
        format!(
            "wrapped_key is {} bytes; a {length}-byte key wraps to {}",
            r.wrapped_key.len(),
            IV_LEN + length + TAG_LEN
        )
    })?;

    ensure(now_unix < r.expires_unix, Check::Expired, || {
        format!("the key expired at {}, it is now {now_unix}", r.expires_unix)
    })?;

    // Decapsulate, derive, unwrap.
    let ss = recipient.decapsulate(&r.ciphertext).ok_or_else(|| Failure {
        check: Check::Unwrap,
        detail: format!(
            "the ciphertext is {} bytes, not an ML-KEM ciphertext for this gateway's key",
            r.ciphertext.len()
        ),
    })?;
    let transcript = Transcript {
        key_id: &r.key_id,
        length: r.length,
        purpose: &r.purpose,
        recipient_sha3: &recipient_sha3,
        ciphertext_sha3: &ciphertext_sha3,
        nonce,
        expires_unix: r.expires_unix,
    }
    .to_canonical_bytes();
    let key = unwrap(&ss, &transcript, &r.wrapped_key).ok_or_else(|| Failure {
        check: Check::Unwrap,
        detail: "the wrapped key does not open (AES-GCM tag): the answer was altered, or it was \
                 wrapped for another transcript"
            .into(),
    })?;

    *state = trial;
    Ok(GatewayKey {
        key_id: r.key_id,
        key,
        purpose: r.purpose,
        expires_unix: r.expires_unix,
        statement,
    })
}

/// `fingerprint` of the empty public key of a delivered key.
pub fn empty_key_fingerprint() -> String {
    evidence::fingerprint(b"")
}

/// Standard padded base64.
mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD.decode(text.as_bytes()).map_err(|e| D::Error::custom(format!("bad base64: {e}")))
    }
}

#[cfg(test)]
mod tests;
