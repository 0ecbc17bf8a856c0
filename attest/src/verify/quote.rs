//! The TPM part of the evidence: the AK, the quote's signature and every
//! field of the TPMS_ATTEST it signs.

#[allow(clippy::wildcard_imports)]
use super::*;

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

pub(super) fn verify_quote(
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
        // The EK this AK was enrolled with, still under a trusted EK CA.
        let Some(want) = policy.enrolled_eks.get(&name) else {
            return fail(
                Check::EkChain,
                format!("no EK is enrolled for the AK {}", hex::encode(&name)),
            );
        };
        let Some(ek) = tpm.ek_chain.first() else {
            return fail(Check::EkChain, "the evidence carries no EK certificate");
        };
        ensure(Sha256::digest(ek)[..] == want[..], Check::EkChain, || {
            "the EK certificate is not the one enrolled with this AK".into()
        })?;
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
