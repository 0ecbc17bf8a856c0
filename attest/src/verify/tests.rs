//! Tests of the verifier on synthetic evidence: an ML-DSA-87 identity, a
//! software P-256 "AK" and hand-marshalled quotes. Each named check is shown
//! to fail, under its own name, when its input is tampered.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use ml_dsa::{Keypair as _, MlDsa87};
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use proptest::prelude::*;
use sha2::{Digest as _, Sha256};

use super::*;
use crate::evidence::{
    Evidence, GatewayDelivery, Identity, KeyInfo, PoolInfo, Provenance, SealerInfo, SealerKind,
    Serving, SourceReport, Statement, TpmEvidence,
};
use crate::tpm::marshal::PublicSpec;
use crate::tpm::{PcrSelection, QuoteInfo, TPM_ST_ATTEST_CERTIFY};

const NOW: u64 = 1_733_250_000;

/// The inputs of a synthetic evidence document; [`Fixture::build`] derives
/// the rest (signatures, extraData, pcrDigest) so that it verifies.
struct Fixture {
    identity: ml_dsa::SigningKey<MlDsa87>,
    ak: p256::ecdsa::SigningKey,
    nonce: Vec<u8>,
    statement: Statement,
    pcrs: BTreeMap<u32, Vec<u8>>,
    attest: Attest,
    with_tpm: bool,
}

fn source(name: &str, trust: f64) -> SourceReport {
    SourceReport { name: name.into(), state: "healthy".into(), trust, drift: 0.01 }
}

impl Fixture {
    fn new() -> Self {
        let identity = ml_dsa::SigningKey::<MlDsa87>::from_seed(&[1u8; 32].into());
        let ak = p256::ecdsa::SigningKey::from_slice(&[2u8; 32]).unwrap();
        let nonce = vec![9u8; 32];
        let key_public = vec![5u8; 1184];
        let statement = Statement {
            format: "qkeyd-statement/1".into(),
            node: evidence::fingerprint(&identity.verifying_key().encode()),
            nonce: nonce.clone(),
            issued_unix: NOW - 10,
            key: KeyInfo {
                id: "k-0001".into(),
                version: 1,
                alg: "ml-kem-768".into(),
                fingerprint: evidence::fingerprint(&key_public),
                public_key: key_public,
                created_unix: NOW - 20,
            },
            sealer: SealerInfo {
                kind: SealerKind::Tpm,
                token_label: None,
                token_serial: None,
                tpm: true,
            },
            provenance: Provenance {
                serving: Serving::Sources,
                reseed_counter: 42,
                seed_source: "qrng0".into(),
                sources: vec![source("qrng0", 0.97), source("os", 0.9)],
            },
            pool: PoolInfo {
                serving: Some(Serving::Sources),
                sources: vec![source("qrng0", 0.97)],
            },
            gateway: None,
        };
        let pcrs = BTreeMap::from([(0, vec![0x11; 32]), (7, vec![0x77; 32])]);
        let attest = Attest {
            magic: TPM_GENERATED_VALUE,
            st: TPM_ST_ATTEST_QUOTE,
            qualified_signer: vec![0x00, 0x0b, 0xaa, 0xbb],
            extra_data: Vec::new(),
            clock_info: ClockInfo { clock: 123_456, reset_count: 3, restart_count: 1, safe: 1 },
            firmware_version: 0x2019_1023_0016_3636,
            attested: Attested::Quote(QuoteInfo {
                pcr_select: vec![PcrSelection { hash: TPM_ALG_SHA256, select: vec![0x81, 0, 0] }],
                pcr_digest: Vec::new(),
            }),
        };
        Self { identity, ak, nonce, statement, pcrs, attest, with_tpm: true }
    }

    fn ak_public(&self) -> Vec<u8> {
        PublicSpec::ak(self.ak.verifying_key()).marshal()
    }

    fn ak_name(&self) -> Vec<u8> {
        EccPublic::parse(&self.ak_public()).unwrap().name()
    }

    fn policy(&self) -> Policy {
        Policy { trusted_ak_names: vec![self.ak_name()], ..Policy::default() }
    }

    fn sign_statement(&self, bytes: &[u8]) -> Vec<u8> {
        self.identity
            .expanded_key()
            .sign_deterministic(bytes, crate::evidence::STATEMENT_CONTEXT)
            .unwrap()
            .encode()
            .to_vec()
    }

    fn sign_attest(&self, bytes: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = self.ak.sign(bytes);
        EcdsaSignature::from_p256(&sig).marshal()
    }

