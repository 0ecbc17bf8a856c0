//! Token objects that are not keys: the data objects, certificates and
//! public keys an application stores through the PKCS#11 module with
//! `CKA_TOKEN` true, and the certificates `POST /v1/keys/{id}/certificate`
//! issues for vault keys.
//!
//! Each object is one file, `STATE_DIR/objects/<id>`, written whole and
//! checked when read (`durable.rs`), holding the attributes the module
//! checked when it made the object. The daemon reads only `CKA_CLASS`,
//! `CKA_LABEL` and `CKA_ID` of them (for listings and the audit log). No
//! secret is ever stored here: the module refuses token objects with one.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use qkeyd_p11_proto::{Attribute, MAX_OBJECT, StoredObject};
use serde::{Deserialize, Serialize};

use crate::vault::{Vault, VaultError};

/// Most token objects the daemon keeps.
pub(crate) const MAX_OBJECTS: usize = 4096;

/// The attributes and classes the daemon reads (PKCS#11 §4).
pub(crate) const CKA_CLASS: u64 = 0x0;
pub(crate) const CKA_PRIVATE: u64 = 0x2;
pub(crate) const CKA_LABEL: u64 = 0x3;
pub(crate) const CKA_VALUE: u64 = 0x11;
pub(crate) const CKA_TRUSTED: u64 = 0x86;
pub(crate) const CKA_ID: u64 = 0x102;
pub(crate) const CKO_DATA: u64 = 0;
pub(crate) const CKO_CERTIFICATE: u64 = 1;
pub(crate) const CKO_PUBLIC_KEY: u64 = 2;

/// Why a token object could not be stored, found or destroyed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ObjectError {
    /// The store holds as many objects as it may.
    #[error("the token holds {0} objects, as many as it keeps")]
    TooMany(usize),
    /// An object over the size limit.
    #[error("a token object is at most {max} bytes of attributes, not {0}", max = MAX_OBJECT)]
    TooLarge(usize),
    /// No such object (or not one this caller may see).
    #[error("no such token object: {0:?}")]
    NotFound(String),
    /// The object's file could not be written or removed.
    #[error("token object file {}", .0.display())]
    Store(PathBuf, #[source] io::Error),
    /// The audit line could not be written.
    #[error(transparent)]
    Audit(VaultError),
}

/// An object's file: its privacy and attributes, values in hex.
#[derive(Serialize, Deserialize)]
struct Record {
    private: bool,
    attrs: Vec<(u64, String)>,
}

/// An audit line about a token object: ids and names, never a value.
#[derive(Serialize)]
struct AuditLine<'a> {
    op: &'static str,
    object: &'a str,
    class: u64,
    label: String,
    by: &'a str,
}

/// The token objects, in memory and on disk.
pub(crate) struct TokenObjects {
    dir: PathBuf,
    vault: Arc<Vault>,
    objects: Mutex<BTreeMap<String, StoredObject>>,
}

impl std::fmt::Debug for TokenObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenObjects").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// An attribute's value in `attrs`.
pub(crate) fn attr(attrs: &[Attribute], t: u64) -> Option<&[u8]> {
    attrs.iter().find(|(a, _)| *a == t).map(|(_, v)| v.as_slice())
}

/// An object's CKA_CLASS, if it has a well-formed one.
pub(crate) fn class_of(attrs: &[Attribute]) -> Option<u64> {
    attr(attrs, CKA_CLASS).and_then(|v| <[u8; 8]>::try_from(v).ok()).map(u64::from_ne_bytes)
}

/// A boolean attribute that is present and true.
pub(crate) fn flag(attrs: &[Attribute], t: u64) -> bool {
    attr(attrs, t).is_some_and(|v| v.first().is_some_and(|b| *b != 0))
}

fn label_of(attrs: &[Attribute]) -> String {
    String::from_utf8_lossy(attr(attrs, CKA_LABEL).unwrap_or_default()).chars().take(128).collect()
}

