//! Tests of the gateway side on synthetic deliveries: an ML-DSA-87 node
//! identity without a TPM, and the node's half (encapsulate, derive, wrap,
//! state, sign) done here as the daemon does it. Each check is shown to
//! refuse, under its own name, an answer altered in what it guards.

use ml_dsa::{Keypair as _, MlDsa87};

use super::*;
use crate::evidence::{
    EVIDENCE_FORMAT, Evidence, GatewayDelivery, Identity, KeyInfo, PoolInfo, Provenance,
    STATEMENT_FORMAT, SealerInfo, SealerKind, Serving, SourceReport,
};

const NOW: u64 = 1_733_250_000;
const NONCE: [u8; 32] = [9; 32];

fn recipient() -> DecapsulationKey768 {
    DecapsulationKey768::from_seed([3u8; 64].into())
}

fn policy() -> Policy {
    Policy { require_tpm: false, ..Policy::default() }
}

/// The node's side of one delivery, with hooks to alter the statement
/// before it is signed and the answer after.
struct Delivery {
    key: Vec<u8>,
    purpose: String,
    expires_unix: u64,
    statement_hook: Box<dyn Fn(&mut Statement)>,
}

impl Delivery {
    fn new() -> Self {
        Self {
            key: (0..32).collect(),
            purpose: "qkd-mix".into(),
            expires_unix: NOW + 3600,
            statement_hook: Box::new(|_| {}),
        }
    }

    fn respond(&self, recipient_key: &[u8]) -> GatewayResponse {
        let identity = ml_dsa::SigningKey::<MlDsa87>::from_seed(&[1u8; 32].into());
        let key_id = format!("g-{}", "ab".repeat(16));
        let ek = ml_kem::EncapsulationKey::<ml_kem::MlKem768>::new(
            recipient_key.try_into().expect("an ML-KEM-768 key"),
        )
        .unwrap();
        let (ct, ss) = ek.encapsulate_deterministic(&[5u8; 32].into());
        let ss: [u8; 32] = ss.into();
        let recipient_sha3 = sha3_hex(recipient_key);
        let ciphertext_sha3 = sha3_hex(&ct);
        let length = u32::try_from(self.key.len()).unwrap();
        let transcript = Transcript {
            key_id: &key_id,
            length,
            purpose: &self.purpose,
            recipient_sha3: &recipient_sha3,
            ciphertext_sha3: &ciphertext_sha3,
            nonce: &NONCE,
            expires_unix: self.expires_unix,
        }
        .to_canonical_bytes();
        let wrapped_key = wrap(&ss, &transcript, &self.key, &[7u8; IV_LEN]);
        let public = identity.verifying_key().encode().to_vec();
        let source = SourceReport {
            name: "qrng0".into(),
            state: "healthy".into(),
            trust: 0.97,
            drift: 0.01,
        };
        let mut statement = Statement {
            format: STATEMENT_FORMAT.into(),
            node: evidence::fingerprint(&public),
            nonce: NONCE.to_vec(),
            issued_unix: NOW - 1,
            key: KeyInfo {
                id: key_id.clone(),
                version: 1,
                alg: GATEWAY_KEY_ALG.into(),
                public_key: Vec::new(),
                fingerprint: empty_key_fingerprint(),
                created_unix: NOW - 1,
            },
            sealer: SealerInfo {
                kind: SealerKind::Hsm,
                token_label: Some("qkeyd".into()),
                token_serial: None,
                tpm: false,
            },
            provenance: Provenance {
                serving: Serving::Sources,
                reseed_counter: 1,
                seed_source: "qrng0".into(),
                sources: vec![source.clone()],
            },
            pool: PoolInfo { serving: Some(Serving::Sources), sources: vec![source] },
            gateway: Some(GatewayDelivery {
                recipient_sha3,
                ciphertext_sha3,
                key_id: key_id.clone(),
                length,
                purpose: self.purpose.clone(),
            }),
        };
        (self.statement_hook)(&mut statement);
        let bytes = statement.to_canonical_bytes();
        let signature = identity
            .expanded_key()
            .sign_deterministic(&bytes, crate::evidence::STATEMENT_CONTEXT)
            .unwrap()
            .encode()
            .to_vec();
        let evidence = Evidence {
            format: EVIDENCE_FORMAT.into(),
            statement: bytes,
            signature,
            identity: Identity { fingerprint: evidence::fingerprint(&public), public_key: public },
            tpm: None,
        };
        GatewayResponse {
            key_id,
            length,
            purpose: self.purpose.clone(),
            ciphertext: ct.to_vec(),
            wrapped_key,
            expires_unix: self.expires_unix,
            evidence,
        }
    }
}

fn open_json(json: &[u8], dk: &DecapsulationKey768) -> Result<GatewayKey, Failure> {
    open(json, dk.into(), &NONCE, &policy(), &mut VerifierState::default(), NOW)
}

/// The check that refuses `r` (it must be refused).
fn refused(r: &GatewayResponse) -> Check {
    match open_json(&serde_json::to_vec(r).unwrap(), &recipient()) {
        Err(f) => f.check,
        Ok(k) => panic!("opened {k:?}"),
    }
}

