//! The verifier: one evidence document against a nonce, a policy and the
//! verifier's state.
//!
//! The checks run in an order where nothing signed is read before its
//! signature holds:
//!
//! 1. the document (`format`), the identity key's own fingerprint
//!    (`identity_fingerprint`) and the ML-DSA-87 signature over the raw
//!    statement bytes (`signature`); only then is the statement parsed
//!    (`statement_parse`) and its `node` compared with the identity;
//! 2. when the policy or the statement calls for a TPM, its presence
//!    (`tpm_missing`); then the AK (`ak_public`, `ak_trusted`), the quote's
//!    ECDSA signature over the raw `TPMS_ATTEST` (`quote_signature`), and
//!    only then what the quote says (`quote_magic`, `quote_type`,
//!    `quote_parse`, `extra_data`, `pcr_select`, `pcr_digest`, `pcr_policy`,
//!    `clock_safe`, `counters`, `firmware`);
//! 3. what the statement says, now bound to the TPM: `key_fingerprint`,
//!    `nonce`, `age`, `algorithm`, `sealer`, `trust`.
//!
//! The first failing check ends verification. The state changes only when
//! every check passes.

use std::collections::BTreeMap;
use std::fmt;

use ml_dsa::{EncodedVerifyingKey, MlDsa87};
use p256::ecdsa::VerifyingKey;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::pkcs8::DecodePublicKey as _;
use sha2::{Digest as _, Sha256};

use crate::evidence::{
    self, EVIDENCE_FORMAT, Evidence, PCR_BANK_SHA256, STATEMENT_FORMAT, Serving, Statement,
    TpmEvidence,
};
use crate::policy::Policy;
use crate::state::{Counters, VerifierState};
use crate::tpm::{
    self, Attest, Attested, ClockInfo, EccPublic, EcdsaSignature, TPM_ALG_SHA256,
    TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE, TPMA_OBJECT_DECRYPT, TPMA_OBJECT_FIXED_TPM,
    TPMA_OBJECT_RESTRICTED, TPMA_OBJECT_SIGN,
};

/// The shortest and longest nonce the gateway may use.
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 16..=64;
/// How far in the future a statement's `issued_unix` may be (clock skew
/// between the node and the gateway).
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;

const ML_DSA_87_PUBLIC_KEY_LEN: usize = 2592;

/// The named checks of the verifier, in the order they run.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum Check {
    /// The document parses (no unknown fields, valid base64 and hex) and is
    /// "qkeyd-evidence/1".
    Format,
    /// The identity's fingerprint is SHA3-256 of its public key, and the
    /// statement's `node`.
    IdentityFingerprint,
    /// The ML-DSA-87 signature over the statement bytes holds.
    Signature,
    /// The statement parses, is "qkeyd-statement/1" and canonical.
    StatementParse,
    /// The evidence has a TPM quote when the policy or statement needs one.
    TpmMissing,
    /// `ak_public` is a restricted ECDSA P-256 signing key whose Name is
    /// `ak_name` and whose key `ak_pem` is.
    AkPublic,
    /// The policy trusts `ak_name`.
    AkTrusted,
    /// With `ek_roots` in the policy: `ek_chain` leads to one of them.
    EkChain,
    /// The quote's ECDSA-SHA256 signature over `attest` holds for the AK.
    QuoteSignature,
    /// `magic` is `TPM_GENERATED_VALUE`.
    QuoteMagic,
    /// `type` is `TPM_ST_ATTEST_QUOTE`.
    QuoteType,
    /// The signed `TPMS_ATTEST` parses.
    QuoteParse,
    /// `extraData` binds the nonce and the statement.
    ExtraData,
    /// The quote selects exactly the listed PCRs in the sha256 bank.
    PcrSelect,
    /// The listed values hash to the quote's `pcrDigest`.
    PcrDigest,
    /// The PCRs (or their digest) are the policy's.
    PcrPolicy,
    /// `clockInfo.safe` is 1.
    ClockSafe,
    /// `resetCount`/`restartCount` have not gone back for this AK.
    Counters,
    /// `firmwareVersion` is in the policy's allow-list.
    Firmware,
    /// The key's fingerprint is SHA3-256 of its public key.
    KeyFingerprint,
    /// The statement's nonce is the gateway's and was never accepted before.
    Nonce,
    /// The statement is recent enough.
    Age,
    /// The policy accepts the key's algorithm.
    Algorithm,
    /// The policy accepts the key's sealer.
    Sealer,
    /// The key came from trusted, serving sources.
    Trust,
    /// A gateway key answer parses: its fields, base64 and the evidence in
    /// it ([`gateway::open`](crate::gateway::open) only, as are the next three).
    GatewayResponse,
    /// The statement is about this delivery: its `gateway` names the
    /// gateway's own key, the ciphertext, key id, length and purpose of the
    /// answer, and its `key` is the delivered key.
    GatewayBinding,
    /// The delivered key has not expired.
    Expired,
    /// The ciphertext decapsulates with the gateway's key and the wrapped key
    /// opens (AES-GCM) under the transcript.
    Unwrap,
}

