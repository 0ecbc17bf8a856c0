//! Attested keys: the node's identity (an ML-DSA-87 key in the vault), its
//! TPM attestation key (AK), and evidence documents about vault keys in the
//! format of `qkeyd-attest`, the crate the gateway verifies them with.
//!
//! Evidence about a key: a canonical statement (the key, its sealer, the
//! provenance its version recorded when it was made, the pool now, the
//! gateway's nonce), signed by the identity key, and with a TPM a quote whose
//! `extraData` binds the nonce and the statement. Everything in it is public.
//!
//! Keys for the gateway ([`gateway`]): a fresh symmetric key, encapsulated
//! to the gateway's ML-KEM key, wrapped, and attested with the same
//! evidence, whose statement binds the delivery.

mod enroll;

use std::{path::Path, sync::Arc};

use qkeyd_attest::evidence::{
    self as ev, Evidence, Identity, PoolInfo, SealerInfo, SealerKind, SourceReport, Statement,
};

use crate::{
    config::{AttestSettings, SealerConfig},
    pool::{Pool, Serving},
    vault::{Algorithm, Vault, VaultError},
};

mod gateway;

pub(crate) use gateway::{GatewayError, GatewayRequest};

/// The label of the node identity key in the vault.
pub(crate) const IDENTITY_LABEL: &str = "qkeyd node identity";

/// Why evidence could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttestError {
    /// The nonce is not 16..=64 bytes.
    #[error("the nonce must be 16 to 64 bytes, got {0}")]
    Nonce(usize),
    /// The key version was made before provenance was kept.
    #[error(
        "key {id} v{version} was made before qkeyd recorded where a seed came from: \
         rotate it to get a version that can be attested"
    )]
    NoProvenance {
        /// Key id.
        id: String,
        /// Version.
        version: u32,
    },
    /// The vault refused (no such key, sealer down, …).
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The node has no TPM, so nothing to activate with.
    #[error("this node has no TPM for attestation (attest.tcti)")]
    NoTpm,
    /// The TPM refused or is gone.
    #[cfg_attr(not(feature = "tpm"), allow(dead_code))]
    #[error("the TPM: {0}")]
    Tpm(#[source] qkeyd_drivers::Error),
}

#[cfg(feature = "tpm")]
struct Tpm {
    attester: qkeyd_drivers::attest::TpmAttester,
    ak: qkeyd_drivers::attest::AkInfo,
    ek_chain: Vec<Vec<u8>>,
}

/// The node's attestation: identity, TPM, and the evidence they make.
pub(crate) struct Attestor {
    vault: Arc<Vault>,
    pool: Arc<Pool>,
    identity_id: String,
    identity_public: Vec<u8>,
    /// The identity key, unsealed at its first use and kept (zeroizing) so
    /// that evidence does not wait for the sealer; dropped if the vault
    /// refuses it (then unsealed again at the next use).
    identity_key: std::sync::Mutex<Option<Arc<crate::vault::OpenKey>>>,
    sealer: SealerInfo,
    /// The lowest trust of the source that seeds a gateway key.
    min_trust: f64,
    /// How long a gateway key is valid (seconds).
    gateway_key_ttl_secs: u64,
    #[cfg(feature = "tpm")]
    tpm: Option<Tpm>,
}

impl std::fmt::Debug for Attestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attestor").field("identity", &self.identity_id).finish_non_exhaustive()
    }
}

