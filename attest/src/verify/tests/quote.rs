//! The TPM checks, each refused by name.

#[allow(clippy::wildcard_imports)]
use super::*;

#[test]
fn ak_public() {
    let fx = Fixture::new();
    let mut ev = fx.build();
    ev.tpm.as_mut().unwrap().ak_name[5] ^= 1;
    assert!(refused(fx.check(&ev), Check::AkPublic).contains("is not the Name"));
    // The PEM of another key.
    let mut ev = fx.build();
    let other = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).unwrap();
    ev.tpm.as_mut().unwrap().ak_pem =
        other.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    assert!(refused(fx.check(&ev), Check::AkPublic).contains("ak_pem"));
    ev.tpm.as_mut().unwrap().ak_pem = "-----BEGIN PUBLIC KEY-----".into();
    refused(fx.check(&ev), Check::AkPublic);
    // A key that is not restricted, with its own (consistent) Name.
    let mut spec = PublicSpec::ak(fx.ak.verifying_key());
    spec.attributes &= !crate::tpm::TPMA_OBJECT_RESTRICTED;
    let mut ev = fx.build();
    let tpm = ev.tpm.as_mut().unwrap();
    tpm.ak_public = spec.marshal();
    tpm.ak_name = EccPublic::parse(&tpm.ak_public).unwrap().name();
    let policy = Policy { trusted_ak_names: vec![tpm.ak_name.clone()], ..fx.policy() };
    assert!(
        refused(fx.check_with(&ev, &policy, &mut VerifierState::default()), Check::AkPublic)
            .contains("restricted")
    );
    // Bytes that are no TPM2B_PUBLIC.
    let mut ev = fx.build();
    ev.tpm.as_mut().unwrap().ak_public.push(0);
    refused(fx.check(&ev), Check::AkPublic);
}

#[test]
fn ak_trusted() {
    let fx = Fixture::new();
    let policy = Policy { trusted_ak_names: vec![[0u8; 34].to_vec()], ..fx.policy() };
    refused(fx.check_with(&fx.build(), &policy, &mut VerifierState::default()), Check::AkTrusted);
    refused(
        fx.check_with(&fx.build(), &Policy::default(), &mut VerifierState::default()),
        Check::AkTrusted,
    );
}

#[test]
fn quote_signature() {
    let fx = Fixture::new();
    // A byte of the quote.
    let mut ev = fx.build();
    ev.tpm.as_mut().unwrap().attest[40] ^= 1;
    refused(fx.check(&ev), Check::QuoteSignature);
    // A byte of the signature.
    let mut ev = fx.build();
    let n = ev.tpm.as_ref().unwrap().signature.len();
    ev.tpm.as_mut().unwrap().signature[n - 1] ^= 1;
    refused(fx.check(&ev), Check::QuoteSignature);
    // Signed by another key.
    let mut ev = fx.build();
    let other = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).unwrap();
    let sig: p256::ecdsa::Signature = other.sign(&ev.tpm.as_ref().unwrap().attest);
    ev.tpm.as_mut().unwrap().signature = EcdsaSignature::from_p256(&sig).marshal();
    refused(fx.check(&ev), Check::QuoteSignature);
    // An RSA signature.
    let mut ev = fx.build();
    ev.tpm.as_mut().unwrap().signature[..2].copy_from_slice(&[0x00, 0x14]);
    assert!(refused(fx.check(&ev), Check::QuoteSignature).contains("TPM_ALG_ECDSA"));
    // ECDSA with SHA-384 named.
    let mut ev = fx.build();
    ev.tpm.as_mut().unwrap().signature[2..4].copy_from_slice(&[0x00, 0x0c]);
    assert!(refused(fx.check(&ev), Check::QuoteSignature).contains("SHA-256"));
}

#[test]
fn quote_magic() {
    let fx = Fixture::new();
    let mut ev = fx.build();
    let mut a = Fixture::attest_of(&ev);
    a.magic = 0x1234_5678;
    fx.resign_attest(&mut ev, &a);
    refused(fx.check(&ev), Check::QuoteMagic);
    // Arbitrary bytes signed by the AK (as an unrestricted key could).
    let mut ev = fx.build();
    let tpm = ev.tpm.as_mut().unwrap();
    tpm.attest = b"abc".to_vec();
    tpm.signature = fx.sign_attest(&tpm.attest);
    refused(fx.check(&ev), Check::QuoteMagic);
}

#[test]
fn quote_type_refuses_a_certify_by_the_same_ak() {
    let fx = Fixture::new();
    let mut ev = fx.build();
    let mut a = Fixture::attest_of(&ev);
    a.st = TPM_ST_ATTEST_CERTIFY;
    a.attested = Attested::Certify(crate::tpm::CertifyInfo {
        name: fx.ak_name(),
        qualified_name: fx.ak_name(),
    });
    fx.resign_attest(&mut ev, &a);
    assert!(refused(fx.check(&ev), Check::QuoteType).contains("0x8017"));
}

