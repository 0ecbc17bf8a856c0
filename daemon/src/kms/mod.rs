//! The Kubernetes KMS v2 plugin: kube-apiserver's envelope encryption of etcd
//! data (Secrets) under key-encryption keys (KEKs) made from health-tested
//! entropy and kept by the configured sealer.
//!
//! kube-apiserver sends a 32-byte DEK seed to Encrypt; the plugin returns it
//! encrypted under the current KEK (AES-256-GCM, a fresh 96-bit IV from the
//! pool, the key id and format bound as associated data, see [`mod@format`]), the
//! key id, and one annotation naming the ciphertext format. Decrypt takes that
//! back.
//!
//! Where a KEK lives depends on the sealer (see [`kek`]):
//! - `hsm`: a sensitive, non-extractable AES-256 key inside the token,
//!   created from pool bytes; the token does the AES-GCM.
//! - `tpm` and `soft`: the KEK's value sealed by that sealer; it is unsealed
//!   into zeroizing memory and kept there for `kms.kek_cache_ms` at most, so a
//!   TPM that goes away stops Encrypt and Decrypt within that time.
//!
//! Every call is async and takes one path whatever the KEK: check the
//! request, get a [`kek::KekHandle`] (without blocking when the KEK is at
//! hand, else on the blocking pool), then run the AES-GCM with it. Status is
//! a real round trip through the backend, one at a time ([`status`]).
//! Rotation makes a new KEK the write key; older ones keep decrypting until
//! retired ([`lifecycle`]). [`grpc`] is the only part that knows protobuf.

mod audit;
pub(crate) mod cluster;
mod error;
mod format;
pub(crate) mod grpc;
mod kek;
mod lifecycle;
mod status;
mod store;

use std::{
    collections::{BTreeMap, HashMap},
    path::Path,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use qkeyd_drivers::seal::worker::SealerWorker;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

pub(crate) use error::{Kind, KmsError};
use format::{IV_LEN, aad, annotations, assemble, check_ciphertext, check_key_id, check_plaintext};
use kek::{Cached, Route};
pub(crate) use status::CheckOutcome;
use status::StatusCache;
pub(crate) use store::Retired;
use store::{KekFile, KekLocation, KekRecord, Store};

use crate::{config::KmsSettings, pool::Pool};

/// Encrypt's answer.
#[derive(Debug)]
pub(crate) struct Encrypted {
    /// The ciphertext.
    pub(crate) ciphertext: Vec<u8>,
    /// The KEK's key id.
    pub(crate) key_id: String,
    /// Annotations to store beside it.
    pub(crate) annotations: BTreeMap<String, Vec<u8>>,
}

/// One KEK, as the plugin's state shows it.
#[derive(Clone, Debug)]
pub(crate) struct KekInfo {
    /// Key id.
    pub(crate) key_id: String,
    /// Creation time, Unix seconds.
    pub(crate) created_unix: u64,
    /// Whether new Encrypt calls use it.
    pub(crate) write: bool,
    /// Inside the HSM (true) or sealed by the TPM or soft sealer.
    pub(crate) in_token: bool,
}

/// The plugin's state: its KEKs and counters.
#[derive(Clone, Debug)]
pub(crate) struct KmsInfo {
    /// The write key id.
    pub(crate) write_key_id: Option<String>,
    /// The sealer holding the KEKs.
    pub(crate) backend: &'static str,
    /// Every KEK that decrypts.
    pub(crate) keks: Vec<KekInfo>,
    /// Retired key ids.
    pub(crate) retired: Vec<Retired>,
    /// Token KEK operations run on the caller's thread (the inline session).
    pub(crate) inline_ops: u64,
    /// Token KEK operations queued on the sealer's thread.
    pub(crate) queued_ops: u64,
    /// Of the inline ones, those on a session copy of the KEK.
    pub(crate) inline_on_copy: u64,
    /// Status's real checks of the backend since start.
    pub(crate) status_checks: u64,
    /// How the last of them went.
    pub(crate) last_check: Option<CheckOutcome>,
}

/// The plugin.
pub(crate) struct Kms {
    store: Store,
    audit: audit::KekAudit,
    file: Mutex<KekFile>,
    sealer: SealerWorker,
    holds_keys: bool,
    pool: Arc<Pool>,
    /// How long an unsealed KEK (tpm, soft) is kept in memory.
    kek_cache: Duration,
    /// Whether token KEK operations may use the sealer's inline session.
    inline: bool,
    /// Calls in progress (on the blocking pool or queued at the sealer).
    permits: Arc<Semaphore>,
    status: StatusCache,
    unsealed: Mutex<HashMap<String, Cached>>,
    /// When each KEK last encrypted or decrypted (since start).
    used: Mutex<HashMap<String, Instant>>,
    /// Serialises rotate and retire.
    change: Mutex<()>,
    /// KEKs are shared through etcd ([`cluster`]): they are made and
    /// rotated there, never on this node alone.
    clustered: bool,
    inline_ops: AtomicU64,
    queued_ops: AtomicU64,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms").field("store", &self.store).field("sealer", &self.sealer).finish()
    }
}

/// A place among the calls in progress, shared by the steps of one call: it
/// is released when the last step ends, even if the caller stopped waiting.
type Permit = Arc<OwnedSemaphorePermit>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why `file` has no KEK `key_id`: retired, or never one of ours.
fn missing(file: &KekFile, key_id: &str) -> KmsError {
    match file.retired.iter().find(|r| r.key_id == key_id) {
        Some(r) => KmsError::Retired { key_id: key_id.to_owned(), at: r.retired_unix },
        None => KmsError::UnknownKey(key_id.to_owned()),
    }
}

