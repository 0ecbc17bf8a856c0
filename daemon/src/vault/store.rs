//! The keystore on disk: one file per key version, written crash-safely.
//!
//! ```text
//! STATE_DIR/keys/<id>/v<N>.key     one key version (body line, checksum line)
//! STATE_DIR/keys/.destroy-<id>/    a key being destroyed (finished at start-up)
//! STATE_DIR/audit.log              append-only JSON lines, fingerprints only
//! ```
//!
//! A version file is written to `v<N>.key.tmp` and fsynced ([`Store::stage`]);
//! the vault then makes its audit line durable, and only then is the file
//! renamed into place and the folder fsynced ([`Store::commit`]): after a crash
//! a version is either complete or absent, and only complete ones are
//! acknowledged. Temp files found at start-up are removed (their records are
//! handed back, so their backend objects can go too). Each file is `<body JSON>\n<SHA3-256 of the body line>\n`, so any
//! changed byte is detected before anything is unsealed; the sealed seed is in
//! turn bound (as AEAD associated data) to the key id, version, algorithm and
//! public-key fingerprint, and the public key re-derived from the unsealed seed
//! must equal the stored one. Tampering is an error, never a wrong key.

use std::{
    fs, io,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use qkeyd_drivers::seal::Sealed;
use serde::{Deserialize, Serialize};
use sha3::{Digest as _, Sha3_256};

use qkeyd_pqc::Algorithm;

/// Format version of a key file body.
const FORMAT: u32 = 1;

/// What is stored for one key version. Nothing in it is secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionRecord {
    /// Body format.
    pub(crate) format: u32,
    /// Key id (32 lowercase hex digits).
    pub(crate) id: String,
    /// Version, from 1.
    pub(crate) version: u32,
    /// Algorithm.
    pub(crate) alg: Algorithm,
    /// Operator's label.
    pub(crate) label: String,
    /// Creation time, seconds since the Unix epoch.
    pub(crate) created_unix: u64,
    /// Encoded public key, base64.
    pub(crate) public_key: String,
    /// SHA3-256 fingerprint of the public key, hex.
    pub(crate) fingerprint: String,
    /// Where the seed's entropy came from: `sources` or `os-fallback`.
    pub(crate) entropy: String,
    /// The sealed seed.
    pub(crate) sealed: Sealed,
    /// Where the seed's entropy came from in detail: the source of the
    /// fresh reseed, the DRBG's reseed counter, every source's state and
    /// scores then (absent in records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) provenance: Option<crate::pool::Provenance>,
}

impl VersionRecord {
    /// A new record.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: &str,
        version: u32,
        alg: Algorithm,
        label: &str,
        created_unix: u64,
        public_key: &[u8],
        entropy: &str,
        sealed: Sealed,
    ) -> Self {
        use base64::Engine as _;
        Self {
            format: FORMAT,
            id: id.to_owned(),
            version,
            alg,
            label: label.to_owned(),
            created_unix,
            public_key: base64::engine::general_purpose::STANDARD.encode(public_key),
            fingerprint: fingerprint(alg, public_key),
            entropy: entropy.to_owned(),
            sealed,
            provenance: None,
        }
    }

    /// The public key bytes.
    pub(crate) fn public_key_bytes(&self) -> Result<Vec<u8>, StoreError> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(&self.public_key).map_err(|_| {
            StoreError::Corrupt(format!("key {} v{}: public key", self.id, self.version))
        })
    }

    /// The associated data the seed is sealed with.
    pub(crate) fn aad(&self) -> Vec<u8> {
        aad(&self.id, self.version, self.alg, &self.fingerprint)
    }
}

/// Associated data binding a sealed seed to its key version.
pub(crate) fn aad(id: &str, version: u32, alg: Algorithm, fingerprint: &str) -> Vec<u8> {
    format!("qkeyd-key-v1\0{id}\0{version}\0{}\0{fingerprint}", alg.name()).into_bytes()
}