impl Check {
    /// Every check, in the order they run.
    pub const ALL: [Self; 29] = [
        Self::Format,
        Self::IdentityFingerprint,
        Self::Signature,
        Self::StatementParse,
        Self::TpmMissing,
        Self::AkPublic,
        Self::AkTrusted,
        Self::EkChain,
        Self::QuoteSignature,
        Self::QuoteMagic,
        Self::QuoteType,
        Self::QuoteParse,
        Self::ExtraData,
        Self::PcrSelect,
        Self::PcrDigest,
        Self::PcrPolicy,
        Self::ClockSafe,
        Self::Counters,
        Self::Firmware,
        Self::KeyFingerprint,
        Self::Nonce,
        Self::Age,
        Self::Algorithm,
        Self::Sealer,
        Self::Trust,
        Self::GatewayResponse,
        Self::GatewayBinding,
        Self::Expired,
        Self::Unwrap,
    ];

    /// The check's name in the evidence format's specification.
    pub fn name(self) -> &'static str {
        match self {
            Self::Format => "format",
            Self::IdentityFingerprint => "identity_fingerprint",
            Self::Signature => "signature",
            Self::StatementParse => "statement_parse",
            Self::TpmMissing => "tpm_missing",
            Self::AkPublic => "ak_public",
            Self::AkTrusted => "ak_trusted",
            Self::EkChain => "ek_chain",
            Self::QuoteSignature => "quote_signature",
            Self::QuoteMagic => "quote_magic",
            Self::QuoteType => "quote_type",
            Self::QuoteParse => "quote_parse",
            Self::ExtraData => "extra_data",
            Self::PcrSelect => "pcr_select",
            Self::PcrDigest => "pcr_digest",
            Self::PcrPolicy => "pcr_policy",
            Self::ClockSafe => "clock_safe",
            Self::Counters => "counters",
            Self::Firmware => "firmware",
            Self::KeyFingerprint => "key_fingerprint",
            Self::Nonce => "nonce",
            Self::Age => "age",
            Self::Algorithm => "algorithm",
            Self::Sealer => "sealer",
            Self::Trust => "trust",
            Self::GatewayResponse => "gateway_response",
            Self::GatewayBinding => "gateway_binding",
            Self::Expired => "expired",
            Self::Unwrap => "unwrap",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why evidence was refused: the first check that failed and what it found.
/// The detail names fields, sizes and public values only.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[error("evidence refused by check `{check}`: {detail}")]
pub struct Failure {
    /// The check.
    pub check: Check,
    /// What it found.
    pub detail: String,
}

/// Evidence that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    /// The statement, now trusted.
    pub statement: Statement,
    /// The node's identity fingerprint.
    pub node: String,
    /// What the quote showed, when there was one.
    pub quote: Option<QuoteFacts>,
}

/// The facts of a verified TPM quote.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct QuoteFacts {
    /// The AK's Name.
    pub ak_name: Vec<u8>,
    /// The TPM's clock and counters.
    pub clock_info: ClockInfo,
    /// The TPM's `firmwareVersion`.
    pub firmware_version: u64,
    /// The quoted sha256 PCR values.
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    /// The quote's `pcrDigest`.
    pub pcr_digest: Vec<u8>,
}

fn fail<T>(check: Check, detail: impl Into<String>) -> Result<T, Failure> {
    Err(Failure { check, detail: detail.into() })
}

fn ensure(ok: bool, check: Check, detail: impl FnOnce() -> String) -> Result<(), Failure> {
    if ok { Ok(()) } else { fail(check, detail()) }
}

/// Verify an evidence document against the gateway's `nonce`, the `policy`
/// and the verifier `state`, at `now_unix`. On success the nonce and the
/// AK's counters are recorded in `state` (and stale nonces dropped), which
/// the caller then saves; on failure `state` is unchanged.
pub fn verify(
    evidence_json: &[u8],
    nonce: &[u8],
    policy: &Policy,
    state: &mut VerifierState,
    now_unix: u64,
) -> Result<Verified, Failure> {
    // 1. The document, the identity and its signature; then the statement.
    let ev = Evidence::from_json(evidence_json)
        .or_else(|e| fail(Check::Format, format!("the evidence does not parse: {e}")))?;
    ensure(ev.format == EVIDENCE_FORMAT, Check::Format, || {
        format!("format is `{}`, this verifier reads `{EVIDENCE_FORMAT}`", ev.format)
    })?;
    let node = evidence::fingerprint(&ev.identity.public_key);
    ensure(ev.identity.fingerprint == node, Check::IdentityFingerprint, || {
        format!(
            "identity fingerprint `{}` is not SHA3-256 of its public key",
            ev.identity.fingerprint
        )
    })?;
    verify_ml_dsa_87(&ev)?;
    let statement = Statement::from_canonical_bytes(&ev.statement)
        .or_else(|e| fail(Check::StatementParse, e))?;
    ensure(statement.format == STATEMENT_FORMAT, Check::StatementParse, || {
        format!(
            "statement format is `{}`, this verifier reads `{STATEMENT_FORMAT}`",
            statement.format
        )
    })?;
    ensure(statement.node == node, Check::IdentityFingerprint, || {
        format!("the statement's node `{}` is not the signing identity `{node}`", statement.node)
    })?;

    // 2. The TPM quote binding the statement.
    let needs_tpm = policy.require_tpm
        || statement.sealer.tpm
        || !policy.pcrs.is_empty()
        || policy.pcr_digest.is_some();
    let quote = match &ev.tpm {
        Some(tpm) => Some(verify_quote(tpm, &ev.statement, &statement, policy, state)?),
        None if needs_tpm => {
            return fail(
                Check::TpmMissing,
                "the evidence has no TPM quote, and the policy or the statement requires one",
            );
        }
        None => None,
    };

    // 3. What the statement says.
    check_statement(&statement, nonce, policy, state, now_unix)?;

    // Everything holds: remember the nonce and the counters.
    state.prune(now_unix, policy.max_age_secs);
    state.nonces.insert(hex::encode(nonce), statement.issued_unix);
    if let Some(q) = &quote {
        let seen = Counters {
            reset_count: q.clock_info.reset_count,
            restart_count: q.clock_info.restart_count,
        };
        let last = state.counters.entry(hex::encode(&q.ak_name)).or_default();
        *last = (*last).max(seen);
    }
    Ok(Verified { statement, node, quote })
}