/// A vault key the daemon keeps for itself (the node identity, the cluster
/// transport key): its id is kept in `file`, and on first start (no file)
/// the key is made and the file written. It must be in the vault and be
/// `alg`. Returns its id and public key; the caller reserves it.
pub(crate) fn own_key(
    vault: &Vault,
    file: &Path,
    alg: Algorithm,
    label: &str,
    what: &str,
) -> anyhow::Result<(String, Vec<u8>)> {
    use anyhow::Context as _;
    let id = match std::fs::read(file) {
        Ok(content) => crate::durable::body(&content)
            .map_err(|why| anyhow::anyhow!("{}: {why}", file.display()))
            .and_then(|b| Ok(std::str::from_utf8(b)?.trim().to_owned()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let made = vault
                .create(alg, label)
                .with_context(|| format!("making the {what} ({}) in the vault", alg.name()))?;
            crate::durable::write(&file.with_extension("tmp"), file, made.id.as_bytes())
                .map_err(|(path, e)| anyhow::anyhow!("writing {}: {e}", path.display()))?;
            tracing::info!(key_id = %made.id, "made the {what} ({})", alg.name());
            made.id
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let key = vault.current_key(&id).with_context(|| {
        format!("the {what} {id} named in {} is not in the vault", file.display())
    })?;
    anyhow::ensure!(key.alg == alg, "the {what} {id} is {}, not {}", key.alg.name(), alg.name());
    Ok((id, key.public_key))
}

/// The node's ML-KEM-1024 transport key, which other nodes encapsulate to
/// (the KMS cluster's KEK envelopes, hybrid QKD keys): found or made by
/// [`own_key`] (id in `STATE_DIR/kms/cluster-transport`) and reserved.
pub(crate) fn transport_key(vault: &Vault, dir: &Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let file = dir.join("kms").join("cluster-transport");
    if let Some(parent) = file.parent() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let (id, _) =
        own_key(vault, &file, Algorithm::MlKem1024, "qkeyd cluster transport", "transport key")?;
    vault.reserve(&id);
    Ok(id)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn serving(s: Serving) -> ev::Serving {
    match s {
        Serving::Sources => ev::Serving::Sources,
        Serving::OsFallback => ev::Serving::OsFallback,
    }
}

impl Attestor {
    /// Find (or make, on first start) the identity key and the TPM's AK.
    pub(crate) fn open(
        settings: &AttestSettings,
        dir: &Path,
        sealer: &SealerConfig,
        token_serial: Option<String>,
        vault: Arc<Vault>,
        pool: Arc<Pool>,
    ) -> anyhow::Result<Self> {
        let (identity_id, identity_public) = own_key(
            &vault,
            &dir.join("attest-identity"),
            Algorithm::MlDsa87,
            IDENTITY_LABEL,
            "node identity key",
        )?;
        let (kind, token_label) = match sealer {
            SealerConfig::Soft { .. } => (SealerKind::Soft, None),
            SealerConfig::Hsm { token_label, .. } => (SealerKind::Hsm, Some(token_label.clone())),
            SealerConfig::Tpm { .. } => (SealerKind::Tpm, None),
        };
        #[cfg(feature = "tpm")]
        let tpm = match &settings.tcti {
            Some(tcti) => Some(open_tpm(settings, tcti)?),
            None => None,
        };
        #[cfg(not(feature = "tpm"))]
        anyhow::ensure!(
            settings.tcti.is_none(),
            "[attest] needs a TPM, but this qkeyd was built without TPM support; build it \
             with `--features tpm` (needs libtss2-dev), or set attest.tpm = false"
        );
        #[cfg(feature = "tpm")]
        let has_tpm = tpm.is_some();
        #[cfg(not(feature = "tpm"))]
        let has_tpm = false;
        tracing::info!(
            identity = %ev::fingerprint(&identity_public),
            tpm = has_tpm,
            "attestation ready"
        );
        vault.reserve(&identity_id);
        Ok(Self {
            vault,
            pool,
            identity_id,
            identity_public,
            identity_key: std::sync::Mutex::new(None),
            sealer: SealerInfo { kind, token_label, token_serial, tpm: has_tpm },
            min_trust: settings.min_trust,
            gateway_key_ttl_secs: settings.gateway_key_ttl_secs,
            #[cfg(feature = "tpm")]
            tpm,
        })
    }

    /// Sign a KEK envelope ([`crate::kms::cluster`]) with the node identity
    /// key, under the envelope's own ML-DSA context. Blocking.
    pub(crate) fn sign_envelope(&self, bytes: &[u8]) -> Result<Vec<u8>, AttestError> {
        self.sign_as_node(bytes, crate::kms::cluster::ENVELOPE_CONTEXT)
    }

    /// The node identity key's fingerprint.
    pub(crate) fn fingerprint(&self) -> String {
        ev::fingerprint(&self.identity_public)
    }

    /// Sign with the node identity key (an audited use, like any sign),
    /// under `ctx`: the context of one of the daemon's own formats.
    fn sign_as_node(&self, bytes: &[u8], ctx: &[u8]) -> Result<Vec<u8>, AttestError> {
        let cached =
            self.identity_key.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let key = match cached {
            Some(k) => k,
            None => {
                let k = Arc::new(self.vault.open_reserved(&self.identity_id)?);
                *self.identity_key.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(k.clone());
                k
            }
        };
        self.vault.sign_open(&key, bytes, ctx, false).map_err(|e| {
            self.identity_key.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            AttestError::from(e)
        })
    }

    /// What a verifier enrolls: the identity key and, with a TPM, the AK and
    /// the EK certificate chain.
    pub(crate) fn identity(&self) -> serde_json::Value {
        use base64::Engine as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        #[cfg(feature = "tpm")]
        let tpm = self.tpm.as_ref().map(|t| {
            serde_json::json!({
                "ak_public": b64(&t.ak.public),
                "ak_pem": pem(&t.ak.spki_der),
                "ak_name": hex::encode(&t.ak.name),
                "ek_chain": t.ek_chain.iter().map(|c| b64(c)).collect::<Vec<_>>(),
            })
        });
        #[cfg(not(feature = "tpm"))]
        let tpm: Option<serde_json::Value> = None;
        serde_json::json!({
            "identity": {
                "key_id": self.identity_id,
                "algorithm": "ml-dsa-87",
                "public_key": b64(&self.identity_public),
                "fingerprint": ev::fingerprint(&self.identity_public),
            },
            "tpm": tpm,
        })
    }

    /// Evidence about version `version` (default: current) of key `id`,
    /// for the gateway's `nonce`. Blocking: it signs and quotes.
    pub(crate) fn evidence(
        &self,
        id: &str,
        version: Option<u32>,
        nonce: &[u8],
    ) -> Result<Evidence, AttestError> {
        if !(16..=64).contains(&nonce.len()) {
            return Err(AttestError::Nonce(nonce.len()));
        }
        let r = self.vault.version_record(id, version)?;
        let p = r
            .provenance
            .clone()
            .ok_or_else(|| AttestError::NoProvenance { id: r.id.clone(), version: r.version })?;
        let public_key = r.public_key_bytes().map_err(VaultError::Store)?;
        let statement = Statement {
            format: ev::STATEMENT_FORMAT.into(),
            node: ev::fingerprint(&self.identity_public),
            nonce: nonce.to_vec(),
            issued_unix: now_unix(),
            key: ev::KeyInfo {
                id: r.id.clone(),
                version: r.version,
                alg: r.alg.name().into(),
                fingerprint: ev::fingerprint(&public_key),
                public_key,
                created_unix: r.created_unix,
            },
            sealer: self.sealer.clone(),
            provenance: provenance(&p),
            pool: self.pool_info(),
            gateway: None,
        };
        self.sign(statement, nonce)
    }

    /// The pool's sources now, for a statement.
    fn pool_info(&self) -> PoolInfo {
        let snap = self.pool.snapshot();
        PoolInfo {
            serving: snap.serving.map(serving),
            sources: snap
                .sources
                .iter()
                .map(|s| SourceReport {
                    name: s.name.clone(),
                    state: serde_json::to_value(s.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    trust: s.trust_score,
                    drift: s.drift_score,
                })
                .collect(),
        }
    }

    /// Sign a statement with the identity key and, with a TPM, quote it.
    fn sign(&self, statement: Statement, nonce: &[u8]) -> Result<Evidence, AttestError> {
        let bytes = statement.to_canonical_bytes();
        let signature = self.sign_as_node(&bytes, ev::STATEMENT_CONTEXT)?;
        #[cfg(feature = "tpm")]
        let tpm = match &self.tpm {
            Some(t) => {
                let extra = qkeyd_attest::extra_data(nonce, &bytes);
                let q = t.attester.quote(&extra).map_err(AttestError::Tpm)?;
                Some(ev::TpmEvidence {
                    attest: q.attest,
                    signature: q.signature,
                    pcr_bank: ev::PCR_BANK_SHA256.into(),
                    pcrs: q.pcrs.into_iter().map(|(i, v)| (u32::from(i), v)).collect(),
                    ak_public: t.ak.public.clone(),
                    ak_pem: pem(&t.ak.spki_der),
                    ak_name: t.ak.name.clone(),
                    ek_chain: t.ek_chain.clone(),
                })
            }
            None => None,
        };
        #[cfg(not(feature = "tpm"))]
        let tpm = {
            let _ = nonce;
            None
        };
        Ok(Evidence {
            format: ev::EVIDENCE_FORMAT.into(),
            statement: bytes,
            signature,
            identity: Identity {
                public_key: self.identity_public.clone(),
                fingerprint: ev::fingerprint(&self.identity_public),
            },
            tpm,
        })
    }
}

/// A draw's provenance as a statement states it.
fn provenance(p: &crate::pool::Provenance) -> ev::Provenance {
    ev::Provenance {
        serving: serving(p.serving),
        reseed_counter: p.reseed_counter,
        seed_source: p.seed_source.clone(),
        sources: p
            .sources
            .iter()
            .map(|s| SourceReport {
                name: s.name.clone(),
                state: s.state.clone(),
                trust: s.trust,
                drift: s.drift,
            })
            .collect(),
    }
}

#[cfg(feature = "tpm")]
fn open_tpm(settings: &AttestSettings, tcti: &str) -> anyhow::Result<Tpm> {
    use anyhow::Context as _;
    use qkeyd_drivers::attest::{AttestConfig, TpmAttester};
    let (attester, ak) = TpmAttester::open(AttestConfig {
        tcti: tcti.to_owned(),
        ak_handle: settings.ak_handle,
        pcrs: settings.pcrs.clone(),
    })
    .with_context(|| format!("the attestation key in the TPM at {tcti:?}"))?;
    if ak.created {
        tracing::info!(ak_name = %hex::encode(&ak.name), handle = format!("{:#x}", settings.ak_handle), "made the TPM attestation key");
    }
    let mut ek_chain = Vec::new();
    match &ak.ek_certificate {
        Some(c) => ek_chain.push(c.clone()),
        None => tracing::warn!("the TPM holds no EK certificate: evidence carries no EK chain"),
    }
    for f in &settings.ek_ca_files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        ek_chain.push(
            der_of(&bytes)
                .with_context(|| format!("{}: not a PEM or DER certificate", f.display()))?,
        );
    }
    Ok(Tpm { attester, ak, ek_chain })
}

/// A certificate file's DER: PEM decoded, or DER as it is.
#[cfg(feature = "tpm")]
fn der_of(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    if bytes.starts_with(b"-----BEGIN") {
        return Ok(CertificateDer::from_pem_slice(bytes)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_vec());
    }
    anyhow::ensure!(bytes.first() == Some(&0x30), "not DER");
    Ok(bytes.to_vec())
}

/// A SubjectPublicKeyInfo as PEM.
#[cfg(feature = "tpm")]
fn pem(spki_der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(spki_der);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    out
}
