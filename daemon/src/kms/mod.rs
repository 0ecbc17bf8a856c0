//! The Kubernetes KMS v2 plugin: kube-apiserver's envelope encryption of etcd
//! data (Secrets) under key-encryption keys (KEKs) made from health-tested
//! entropy and kept by the configured sealer.
//!
//! kube-apiserver sends a 32-byte DEK seed to Encrypt; the plugin returns it
//! encrypted under the current KEK (AES-256-GCM, a fresh 96-bit IV from the
//! pool, the key id and format bound as associated data), the key id, and one
//! annotation naming the ciphertext format. Decrypt takes that back.
//!
//! Where a KEK lives depends on the sealer:
//! - `pkcs11`: a sensitive, non-extractable AES-256 key inside the token,
//!   created from pool bytes; the token does the AES-GCM.
//! - `tpm` and `soft`: the KEK's value sealed by that sealer; it is unsealed
//!   into zeroizing memory and kept there for `kms.kek_cache_ms` at most, so a
//!   TPM that goes away stops Encrypt and Decrypt within that time.
//!
//! Rotation makes a new KEK the write key; older ones keep decrypting until
//! retired. Key ids are derived from a random KEK id and are never re-used:
//! retired ids are kept as tombstones.
//!
//! The methods block (disk, HSM, TPM); the REST handlers call them on the
//! blocking pool. The gRPC service uses `encrypt_async`/`decrypt_async`,
//! which run a token KEK's operation inline or on the sealer thread, use a
//! sealed KEK unsealed within `kek_cache` on their own thread, and fall back
//! to the blocking methods for everything else. [`grpc`] is the only part that
//! knows protobuf.

pub mod grpc;
pub mod store;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aes_gcm::{
    Aes256Gcm, KeyInit as _, Nonce,
    aead::{Aead as _, Payload},
};
use qkeyd_drivers::seal::{SealError, worker::SealerWorker};
use serde::Serialize;
use sha3::{Digest as _, Sha3_256};
use zeroize::Zeroizing;

use crate::pool::{Pool, PoolError};
use store::{KekFile, KekLocation, KekRecord, Retired, Store, StoreError};

/// The only ciphertext format so far: `1 ‖ IV (12) ‖ AES-GCM(seed) ‖ tag (16)`.
const FORMAT: u8 = 1;
const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a ciphertext adds to its plaintext.
pub const OVERHEAD: usize = 1 + IV_LEN + TAG_LEN;
/// kube-apiserver refuses Encrypt ciphertexts over 1 KiB.
pub const MAX_CIPHERTEXT: usize = 1024;
/// So the largest plaintext is the rest.
pub const MAX_PLAINTEXT: usize = MAX_CIPHERTEXT - OVERHEAD;
/// The annotation naming the ciphertext format (stored in clear in etcd).
pub const FORMAT_ANNOTATION: &str = "format.kms.qkeyd.io";
/// Prefix of every key id.
const KEY_ID_PREFIX: &str = "qkeyd-kek-";
/// How long after a rotation (or after its last use) a KEK is not retired
/// without `force`: kube-apiserver learns of a new key at its next Status call
/// (about once a minute) and keeps using a DEK for up to 3 minutes.
pub const RETIRE_GRACE: Duration = Duration::from_secs(300);

/// Why a KMS call failed. Messages carry key ids and reasons, never secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KmsError {
    /// The request is malformed (lengths, annotations, a ciphertext that does
    /// not authenticate).
    #[error("{0}")]
    InvalidArgument(String),
    /// The key id is unknown or retired.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the state (retiring the write key).
    #[error("{0}")]
    Conflict(String),
    /// The sealer (HSM, TPM) or the entropy pool cannot serve now.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (a damaged KEK file, a KEK whose backend object is gone).
    #[error("{0}")]
    Internal(String),
}

