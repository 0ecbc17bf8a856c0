//! The KMS plugin's key-encryption keys on disk: `STATE_DIR/kms/keks.json`.
//!
//! One file, rewritten whole on every change (temp file, fsync, rename, fsync
//! the folder), so a crash leaves either the old or the new file. The body is
//! followed by its SHA3-256, and a file whose digest does not match is an
//! error, never a silently shorter key list. Nothing in it is secret: a KEK is
//! either the label of a key inside the HSM or its value sealed by the TPM or
//! the soft sealer.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use qkeyd_drivers::seal::Sealed;
use serde::{Deserialize, Serialize};

/// Where a KEK lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum KekLocation {
    /// A non-extractable AES-256 key inside the HSM, found by its label.
    Token {
        /// The backend that holds it (`pkcs11`).
        backend: String,
        /// Its `CKA_LABEL`.
        label: String,
    },
    /// The KEK's value, sealed by the TPM or the soft sealer.
    Sealed {
        /// The sealed value.
        sealed: Sealed,
    },
}

/// One KEK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KekRecord {
    /// The key id kube-apiserver sees and stores beside each DEK.
    pub(crate) key_id: String,
    /// Creation time, Unix seconds.
    pub(crate) created_unix: u64,
    /// When a rotation made another KEK the write key, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replaced_unix: Option<u64>,
    /// Where it lives.
    pub(crate) kek: KekLocation,
    /// A token KEK's value sealed by the sealer too, kept only when the KEK
    /// is shared with other nodes, so that it can be wrapped to a newcomer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) shared: Option<Sealed>,
}

/// A KEK taken out of use; its key id is never handed out again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Retired {
    /// The key id.
    pub(crate) key_id: String,
    /// When it was retired, Unix seconds.
    pub(crate) retired_unix: u64,
}

/// Everything the plugin keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KekFile {
    /// The KEK new Encrypt calls use.
    pub(crate) write: Option<String>,
    /// Every KEK that still decrypts, oldest first.
    pub(crate) keks: Vec<KekRecord>,
    /// Retired key ids.
    pub(crate) retired: Vec<Retired>,
}

impl KekFile {
    /// The record of `key_id`.
    pub(crate) fn get(&self, key_id: &str) -> Option<&KekRecord> {
        self.keks.iter().find(|k| k.key_id == key_id)
    }

    /// The KEK Encrypt uses.
    pub(crate) fn write_kek(&self) -> Option<&KekRecord> {
        self.write.as_deref().and_then(|id| self.get(id))
    }
}

/// Why the file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    /// A file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged.
    #[error("{path} is damaged: {reason}")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The KEK file in `STATE_DIR/kms/`, locked against a second daemon on the
/// same state directory for as long as the store is open.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    _lock: fs::File,
}

impl Store {
    /// Open (creating) `state_dir/kms` and read the file; no file is an empty
    /// list. Half-written temp files from a crash are removed.
    pub(crate) fn open(state_dir: &Path) -> Result<(Self, KekFile), StoreError> {
        let dir = state_dir.join("kms");
        let io = |source| StoreError::Io { path: dir.clone(), source };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io)?;
        let lock_path = dir.join("lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| StoreError::Io { path: lock_path.clone(), source })?;
        lock.try_lock().map_err(|_| StoreError::Corrupt {
            path: lock_path.clone(),
            reason: "another qkeyd holds this state directory's KMS lock".into(),
        })?;
        let store = Self { dir, _lock: lock };
        let tmp = store.tmp_path();
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(|source| StoreError::Io { path: tmp.clone(), source })?;
        }
        let path = store.path();
        let file = match fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KekFile::default(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        for k in &file.keks {
            if let KekLocation::Token { label, .. } = &k.kek
                && *label != format!("qkeyd-kms/{}", k.key_id)
            {
                return Err(StoreError::Corrupt {
                    path: store.path(),
                    reason: format!("KEK {} names the token key {label:?}, not its own", k.key_id),
                });
            }
        }
        Ok((store, file))
    }

    fn path(&self) -> PathBuf {
        self.dir.join("keks.json")
    }

    fn tmp_path(&self) -> PathBuf {
        self.dir.join("keks.json.tmp")
    }

    /// Replace the file with `file`, durably.
    pub(crate) fn save(&self, file: &KekFile) -> Result<(), StoreError> {
        let path = self.path();
        let body = serde_json::to_vec(file)
            .map_err(|e| StoreError::Corrupt { path: path.clone(), reason: e.to_string() })?;
        crate::durable::write(&self.tmp_path(), &path, &body)
            .map_err(|(path, source)| StoreError::Io { path, source })
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<KekFile, StoreError> {
    let corrupt =
        |reason: &str| StoreError::Corrupt { path: path.to_owned(), reason: reason.into() };
    let body = crate::durable::body(bytes).map_err(corrupt)?;
    serde_json::from_slice(body).map_err(|e| corrupt(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KekFile {
        KekFile {
            write: Some("b".into()),
            keks: vec![
                KekRecord {
                    key_id: "a".into(),
                    created_unix: 1,
                    replaced_unix: Some(2),
                    kek: KekLocation::Token {
                        backend: "pkcs11".into(),
                        label: "qkeyd-kms/a".into(),
                    },
                    shared: None,
                },
                KekRecord {
                    key_id: "b".into(),
                    created_unix: 2,
                    replaced_unix: None,
                    kek: KekLocation::Sealed {
                        sealed: Sealed {
                            backend: "soft".into(),
                            object: None,
                            blob: vec![1, 2, 3],
                        },
                    },
                    shared: None,
                },
            ],
            retired: vec![Retired { key_id: "z".into(), retired_unix: 3 }],
        }
    }

    #[test]
    fn saves_and_reads_back_and_any_change_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (store, empty) = Store::open(dir.path()).unwrap();
        assert_eq!(empty, KekFile::default());
        store.save(&sample()).unwrap();
        assert!(Store::open(dir.path()).is_err(), "a second open while the first holds the lock");
        drop(store);
        let (_, back) = Store::open(dir.path()).unwrap();
        assert_eq!(back, sample());
        let path = dir.path().join("kms/keks.json");
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            fs::write(&path, &bad).unwrap();
            assert!(Store::open(dir.path()).is_err(), "flip at byte {i} went unnoticed");
        }
        fs::write(&path, &good[..good.len() / 2]).unwrap();
        assert!(Store::open(dir.path()).is_err());
        // A crash mid-write leaves a temp file and the old file.
        fs::write(&path, &good).unwrap();
        fs::write(dir.path().join("kms/keks.json.tmp"), b"half").unwrap();
        let (_, back) = Store::open(dir.path()).unwrap();
        assert_eq!(back, sample());
        assert!(!dir.path().join("kms/keks.json.tmp").exists());
    }
}
