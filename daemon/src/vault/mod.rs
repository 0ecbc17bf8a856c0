//! The key vault: post-quantum keys from health-tested entropy, sealed at rest.
//!
//! A key is an id with one or more versions; each version is an ML-KEM or
//! ML-DSA key pair whose seed is drawn from the pool with prediction resistance,
//! passes a pairwise-consistency test, is sealed by the configured backend and
//! stored by [`store::Store`]. Rotation adds a version (old ones keep verifying
//! and decapsulating); destruction removes every version and its backend
//! objects. Private operations unseal the seed, use it and drop it (zeroized).
//!
//! Every call is blocking (disk, HSM, TPM); async callers use `spawn_blocking`.

mod audit;
pub(crate) mod store;

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use hkdf::SimpleHkdf;
use qkeyd_drivers::{Error as SealError, seal::worker::SealerWorker};
use sha3::Sha3_256;
use zeroize::Zeroizing;

use crate::pool::{Pool, PoolError, Serving};

use audit::Audit;
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
    /// The audit log cannot be opened.
    #[error("cannot open the audit log")]
    AuditLog(#[source] std::io::Error),
    /// No health-tested entropy to make a key from.
    #[error("no health-tested entropy")]
    Entropy(#[from] PoolError),
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
    /// Open the vault in `state_dir` with `sealer`; finishes destructions a
    /// crash interrupted.
    pub(crate) fn open(
        state_dir: &Path,
        sealer: SealerWorker,
        pool: Arc<Pool>,
    ) -> Result<Self, VaultError> {
        let (store, pending) = Store::open(state_dir)?;
        let audit = Audit::open(&state_dir.join("audit.log")).map_err(VaultError::AuditLog)?;
        let v = Self {
            store,
            sealer,
            pool,
            audit,
            write: Mutex::new(()),
            destroyed: Default::default(),
        };
        if !pending.is_empty() {
            for r in &pending {
                v.destroy_object(r)?;
            }
            v.store.purge_destroyed()?;
            tracing::info!(versions = pending.len(), "finished an interrupted key destruction");
        }
        Ok(v)
    }

    /// The sealing backend's name.
    pub(crate) fn sealer_kind(&self) -> &'static str {
        self.sealer.kind()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let serving = self.pool.fill_fresh(&mut seed)?;
        let entropy = match serving {
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
        Ok(VersionRecord::new(id, version, alg, label, now_unix(), &pk, entropy, sealed))
    }

    /// Create a key.
    pub(crate) fn create(&self, alg: Algorithm, label: &str) -> Result<KeyInfo, VaultError> {
        check_label(label)?;
        let _w = self.lock();
        let id = hex::encode(*self.random::<16>()?);
        let r = self.new_version(&id, 1, alg, label).and_then(|r| self.store_version(r));
        self.audit.result("create", &id, 1, Some(alg), r, |r| r.fingerprint.clone())?;
        self.info(&id)
    }

    /// Add a version; the new one becomes current.
    pub(crate) fn rotate(&self, id: &str) -> Result<KeyInfo, VaultError> {
        let _w = self.lock();
        let versions = self.store.versions(id)?;
        let last = *versions
            .last()
            .ok_or_else(|| VaultError::NoSuchKey { id: id.to_owned(), version: None })?;
        let cur = self.store.read(id, last)?;
        let r =
            self.new_version(id, last + 1, cur.alg, &cur.label).and_then(|r| self.store_version(r));
        self.audit.result("rotate", id, last + 1, Some(cur.alg), r, |r| r.fingerprint.clone())?;
        self.info(id)
    }

    /// Write a new version to disk (durably); if that fails, remove its
    /// backend object so nothing is left half-made. Audited after this, so the
    /// log never says "ok" for a version that did not land.
    fn store_version(&self, r: VersionRecord) -> Result<VersionRecord, VaultError> {
        self.store.write(&r).inspect_err(|_| self.destroy_object_quietly(&r))?;
        Ok(r)
    }

    /// Destroy a key: every version's file and backend object.
    pub(crate) fn destroy(&self, id: &str) -> Result<(), VaultError> {
        let _w = self.lock();
        let records = self.store.begin_destroy(id)?;
        // After the rename: a key opened from here on sees the key gone, and
        // one opened before sees the count change and asks the disk.
        self.destroyed.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        for r in &records {
            self.destroy_object(r)?;
            self.audit.log("destroy", id, r.version, Some(r.alg), &r.fingerprint, "ok");
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

    fn record(&self, id: &str, version: Option<u32>) -> Result<VersionRecord, VaultError> {
        let v = match version {
            Some(v) => v,
            None => *self
                .store
                .versions(id)?
                .last()
                .ok_or_else(|| VaultError::NoSuchKey { id: id.to_owned(), version: None })?,
        };
        Ok(self.store.read(id, v)?)
    }

    /// Unseal a version and check it is the key the record describes.
    fn private(&self, r: &VersionRecord) -> Result<PrivateKey, VaultError> {
        let (sealed, aad) = (r.sealed.clone(), r.aad());
        let seed = self.sealer.call(move |s| s.unseal(&sealed, &aad))?;
        let key = PrivateKey::from_seed(r.alg, seed.expose())?;
        if key.public_key() != r.public_key_bytes()? {
            return Err(VaultError::Store(StoreError::Corrupt(format!(
                "key {} v{}: the unsealed seed does not match the public key",
                r.id, r.version
            ))));
        }
        Ok(key)
    }

    /// Sign with the current (or given) version.
    pub(crate) fn sign(
        &self,
        id: &str,
        version: Option<u32>,
        msg: &[u8],
        ctx: &[u8],
    ) -> Result<(u32, Vec<u8>), VaultError> {
        let r = self.record(id, version)?;
        if r.alg.is_kem() {
            return Err(
                AlgError::WrongKind { op: "sign", need: "ML-DSA", alg: r.alg.name() }.into()
            );
        }
        let key = self.private(&r)?;
        let sig = key.sign(msg, ctx, &*self.random::<32>()?)?;
        self.audit.log_use("sign", id, r.version, Some(r.alg), &r.fingerprint);
        Ok((r.version, sig))
    }

    /// Unseal a version (the current one if `version` is `None`) for
    /// [`Vault::sign_open`] and [`Vault::decapsulate_open`].
    pub(crate) fn open_key(&self, id: &str, version: Option<u32>) -> Result<OpenKey, VaultError> {
        let generation = self.destroyed.load(std::sync::atomic::Ordering::Acquire);
        let r = self.record(id, version)?;
        let key = self.private(&r)?.expand();
        Ok(OpenKey {
            id: id.to_owned(),
            version: r.version,
            alg: r.alg,
            fingerprint: r.fingerprint,
            key,
            generation,
        })
    }

    /// Refuse an open key whose version was destroyed since it was opened
    /// (the disk is asked only if some key was destroyed since).
    fn still_there(&self, k: &OpenKey) -> Result<(), VaultError> {
        if self.destroyed.load(std::sync::atomic::Ordering::Acquire) == k.generation
            || self.store.versions(&k.id)?.contains(&k.version)
        {
            Ok(())
        } else {
            Err(VaultError::NoSuchKey { id: k.id.clone(), version: Some(k.version) })
        }
    }

    /// Sign with an open key: hedged with fresh pool randomness, or with
    /// rnd = 0 (FIPS 204's deterministic variant) if `deterministic`.
    pub(crate) fn sign_open(
        &self,
        k: &OpenKey,
        msg: &[u8],
        ctx: &[u8],
        deterministic: bool,
    ) -> Result<Vec<u8>, VaultError> {
        self.still_there(k)?;
        let rnd = if deterministic { Zeroizing::new([0; 32]) } else { self.random::<32>()? };
        let sig = k.key.sign(msg, ctx, &rnd)?;
        self.audit.log_use("sign", &k.id, k.version, Some(k.alg), &k.fingerprint);
        Ok(sig)
    }

    /// Decapsulate with an open key.
    pub(crate) fn decapsulate_open(
        &self,
        k: &OpenKey,
        ct: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, VaultError> {
        self.still_there(k)?;
        let secret = k.key.decapsulate(ct)?;
        self.audit.log_use("decapsulate", &k.id, k.version, Some(k.alg), &k.fingerprint);
        Ok(secret)
    }

    /// Verify against the current (or given) version.
    pub(crate) fn verify(
        &self,
        id: &str,
        version: Option<u32>,
        msg: &[u8],
        ctx: &[u8],
        sig: &[u8],
    ) -> Result<(u32, bool), VaultError> {
        let r = self.record(id, version)?;
        Ok((r.version, qkeyd_pqc::verify(r.alg, &r.public_key_bytes()?, msg, ctx, sig)?))
    }

    /// Encapsulate to the current (or given) version.
    pub(crate) fn encapsulate(
        &self,
        id: &str,
        version: Option<u32>,
    ) -> Result<Encapsulated, VaultError> {
        let r = self.record(id, version)?;
        let m = self.random::<32>()?;
        let (ciphertext, shared_secret) =
            qkeyd_pqc::encapsulate(r.alg, &r.public_key_bytes()?, &m)?;
        Ok(Encapsulated { version: r.version, ciphertext, shared_secret })
    }

    /// Decapsulate with the current (or given) version.
    pub(crate) fn decapsulate(
        &self,
        id: &str,
        version: Option<u32>,
        ct: &[u8],
    ) -> Result<(u32, Zeroizing<[u8; 32]>), VaultError> {
        let r = self.record(id, version)?;
        if !r.alg.is_kem() {
            return Err(AlgError::WrongKind {
                op: "decapsulate",
                need: "ML-KEM",
                alg: r.alg.name(),
            }
            .into());
        }
        let want = r.alg.output_len();
        if ct.len() != want {
            return Err(AlgError::Length {
                what: "ciphertext",
                alg: r.alg.name(),
                want,
                got: ct.len(),
            }
            .into());
        }
        let key = self.private(&r)?;
        let k = key.decapsulate(ct)?;
        self.audit.log_use("decapsulate", id, r.version, Some(r.alg), &r.fingerprint);
        Ok((r.version, k))
    }

    /// Decapsulate, then HKDF-SHA3-256 (RFC 5869) the shared secret into `len`
    /// bytes with `salt` and `info`.
    pub(crate) fn derive(
        &self,
        id: &str,
        version: Option<u32>,
        ct: &[u8],
        salt: &[u8],
        info: &[u8],
        len: usize,
    ) -> Result<(u32, Zeroizing<Vec<u8>>), VaultError> {
        if !(1..=MAX_DERIVE).contains(&len) {
            return Err(VaultError::DeriveLength(len));
        }
        let (v, k) = self.decapsulate(id, version, ct)?;
        let mut okm = Zeroizing::new(vec![0u8; len]);
        SimpleHkdf::<Sha3_256>::new(Some(salt), &k[..])
            .expand(info, &mut okm)
            .map_err(|_| VaultError::DeriveLength(len))?;
        Ok((v, okm))
    }
}

fn check_label(label: &str) -> Result<(), VaultError> {
    if label.len() > MAX_LABEL || label.chars().any(char::is_control) {
        return Err(VaultError::Label);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