impl From<SealError> for KmsError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Unavailable(_) | SealError::Timeout(_) | SealError::Auth(_) => {
                Self::Unavailable(format!("KEK backend: {e}"))
            }
            other => Self::Internal(format!("KEK backend: {other}")),
        }
    }
}

impl From<PoolError> for KmsError {
    fn from(e: PoolError) -> Self {
        Self::Unavailable(format!("no health-tested entropy: {e}"))
    }
}

impl From<StoreError> for KmsError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Settings (`[kms]`).
#[derive(Clone, Debug)]
pub struct KmsConfig {
    /// How long a Status answer (a real round trip through the backend) is reused.
    pub status_cache: Duration,
    /// How long an unsealed KEK (tpm, soft) is kept in memory.
    pub kek_cache: Duration,
}

/// Encrypt's answer.
#[derive(Debug)]
pub struct Encrypted {
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
    /// The KEK's key id.
    pub key_id: String,
    /// Annotations to store beside it.
    pub annotations: BTreeMap<String, Vec<u8>>,
}

/// A KEK as `GET /v1/kms` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct KekInfo {
    /// Key id.
    pub key_id: String,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
    /// `write` (new Encrypt calls) or `decrypt-only`.
    pub state: &'static str,
    /// `token` (inside the HSM) or `sealed` (by the TPM or soft sealer).
    pub location: &'static str,
}

/// The plugin's state as `GET /v1/kms` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct KmsInfo {
    /// The write key id.
    pub write_key_id: Option<String>,
    /// The sealer holding the KEKs.
    pub backend: &'static str,
    /// Every KEK that decrypts.
    pub keks: Vec<KekInfo>,
    /// Retired key ids.
    pub retired: Vec<Retired>,
    /// Token KEK operations since start, by where they ran.
    pub token_ops: TokenOps,
    /// Status's real checks of the backend (encrypt/decrypt round trips)
    /// since start; every other Status answer was the cached one.
    pub status_checks: u64,
}

/// Where token KEK operations ran: on the caller's thread (the token's inline
/// session) or queued on the sealer's thread.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TokenOps {
    /// On the gRPC handler's thread.
    pub inline: u64,
    /// On the sealer's thread.
    pub queued: u64,
    /// Of the inline ones, those on a session copy of the KEK inside the
    /// token rather than on the token object itself.
    pub inline_on_copy: u64,
}

/// A KEK a call can use without blocking (see `Kms::held`).
enum HeldKek {
    /// A sealed KEK's value, unsealed lately.
    Memory(Zeroizing<[u8; 32]>),
    /// A token key, by label.
    Token(String),
}

/// An unsealed KEK and when it was unsealed.
struct Cached {
    at: Instant,
    key: Zeroizing<[u8; 32]>,
}

/// The plugin.
pub struct Kms {
    store: Store,
    file: Mutex<KekFile>,
    sealer: SealerWorker,
    holds_keys: bool,
    pool: Arc<Pool>,
    config: KmsConfig,
    /// The last Status round trip: when, and its key id or error.
    status: Mutex<Option<(Instant, Result<String, String>)>>,
    unsealed: Mutex<HashMap<String, Cached>>,
    /// When each KEK last encrypted or decrypted (since start).
    used: Mutex<HashMap<String, Instant>>,
    /// Serialises rotate and retire.
    change: Mutex<()>,
    inline_ops: std::sync::atomic::AtomicU64,
    queued_ops: std::sync::atomic::AtomicU64,
    status_checks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms").field("store", &self.store).field("sealer", &self.sealer).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Associated data of a ciphertext: what it is, under which key, which format.
fn aad(key_id: &str) -> Vec<u8> {
    let mut a = b"qkeyd kms v2\0".to_vec();
    a.extend_from_slice(key_id.as_bytes());
    a.push(0);
    a.push(FORMAT);
    a
}

/// Associated data when a KEK's value is sealed.
fn kek_aad(key_id: &str) -> Vec<u8> {
    let mut a = b"qkeyd kms kek\0".to_vec();
    a.extend_from_slice(key_id.as_bytes());
    a
}

fn label(key_id: &str) -> String {
    format!("qkeyd-kms/{key_id}")
}

fn check_plaintext(plaintext: &[u8]) -> Result<(), KmsError> {
    if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
        return Err(KmsError::InvalidArgument(format!(
            "plaintext of {} bytes: 1 to {MAX_PLAINTEXT} bytes are accepted",
            plaintext.len()
        )));
    }
    Ok(())
}