fn verify_ml_dsa_87(ev: &Evidence) -> Result<(), Failure> {
    let pk = &ev.identity.public_key;
    let enc = EncodedVerifyingKey::<MlDsa87>::try_from(pk.as_slice()).or_else(|_| {
        fail(
            Check::Signature,
            format!(
                "the identity public key is {} bytes, ML-DSA-87's is {ML_DSA_87_PUBLIC_KEY_LEN}",
                pk.len()
            ),
        )
    })?;
    let vk = ml_dsa::VerifyingKey::<MlDsa87>::decode(&enc);
    let sig = ml_dsa::Signature::<MlDsa87>::try_from(ev.signature.as_slice())
        .or_else(|_| fail(Check::Signature, "the signature is not an ML-DSA-87 signature"))?;
    ensure(
        vk.verify_with_context(&ev.statement, evidence::STATEMENT_CONTEXT, &sig),
        Check::Signature,
        || "the ML-DSA-87 signature over the statement does not verify".into(),
    )
}

fn check_statement(
    statement: &Statement,
    nonce: &[u8],
    policy: &Policy,
    state: &VerifierState,
    now_unix: u64,
) -> Result<(), Failure> {
    let key = &statement.key;
    ensure(
        key.fingerprint == evidence::fingerprint(&key.public_key),
        Check::KeyFingerprint,
        || format!("key fingerprint `{}` is not SHA3-256 of the key's public key", key.fingerprint),
    )?;

    ensure(NONCE_LEN.contains(&nonce.len()), Check::Nonce, || {
        format!("the gateway's nonce is {} bytes; use 16 to 64 fresh random bytes", nonce.len())
    })?;
    ensure(statement.nonce == nonce, Check::Nonce, || {
        "the statement answers another nonce than the gateway's".into()
    })?;
    ensure(!state.nonces.contains_key(&hex::encode(nonce)), Check::Nonce, || {
        "this nonce was already accepted: the evidence is replayed".into()
    })?;

    let issued = statement.issued_unix;
    ensure(issued <= now_unix.saturating_add(MAX_CLOCK_SKEW_SECS), Check::Age, || {
        format!("issued_unix {issued} is {} s in the future", issued - now_unix)
    })?;
    ensure(now_unix.saturating_sub(issued) <= policy.max_age_secs, Check::Age, || {
        format!(
            "the statement is {} s old, the policy accepts {} s",
            now_unix.saturating_sub(issued),
            policy.max_age_secs
        )
    })?;

    ensure(policy.algorithms.contains(&key.alg), Check::Algorithm, || {
        format!("the policy does not accept algorithm `{}`", key.alg)
    })?;
    let kind = statement.sealer.kind;
    ensure(policy.sealers.contains(&kind), Check::Sealer, || {
        format!("the policy does not accept keys sealed by `{}`", kind.name())
    })?;

    let p = &statement.provenance;
    ensure(p.serving == Serving::Sources, Check::Trust, || {
        "the key was made while the pool served the OS fallback, not the health-tested sources"
            .into()
    })?;
    // The seed the key was drawn after came from this source: it must have
    // been healthy and trusted then. Other sources did not feed the key.
    let Some(seed) = p.sources.iter().find(|s| s.name == p.seed_source) else {
        return Err(Failure {
            check: Check::Trust,
            detail: format!("the seed source `{}` is not among the sources listed", p.seed_source),
        });
    };
    ensure(seed.state == "healthy", Check::Trust, || {
        format!("the seed source `{}` was `{}`, not healthy", seed.name, seed.state)
    })?;
    ensure(seed.trust >= policy.min_trust, Check::Trust, || {
        format!(
            "the seed source `{}` had trust {}, the policy needs {}",
            seed.name, seed.trust, policy.min_trust
        )
    })?;
    Ok(())
}

mod quote;
#[cfg(test)]
mod tests;

pub use quote::check_quote;
use quote::verify_quote;
