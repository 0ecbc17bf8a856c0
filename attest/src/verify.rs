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
    ensure(vk.verify_with_context(&ev.statement, b"", &sig), Check::Signature, || {
        "the ML-DSA-87 signature over the statement does not verify".into()
    })
}

/// The AK's `TPM2B_PUBLIC`: a restricted, fixedTPM, signing-only ECDSA-SHA256
/// P-256 key; its parsed form and its key.
fn ak_key(ak_public: &[u8]) -> Result<(EccPublic, VerifyingKey), Failure> {
    let ak = EccPublic::parse(ak_public)
        .or_else(|e| fail(Check::AkPublic, format!("ak_public does not parse: {e}")))?;
    let need = TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN | TPMA_OBJECT_FIXED_TPM;
    ensure(
        ak.object_attributes & need == need && ak.object_attributes & TPMA_OBJECT_DECRYPT == 0,
        Check::AkPublic,
        || {
            format!(
                "the AK's attributes {:#010x} are not those of a restricted, fixedTPM, \
                 signing-only key",
                ak.object_attributes
            )
        },
    )?;
    ensure(ak.scheme_hash == Some(TPM_ALG_SHA256), Check::AkPublic, || {
        "the AK's scheme is not ECDSA with SHA-256".into()
    })?;
    let key = ak.verifying_key().or_else(|e| fail(Check::AkPublic, e.to_string()))?;
    Ok((ak, key))
}

fn verify_quote(
    tpm: &TpmEvidence,
    statement_bytes: &[u8],
    statement: &Statement,
    policy: &Policy,
    state: &VerifierState,
) -> Result<QuoteFacts, Failure> {
    // The AK: the one the evidence names and the policy trusts.
    let (ak, key) = ak_key(&tpm.ak_public)?;
    let name = ak.name();
    ensure(name == tpm.ak_name, Check::AkPublic, || {
        format!(
            "ak_name {} is not the Name of ak_public ({})",
            hex::encode(&tpm.ak_name),
            hex::encode(&name)
        )
    })?;
    let pem_key = p256::PublicKey::from_public_key_pem(&tpm.ak_pem)
        .or_else(|e| fail(Check::AkPublic, format!("ak_pem is not a P-256 SPKI PEM: {e}")))?;
    ensure(pem_key == p256::PublicKey::from(&key), Check::AkPublic, || {
        "ak_pem is another key than ak_public".into()
    })?;
    ensure(policy.trusted_ak_names.contains(&name), Check::AkTrusted, || {
        format!("the policy does not trust the AK {}", hex::encode(&name))
    })?;
    if !policy.ek_roots.is_empty() {
        crate::enroll::ek_public(&tpm.ek_chain, &policy.ek_roots)
            .or_else(|e| fail(Check::EkChain, e.to_string()))?;
    }

    // The quote itself: signed by the AK, for this nonce and statement, over
    // the listed PCR values.
    let want = evidence::extra_data(&statement.nonce, statement_bytes);
    let facts = quote_by(&key, name, &tpm.attest, &tpm.signature, &want, &tpm.pcrs)?;
    ensure(tpm.pcr_bank == PCR_BANK_SHA256, Check::PcrSelect, || {
        format!("pcr_bank is `{}`, only `{PCR_BANK_SHA256}` is read", tpm.pcr_bank)
    })?;

    // What the policy and the state expect of it.
    for (index, want) in &policy.pcrs {
        match tpm.pcrs.get(index) {
            Some(got) if got.as_slice() == want.as_slice() => {}
            Some(got) => {
                return fail(
                    Check::PcrPolicy,
                    format!(
                        "PCR {index} is {}, the policy expects {}",
                        hex::encode(got),
                        hex::encode(want)
                    ),
                );
            }
            None => {
                return fail(
                    Check::PcrPolicy,
                    format!("the policy expects PCR {index}; it is not quoted"),
                );
            }
        }
    }
    if let Some(want) = &policy.pcr_digest {
        ensure(facts.pcr_digest.as_slice() == want.as_slice(), Check::PcrPolicy, || {
            format!(
                "pcrDigest is {}, the policy expects {}",
                hex::encode(&facts.pcr_digest),
                hex::encode(want)
            )
        })?;
    }
    let clock = facts.clock_info;
    clock_safe(&clock)?;
    let seen = Counters { reset_count: clock.reset_count, restart_count: clock.restart_count };
    if let Some(last) = state.counters.get(&hex::encode(&facts.ak_name)) {
        ensure(seen >= *last, Check::Counters, || {
            format!(
                "resetCount/restartCount {}/{} are below the {}/{} last seen for this AK: \
                 a replayed quote or a rolled-back TPM",
                seen.reset_count, seen.restart_count, last.reset_count, last.restart_count
            )
        })?;
    }
    ensure(
        policy.firmware_versions.is_empty()
            || policy.firmware_versions.contains(&facts.firmware_version),
        Check::Firmware,
        || format!("firmwareVersion {:#018x} is not in the policy's list", facts.firmware_version),
    )?;
    Ok(facts)
}