    /// The attest as built: extraData and pcrDigest filled in when empty.
    fn attest_for(&self, statement_bytes: &[u8]) -> Attest {
        let mut a = self.attest.clone();
        if a.extra_data.is_empty() {
            a.extra_data = evidence::extra_data(&self.statement.nonce, statement_bytes).to_vec();
        }
        if let Attested::Quote(q) = &mut a.attested
            && q.pcr_digest.is_empty()
        {
            let mut h = Sha256::new();
            self.pcrs.values().for_each(|v| h.update(v));
            q.pcr_digest = h.finalize().to_vec();
        }
        a
    }

    fn build(&self) -> Evidence {
        let statement = self.statement.to_canonical_bytes();
        let tpm = self.with_tpm.then(|| {
            let attest = self.attest_for(&statement).marshal();
            TpmEvidence {
                signature: self.sign_attest(&attest),
                attest,
                pcr_bank: "sha256".into(),
                pcrs: self.pcrs.clone(),
                ak_public: self.ak_public(),
                ak_pem: self.ak.verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
                ak_name: self.ak_name(),
                ek_chain: vec![vec![0x30, 0x00]],
            }
        });
        let public_key = self.identity.verifying_key().encode().to_vec();
        Evidence {
            format: "qkeyd-evidence/1".into(),
            signature: self.sign_statement(&statement),
            statement,
            identity: Identity { fingerprint: evidence::fingerprint(&public_key), public_key },
            tpm,
        }
    }

    /// Replace the signed TPMS_ATTEST, signed again by the AK.
    fn resign_attest(&self, ev: &mut Evidence, attest: &Attest) {
        let tpm = ev.tpm.as_mut().unwrap();
        tpm.attest = attest.marshal();
        tpm.signature = self.sign_attest(&tpm.attest);
    }

    /// The attest of built evidence, for a test to change and re-sign.
    fn attest_of(ev: &Evidence) -> Attest {
        Attest::parse(&ev.tpm.as_ref().unwrap().attest).unwrap()
    }

    fn check(&self, ev: &Evidence) -> Result<Verified, Failure> {
        self.check_with(ev, &self.policy(), &mut VerifierState::default())
    }

    fn check_with(
        &self,
        ev: &Evidence,
        policy: &Policy,
        state: &mut VerifierState,
    ) -> Result<Verified, Failure> {
        verify(&ev.to_json(), &self.nonce, policy, state, NOW)
    }
}

#[track_caller]
fn refused(result: Result<Verified, Failure>, check: Check) -> String {
    match result {
        Err(f) => {
            assert_eq!(f.check, check, "refused by another check: {f}");
            f.detail
        }
        Ok(_) => panic!("verified, but `{check}` should have refused it"),
    }
}

#[test]
fn check_names_are_the_specifications() {
    let names: Vec<_> = Check::ALL.iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        [
            "format",
            "identity_fingerprint",
            "signature",
            "statement_parse",
            "tpm_missing",
            "ak_public",
            "ak_trusted",
            "ek_chain",
            "quote_signature",
            "quote_magic",
            "quote_type",
            "quote_parse",
            "extra_data",
            "pcr_select",
            "pcr_digest",
            "pcr_policy",
            "clock_safe",
            "counters",
            "firmware",
            "key_fingerprint",
            "nonce",
            "age",
            "algorithm",
            "sealer",
            "trust",
            "gateway_response",
            "gateway_binding",
            "expired",
            "unwrap",
        ]
    );
    let f = Failure { check: Check::PcrDigest, detail: "x".into() };
    assert_eq!(f.to_string(), "evidence refused by check `pcr_digest`: x");
}