fn annotations() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([(FORMAT_ANNOTATION.to_owned(), b"1".to_vec())])
}

/// `FORMAT ‖ IV ‖ body`.
fn assemble(iv: &[u8; IV_LEN], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + IV_LEN + body.len());
    out.push(FORMAT);
    out.extend_from_slice(iv);
    out.extend_from_slice(body);
    out
}

fn not_authentic(key_id: &str) -> KmsError {
    KmsError::InvalidArgument(format!(
        "ciphertext does not authenticate under key_id {key_id} (corrupted, or not made by this key)"
    ))
}

/// AES-256-GCM under an unsealed KEK: ciphertext ‖ tag.
fn gcm_seal(key: &[u8; 32], iv: &[u8; IV_LEN], aad: &[u8], pt: &[u8]) -> Result<Vec<u8>, KmsError> {
    Aes256Gcm::new(key.into())
        .encrypt(&Nonce::from(*iv), Payload { msg: pt, aad })
        .map_err(|_| KmsError::Internal("AES-GCM encryption failed".into()))
}

/// The inverse of [`gcm_seal`]; `None` when the tag does not verify.
fn gcm_open(
    key: &[u8; 32],
    iv: &[u8; IV_LEN],
    aad: &[u8],
    body: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    Aes256Gcm::new(key.into())
        .decrypt(&Nonce::from(*iv), Payload { msg: body, aad })
        .ok()
        .map(Zeroizing::new)
}

/// `op` on the blocking pool, holding `permit` until it ends.
async fn run_blocking<T: Send + 'static, P: Send + 'static>(
    permit: P,
    op: impl FnOnce() -> Result<T, KmsError> + Send + 'static,
) -> Result<T, KmsError> {
    tokio::task::spawn_blocking(move || {
        let r = op();
        drop(permit);
        r
    })
    .await
    .map_err(|_| KmsError::Internal("the KMS call failed".into()))?
}

impl Kms {
    /// Open the KEK file in `state_dir` (KEKs are made on first use).
    /// `sealer` holds the KEKs; its `holds_keys` is asked once, here.
    pub fn open(
        state_dir: &Path,
        sealer: SealerWorker,
        pool: Arc<Pool>,
        config: KmsConfig,
    ) -> Result<Self, KmsError> {
        let (store, file) = Store::open(state_dir)?;
        let holds_keys = sealer.call(|s| Ok(s.holds_keys()))?;
        Ok(Self {
            store,
            file: Mutex::new(file),
            sealer,
            holds_keys,
            pool,
            config,
            status: Mutex::new(None),
            unsealed: Mutex::new(HashMap::new()),
            used: Mutex::new(HashMap::new()),
            change: Mutex::new(()),
            inline_ops: Default::default(),
            queued_ops: Default::default(),
            status_checks: Default::default(),
        })
    }