#[test]
fn a_delivery_opens_to_the_key_and_records_the_nonce() {
    let dk = recipient();
    let d = Delivery::new();
    let json =
        serde_json::to_vec(&d.respond(&RecipientKey::from(&dk).encapsulation_key())).unwrap();
    let mut state = VerifierState::default();
    let k = open(&json, (&dk).into(), &NONCE, &policy(), &mut state, NOW).unwrap();
    assert_eq!(k.key.as_slice(), d.key.as_slice());
    assert_eq!(k.key_id, format!("g-{}", "ab".repeat(16)));
    assert_eq!(k.purpose, "qkd-mix");
    assert_eq!(k.expires_unix, NOW + 3600);
    assert_eq!(k.statement.provenance.seed_source, "qrng0");
    assert!(state.nonces.contains_key(&hex::encode(NONCE)));
    let shown = format!("{k:?}");
    assert!(shown.contains("<32 bytes>") && !shown.contains("[0, 1, 2"), "{shown}");

    // The same answer again: its nonce was used.
    let again = open(&json, (&dk).into(), &NONCE, &policy(), &mut state, NOW).unwrap_err();
    assert_eq!(again.check, Check::Nonce, "{}", again.detail);
}

#[test]
fn an_ml_kem_1024_recipient_opens_too() {
    let dk = DecapsulationKey1024::from_seed([4u8; 64].into());
    let pk = RecipientKey::from(&dk).encapsulation_key();
    assert_eq!(pk.len(), ML_KEM_1024_KEY_LEN);
    let ek = ml_kem::EncapsulationKey::<ml_kem::MlKem1024>::new(pk.as_slice().try_into().unwrap())
        .unwrap();
    let (ct, ss) = ek.encapsulate_deterministic(&[6u8; 32].into());
    let got = RecipientKey::from(&dk).decapsulate(&ct).unwrap();
    assert_eq!(got.as_slice(), ss.as_slice());
    assert!(RecipientKey::from(&dk).decapsulate(&ct[1..]).is_none());
}

#[test]
fn each_binding_refuses_an_altered_answer_by_name() {
    let pk = RecipientKey::from(&recipient()).encapsulation_key();
    let good = Delivery::new().respond(&pk);

    let mut r = good.clone();
    r.wrapped_key[IV_LEN + 3] ^= 1;
    assert_eq!(refused(&r), Check::Unwrap);
    let mut r = good.clone();
    r.wrapped_key[0] ^= 1;
    assert_eq!(refused(&r), Check::Unwrap, "the IV is bound by the tag");
    let mut r = good.clone();
    r.purpose = "other".into();
    assert_eq!(refused(&r), Check::GatewayBinding);
    let mut r = good.clone();
    r.key_id = format!("g-{}", "cd".repeat(16));
    assert_eq!(refused(&r), Check::GatewayBinding);
    let mut r = good.clone();
    r.length = 31;
    assert_eq!(refused(&r), Check::GatewayBinding);
    let mut r = good.clone();
    r.ciphertext[0] ^= 1;
    assert_eq!(refused(&r), Check::GatewayBinding);
    let mut r = good.clone();
    r.wrapped_key.push(0);
    assert_eq!(refused(&r), Check::GatewayBinding);
    // A later expiry than the node set: the tag binds the transcript.
    let mut r = good.clone();
    r.expires_unix += 1;
    assert_eq!(refused(&r), Check::Unwrap);
    // An expiry already passed, said by the answer.
    let mut r = good.clone();
    r.expires_unix = NOW;
    assert_eq!(refused(&r), Check::Expired);
    // The statement itself, altered after signing.
    let mut r = good.clone();
    r.evidence.signature[100] ^= 1;
    assert_eq!(refused(&r), Check::Signature);
    let mut r = good.clone();
    r.evidence.statement[10] ^= 1;
    assert_eq!(refused(&r), Check::Signature);
    let mut r = good.clone();
    r.evidence.format = "x".into();
    assert_eq!(refused(&r), Check::Format);
    // An answer that is not one.
    assert_eq!(open_json(b"{}", &recipient()).unwrap_err().check, Check::GatewayResponse);
    let mut v = serde_json::to_value(&good).unwrap();
    v["extra"] = 1.into();
    assert_eq!(refused_value(&v), Check::GatewayResponse);
    v = serde_json::to_value(&good).unwrap();
    v["ciphertext"] = "!".into();
    assert_eq!(refused_value(&v), Check::GatewayResponse);
    v = serde_json::to_value(&good).unwrap();
    v["evidence"]["extra"] = 1.into();
    assert_eq!(refused_value(&v), Check::GatewayResponse);

    // Another gateway's key: encapsulated to someone else.
    let other = DecapsulationKey768::from_seed([8u8; 64].into());
    let f = open_json(&serde_json::to_vec(&good).unwrap(), &other).unwrap_err();
    assert_eq!(f.check, Check::GatewayBinding, "{}", f.detail);
    assert!(f.detail.contains("recipient"), "{}", f.detail);
}