#[test]
fn the_statement_is_canonical_json_in_the_formats_key_order() {
    let mut s = Fixture::new().statement;
    s.nonce = vec![0; 16];
    s.key.public_key = vec![1, 2, 3];
    s.key.fingerprint = "sha3-256:ab".into();
    s.node = "sha3-256:cd".into();
    s.provenance.sources = vec![source("qrng0", 0.97)];
    s.pool.sources = vec![source("qrng0", 1.0)];
    s.pool.serving = None;
    s.sealer.kind = SealerKind::Hsm;
    s.sealer.token_label = Some("qkeyd".into());
    s.gateway = Some(GatewayDelivery {
        recipient_sha3: "00".into(),
        ciphertext_sha3: "11".into(),
        key_id: "g-1".into(),
        length: 32,
        purpose: "qkd-mix".into(),
    });
    let text = String::from_utf8(s.to_canonical_bytes()).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"format":"qkeyd-statement/1","node":"sha3-256:cd","nonce":"AAAAAAAAAAAAAAAAAAAAAA==","#,
            r#""issued_unix":1733249990,"key":{"id":"k-0001","version":1,"alg":"ml-kem-768","#,
            r#""public_key":"AQID","fingerprint":"sha3-256:ab","created_unix":1733249980},"#,
            r#""sealer":{"kind":"hsm","token_label":"qkeyd","token_serial":null,"tpm":true},"#,
            r#""provenance":{"serving":"sources","reseed_counter":42,"seed_source":"qrng0","#,
            r#""sources":[{"name":"qrng0","state":"healthy","trust":0.97,"drift":0.01}]},"#,
            r#""pool":{"serving":null,"sources":[{"name":"qrng0","state":"healthy","trust":1.0,"drift":0.01}]},"#,
            r#""gateway":{"recipient_sha3":"00","ciphertext_sha3":"11","key_id":"g-1","length":32,"purpose":"qkd-mix"}}"#
        )
    );
    assert_eq!(Statement::from_canonical_bytes(text.as_bytes()).unwrap(), s);
    let spaced = text.replacen(':', ": ", 1);
    assert!(Statement::from_canonical_bytes(spaced.as_bytes()).is_err());
    let unknown = text.replacen('{', r#"{"extra":1,"#, 1);
    assert!(
        Statement::from_canonical_bytes(unknown.as_bytes()).unwrap_err().contains("unknown field")
    );
}

