//! The key vault: post-quantum keys from health-tested entropy, sealed at rest.
//!
//! A key is an id with one or more versions; each version is an ML-KEM or
//! ML-DSA key pair whose seed is drawn from the pool with prediction resistance,
//! passes a pairwise-consistency test, is sealed by the configured backend and
//! stored by [`store::Store`]. Rotation adds a version (old ones keep verifying
//! and decapsulating); destruction removes every version and its backend
//! objects. Private operations unseal the seed, use it and drop it (zeroized).
//!
//! Every change and every use is in the audit log ([`audit`]) before it takes
//! effect: a change's line is fsynced before the rename that makes it visible,
//! a use's line is written before its result is returned, and an operation
//! whose line cannot be written is refused. [`Vault::open`] reconciles the log
//! with the disk after a crash.
//!
//! Decapsulating under the wrong version of an ML-KEM key does not fail: FIPS
//! 203's implicit rejection answers a secret that matches nothing. So once a
//! key has more than one version, decapsulate and derive need the version
//! encapsulate answered ([`DecapsulateError::VersionRequired`]).
//!
//! Every call is blocking (disk, HSM, TPM); async callers use `spawn_blocking`.

mod audit;
mod operations;
mod recover;
pub(crate) mod store;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use qkeyd_drivers::{Error as SealError, seal::worker::SealerWorker};
use zeroize::Zeroizing;

use crate::pool::{Pool, PoolError, Serving};

use audit::{Audit, Event, Op};
use qkeyd_pqc::Error as AlgError;
pub(crate) use qkeyd_pqc::{Algorithm, ExpandedKey, PrivateKey};
use store::{Store, StoreError, VersionRecord};

/// Longest label accepted.
pub(crate) const MAX_LABEL: usize = 128;
/// Longest output of `derive`.
pub(crate) const MAX_DERIVE: usize = 1024;

/// Why a vault operation failed. Messages carry ids and reasons, never secrets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VaultError {
    /// A label too long, or with control characters.
    #[error("label must be at most {MAX_LABEL} bytes without control characters")]
    Label,
    /// The key is reserved for the daemon's own use (the node identity key).
    #[error(
        "key {0} is the node identity key: only attestation signs with it, and it is neither rotated nor destroyed while [attest] is on"
    )]
    Reserved(String),
    /// A `derive` length outside 1..=[`MAX_DERIVE`].
    #[error("length must be 1..={MAX_DERIVE}, got {0}")]
    DeriveLength(usize),
    /// The key or version does not exist.
    #[error("no such key: {id}{}", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    NoSuchKey {
        /// The key id.
        id: String,
        /// The version, if one was named.
        version: Option<u32>,
    },
    /// A cryptographic input was wrong (length, kind of key).
    #[error(transparent)]
    Alg(#[from] AlgError),
    /// The sealing backend failed.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A stored key failed its checks.
    #[error(transparent)]
    Store(StoreError),
    /// The audit log cannot be opened, read or written: nothing was done.
    #[error("cannot use the audit log, so the operation was not done")]
    AuditLog(#[source] std::io::Error),
    /// No health-tested entropy to make a key from.
    #[error("no health-tested entropy")]
    Entropy(#[from] PoolError),
}

/// Why a decapsulation or derivation was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecapsulateError {
    /// No version given, and the key has several: guessing one would answer a
    /// wrong secret without an error (ML-KEM's implicit rejection).
    #[error(
        "key {id} has versions {}: pass \"version\", the version encapsulate answered (a ciphertext decapsulated under another version gives a wrong secret, not an error)",
        list(versions)
    )]
    VersionRequired {
        /// The key id.
        id: String,
        /// Its versions.
        versions: Vec<u32>,
    },
    /// Anything else.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

impl From<StoreError> for DecapsulateError {
    fn from(e: StoreError) -> Self {
        Self::Vault(e.into())
    }
}

impl From<AlgError> for DecapsulateError {
    fn from(e: AlgError) -> Self {
        Self::Vault(e.into())
    }
}

fn list(versions: &[u32]) -> String {
    versions.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

impl From<StoreError> for VaultError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { id, version } => Self::NoSuchKey { id, version },
            other => Self::Store(other),
        }
    }
}

/// One version: public parts and provenance.
#[derive(Clone, Debug)]
pub(crate) struct VersionInfo {
    /// Version number.
    pub(crate) version: u32,
    /// Encoded public key.
    pub(crate) public_key: Vec<u8>,
    /// SHA3-256 fingerprint of the public key.
    pub(crate) fingerprint: String,
    /// Creation time, Unix seconds.
    pub(crate) created_unix: u64,
    /// Where the seed's entropy came from.
    pub(crate) entropy: String,
    /// Sealing backend.
    pub(crate) sealer: String,
}