fn refused_value(v: &serde_json::Value) -> Check {
    open_json(&serde_json::to_vec(v).unwrap(), &recipient()).unwrap_err().check
}

#[test]
fn a_signed_statement_that_does_not_bind_the_delivery_is_refused() {
    let pk = RecipientKey::from(&recipient()).encapsulation_key();
    let signed = |hook: Box<dyn Fn(&mut Statement)>| {
        let d = Delivery { statement_hook: hook, ..Delivery::new() };
        refused(&d.respond(&pk))
    };
    assert_eq!(signed(Box::new(|s| s.gateway = None)), Check::GatewayBinding);
    assert_eq!(
        signed(Box::new(|s| s.gateway.as_mut().unwrap().purpose = "x".into())),
        Check::GatewayBinding
    );
    assert_eq!(
        signed(Box::new(|s| s.gateway.as_mut().unwrap().length = 16)),
        Check::GatewayBinding
    );
    assert_eq!(
        signed(Box::new(|s| s.gateway.as_mut().unwrap().recipient_sha3 = "00".into())),
        Check::GatewayBinding
    );
    assert_eq!(signed(Box::new(|s| s.key.id = "g-other".into())), Check::GatewayBinding);
    assert_eq!(
        signed(Box::new(|s| {
            s.key.public_key = vec![1];
            s.key.fingerprint = evidence::fingerprint(&[1]);
        })),
        Check::GatewayBinding
    );
    // Evidence about a vault key is not a gateway key, whatever the policy.
    assert_eq!(signed(Box::new(|s| s.key.alg = "ml-kem-768".into())), Check::Algorithm);
    // The trust rules of the policy hold for the draw of a gateway key.
    assert_eq!(signed(Box::new(|s| s.provenance.sources[0].trust = 0.5)), Check::Trust);
    assert_eq!(signed(Box::new(|s| s.nonce = vec![1; 32])), Check::Nonce);
}

#[test]
fn a_refused_answer_leaves_the_state_as_it_was() {
    let dk = recipient();
    let mut r = Delivery::new().respond(&RecipientKey::from(&dk).encapsulation_key());
    r.wrapped_key[20] ^= 1;
    let mut state = VerifierState::default();
    let json = serde_json::to_vec(&r).unwrap();
    let f = open(&json, (&dk).into(), &NONCE, &policy(), &mut state, NOW).unwrap_err();
    assert_eq!(f.check, Check::Unwrap);
    assert_eq!(state, VerifierState::default());
}

#[test]
fn the_transcript_is_canonical_json_in_the_formats_key_order() {
    let t = Transcript {
        key_id: "g-01",
        length: 32,
        purpose: "qkd-mix",
        recipient_sha3: "aa",
        ciphertext_sha3: "bb",
        nonce: &[0; 16],
        expires_unix: 1_733_253_600,
    };
    assert_eq!(
        String::from_utf8(t.to_canonical_bytes()).unwrap(),
        concat!(
            r#"{"key_id":"g-01","length":32,"purpose":"qkd-mix","recipient_sha3":"aa","#,
            r#""ciphertext_sha3":"bb","nonce":"AAAAAAAAAAAAAAAAAAAAAA==","expires_unix":1733253600}"#
        )
    );
}

#[test]
fn wrap_is_aes_gcm_under_hkdf_sha256_of_the_secret_and_transcript() {
    let ss = [0x42u8; 32];
    let transcript = b"{\"key_id\":\"g-01\"}";
    // HKDF-SHA256 by hand: PRK = HMAC(salt, ikm); OKM = HMAC(PRK, info || 1).
    use hkdf::hmac::{self, KeyInit as _, Mac as _};
    let salt = Sha3_256::digest(transcript);
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&salt).unwrap();
    m.update(&ss);
    let prk = m.finalize().into_bytes();
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&prk).unwrap();
    m.update(HKDF_INFO);
    m.update(&[1]);
    let okm = m.finalize().into_bytes();
    assert_eq!(wrapping_key(&ss, transcript).as_slice(), okm.as_slice());

    let key = [0x11u8; 48];
    let w = wrap(&ss, transcript, &key, &[3; IV_LEN]);
    assert_eq!(w.len(), IV_LEN + 48 + TAG_LEN);
    assert_eq!(&w[..IV_LEN], &[3; IV_LEN]);
    assert_eq!(unwrap(&ss, transcript, &w).unwrap().as_slice(), key.as_slice());
    assert!(unwrap(&ss, b"{\"key_id\":\"g-02\"}", &w).is_none(), "the transcript is bound");
    assert!(unwrap(&[0x43; 32], transcript, &w).is_none(), "the secret is bound");
    assert!(unwrap(&ss, transcript, &w[..IV_LEN - 1]).is_none());
}

#[test]
fn purposes_are_short_printable_labels() {
    for ok in ["a", "qkd-mix", "link 7/east:aes@v1+x=y", &"x".repeat(64)] {
        assert!(valid_purpose(ok), "{ok}");
    }
    for bad in ["", &"x".repeat(65), "tab\there", "new\nline", "quote\"", "back\\slash", "é"] {
        assert!(!valid_purpose(bad), "{bad:?}");
    }
}