impl TokenObjects {
    /// The objects under `state_dir/objects` (made if missing). A file that
    /// does not read back whole is left in place, logged and not served.
    pub(crate) fn open(state_dir: &Path, vault: Arc<Vault>) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        let dir = state_dir.join("objects");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let mut objects = BTreeMap::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if id.starts_with('.') {
                // A write a crash interrupted: the object it replaced is intact.
                let _ = fs::remove_file(&path);
                continue;
            }
            match read_record(&path) {
                Ok(r) => {
                    objects.insert(id.clone(), StoredObject { id, private: r.0, attrs: r.1 });
                }
                Err(why) => {
                    tracing::warn!(file = %path.display(), why, "token object not loaded");
                }
            }
        }
        Ok(Self { dir, vault, objects: Mutex::new(objects) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StoredObject>> {
        self.objects.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The objects a caller sees: the private ones only with `private`.
    pub(crate) fn list(&self, private: bool) -> Vec<StoredObject> {
        self.lock().values().filter(|o| private || !o.private).cloned().collect()
    }

    /// Store an object: a new one (`id` of `None`), or a replacement of one the
    /// caller sees (private ones only with `may_private`). Durable and audited
    /// before it returns; `by` names the interface for the audit line.
    pub(crate) fn put(
        &self,
        id: Option<&str>,
        private: bool,
        attrs: Vec<Attribute>,
        may_private: bool,
        by: &str,
    ) -> Result<String, ObjectError> {
        let size: usize = attrs.iter().map(|(_, v)| v.len()).sum();
        if size > MAX_OBJECT {
            return Err(ObjectError::TooLarge(size));
        }
        let mut objects = self.lock();
        let (id, op) = match id {
            Some(id) => {
                match objects.get(id) {
                    Some(o) if may_private || !o.private => {}
                    _ => return Err(ObjectError::NotFound(id.chars().take(80).collect())),
                }
                (id.to_owned(), "object-replace")
            }
            None => {
                if objects.len() >= MAX_OBJECTS {
                    return Err(ObjectError::TooMany(objects.len()));
                }
                let id = std::iter::repeat_with(new_id)
                    .find(|id| !objects.contains_key(id))
                    .unwrap_or_else(new_id);
                (id, "object-create")
            }
        };
        let record =
            Record { private, attrs: attrs.iter().map(|(t, v)| (*t, hex::encode(v))).collect() };
        let body = serde_json::to_vec(&record)
            .map_err(|e| ObjectError::Store(self.dir.clone(), io::Error::other(e)))?;
        let path = self.dir.join(&id);
        crate::durable::write(&self.dir.join(format!(".{id}.tmp")), &path, &body)
            .map_err(|(p, e)| ObjectError::Store(p, e))?;
        self.audit(op, &id, &attrs, by)?;
        objects.insert(id.clone(), StoredObject { id: id.clone(), private, attrs });
        Ok(id)
    }

    /// Destroy an object the caller sees (private ones only with `may_private`).
    pub(crate) fn destroy(&self, id: &str, may_private: bool, by: &str) -> Result<(), ObjectError> {
        let mut objects = self.lock();
        let attrs = match objects.get(id) {
            Some(o) if may_private || !o.private => o.attrs.clone(),
            _ => return Err(ObjectError::NotFound(id.chars().take(80).collect())),
        };
        let path = self.dir.join(id);
        fs::remove_file(&path).map_err(|e| ObjectError::Store(path.clone(), e))?;
        objects.remove(id);
        self.audit("object-destroy", id, &attrs, by)
    }

    fn audit(
        &self,
        op: &'static str,
        id: &str,
        attrs: &[Attribute],
        by: &str,
    ) -> Result<(), ObjectError> {
        let line = AuditLine {
            op,
            object: id,
            class: class_of(attrs).unwrap_or(u64::MAX),
            label: label_of(attrs),
            by,
        };
        self.vault.audit_event(&line).map_err(ObjectError::Audit)?;
        tracing::info!(object = id, op, class = line.class, by, "token object");
        Ok(())
    }
}

/// A new object id: `o` and 16 random hex digits (ids are names, not
/// secrets; the caller skips one already taken).
fn new_id() -> String {
    let mut b = [0u8; 8];
    // Should the OS generator fail, the clock still gives distinct ids.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (t as u64).to_be_bytes();
    }
    format!("o{}", hex::encode(b))
}

/// Whether `id` could name an object (for ids from outside).
pub(crate) fn valid_id(id: &str) -> bool {
    id.len() == 17 && id.starts_with('o') && id[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn read_record(path: &Path) -> Result<(bool, Vec<Attribute>), String> {
    let content = fs::read(path).map_err(|e| e.to_string())?;
    let body = crate::durable::body(&content)?;
    let r: Record = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let attrs = r
        .attrs
        .into_iter()
        .map(|(t, v)| hex::decode(v).map(|v| (t, v)).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((r.private, attrs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn store() -> (tempfile::TempDir, TokenObjects) {
        let (dir, sealer) = testing::soft_sealer();
        let vault = Arc::new(Vault::open(dir.path(), sealer, testing::pool()).unwrap());
        let objects = TokenObjects::open(dir.path(), vault).unwrap();
        (dir, objects)
    }

    /// The same state directory opened again, as after a restart.
    fn reopen(dir: &tempfile::TempDir, s: &TokenObjects) -> TokenObjects {
        TokenObjects::open(dir.path(), s.vault.clone()).unwrap()
    }

    fn data(label: &str) -> Vec<Attribute> {
        vec![(CKA_CLASS, 0u64.to_ne_bytes().to_vec()), (CKA_LABEL, label.as_bytes().to_vec())]
    }

    #[test]
    fn objects_outlive_a_restart_and_private_ones_stay_hidden() {
        let (dir, s) = store();
        let public = s.put(None, false, data("pub"), false, "test").unwrap();
        let private = s.put(None, true, data("priv"), true, "test").unwrap();
        assert!(valid_id(&public) && valid_id(&private));
        assert_eq!(s.list(false).len(), 1);
        assert_eq!(s.list(true).len(), 2);
        // Without the private right, a private object is not there at all.
        assert!(matches!(s.destroy(&private, false, "test"), Err(ObjectError::NotFound(_))));
        assert!(matches!(
            s.put(Some(&private), true, data("x"), false, "test"),
            Err(ObjectError::NotFound(_))
        ));
        s.put(Some(&public), false, data("renamed"), false, "test").unwrap();
        let again = reopen(&dir, &s);
        let all = again.list(true);
        assert_eq!(all.len(), 2);
        let p = all.iter().find(|o| o.id == public).unwrap();
        assert_eq!(attr(&p.attrs, CKA_LABEL), Some(&b"renamed"[..]));
        again.destroy(&public, false, "test").unwrap();
        assert_eq!(again.list(true).len(), 1);
        // Each change is in the audit log, with the label and never a value.
        let log = fs::read_to_string(dir.path().join("audit.log")).unwrap();
        let ops: Vec<&str> = ["object-create", "object-replace", "object-destroy"]
            .into_iter()
            .filter(|op| log.contains(op))
            .collect();
        assert_eq!(ops.len(), 3, "{log}");
    }

    #[test]
    fn limits_and_damage_are_refused() {
        let (dir, s) = store();
        let big = vec![(CKA_VALUE, vec![0; MAX_OBJECT + 1])];
        assert!(matches!(s.put(None, false, big, false, "test"), Err(ObjectError::TooLarge(_))));
        let id = s.put(None, false, data("a"), false, "test").unwrap();
        // A changed byte makes the file unreadable: not served, left in place.
        let path = dir.path().join("objects").join(&id);
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 1;
        fs::write(&path, bytes).unwrap();
        let again = reopen(&dir, &s);
        assert!(again.list(true).is_empty());
        assert!(path.exists());
    }
}