/// Check a TPM2_Quote on its own, as [`verify()`] checks the one in an
/// evidence document, without a policy or state: `ak_public` (a marshalled
/// `TPM2B_PUBLIC`) is a restricted ECDSA-SHA256 P-256 signing key
/// (`ak_public`); its signature `signature` (a `TPMT_SIGNATURE`) over the
/// raw `attest` (a `TPMS_ATTEST`) holds (`quote_signature`); only then is
/// `attest` read: its magic (`quote_magic`), type (`quote_type`), structure
/// (`quote_parse`), `extraData` equal to `extra_data` (`extra_data`), a
/// selection of exactly the PCRs in `pcrs` in the sha256 bank
/// (`pcr_select`), whose values hash to its `pcrDigest` (`pcr_digest`), and
/// `clockInfo.safe` (`clock_safe`).
///
/// It does not say whether the AK is trusted, nor anything about PCR values,
/// counters or firmware a policy or state would expect: [`verify()`] does.
pub fn check_quote(
    attest: &[u8],
    signature: &[u8],
    ak_public: &[u8],
    extra_data: &[u8],
    pcrs: &BTreeMap<u32, Vec<u8>>,
) -> Result<QuoteFacts, Failure> {
    let (ak, key) = ak_key(ak_public)?;
    let facts = quote_by(&key, ak.name(), attest, signature, extra_data, pcrs)?;
    clock_safe(&facts.clock_info)?;
    Ok(facts)
}

/// `clockInfo.safe` is 1: the clock has not gone back since it was last
/// reported.
fn clock_safe(clock: &ClockInfo) -> Result<(), Failure> {
    ensure(clock.safe == 1, Check::ClockSafe, || {
        format!("clockInfo.safe is {}: the TPM's clock may have gone back", clock.safe)
    })
}

/// [`check_quote`] after the AK and before the clock: by `key`, whose Name
/// is `ak_name`.
fn quote_by(
    key: &VerifyingKey,
    ak_name: Vec<u8>,
    attest_bytes: &[u8],
    signature: &[u8],
    extra_data: &[u8],
    pcrs: &BTreeMap<u32, Vec<u8>>,
) -> Result<QuoteFacts, Failure> {
    // The signature over the raw TPMS_ATTEST, before reading any of it.
    let sig = EcdsaSignature::parse(signature)
        .or_else(|e| fail(Check::QuoteSignature, format!("the signature does not parse: {e}")))?;
    ensure(sig.hash == TPM_ALG_SHA256, Check::QuoteSignature, || {
        format!("the signature's hash is {:#06x}, not SHA-256 (0x000b)", sig.hash)
    })?;
    let sig = sig.to_p256().ok_or_else(|| Failure {
        check: Check::QuoteSignature,
        detail: "r or s is out of range".into(),
    })?;
    let digest = Sha256::digest(attest_bytes);
    key.verify_prehash(&digest, &sig).or_else(|_| {
        fail(Check::QuoteSignature, "the AK's ECDSA signature over the quote does not verify")
    })?;

    // What the TPM signed.
    let magic = tpm::peek_magic(attest_bytes);
    ensure(magic == Some(TPM_GENERATED_VALUE), Check::QuoteMagic, || {
        format!(
            "magic is {magic:#x?}, not TPM_GENERATED_VALUE: the TPM did not make this structure"
        )
    })?;
    let st = tpm::peek_type(attest_bytes);
    ensure(st == Some(TPM_ST_ATTEST_QUOTE), Check::QuoteType, || {
        format!("type is {st:#06x?}, not TPM_ST_ATTEST_QUOTE (0x8018)")
    })?;
    let attest = Attest::parse(attest_bytes).or_else(|e| fail(Check::QuoteParse, e.to_string()))?;
    let Attested::Quote(quote) = &attest.attested else {
        return fail(Check::QuoteType, "the quote holds no TPMS_QUOTE_INFO");
    };
    ensure(attest.extra_data == extra_data, Check::ExtraData, || {
        "extraData is not SHA-256(label || nonce || SHA3-256(statement)): the quote is for \
         another statement or nonce"
            .into()
    })?;

    // The PCRs.
    let banks: Vec<_> =
        quote.pcr_select.iter().filter(|s| s.select.iter().any(|b| *b != 0)).collect();
    let selected = match banks.as_slice() {
        [] => Vec::new(),
        [bank] if bank.hash == TPM_ALG_SHA256 => bank.indices(),
        _ => return fail(Check::PcrSelect, "the quote selects PCRs outside the sha256 bank"),
    };
    let listed: Vec<u32> = pcrs.keys().copied().collect();
    ensure(selected == listed, Check::PcrSelect, || {
        format!("the quote selects PCRs {selected:?}, the evidence lists {listed:?}")
    })?;
    let mut h = Sha256::new();
    for (index, value) in pcrs {
        ensure(value.len() == 32, Check::PcrDigest, || {
            format!("PCR {index} is {} bytes, a sha256 PCR holds 32", value.len())
        })?;
        h.update(value);
    }
    ensure(h.finalize().as_slice() == quote.pcr_digest.as_slice(), Check::PcrDigest, || {
        "the listed PCR values do not hash to the quote's pcrDigest".into()
    })?;

    Ok(QuoteFacts {
        ak_name,
        clock_info: attest.clock_info,
        firmware_version: attest.firmware_version,
        pcrs: pcrs.clone(),
        pcr_digest: quote.pcr_digest.clone(),
    })
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

#[cfg(test)]
mod tests;