#[test]
fn quote_parse() {
    let fx = Fixture::new();
    let mut ev = fx.build();
    let tpm = ev.tpm.as_mut().unwrap();
    tpm.attest.push(0);
    tpm.signature = fx.sign_attest(&tpm.attest);
    assert!(refused(fx.check(&ev), Check::QuoteParse).contains("left over"));
}

#[test]
fn extra_data() {
    let fx = Fixture::new();
    let mut ev = fx.build();
    let mut a = Fixture::attest_of(&ev);
    a.extra_data = evidence::extra_data(&[8u8; 32], &ev.statement).to_vec();
    fx.resign_attest(&mut ev, &a);
    refused(fx.check(&ev), Check::ExtraData);
    // A quote over another statement.
    let mut fx2 = Fixture::new();
    fx2.attest.extra_data = evidence::extra_data(&fx2.nonce, b"{}").to_vec();
    refused(fx2.check(&fx2.build()), Check::ExtraData);
}

#[test]
fn pcr_select() {
    let fx = Fixture::new();
    // The evidence lists a PCR the quote did not select.
    let mut ev = fx.build();
    ev.tpm.as_mut().unwrap().pcrs.insert(1, vec![0; 32]);
    refused(fx.check(&ev), Check::PcrSelect);
    // Another bank named.
    let mut ev = fx.build();
    ev.tpm.as_mut().unwrap().pcr_bank = "sha1".into();
    refused(fx.check(&ev), Check::PcrSelect);
    // The quote selects the sha1 bank.
    let mut fx = Fixture::new();
    fx.attest.attested = Attested::Quote(QuoteInfo {
        pcr_select: vec![PcrSelection { hash: 0x0004, select: vec![0x81, 0, 0] }],
        pcr_digest: Vec::new(),
    });
    refused(fx.check(&fx.build()), Check::PcrSelect);
}

#[test]
fn pcr_digest() {
    let fx = Fixture::new();
    let mut ev = fx.build();
    ev.tpm.as_mut().unwrap().pcrs.get_mut(&7).unwrap()[0] ^= 1;
    refused(fx.check(&ev), Check::PcrDigest);
    let mut ev = fx.build();
    ev.tpm.as_mut().unwrap().pcrs.get_mut(&7).unwrap().pop();
    assert!(refused(fx.check(&ev), Check::PcrDigest).contains("31 bytes"));
}

#[test]
fn pcr_policy() {
    let fx = Fixture::new();
    let ev = fx.build();
    let run = |p: Policy| fx.check_with(&ev, &p, &mut VerifierState::default());
    run(Policy { pcrs: BTreeMap::from([(7, [0x77; 32])]), ..fx.policy() }).unwrap();
    refused(
        run(Policy { pcrs: BTreeMap::from([(7, [0x78; 32])]), ..fx.policy() }),
        Check::PcrPolicy,
    );
    refused(run(Policy { pcrs: BTreeMap::from([(8, [0; 32])]), ..fx.policy() }), Check::PcrPolicy);
    refused(run(Policy { pcr_digest: Some([0; 32]), ..fx.policy() }), Check::PcrPolicy);
    let digest = Sha256::digest([[0x11u8; 32], [0x77; 32]].concat()).into();
    run(Policy { pcr_digest: Some(digest), ..fx.policy() }).unwrap();
}

#[test]
fn clock_safe() {
    let mut fx = Fixture::new();
    fx.attest.clock_info.safe = 0;
    refused(fx.check(&fx.build()), Check::ClockSafe);
}

#[test]
fn counters_must_not_go_back() {
    let fx = Fixture::new();
    let ev = fx.build();
    let name = hex::encode(fx.ak_name());
    let with = |reset_count, restart_count| {
        let mut s = VerifierState::default();
        s.counters.insert(name.clone(), Counters { reset_count, restart_count });
        s
    };
    refused(fx.check_with(&ev, &fx.policy(), &mut with(4, 0)), Check::Counters);
    refused(fx.check_with(&ev, &fx.policy(), &mut with(3, 2)), Check::Counters);
    // A reboot since (resetCount up, restartCount back to 0) is forward.
    let mut state = with(2, 9);
    fx.check_with(&ev, &fx.policy(), &mut state).unwrap();
    assert_eq!(state.counters[&name], Counters { reset_count: 3, restart_count: 1 });
    fx.check_with(&ev, &fx.policy(), &mut with(3, 1)).map(|_| ()).unwrap_or_else(|f| {
        // The same counters again are not a rollback; only the nonce differs.
        panic!("{f}")
    });
}

#[test]
fn firmware() {
    let fx = Fixture::new();
    let ev = fx.build();
    let run = |p: Policy| fx.check_with(&ev, &p, &mut VerifierState::default());
    refused(run(Policy { firmware_versions: vec![1, 2], ..fx.policy() }), Check::Firmware);
    run(Policy { firmware_versions: vec![1, 0x2019_1023_0016_3636], ..fx.policy() }).unwrap();
}
