//! Keys for the gateway (`POST /v1/gateway/keys`): key material from a
//! fresh draw seeded by a trusted source, encapsulated to the gateway's
//! ML-KEM key, wrapped under the transcript, attested and audited.
//!
//! The transcript, the wrapping and the answer are those of
//! [`qkeyd_attest::gateway`], the crate the gateway opens them with, so
//! both sides share one definition. The key is never stored: it exists in
//! this process only for the length of the call, in a zeroizing buffer, and
//! leaves it only wrapped. The audit line (`gateway-key`) names the key id,
//! the SHA3-256 of the recipient key and of the ciphertext, the length and
//! the purpose; it is fsynced before the answer is handed out.

use qkeyd_attest::evidence::{self as ev, GatewayDelivery, KeyInfo, Statement};
use qkeyd_attest::gateway::{self as gw, GatewayResponse, Transcript};
use qkeyd_pqc::Algorithm;
use serde::Serialize;
use zeroize::Zeroizing;

use super::{AttestError, Attestor, now_unix, provenance};
use crate::pool::PoolError;

/// ML-KEM's encapsulation randomness `m`.
const M_LEN: usize = 32;
/// The random part of a key id.
const ID_LEN: usize = 16;

/// A request for a gateway key, its fields decoded but not yet checked.
pub(crate) struct GatewayRequest {
    /// The gateway's ML-KEM-768 or ML-KEM-1024 encapsulation key.
    pub(crate) recipient: Vec<u8>,
    /// The gateway's nonce, 16 to 64 bytes.
    pub(crate) nonce: Vec<u8>,
    /// The key length in bytes, 16 to 64.
    pub(crate) length: usize,
    /// What the key is for.
    pub(crate) purpose: String,
}

/// Why no gateway key was made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GatewayError {
    /// The recipient is not an ML-KEM-768 or -1024 encapsulation key.
    #[error(
        "recipient: {0}; send the gateway's ML-KEM-768 (1184 bytes) or ML-KEM-1024 (1568 bytes) \
         encapsulation key in base64"
    )]
    Recipient(String),
    /// The length is outside 16..=64.
    #[error("length must be 16 to 64 bytes, got {0}")]
    Length(usize),
    /// The purpose is not a short printable label.
    #[error(
        "purpose must be 1 to 64 printable ASCII characters, without `\"` and `\\`, \
         got {0} bytes"
    )]
    Purpose(usize),
    /// The fresh draw was refused: the seed's source is below the trust bar
    /// (`BelowTrust`), or no source serves.
    #[error("no gateway key was made")]
    Entropy(#[source] PoolError),
    /// The nonce, the signature, the TPM quote or the audit log.
    #[error(transparent)]
    Attest(#[from] AttestError),
}

/// The audit line of a delivered key: ids and hashes only.
#[derive(Serialize)]
struct AuditLine<'a> {
    op: &'static str,
    key: &'a str,
    recipient_sha3: &'a str,
    ciphertext_sha3: &'a str,
    length: u32,
    purpose: &'a str,
    outcome: &'static str,
}