/// `op` on the blocking pool, holding `permit` until it ends.
async fn run_blocking<T: Send + 'static>(
    permit: &Permit,
    op: impl FnOnce() -> Result<T, KmsError> + Send + 'static,
) -> Result<T, KmsError> {
    let permit = permit.clone();
    tokio::task::spawn_blocking(move || {
        let r = op();
        drop(permit);
        r
    })
    .await
    .map_err(|_| KmsError::TaskLost)?
}

impl Kms {
    /// Open the KEK file in `state_dir` (KEKs are made on first use).
    /// `sealer` holds the KEKs; its `holds_keys` is asked once, here. At most
    /// `concurrency` calls are in progress at once; the rest wait.
    pub(crate) fn open(
        state_dir: &Path,
        sealer: SealerWorker,
        pool: Arc<Pool>,
        settings: &KmsSettings,
        concurrency: usize,
    ) -> Result<Self, KmsError> {
        let (store, file) = Store::open(state_dir)?;
        let holds_keys = sealer.call(|s| Ok(s.holds_keys()))?;
        let audit = audit::KekAudit::new(state_dir);
        let added = audit.reconcile(&file, sealer.kind()).map_err(KmsError::AuditLog)?;
        if added > 0 {
            tracing::warn!(added, "KEKs without audit lines: added them, marked recovered");
        }
        Ok(Self {
            store,
            audit,
            file: Mutex::new(file),
            sealer,
            holds_keys,
            pool,
            kek_cache: settings.kek_cache,
            inline: settings.inline_token_session,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            status: StatusCache::new(settings.status_cache),
            unsealed: Mutex::new(HashMap::new()),
            used: Mutex::new(HashMap::new()),
            change: Mutex::new(()),
            clustered: settings.cluster.is_some(),
            inline_ops: AtomicU64::new(0),
            queued_ops: AtomicU64::new(0),
        })
    }

    /// The sealer's name.
    pub(crate) fn backend(&self) -> &'static str {
        self.sealer.kind()
    }

    /// A place among the calls in progress.
    async fn permit(&self) -> Result<Permit, KmsError> {
        let permit = self.permits.clone().acquire_owned().await;
        permit.map(Arc::new).map_err(|_| KmsError::ShuttingDown)
    }

    /// Encrypt `plaintext` (a DEK seed) under the write KEK.
    pub(crate) async fn encrypt(
        self: &Arc<Self>,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Encrypted, KmsError> {
        check_plaintext(&plaintext)?;
        let permit = self.permit().await?;
        let record = self.write_record(&permit).await?;
        let kek = self.kek(&record, Route::Fast, &permit).await?;
        let mut iv = [0u8; IV_LEN];
        self.pool.fill(&mut iv)?;
        let a = aad(&record.key_id);
        let body = self.seal_with(&kek, Route::Fast, &iv, a, plaintext, &permit).await?;
        self.note_use(&record.key_id);
        Ok(Encrypted {
            ciphertext: assemble(&iv, &body),
            key_id: record.key_id,
            annotations: annotations(),
        })
    }

    /// Decrypt a ciphertext Encrypt made. Everything in the request is
    /// checked before a KEK is touched; a ciphertext that does not
    /// authenticate is an error, never other bytes.
    pub(crate) async fn decrypt(
        self: &Arc<Self>,
        key_id: &str,
        ciphertext: &[u8],
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        check_key_id(key_id)?;
        let record = self.record(key_id)?;
        let parsed = check_ciphertext(ciphertext, annotations)?;
        let permit = self.permit().await?;
        let kek = self.kek(&record, Route::Fast, &permit).await?;
        let a = aad(&record.key_id);
        let plaintext = self
            .open_with(&kek, Route::Fast, &parsed.iv, a, parsed.body, &record.key_id, &permit)
            .await?;
        self.note_use(&record.key_id);
        Ok(plaintext)
    }

    fn note_use(&self, key_id: &str) {
        lock(&self.used).insert(key_id.to_owned(), Instant::now());
    }

    /// The record of `key_id`, or why there is none.
    fn record(&self, key_id: &str) -> Result<KekRecord, KmsError> {
        let file = lock(&self.file);
        file.get(key_id).cloned().ok_or_else(|| missing(&file, key_id))
    }

    /// The write KEK's record, making the first KEK (on the blocking pool)
    /// if there is none.
    async fn write_record(self: &Arc<Self>, permit: &Permit) -> Result<KekRecord, KmsError> {
        if let Some(r) = lock(&self.file).write_kek() {
            return Ok(r.clone());
        }
        let me = self.clone();
        run_blocking(permit, move || {
            let key_id = me.ensure_key()?;
            me.record(&key_id)
        })
        .await
    }

    /// Every KEK and the counters, for `GET /v1/kms`.
    pub(crate) fn info(&self) -> KmsInfo {
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
                    write: file.write.as_deref() == Some(&k.key_id),
                    in_token: matches!(k.kek, KekLocation::Token { .. }),
                })
                .collect(),
            retired: file.retired.clone(),
            inline_ops: self.inline_ops.load(Ordering::Relaxed),
            queued_ops: self.queued_ops.load(Ordering::Relaxed),
            inline_on_copy: self.sealer.inline().map_or(0, |k| k.copy_ops()),
            status_checks: self.status.checks(),
            last_check: self.status.outcome(),
        }
    }
}

#[cfg(test)]
mod tests;