/// SHA3-256 over the algorithm name and the public key, hex.
pub(crate) fn fingerprint(alg: Algorithm, public_key: &[u8]) -> String {
    let mut h = Sha3_256::new();
    h.update(alg.name().as_bytes());
    h.update([0]);
    h.update(public_key);
    hex::encode(h.finalize())
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// A file failed its checksum or does not parse.
    #[error("key file corrupted: {0}")]
    Corrupt(String),
    /// No such key or version.
    #[error("no such key: {id}{}", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    NotFound {
        /// The key id.
        id: String,
        /// The version, if one was named.
        version: Option<u32>,
    },
    /// A filesystem error.
    #[error("keystore I/O error on {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// Whether `id` has the shape of a key id (so it is safe in a path).
pub(crate) fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The key files under a state directory.
#[derive(Debug)]
pub(crate) struct Store {
    keys: PathBuf,
}

/// What a crash left in the store, found by [`Store::open`].
#[derive(Debug, Default)]
pub(crate) struct Leftovers {
    /// Records of keys moved out of sight for destruction.
    pub(crate) destroying: Vec<VersionRecord>,
    /// Records of versions staged and never made visible (now removed).
    pub(crate) unpublished: Vec<VersionRecord>,
}

/// A version in its temp file, see [`Store::stage`].
#[derive(Debug)]
pub(crate) struct Staged {
    tmp: PathBuf,
    path: PathBuf,
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

impl Store {
    /// Open (creating) `state_dir/keys` and drop half-written files. Returns
    /// the store and what a crash left: destructions to finish (their
    /// records: the backend objects still need destroying) and the records of
    /// versions that were staged but never made visible.
    pub(crate) fn open(state_dir: &Path) -> Result<(Self, Leftovers), StoreError> {
        let keys = state_dir.join("keys");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&keys).map_err(io_err(&keys))?;
        sync_dir(state_dir)?;
        let store = Self { keys };
        let mut left = Leftovers::default();
        for entry in fs::read_dir(&store.keys).map_err(io_err(&store.keys))? {
            let entry = entry.map_err(io_err(&store.keys))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(".destroy-") {
                left.destroying.extend(store.read_dir_records(&path));
                continue;
            }
            if !valid_id(&name) {
                continue;
            }
            for f in fs::read_dir(&path).map_err(io_err(&path))? {
                let f = f.map_err(io_err(&path))?;
                let fname = f.file_name().to_string_lossy().into_owned();
                if let Some(final_name) = fname.strip_suffix(".tmp") {
                    if !path.join(final_name).exists()
                        && let Ok(r) = read_file(&f.path())
                        && r.id == name
                    {
                        left.unpublished.push(r);
                    }
                    fs::remove_file(f.path()).map_err(io_err(&f.path()))?;
                }
            }
            sync_dir(&path)?;
            if store.versions(&name)?.is_empty() {
                // Created, but its first version never landed: never acknowledged.
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
        sync_dir(&store.keys)?;
        Ok((store, left))
    }

    /// Remove the folders of destructions finished by the caller.
    pub(crate) fn purge_destroyed(&self) -> Result<(), StoreError> {
        for entry in fs::read_dir(&self.keys).map_err(io_err(&self.keys))? {
            let entry = entry.map_err(io_err(&self.keys))?;
            if entry.file_name().to_string_lossy().starts_with(".destroy-") {
                fs::remove_dir_all(entry.path()).map_err(io_err(&entry.path()))?;
            }
        }
        sync_dir(&self.keys)
    }

    /// The records in a key's folder that read back; one that does not is
    /// skipped (its backend object is named by id, and goes with the key).
    fn read_dir_records(&self, dir: &Path) -> Vec<VersionRecord> {
        let Ok(rd) = fs::read_dir(dir) else { return Vec::new() };
        let mut out: Vec<_> = rd
            .filter_map(Result::ok)
            .filter(|f| f.file_name().to_string_lossy().ends_with(".key"))
            .filter_map(|f| read_file(&f.path()).ok())
            .collect();
        out.sort_by_key(|r| r.version);
        out
    }

    /// Every key id, sorted.
    pub(crate) fn ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.keys).map_err(io_err(&self.keys))? {
            let name =
                entry.map_err(io_err(&self.keys))?.file_name().to_string_lossy().into_owned();
            if valid_id(&name) {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The versions of a key that are on disk, ascending.
    pub(crate) fn versions(&self, id: &str) -> Result<Vec<u32>, StoreError> {
        if !valid_id(id) {
            return Err(StoreError::NotFound { id: id.to_owned(), version: None });
        }
        let dir = self.keys.join(id);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound { id: id.to_owned(), version: None });
            }
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut v = Vec::new();
        for f in rd {
            let name = f.map_err(io_err(&dir))?.file_name().to_string_lossy().into_owned();
            if let Some(Ok(n)) =
                name.strip_prefix('v').and_then(|s| s.strip_suffix(".key")).map(str::parse)
            {
                v.push(n);
            }
        }
        v.sort_unstable();
        Ok(v)
    }