impl Attestor {
    /// Make a key for the gateway. Blocking: it reseeds, signs and quotes.
    pub(crate) fn gateway_key(
        &self,
        req: &GatewayRequest,
    ) -> Result<GatewayResponse, GatewayError> {
        if !qkeyd_attest::NONCE_LEN.contains(&req.nonce.len()) {
            return Err(AttestError::Nonce(req.nonce.len()).into());
        }
        if !gw::KEY_LEN.contains(&req.length) {
            return Err(GatewayError::Length(req.length));
        }
        if !gw::valid_purpose(&req.purpose) {
            return Err(GatewayError::Purpose(req.purpose.len()));
        }
        let alg = match req.recipient.len() {
            gw::ML_KEM_768_KEY_LEN => Algorithm::MlKem768,
            gw::ML_KEM_1024_KEY_LEN => Algorithm::MlKem1024,
            n => return Err(GatewayError::Recipient(format!("{n} bytes"))),
        };

        // Key, encapsulation randomness, IV and id from one fresh draw whose
        // seed came from a source at or above the bar.
        let length = req.length;
        let mut drawn = Zeroizing::new(vec![0u8; length + M_LEN + gw::IV_LEN + ID_LEN]);
        let p = self
            .pool
            .fill_fresh_traced(&mut drawn, Some(self.min_trust))
            .map_err(GatewayError::Entropy)?;
        let (key, rest) = drawn.split_at(length);
        let (m_bytes, rest) = rest.split_at(M_LEN);
        let (iv_bytes, id) = rest.split_at(gw::IV_LEN);
        let mut m = Zeroizing::new([0u8; M_LEN]);
        m.copy_from_slice(m_bytes);
        let mut iv = [0u8; gw::IV_LEN];
        iv.copy_from_slice(iv_bytes);
        let key_id = format!("g-{}", hex::encode(id));

        let (ciphertext, ss) = qkeyd_pqc::encapsulate(alg, &req.recipient, &m)
            .map_err(|e| GatewayError::Recipient(e.to_string()))?;
        let now = now_unix();
        let expires_unix = now.saturating_add(self.gateway_key_ttl_secs);
        let recipient_sha3 = gw::sha3_hex(&req.recipient);
        let ciphertext_sha3 = gw::sha3_hex(&ciphertext);
        // At most 64: fits.
        let length = u32::try_from(length).unwrap_or(u32::MAX);
        let transcript = Transcript {
            key_id: &key_id,
            length,
            purpose: &req.purpose,
            recipient_sha3: &recipient_sha3,
            ciphertext_sha3: &ciphertext_sha3,
            nonce: &req.nonce,
            expires_unix,
        }
        .to_canonical_bytes();
        let wrapped_key = gw::wrap(&ss, &transcript, key, &iv);
        drop(ss);
        drop(m);
        drop(drawn);

        let statement = Statement {
            format: ev::STATEMENT_FORMAT.into(),
            node: ev::fingerprint(&self.identity_public),
            nonce: req.nonce.clone(),
            issued_unix: now,
            key: KeyInfo {
                id: key_id.clone(),
                version: 1,
                alg: gw::GATEWAY_KEY_ALG.into(),
                public_key: Vec::new(),
                fingerprint: gw::empty_key_fingerprint(),
                created_unix: now,
            },
            sealer: self.sealer.clone(),
            provenance: provenance(&p),
            pool: self.pool_info(),
            gateway: Some(GatewayDelivery {
                recipient_sha3: recipient_sha3.clone(),
                ciphertext_sha3: ciphertext_sha3.clone(),
                key_id: key_id.clone(),
                length,
                purpose: req.purpose.clone(),
            }),
        };
        let evidence = self.sign(statement, &req.nonce)?;
        self.vault
            .audit_event(&AuditLine {
                op: "gateway-key",
                key: &key_id,
                recipient_sha3: &recipient_sha3,
                ciphertext_sha3: &ciphertext_sha3,
                length,
                purpose: &req.purpose,
                outcome: "ok",
            })
            .map_err(AttestError::Vault)?;
        Ok(GatewayResponse {
            key_id,
            length,
            purpose: req.purpose.clone(),
            ciphertext,
            wrapped_key,
            expires_unix,
            evidence,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use qkeyd_attest::gateway::ml_kem::{DecapsulationKey768, KeyExport as _};
    use qkeyd_attest::{Policy, VerifierState, evidence::SealerKind};

    use super::*;
    use crate::{
        config::{AttestSettings, SealerConfig},
        testing,
        vault::Vault,
    };

    fn attestor(min_trust: f64) -> (tempfile::TempDir, Attestor) {
        let (dir, sealer) = testing::soft_sealer();
        let pool = testing::pool();
        let vault = Arc::new(Vault::open(dir.path(), sealer, pool.clone()).unwrap());
        let settings = AttestSettings {
            tcti: None,
            ak_handle: 0x8101_0A7E,
            pcrs: vec![0],
            ek_ca_files: Vec::new(),
            min_trust,
            gateway_key_ttl_secs: 3600,
        };
        let sealer = SealerConfig::Soft { key_file: None };
        let a = Attestor::open(&settings, dir.path(), &sealer, None, vault, pool).unwrap();
        (dir, a)
    }

    fn recipient() -> DecapsulationKey768 {
        DecapsulationKey768::from_seed([3u8; 64].into())
    }

    fn request(dk: &DecapsulationKey768, nonce: &[u8]) -> GatewayRequest {
        GatewayRequest {
            recipient: dk.encapsulation_key().to_bytes().to_vec(),
            nonce: nonce.to_vec(),
            length: 32,
            purpose: "qkd-mix".into(),
        }
    }

    /// What a gateway accepts of a node without a TPM, soft-sealed (tests).
    fn policy() -> Policy {
        Policy {
            require_tpm: false,
            sealers: vec![SealerKind::Soft],
            min_trust: 0.0,
            ..Policy::default()
        }
    }

    #[test]
    fn an_attested_gateway_key_opens_at_the_gateway_and_is_audited_by_id() {
        let (dir, a) = attestor(0.0);
        let dk = recipient();
        let nonce = [5u8; 24];
        let r = a.gateway_key(&request(&dk, &nonce)).unwrap();
        assert!(r.key_id.starts_with("g-") && r.key_id.len() == 34, "{}", r.key_id);
        assert_eq!(r.wrapped_key.len(), 12 + 32 + 16);
        let json = serde_json::to_vec(&r).unwrap();
        let now = now_unix();
        let mut state = VerifierState::default();
        let k =
            qkeyd_attest::gateway::open(&json, (&dk).into(), &nonce, &policy(), &mut state, now)
                .unwrap_or_else(|f| panic!("{}: {}", f.check, f.detail));
        assert_eq!(k.key.len(), 32);
        assert_eq!(k.key_id, r.key_id);
        assert_eq!(k.expires_unix, r.expires_unix);
        assert!(r.expires_unix >= now + 3599 && r.expires_unix <= now + 3601);
        assert_eq!(k.statement.provenance.seed_source, "os");
        assert_eq!(k.statement.key.alg, "aes-256-gcm-wrapped");

        // The audit log has the delivery by id and hashes, never the key.
        let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        let line = log.lines().find(|l| l.contains("\"op\":\"gateway-key\"")).unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["key"], r.key_id.as_str());
        assert_eq!(v["recipient_sha3"], gw::sha3_hex(&request(&dk, &nonce).recipient));
        assert_eq!(v["ciphertext_sha3"], gw::sha3_hex(&r.ciphertext));
        assert_eq!(v["length"], 32);
        assert_eq!(v["purpose"], "qkd-mix");
        assert!(!log.contains(&hex::encode(&*k.key)));

        // Two keys are two draws.
        let r2 = a.gateway_key(&request(&dk, &[6u8; 24])).unwrap();
        assert_ne!(r2.key_id, r.key_id);
        assert_ne!(r2.ciphertext, r.ciphertext);
    }

    #[test]
    fn attest_refuses_a_gateway_key_from_a_source_below_the_bar() {
        // The OS source scores at most 1: a bar just above that (which the
        // config would refuse) is one it cannot meet. The end-to-end tests
        // drive a drifting source below the default bar.
        let (_dir, a) = attestor(f64::from_bits(1.0f64.to_bits() + 1));
        let e = a.gateway_key(&request(&recipient(), &[5u8; 24])).unwrap_err();
        assert!(matches!(e, GatewayError::Entropy(PoolError::BelowTrust { .. })), "{e:?}");
    }

    #[test]
    fn attest_gateway_requests_are_checked_before_any_draw() {
        let (_dir, a) = attestor(0.0);
        let dk = recipient();
        let mut r = request(&dk, &[5u8; 8]);
        assert!(matches!(a.gateway_key(&r), Err(GatewayError::Attest(AttestError::Nonce(8)))));
        r.nonce = vec![5; 16];
        r.length = 15;
        assert!(matches!(a.gateway_key(&r), Err(GatewayError::Length(15))));
        r.length = 65;
        assert!(matches!(a.gateway_key(&r), Err(GatewayError::Length(65))));
        r.length = 16;
        r.purpose = "a\nb".into();
        assert!(matches!(a.gateway_key(&r), Err(GatewayError::Purpose(3))));
        r.purpose = "ok".into();
        r.recipient.pop();
        assert!(matches!(a.gateway_key(&r), Err(GatewayError::Recipient(_))));
        // The right length, but coefficients not reduced mod q.
        r.recipient = vec![0xff; 1184];
        assert!(matches!(a.gateway_key(&r), Err(GatewayError::Recipient(_))));
    }
}