/// A key and its versions: public parts only.
#[derive(Clone, Debug)]
pub(crate) struct KeyInfo {
    /// Key id.
    pub(crate) id: String,
    /// Algorithm.
    pub(crate) alg: Algorithm,
    /// Label.
    pub(crate) label: String,
    /// The version used for new signatures / encapsulations.
    pub(crate) current_version: u32,
    /// Every version, oldest first.
    pub(crate) versions: Vec<VersionInfo>,
}

/// A key's current version, public parts only, for callers that want no
/// history (the PKCS#11 module's object list).
#[derive(Clone, Debug)]
pub(crate) struct CurrentKey {
    /// Key id.
    pub(crate) id: String,
    /// The current version.
    pub(crate) version: u32,
    /// Algorithm.
    pub(crate) alg: Algorithm,
    /// Label.
    pub(crate) label: String,
    /// Encoded public key.
    pub(crate) public_key: Vec<u8>,
}

/// Result of an encapsulation.
pub(crate) struct Encapsulated {
    /// Key version used.
    pub(crate) version: u32,
    /// The ciphertext.
    pub(crate) ciphertext: Vec<u8>,
    /// The shared secret (for the caller, who is the sender).
    pub(crate) shared_secret: Zeroizing<[u8; 32]>,
}

/// A version unsealed and expanded for repeated private operations (a PKCS#11
/// connection keeps one for a short while). Every use still goes through the
/// vault, which checks the key still exists and audits it.
#[derive(Debug)]
pub(crate) struct OpenKey {
    /// Key id.
    pub(crate) id: String,
    /// Version.
    pub(crate) version: u32,
    /// Algorithm.
    pub(crate) alg: Algorithm,
    fingerprint: String,
    key: ExpandedKey,
    /// The vault's destruction count when this was opened.
    generation: u64,
}

/// The vault.
pub(crate) struct Vault {
    store: Store,
    sealer: SealerWorker,
    pool: Arc<Pool>,
    audit: Audit,
    /// Serialises changes (create, rotate, destroy).
    write: Mutex<()>,
    /// Bumped by every destruction: an [`OpenKey`] opened since needs no check.
    destroyed: std::sync::atomic::AtomicU64,
    /// Keys only their owner inside the daemon may sign with, rotate or
    /// destroy (the node identity key): every other caller gets `Reserved`.
    reserved: std::sync::RwLock<Vec<String>>,
    /// [`Vault::census`]'s last answer, dropped by every change.
    census: Mutex<Option<Vec<(String, String)>>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("store", &self.store).field("sealer", &self.sealer).finish()
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Vault {
    /// Open the vault in `state_dir` with `sealer`, and put right what a
    /// crash left: destructions are finished, and the audit log gets the
    /// lines it lacks (see [`recover`]).
    pub(crate) fn open(
        state_dir: &Path,
        sealer: SealerWorker,
        pool: Arc<Pool>,
    ) -> Result<Self, VaultError> {
        let (store, left) = Store::open(state_dir)?;
        let (audit, history) =
            Audit::open(&state_dir.join("audit.log")).map_err(VaultError::AuditLog)?;
        let v = Self {
            store,
            sealer,
            pool,
            audit,
            write: Mutex::new(()),
            census: Mutex::new(None),
            destroyed: Default::default(),
            reserved: Default::default(),
        };
        v.recover(history, left)?;
        Ok(v)
    }

    /// The sealing backend's name.
    pub(crate) fn sealer_kind(&self) -> &'static str {
        self.sealer.kind()
    }