#[test]
fn evidence_round_trips_through_json_with_tpm_null() {
    let mut fx = Fixture::new();
    let ev = fx.build();
    assert_eq!(Evidence::from_json(&ev.to_json()).unwrap(), ev);
    fx.with_tpm = false;
    let json = String::from_utf8(fx.build().to_json()).unwrap();
    assert!(json.ends_with(r#""tpm":null}"#), "{json}");
    let tpm = String::from_utf8(ev.to_json()).unwrap();
    assert!(tpm.contains(r#""pcrs":{"0":"1111"#), "{tpm}");
}

#[test]
fn valid_evidence_verifies_and_is_remembered() {
    let fx = Fixture::new();
    let ev = fx.build();
    let mut state = VerifierState::default();
    let ok = fx.check_with(&ev, &fx.policy(), &mut state).unwrap();
    assert_eq!(ok.statement, fx.statement);
    assert_eq!(ok.node, ev.identity.fingerprint);
    let q = ok.quote.unwrap();
    assert_eq!(q.ak_name, fx.ak_name());
    assert_eq!(q.clock_info.reset_count, 3);
    assert_eq!(q.pcrs, fx.pcrs);
    assert_eq!(state.nonces.get(&hex::encode(&fx.nonce)), Some(&(NOW - 10)));
    assert_eq!(
        state.counters.get(&hex::encode(fx.ak_name())),
        Some(&Counters { reset_count: 3, restart_count: 1 })
    );
}

#[test]
fn a_refusal_leaves_the_state_alone() {
    let fx = Fixture::new();
    let mut ev = fx.build();
    ev.tpm.as_mut().unwrap().pcrs.insert(0, vec![0; 32]);
    let mut state = VerifierState::default();
    refused(fx.check_with(&ev, &fx.policy(), &mut state), Check::PcrDigest);
    assert_eq!(state, VerifierState::default());
}

#[test]
fn format() {
    let fx = Fixture::new();
    let mut ev = fx.build();
    ev.format = "qkeyd-evidence/2".into();
    refused(fx.check(&ev), Check::Format);
    let json = String::from_utf8(fx.build().to_json()).unwrap();
    let unknown = json.replacen('{', r#"{"x":1,"#, 1);
    let nonce = fx.nonce.clone();
    let run =
        |j: &str| verify(j.as_bytes(), &nonce, &fx.policy(), &mut VerifierState::default(), NOW);
    assert!(refused(run(&unknown), Check::Format).contains("unknown field"));
    let bad_b64 = json.replacen(r#""signature":""#, r#""signature":"!"#, 1);
    assert!(refused(run(&bad_b64), Check::Format).contains("base64"));
    refused(run("not json"), Check::Format);
}

#[test]
fn identity_fingerprint() {
    let fx = Fixture::new();
    let mut ev = fx.build();
    ev.identity.fingerprint = evidence::fingerprint(b"another key");
    refused(fx.check(&ev), Check::IdentityFingerprint);
    // A statement naming another node, signed by this one.
    let mut fx = Fixture::new();
    fx.statement.node = evidence::fingerprint(b"another key");
    refused(fx.check(&fx.build()), Check::IdentityFingerprint);
}

#[test]
fn signature() {
    let fx = Fixture::new();
    // A statement field changed after signing.
    let mut ev = fx.build();
    let text = String::from_utf8(ev.statement.clone()).unwrap();
    ev.statement = text.replace("\"version\":1", "\"version\":2").into_bytes();
    refused(fx.check(&ev), Check::Signature);
    // A signature byte.
    let mut ev = fx.build();
    ev.signature[100] ^= 1;
    refused(fx.check(&ev), Check::Signature);
    ev.signature.pop();
    refused(fx.check(&ev), Check::Signature);
    // An identity key of another size, fingerprinted consistently.
    let mut ev = fx.build();
    ev.identity.public_key.pop();
    ev.identity.fingerprint = evidence::fingerprint(&ev.identity.public_key);
    assert!(refused(fx.check(&ev), Check::Signature).contains("2592"));
}

#[test]
fn statement_parse() {
    let fx = Fixture::new();
    let good = fx.statement.to_canonical_bytes();
    let text = String::from_utf8(good).unwrap();
    for bad in [
        text.replacen('{', r#"{"extra":1,"#, 1),
        text.replacen(',', ", ", 1),
        text.replace("qkeyd-statement/1", "qkeyd-statement/9"),
        text.replace(r#""kind":"tpm""#, r#""kind":"usb""#),
        "[]".to_owned(),
    ] {
        let mut ev = fx.build();
        ev.statement = bad.into_bytes();
        ev.signature = fx.sign_statement(&ev.statement);
        refused(fx.check(&ev), Check::StatementParse);
    }
}

#[test]
fn tpm_missing() {
    let mut fx = Fixture::new();
    fx.with_tpm = false;
    refused(fx.check(&fx.build()), Check::TpmMissing);
    // Not required by the policy, but the statement says the node has a TPM.
    let lax = Policy { require_tpm: false, ..fx.policy() };
    refused(fx.check_with(&fx.build(), &lax, &mut VerifierState::default()), Check::TpmMissing);
    // A policy that pins PCRs needs a quote.
    fx.statement.sealer =
        SealerInfo { kind: SealerKind::Hsm, token_label: None, token_serial: None, tpm: false };
    let pinned = Policy { pcr_digest: Some([0; 32]), ..lax.clone() };
    refused(fx.check_with(&fx.build(), &pinned, &mut VerifierState::default()), Check::TpmMissing);
    // Without a TPM anywhere, a policy that allows it verifies.
    let ok = fx.check_with(&fx.build(), &lax, &mut VerifierState::default()).unwrap();
    assert!(ok.quote.is_none());
}

#[test]
fn no_tpm_or_a_soft_sealer_is_refused_by_the_default_policy() {
    let mut fx = Fixture::new();
    fx.statement.sealer =
        SealerInfo { kind: SealerKind::Soft, token_label: None, token_serial: None, tpm: false };
    refused(fx.check(&fx.build()), Check::Sealer);
    fx.with_tpm = false;
    refused(fx.check(&fx.build()), Check::TpmMissing);
}

#[test]
fn key_fingerprint() {
    let mut fx = Fixture::new();
    fx.statement.key.fingerprint = evidence::fingerprint(b"another key");
    refused(fx.check(&fx.build()), Check::KeyFingerprint);
}

#[test]
fn nonce() {
    let fx = Fixture::new();
    let ev = fx.build();
    let run = |nonce: &[u8], state: &mut VerifierState| {
        verify(&ev.to_json(), nonce, &fx.policy(), state, NOW)
    };
    refused(run(&[8u8; 32], &mut VerifierState::default()), Check::Nonce);
    assert!(
        refused(run(&[9u8; 8], &mut VerifierState::default()), Check::Nonce).contains("16 to 64")
    );
    // Replayed: the same evidence a second time.
    let mut state = VerifierState::default();
    run(&fx.nonce, &mut state).unwrap();
    assert!(refused(run(&fx.nonce, &mut state), Check::Nonce).contains("replayed"));
}

#[test]
fn a_nonce_is_forgotten_only_once_its_statement_is_too_old() {
    let fx = Fixture::new();
    let ev = fx.build();
    let policy = fx.policy();
    let mut state = VerifierState::default();
    fx.check_with(&ev, &policy, &mut state).unwrap();
    // Another evidence later prunes the state; the first nonce stays while
    // its statement is young enough to pass the age check.
    let mut fx2 = Fixture::new();
    fx2.nonce = vec![10u8; 32];
    fx2.statement.nonce = fx2.nonce.clone();
    fx2.statement.issued_unix = NOW + 200;
    let ev2 = fx2.build();
    verify(&ev2.to_json(), &fx2.nonce, &policy, &mut state, NOW + 200).unwrap();
    assert!(state.nonces.contains_key(&hex::encode(&fx.nonce)));
    let replay = verify(&ev.to_json(), &fx.nonce, &policy, &mut state, NOW + 290);
    refused(replay, Check::Nonce);
    // Once pruned, a replay is refused by its age.
    fx2.nonce = vec![11u8; 32];
    fx2.statement.nonce = fx2.nonce.clone();
    fx2.statement.issued_unix = NOW + 400;
    verify(&fx2.build().to_json(), &fx2.nonce, &policy, &mut state, NOW + 400).unwrap();
    assert!(!state.nonces.contains_key(&hex::encode(&fx.nonce)));
    refused(verify(&ev.to_json(), &fx.nonce, &policy, &mut state, NOW + 400), Check::Age);
}

#[test]
fn age() {
    let fx = Fixture::new();
    let ev = fx.build();
    let at =
        |now| verify(&ev.to_json(), &fx.nonce, &fx.policy(), &mut VerifierState::default(), now);
    at(NOW - 10 + 300).unwrap();
    assert!(refused(at(NOW - 10 + 301), Check::Age).contains("301 s old"));
    at(NOW - 10 - MAX_CLOCK_SKEW_SECS).unwrap();
    assert!(refused(at(NOW - 10 - MAX_CLOCK_SKEW_SECS - 1), Check::Age).contains("future"));
}

#[test]
fn algorithm() {
    let fx = Fixture::new();
    let policy = Policy { algorithms: vec!["ml-dsa-87".into()], ..fx.policy() };
    refused(fx.check_with(&fx.build(), &policy, &mut VerifierState::default()), Check::Algorithm);
}

#[test]
fn sealer() {
    let mut fx = Fixture::new();
    fx.statement.sealer.kind = SealerKind::Hsm;
    fx.check(&fx.build()).unwrap();
    let policy = Policy { sealers: vec![SealerKind::Tpm], ..fx.policy() };
    refused(fx.check_with(&fx.build(), &policy, &mut VerifierState::default()), Check::Sealer);
}

#[test]
fn trust() {
    // Only the source that fed the key's seed counts.
    let mut fx = Fixture::new();
    fx.statement.provenance.sources[1].trust = 0.2;
    fx.check(&fx.build()).unwrap();
    let mut fx = Fixture::new();
    fx.statement.provenance.sources[0].trust = 0.88;
    assert!(refused(fx.check(&fx.build()), Check::Trust).contains("`qrng0` had trust 0.88"));
    let mut fx = Fixture::new();
    fx.statement.provenance.sources[0].state = "quarantined".into();
    refused(fx.check(&fx.build()), Check::Trust);
    let mut fx = Fixture::new();
    fx.statement.provenance.seed_source = "elsewhere".into();
    refused(fx.check(&fx.build()), Check::Trust);
    let mut fx = Fixture::new();
    fx.statement.provenance.serving = Serving::OsFallback;
    refused(fx.check(&fx.build()), Check::Trust);
    let mut fx = Fixture::new();
    fx.statement.provenance.sources.clear();
    refused(fx.check(&fx.build()), Check::Trust);
    // Exactly the minimum passes.
    let mut fx = Fixture::new();
    fx.statement.provenance.sources[0].trust = 0.89;
    fx.check(&fx.build()).unwrap();
}

/// The evidence the property test mutates, built once.
fn shared() -> &'static (Fixture, Evidence) {
    static ONCE: OnceLock<(Fixture, Evidence)> = OnceLock::new();
    ONCE.get_or_init(|| {
        let fx = Fixture::new();
        let ev = fx.build();
        (fx, ev)
    })
}

proptest! {
    /// Any single-byte change of the signed quote or of its signature is
    /// refused, and never panics.
    #[test]
    fn any_byte_of_the_quote_or_its_signature_matters(
        in_signature in any::<bool>(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..,
    ) {
        let (fx, ev) = shared();
        let mut ev = ev.clone();
        let tpm = ev.tpm.as_mut().unwrap();
        let bytes = if in_signature { &mut tpm.signature } else { &mut tpm.attest };
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        let result = fx.check(&ev);
        prop_assert!(result.is_err(), "byte {} of the {} changed and still verified", i,
            if in_signature { "signature" } else { "attest" });
    }
}

mod quote;