    /// Read and check one version.
    pub(crate) fn read(&self, id: &str, version: u32) -> Result<VersionRecord, StoreError> {
        if !valid_id(id) {
            return Err(StoreError::NotFound { id: id.to_owned(), version: None });
        }
        let path = self.keys.join(id).join(format!("v{version}.key"));
        if !path.exists() {
            return Err(StoreError::NotFound { id: id.to_owned(), version: Some(version) });
        }
        let r = read_file(&path)?;
        if r.id != id || r.version != version {
            return Err(StoreError::Corrupt(format!("{} holds another key", path.display())));
        }
        Ok(r)
    }

    /// Write a version crash-safely. Fails if it exists.
    #[cfg(test)]
    pub(crate) fn write(&self, r: &VersionRecord) -> Result<(), StoreError> {
        let staged = self.stage(r)?;
        self.commit(staged)
    }

    /// Write a version to its temp file, fsynced but not yet visible: a crash
    /// from here on loses it, and start-up removes the temp file. Fails if the
    /// version exists.
    pub(crate) fn stage(&self, r: &VersionRecord) -> Result<Staged, StoreError> {
        let dir = self.keys.join(&r.id);
        let new_dir = !dir.exists();
        if new_dir {
            fs::DirBuilder::new().mode(0o700).create(&dir).map_err(io_err(&dir))?;
        }
        let staged = self.stage_in(&dir, new_dir, r);
        if staged.is_err() && new_dir {
            // A new key's folder goes with its first version (only if empty).
            let _ = fs::remove_dir(&dir);
        }
        staged
    }

    fn stage_in(&self, dir: &Path, new_dir: bool, r: &VersionRecord) -> Result<Staged, StoreError> {
        if new_dir {
            sync_dir(&self.keys)?;
        }
        let path = dir.join(format!("v{}.key", r.version));
        if path.exists() {
            return Err(StoreError::Corrupt(format!("{} exists already", path.display())));
        }
        let tmp = dir.join(format!("v{}.key.tmp", r.version));
        let body = serde_json::to_vec(r).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        crate::durable::stage(&tmp, &body)
            .map_err(|(path, source)| StoreError::Io { path, source })?;
        Ok(Staged { tmp, path })
    }

    /// Make a staged version visible (rename, fsync the folder). On failure
    /// the version is taken back out of sight if it can be:
    /// [`Store::versions`] tells whether it is there.
    pub(crate) fn commit(&self, s: Staged) -> Result<(), StoreError> {
        let published = crate::durable::publish(&s.tmp, &s.path);
        if let Err((path, source)) = published {
            // Renamed but not known to be durable: not acknowledged, so out of
            // sight again if possible.
            if s.path.exists() {
                let _ = fs::remove_file(&s.path);
            }
            let _ = fs::remove_file(&s.tmp);
            return Err(StoreError::Io { path, source });
        }
        Ok(())
    }

    /// Drop a staged version that will not be committed.
    pub(crate) fn discard(&self, s: Staged) {
        let _ = fs::remove_file(&s.tmp);
    }

    /// Every version of a key that is on disk, read for a destruction: the
    /// records that read back, and the numbers of those that do not.
    pub(crate) fn records(&self, id: &str) -> Result<(Vec<VersionRecord>, Vec<u32>), StoreError> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for v in self.versions(id)? {
            match self.read(id, v) {
                Ok(r) => good.push(r),
                Err(_) => bad.push(v),
            }
        }
        Ok((good, bad))
    }