    /// The sealer's name.
    pub fn backend(&self) -> &'static str {
        self.sealer.kind()
    }

    /// Make the first KEK if there is none; returns the write key id.
    pub fn ensure_key(&self) -> Result<String, KmsError> {
        if let Some(id) = lock(&self.file).write.clone() {
            return Ok(id);
        }
        let _c = lock(&self.change);
        if let Some(id) = lock(&self.file).write.clone() {
            return Ok(id);
        }
        self.make_write_kek()
    }

    /// Status: the write key id after a real Encrypt/Decrypt round trip
    /// through the backend, reused for `status_cache`. Fails (and so makes
    /// kube-apiserver stop trusting the key) when the backend or the pool
    /// cannot serve.
    pub fn status(&self) -> Result<String, KmsError> {
        if let Some((at, r)) = lock(&self.status).as_ref()
            && at.elapsed() < self.config.status_cache
        {
            return r.clone().map_err(KmsError::Unavailable);
        }
        self.status_checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = self.probe();
        let cached = match &r {
            Ok(id) => Ok(id.clone()),
            Err(e) => Err(e.to_string()),
        };
        // A rotation while the probe ran has made its key id stale: answer
        // with it this once, but do not keep it.
        let current = lock(&self.file).write.clone();
        if r.as_ref().ok() == current.as_ref() || r.is_err() {
            *lock(&self.status) = Some((Instant::now(), cached));
        }
        r
    }

    fn probe(&self) -> Result<String, KmsError> {
        let key_id = self.ensure_key()?;
        let mut probe = Zeroizing::new([0u8; 32]);
        self.pool.fill(&mut probe[..])?;
        let record = self.record(&key_id)?;
        // Always through the backend: a cached unsealed KEK would hide a TPM
        // that has gone away.
        let ct = self.seal_under(&record, &probe[..], true)?;
        let back = self.open_under(&record, &ct, true)?;
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&back[..], &probe[..])) {
            return Err(KmsError::Internal(format!(
                "KEK {key_id}: the round trip through the backend returned other bytes"
            )));
        }
        Ok(key_id)
    }

    /// Encrypt `plaintext` (a DEK seed) under the write KEK.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Encrypted, KmsError> {
        check_plaintext(plaintext)?;
        let key_id = self.ensure_key()?;
        let record = self.record(&key_id)?;
        let ciphertext = self.seal_under(&record, plaintext, false)?;
        self.note_use(&key_id);
        Ok(Encrypted { ciphertext, key_id, annotations: annotations() })
    }

    /// Decrypt a ciphertext Encrypt made. Everything is checked before the
    /// backend is asked; a ciphertext that does not authenticate is an
    /// error, never other bytes.
    pub fn decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let record = self.check_decrypt(key_id, ciphertext, annotations)?;
        let plaintext = self.open_under(&record, ciphertext, false)?;
        self.note_use(key_id);
        Ok(plaintext)
    }

    /// The KEK a Decrypt request names, once everything in it checks out.
    fn check_decrypt(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<KekRecord, KmsError> {
        if key_id.is_empty() {
            return Err(KmsError::InvalidArgument("key_id is empty".into()));
        }
        let record = self.record(key_id)?;
        match annotations.get(FORMAT_ANNOTATION) {
            Some(v) if v.as_slice() == b"1" => {}
            Some(v) => {
                return Err(KmsError::InvalidArgument(format!(
                    "annotation {FORMAT_ANNOTATION} is {:?}; this plugin writes format \"1\"",
                    String::from_utf8_lossy(v)
                )));
            }
            None => {
                return Err(KmsError::InvalidArgument(format!(
                    "annotation {FORMAT_ANNOTATION} is missing"
                )));
            }
        }
        if let Some(other) = annotations.keys().find(|k| *k != FORMAT_ANNOTATION) {
            return Err(KmsError::InvalidArgument(format!(
                "unexpected annotation {other:?}: this plugin writes only {FORMAT_ANNOTATION}"
            )));
        }
        if ciphertext.len() <= OVERHEAD || ciphertext.len() > MAX_CIPHERTEXT {
            return Err(KmsError::InvalidArgument(format!(
                "ciphertext of {} bytes: this plugin's are {} to {MAX_CIPHERTEXT} bytes",
                ciphertext.len(),
                OVERHEAD + 1
            )));
        }
        if ciphertext[0] != FORMAT {
            return Err(KmsError::InvalidArgument(format!(
                "ciphertext format {} is unknown (this plugin writes {FORMAT})",
                ciphertext[0]
            )));
        }
        Ok(record)
    }

    /// The fresh Status answer, if there is one (no I/O).
    pub fn cached_status(&self) -> Option<Result<String, KmsError>> {
        match lock(&self.status).as_ref() {
            Some((at, r)) if at.elapsed() < self.config.status_cache => {
                Some(r.clone().map_err(KmsError::Unavailable))
            }
            _ => None,
        }
    }

    /// [`Kms::encrypt`] for async callers. With the KEK in the HSM the token
    /// operation runs right here through the sealer's inline session when it
    /// is free (microseconds; a hung token holds this call and its thread, see
    /// `InlineKeys`), else it is queued on the sealer's thread and awaited
    /// with the seal timeout. A sealed KEK unsealed within `kek_cache` is used
    /// right here too (a software AES-GCM). The IV comes from the pool inline:
    /// the DRBG answers in microseconds unless a reseed waits for a seed
    /// block. Everything else (first making a KEK, unsealing one) goes to the
    /// blocking pool.
    /// `permit` is held until the work ends (on the sealer thread, or the
    /// blocking pool), even if the caller stops waiting.
    pub async fn encrypt_async<P: Send + 'static>(
        self: Arc<Self>,
        plaintext: Zeroizing<Vec<u8>>,
        permit: P,
    ) -> Result<Encrypted, KmsError> {
        let write = lock(&self.file).write_kek().cloned();
        let Some((record, held)) = write.and_then(|r| self.held(&r).map(|h| (r, h))) else {
            return run_blocking(permit, move || self.encrypt(&plaintext)).await;
        };
        check_plaintext(&plaintext)?;
        let mut iv = [0u8; IV_LEN];
        self.pool.fill(&mut iv)?;
        let a = aad(&record.key_id);
        let body = match held {
            HeldKek::Memory(key) => gcm_seal(&key, &iv, &a, &plaintext)?,
            // The token's AES-GCM on this thread when its inline session is
            // free (a few microseconds), else queued on the sealer's thread.
            HeldKek::Token(label) => {
                match self.sealer.inline().and_then(|k| k.try_encrypt(&label, &iv, &a, &plaintext))
                {
                    Some(body) => {
                        self.inline_ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        body
                    }
                    None => {
                        self.queued_ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.on_sealer(permit, move |s| s.key_encrypt(&label, &iv, &a, &plaintext))
                            .await?
                    }
                }
            }
        };
        self.note_use(&record.key_id);
        Ok(Encrypted {
            ciphertext: assemble(&iv, &body),
            key_id: record.key_id,
            annotations: annotations(),
        })
    }

    /// [`Kms::decrypt`] for async callers, as [`Kms::encrypt_async`].
    pub async fn decrypt_async<P: Send + 'static>(
        self: Arc<Self>,
        key_id: String,
        ciphertext: Vec<u8>,
        annotations: BTreeMap<String, Vec<u8>>,
        permit: P,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let record = self.check_decrypt(&key_id, &ciphertext, &annotations)?;
        let Some(held) = self.held(&record) else {
            // Checked already: straight to unsealing the KEK.
            return run_blocking(permit, move || {
                let plaintext = self.open_under(&record, &ciphertext, false)?;
                self.note_use(&record.key_id);
                Ok(plaintext)
            })
            .await;
        };
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&ciphertext[1..=IV_LEN]);
        let a = aad(&record.key_id);
        let body = &ciphertext[1 + IV_LEN..];
        let plaintext = match held {
            HeldKek::Memory(key) => {
                gcm_open(&key, &iv, &a, body).ok_or_else(|| not_authentic(&record.key_id))?
            }
            HeldKek::Token(label) => {
                match self.sealer.inline().and_then(|k| k.try_decrypt(&label, &iv, &a, body)) {
                    Some(secret) => {
                        self.inline_ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        secret.0
                    }
                    None => {
                        self.queued_ops.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let body = body.to_vec();
                        let r = self
                            .on_sealer(permit, move |s| s.key_decrypt(&label, &iv, &a, &body))
                            .await;
                        match r {
                            Ok(secret) => secret.0,
                            Err(SealError::Integrity) => return Err(not_authentic(&record.key_id)),
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
        };
        self.note_use(&record.key_id);
        Ok(plaintext)
    }

    /// How a call can reach `record`'s KEK without blocking, if it can: in
    /// the token, or in memory (a sealed KEK unsealed within `kek_cache`).
    fn held(&self, record: &KekRecord) -> Option<HeldKek> {
        match &record.kek {
            KekLocation::Token { label, .. } => Some(HeldKek::Token(label.clone())),
            KekLocation::Sealed { .. } => self.cached_kek(&record.key_id).map(HeldKek::Memory),
        }
    }

    /// Queue `op` on the sealer's thread and await it, at most its timeout.
    /// `permit` is released when `op` has run, not when this returns.
    async fn on_sealer<T: Send + 'static, P: Send + 'static>(
        &self,
        permit: P,
        op: impl FnOnce(&mut dyn qkeyd_drivers::seal::Sealer) -> Result<T, SealError> + Send + 'static,
    ) -> Result<T, SealError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.sealer.submit(op, move |r| {
            drop(permit);
            let _ = tx.send(r);
        });
        let timeout = self.sealer.timeout();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(SealError::Backend("the sealer dropped the call".into())),
            Err(_) => Err(SealError::Timeout(timeout)),
        }
    }

    /// Make a new KEK the write key; returns its key id.
    pub fn rotate(&self) -> Result<String, KmsError> {
        let _c = lock(&self.change);
        self.make_write_kek()
    }

    /// Retire `key_id`: it no longer decrypts, and its HSM key is destroyed.
    /// Refused for the write key, and (unless `force`) for a KEK replaced or
    /// used within [`RETIRE_GRACE`]: kube-apiserver may still be writing
    /// under it, and data only it decrypts would be lost.
    pub fn retire(&self, key_id: &str, force: bool) -> Result<(), KmsError> {
        let _c = lock(&self.change);
        let mut next = lock(&self.file).clone();
        if next.write.as_deref() == Some(key_id) {
            return Err(KmsError::Conflict(format!(
                "{key_id} is the write key; rotate first, then retire it once every Secret \
                 has been rewritten under the new key"
            )));
        }
        let Some(pos) = next.keks.iter().position(|k| k.key_id == key_id) else {
            return Err(self.not_found(key_id));
        };
        if !force {
            let grace = RETIRE_GRACE.as_secs();
            let replaced_ago = next.keks[pos].replaced_unix.map(|t| now_unix().saturating_sub(t));
            if replaced_ago.is_none_or(|ago| ago < grace) {
                return Err(KmsError::Conflict(format!(
                    "{key_id} was the write key {}s ago: kube-apiserver may still write under \
                     it for a few minutes after a rotation; retire it after {grace}s, or force",
                    replaced_ago.unwrap_or(0)
                )));
            }
            if let Some(at) = lock(&self.used).get(key_id)
                && at.elapsed() < RETIRE_GRACE
            {
                return Err(KmsError::Conflict(format!(
                    "{key_id} decrypted or encrypted {}s ago: data under it is still being \
                     read; rewrite it under the new key first, or force",
                    at.elapsed().as_secs()
                )));
            }
        }
        let record = next.keks.remove(pos);
        next.retired.push(Retired { key_id: key_id.to_owned(), retired_unix: now_unix() });
        self.store.save(&next)?;
        *lock(&self.file) = next;
        lock(&self.unsealed).remove(key_id);
        let outcome = match &record.kek {
            KekLocation::Token { label, .. } => {
                let l = label.clone();
                self.sealer.call(move |s| s.key_destroy(&l))
            }
            KekLocation::Sealed { sealed } => {
                let s = sealed.clone();
                self.sealer.call(move |x| x.destroy(&s))
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(key_id, error = %e, "retired KEK, but its backend object could not be destroyed; remove it by hand");
        }
        tracing::info!(key_id, force, "KMS KEK retired");
        Ok(())
    }

    fn note_use(&self, key_id: &str) {
        lock(&self.used).insert(key_id.to_owned(), Instant::now());
    }

    /// Every KEK, for `GET /v1/kms`.
    pub fn info(&self) -> KmsInfo {
        let file = lock(&self.file);
        KmsInfo {
            write_key_id: file.write.clone(),
            backend: self.backend(),
            keks: file
                .keks
                .iter()
                .map(|k| KekInfo {
                    key_id: k.key_id.clone(),
                    created_unix: k.created_unix,
                    state: if file.write.as_deref() == Some(&k.key_id) {
                        "write"
                    } else {
                        "decrypt-only"
                    },
                    location: match k.kek {
                        KekLocation::Token { .. } => "token",
                        KekLocation::Sealed { .. } => "sealed",
                    },
                })
                .collect(),
            retired: file.retired.clone(),
            token_ops: TokenOps {
                inline: self.inline_ops.load(std::sync::atomic::Ordering::Relaxed),
                queued: self.queued_ops.load(std::sync::atomic::Ordering::Relaxed),
                inline_on_copy: self.sealer.inline().map_or(0, |k| k.copy_ops()),
            },
            status_checks: self.status_checks.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn not_found(&self, key_id: &str) -> KmsError {
        let file = lock(&self.file);
        match file.retired.iter().find(|r| r.key_id == key_id) {
            Some(r) => KmsError::NotFound(format!(
                "key_id {key_id} was retired (at Unix time {}); data under it can no longer be decrypted",
                r.retired_unix
            )),
            None => {
                KmsError::NotFound(format!("unknown key_id {key_id:?}: not a KEK of this plugin"))
            }
        }
    }

    fn record(&self, key_id: &str) -> Result<KekRecord, KmsError> {
        let found = lock(&self.file).get(key_id).cloned();
        found.ok_or_else(|| self.not_found(key_id))
    }

    /// Caller holds `change`.
    fn make_write_kek(&self) -> Result<String, KmsError> {
        let mut id = [0u8; 16];
        self.pool.fill(&mut id)?;
        let digest = Sha3_256::new_with_prefix(b"qkeyd kms kek id\0").chain_update(id).finalize();
        let key_id = format!("{KEY_ID_PREFIX}{}", hex::encode(&digest[..16]));
        {
            let file = lock(&self.file);
            if file.get(&key_id).is_some() || file.retired.iter().any(|r| r.key_id == key_id) {
                return Err(KmsError::Internal("key id collision".into()));
            }
        }
        // A long-term key: prediction resistance (a fresh seed block first).
        let mut value = Zeroizing::new(vec![0u8; 32]);
        self.pool.fill_fresh(&mut value)?;
        let kek = if self.holds_keys {
            let l = label(&key_id);
            let name = l.clone();
            self.sealer.call(move |s| s.key_create(&name, &value))?;
            KekLocation::Token { backend: self.sealer.kind().to_owned(), label: l }
        } else {
            let (name, a) = (label(&key_id), kek_aad(&key_id));
            let sealed = self.sealer.call(move |s| s.seal(&name, &a, &value))?;
            KekLocation::Sealed { sealed }
        };
        let now = now_unix();
        let record =
            KekRecord { key_id: key_id.clone(), created_unix: now, replaced_unix: None, kek };
        let mut next = lock(&self.file).clone();
        let old = next.write.clone();
        if let Some(prev) = next.keks.iter_mut().find(|k| Some(&k.key_id) == old.as_ref()) {
            prev.replaced_unix = Some(now);
        }
        next.keks.push(record.clone());
        next.write = Some(key_id.clone());
        if let Err(e) = self.store.save(&next) {
            // Not acknowledged: take the new HSM key back out.
            if let KekLocation::Token { label, .. } = record.kek {
                let _ = self.sealer.call(move |s| s.key_destroy(&label));
            }
            return Err(e.into());
        }
        *lock(&self.file) = next;
        *lock(&self.status) = None;
        tracing::info!(key_id, backend = self.backend(), "new KMS KEK is the write key");
        Ok(key_id)
    }

    /// A sealed KEK's value if it was unsealed within `kek_cache` (no I/O).
    fn cached_kek(&self, key_id: &str) -> Option<Zeroizing<[u8; 32]>> {
        let cache = lock(&self.unsealed);
        let c = cache.get(key_id)?;
        (c.at.elapsed() < self.config.kek_cache).then(|| c.key.clone())
    }

    /// The unsealed value of a sealed KEK, from memory if unsealed within
    /// `kek_cache` (and `fresh` is false).
    fn unseal_kek(&self, record: &KekRecord, fresh: bool) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        let KekLocation::Sealed { sealed } = &record.kek else {
            return Err(KmsError::Internal("not a sealed KEK".into()));
        };
        // Nothing stays past its time, used or not.
        lock(&self.unsealed).retain(|_, c| c.at.elapsed() < self.config.kek_cache);
        if !fresh && let Some(key) = self.cached_kek(&record.key_id) {
            return Ok(key);
        }
        let (s, a) = (sealed.clone(), kek_aad(&record.key_id));
        let result = self.sealer.call(move |x| x.unseal(&s, &a));
        let secret = match result {
            Ok(s) => s,
            Err(e) => {
                lock(&self.unsealed).remove(&record.key_id);
                return Err(e.into());
            }
        };
        let mut key = Zeroizing::new([0u8; 32]);
        if secret.0.len() != 32 {
            return Err(KmsError::Internal(format!("KEK {} is not 32 bytes", record.key_id)));
        }
        key.copy_from_slice(&secret.0);
        // Not for a KEK retired while it was being unsealed.
        if !self.config.kek_cache.is_zero() && lock(&self.file).get(&record.key_id).is_some() {
            lock(&self.unsealed)
                .insert(record.key_id.clone(), Cached { at: Instant::now(), key: key.clone() });
        }
        Ok(key)
    }

    fn seal_under(&self, record: &KekRecord, pt: &[u8], fresh: bool) -> Result<Vec<u8>, KmsError> {
        let mut iv = [0u8; IV_LEN];
        self.pool.fill(&mut iv)?;
        let a = aad(&record.key_id);
        let body = match &record.kek {
            KekLocation::Token { label, .. } => {
                let (l, p) = (label.clone(), Zeroizing::new(pt.to_vec()));
                self.sealer.call(move |s| s.key_encrypt(&l, &iv, &a, &p))?
            }
            KekLocation::Sealed { .. } => gcm_seal(&*self.unseal_kek(record, fresh)?, &iv, &a, pt)?,
        };
        Ok(assemble(&iv, &body))
    }

    fn open_under(
        &self,
        record: &KekRecord,
        ct: &[u8],
        fresh: bool,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&ct[1..=IV_LEN]);
        let body = &ct[1 + IV_LEN..];
        let a = aad(&record.key_id);
        let bad = || not_authentic(&record.key_id);
        match &record.kek {
            KekLocation::Token { label, .. } => {
                let (l, b) = (label.clone(), body.to_vec());
                match self.sealer.call(move |s| s.key_decrypt(&l, &iv, &a, &b)) {
                    Ok(secret) => Ok(secret.0),
                    Err(SealError::Integrity) => Err(bad()),
                    Err(e) => Err(e.into()),
                }
            }
            KekLocation::Sealed { .. } => {
                gcm_open(&*self.unseal_kek(record, fresh)?, &iv, &a, body).ok_or_else(bad)
            }
        }
    }
}