    /// The write lock, held by every change; the census is dropped under it.
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        let w = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *self.census.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        w
    }

    fn random<const N: usize>(&self) -> Result<Zeroizing<[u8; N]>, VaultError> {
        let mut b = Zeroizing::new([0u8; N]);
        self.pool.fill(&mut b[..])?;
        Ok(b)
    }

    /// Generate, test and seal a key version; returns its record (not yet stored).
    fn new_version(
        &self,
        id: &str,
        version: u32,
        alg: Algorithm,
        label: &str,
    ) -> Result<VersionRecord, VaultError> {
        let mut seed = Zeroizing::new(vec![0u8; alg.seed_len()]);
        let provenance = self.pool.fill_fresh_traced(&mut seed, None)?;
        let entropy = match provenance.serving {
            Serving::Sources => "sources",
            Serving::OsFallback => "os-fallback",
        };
        let key = PrivateKey::from_seed(alg, &seed)?;
        qkeyd_pqc::pairwise_consistency(&key, &*self.random::<32>()?)?;
        let pk = key.public_key();
        let fp = store::fingerprint(alg, &pk);
        let aad = store::aad(id, version, alg, &fp);
        let name = format!("qkeyd/{id}/v{version}");
        let sealed = self.sealer.call(move |s| s.seal(&name, &aad, &seed))?;
        let mut record =
            VersionRecord::new(id, version, alg, label, now_unix(), &pk, entropy, sealed);
        record.provenance = Some(provenance);
        Ok(record)
    }

    /// Create a key.
    pub(crate) fn create(&self, alg: Algorithm, label: &str) -> Result<KeyInfo, VaultError> {
        check_label(label)?;
        let _w = self.lock();
        let id = hex::encode(*self.random::<16>()?);
        self.add_version(&id, 1, alg, label)?;
        self.info(&id)
    }

    /// Reserve `id` for its owner inside the daemon: sign, open, rotate and
    /// destroy refuse it from then on; [`Vault::open_reserved`] opens it.
    pub(crate) fn reserve(&self, id: &str) {
        self.reserved
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(id.to_owned());
    }

    /// `Reserved` if `id` is reserved.
    pub(super) fn not_reserved(&self, id: &str) -> Result<(), VaultError> {
        if self
            .reserved
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|r| r == id)
        {
            return Err(VaultError::Reserved(id.to_owned()));
        }
        Ok(())
    }

    /// Add a version; the new one becomes current.
    pub(crate) fn rotate(&self, id: &str) -> Result<KeyInfo, VaultError> {
        self.not_reserved(id)?;
        let _w = self.lock();
        let versions = self.store.versions(id)?;
        let last = *versions
            .last()
            .ok_or_else(|| VaultError::NoSuchKey { id: id.to_owned(), version: None })?;
        let cur = self.store.read(id, last)?;
        self.add_version(id, last + 1, cur.alg, &cur.label)?;
        self.info(id)
    }

    /// Make, stage, audit and then publish a version; the caller holds the
    /// write lock. The audit line is fsynced before the rename that makes the
    /// version usable, so no usable version lacks its line; a version that
    /// does not land leaves an `error` or `aborted` line and no backend object.
    fn add_version(
        &self,
        id: &str,
        version: u32,
        alg: Algorithm,
        label: &str,
    ) -> Result<(), VaultError> {
        let ev = |fingerprint| Event {
            op: Op::adding(version),
            id,
            version: Some(version),
            alg: Some(alg),
            fingerprint,
        };
        let r = self
            .new_version(id, version, alg, label)
            .inspect_err(|e| self.audit.not_made(&[ev("")], &format!("error: {e}")))?;
        let staged = match self.store.stage(&r) {
            Ok(s) => s,
            Err(e) => {
                let e = VaultError::from(e);
                self.audit.not_made(&[ev(&r.fingerprint)], &format!("error: {e}"));
                self.destroy_object_quietly(&r);
                return Err(e);
            }
        };
        if let Err(e) = self.audit.lifecycle(&[(ev(&r.fingerprint), "ok")], false) {
            self.store.discard(staged);
            self.destroy_object_quietly(&r);
            return Err(e);
        }
        if let Err(e) = self.store.commit(staged) {
            if self.store.versions(id).is_ok_and(|v| v.contains(&version)) {
                // Visible after all (and audited): it stays, unacknowledged.
                return Err(e.into());
            }
            self.audit.not_made(&[ev(&r.fingerprint)], &format!("aborted: {e}"));
            self.destroy_object_quietly(&r);
            return Err(e.into());
        }
        Ok(())
    }

    /// Destroy a key: every version's file and backend object. The destroy
    /// lines are fsynced before the key is moved out of sight.
    pub(crate) fn destroy(&self, id: &str) -> Result<(), VaultError> {
        self.not_reserved(id)?;
        let _w = self.lock();
        let (records, unreadable) = self.store.records(id)?;
        let events: Vec<_> = records
            .iter()
            .map(|r| Event {
                op: Op::Destroy,
                id,
                version: Some(r.version),
                alg: Some(r.alg),
                fingerprint: &r.fingerprint,
            })
            .chain(unreadable.iter().map(|&v| Event {
                op: Op::Destroy,
                id,
                version: Some(v),
                alg: None,
                fingerprint: "",
            }))
            .collect();
        if events.is_empty() {
            return Err(VaultError::NoSuchKey { id: id.to_owned(), version: None });
        }
        let lines: Vec<_> = events.iter().map(|e| (e.clone(), "ok")).collect();
        self.audit.lifecycle(&lines, false)?;
        let moved = match self.store.begin_destroy(id) {
            Ok(m) => m,
            Err(e) => {
                self.audit.not_made(&events, &format!("aborted: {e}"));
                return Err(e.into());
            }
        };
        // After the rename: a key opened from here on sees the key gone, and
        // one opened before sees the count change and asks the disk.
        self.destroyed.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        for r in &moved {
            self.destroy_object(r)?;
        }
        self.store.purge_destroyed()?;
        Ok(())
    }

    fn destroy_object(&self, r: &VersionRecord) -> Result<(), VaultError> {
        let sealed = r.sealed.clone();
        self.sealer.call(move |s| s.destroy(&sealed))?;
        Ok(())
    }

    fn destroy_object_quietly(&self, r: &VersionRecord) {
        if let Err(e) = self.destroy_object(r) {
            tracing::warn!(key = %r.id, version = r.version, error = %e, "could not remove the backend object of an unsaved key version");
        }
    }

    /// Every key, public parts only.
    pub(crate) fn list(&self) -> Result<Vec<KeyInfo>, VaultError> {
        self.each_key(|id| self.info(id))
    }

    /// Every key's (algorithm, sealer of its current version), for the
    /// metrics and the status page. Read from the store once and again only
    /// after a change, so scrapes and polls read no key file.
    pub(crate) fn census(&self) -> Result<Vec<(String, String)>, VaultError> {
        let cached = |v: &Mutex<Option<Vec<(String, String)>>>| {
            v.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
        };
        if let Some(c) = cached(&self.census) {
            return Ok(c);
        }
        // Counted under the write lock, so no change lands between the count
        // and keeping it.
        let _w = self.lock();
        let keys = self.each_key(|id| {
            self.record(id, None).map(|r| (r.alg.to_string(), r.sealed.backend.clone()))
        })?;
        *self.census.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(keys.clone());
        Ok(keys)
    }

    /// Every key's current version: one file read per key.
    pub(crate) fn current(&self) -> Result<Vec<CurrentKey>, VaultError> {
        self.each_key(|id| self.current_key(id))
    }

    /// `read` of every key id in the store; a key destroyed meanwhile is
    /// simply gone.
    fn each_key<T>(
        &self,
        read: impl Fn(&str) -> Result<T, VaultError>,
    ) -> Result<Vec<T>, VaultError> {
        let mut out = Vec::new();
        for id in self.store.ids()? {
            match read(&id) {
                Ok(k) => out.push(k),
                Err(VaultError::NoSuchKey { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One key's current version.
    pub(crate) fn current_key(&self, id: &str) -> Result<CurrentKey, VaultError> {
        let r = self.record(id, None)?;
        Ok(CurrentKey {
            public_key: r.public_key_bytes()?,
            id: r.id,
            version: r.version,
            alg: r.alg,
            label: r.label,
        })
    }

    /// One key, public parts only.
    /// The stored record of a version (the current one if `version` is
    /// `None`): public parts and the sealed seed.
    pub(crate) fn version_record(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<VersionRecord, VaultError> {
        self.record(id, version)
    }

    pub(crate) fn info(&self, id: &str) -> Result<KeyInfo, VaultError> {
        let versions = self.store.versions(id)?;
        let mut infos = Vec::with_capacity(versions.len());
        let mut head = None;
        for v in versions {
            let r = self.store.read(id, v)?;
            infos.push(VersionInfo {
                version: r.version,
                public_key: r.public_key_bytes()?,
                fingerprint: r.fingerprint.clone(),
                created_unix: r.created_unix,
                entropy: r.entropy.clone(),
                sealer: r.sealed.backend.clone(),
            });
            head = Some(r);
        }
        let head =
            head.ok_or_else(|| VaultError::NoSuchKey { id: id.to_owned(), version: None })?;
        Ok(KeyInfo {
            id: id.to_owned(),
            alg: head.alg,
            label: head.label,
            current_version: head.version,
            versions: infos,
        })
    }
}

/// The audit event of a use of one version.
fn check_label(label: &str) -> Result<(), VaultError> {
    if label.len() > MAX_LABEL || label.chars().any(char::is_control) {
        return Err(VaultError::Label);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