    /// Move a key out of sight atomically; returns its records so the caller
    /// can destroy their backend objects, then [`Store::purge_destroyed`].
    pub(crate) fn begin_destroy(&self, id: &str) -> Result<Vec<VersionRecord>, StoreError> {
        if !valid_id(id) {
            return Err(StoreError::NotFound { id: id.to_owned(), version: None });
        }
        let dir = self.keys.join(id);
        if !dir.exists() {
            return Err(StoreError::NotFound { id: id.to_owned(), version: None });
        }
        let to = self.keys.join(format!(".destroy-{id}"));
        fs::rename(&dir, &to).map_err(io_err(&dir))?;
        sync_dir(&self.keys)?;
        // Records that no longer verify still go: their objects are named by id.
        Ok(self.read_dir_records(&to))
    }
}

fn read_file(path: &Path) -> Result<VersionRecord, StoreError> {
    let content = fs::read(path).map_err(io_err(path))?;
    let corrupt = |why: &str| StoreError::Corrupt(format!("{}: {why}", path.display()));
    let body = crate::durable::body(&content).map_err(corrupt)?;
    let r: VersionRecord = serde_json::from_slice(body).map_err(|e| corrupt(&e.to_string()))?;
    if r.format != FORMAT {
        return Err(corrupt(&format!("format {} is not {FORMAT}", r.format)));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, v: u32) -> VersionRecord {
        let sealed = Sealed { backend: "soft".into(), object: None, blob: vec![1, 2, 3] };
        VersionRecord::new(id, v, Algorithm::MlDsa44, "l", 1, &[5; 8], "sources", sealed)
    }

    #[test]
    fn versions_round_trip_and_any_flipped_bit_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (s, left) = Store::open(dir.path()).unwrap();
        assert!(left.destroying.is_empty() && left.unpublished.is_empty());
        let id = "0123456789abcdef0123456789abcdef";
        s.write(&record(id, 1)).unwrap();
        s.write(&record(id, 2)).unwrap();
        assert!(s.write(&record(id, 2)).is_err(), "a version is never overwritten");
        assert_eq!(s.ids().unwrap(), vec![id.to_owned()]);
        assert_eq!(s.versions(id).unwrap(), vec![1, 2]);
        assert_eq!(s.read(id, 2).unwrap(), record(id, 2));
        let path = dir.path().join("keys").join(id).join("v1.key");
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[i / 8] ^= 1 << (i % 8);
            fs::write(&path, &bad).unwrap();
            assert!(matches!(s.read(id, 1), Err(StoreError::Corrupt(_))), "bit {i}");
        }
        fs::write(&path, &good).unwrap();
        assert!(s.read(id, 1).is_ok());
        assert!(matches!(s.read(id, 3), Err(StoreError::NotFound { .. })));
        assert!(matches!(s.read("../../etc", 1), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn open_drops_half_written_files_and_resumes_destruction() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(dir.path()).unwrap();
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        s.write(&record(&a, 1)).unwrap();
        fs::write(dir.path().join("keys").join(&a).join("v2.key.tmp"), b"half").unwrap();
        fs::create_dir(dir.path().join("keys").join(&b)).unwrap();
        s.write(&record(&"c".repeat(32), 1)).unwrap();
        let staged = s.stage(&record(&a, 3)).unwrap();
        drop(staged);
        let gone = s.begin_destroy(&"c".repeat(32)).unwrap();
        assert_eq!(gone.len(), 1);
        let (s, left) = Store::open(dir.path()).unwrap();
        assert_eq!(left.destroying.len(), 1, "the interrupted destruction is handed back");
        assert_eq!(left.unpublished, vec![record(&a, 3)], "a staged version is handed back");
        s.purge_destroyed().unwrap();
        assert_eq!(s.ids().unwrap(), vec![a.clone()]);
        assert_eq!(s.versions(&a).unwrap(), vec![1]);
        assert!(!dir.path().join("keys").join(&a).join("v2.key.tmp").exists());
        assert!(!dir.path().join("keys").join(&a).join("v3.key.tmp").exists());
    }
}
