//! A KEK's life: made (the first, or by a rotation) as the write key, then
//! decrypt-only, then retired. Key ids are derived from a random KEK id and
//! never handed out twice: retired ids stay as tombstones, and a new KEK's
//! record reaches disk before it is used.

use std::time::Duration;

use qkeyd_drivers::seal::Sealed;
use sha3::{Digest as _, Sha3_256};
use zeroize::Zeroizing;

use super::{
    Kms, KmsError,
    audit::KekOp,
    format::{kek_aad, label},
    lock, missing, now_unix,
    store::{KekLocation, KekRecord, Retired},
};

/// Prefix of every key id.
const KEY_ID_PREFIX: &str = "qkeyd-kek-";
/// How long after a rotation (or after its last use) a KEK is not retired
/// without `force`: kube-apiserver learns of a new key at its next Status call
/// (about once a minute) and keeps using a DEK for up to 3 minutes.
pub(crate) const RETIRE_GRACE: Duration = Duration::from_secs(300);

impl Kms {
    /// Make the first KEK if there is none; returns the write key id. Blocks.
    pub(crate) fn ensure_key(&self) -> Result<String, KmsError> {
        if let Some(id) = lock(&self.file).write.clone() {
            return Ok(id);
        }
        let _c = lock(&self.change);
        if let Some(id) = lock(&self.file).write.clone() {
            return Ok(id);
        }
        self.make_write_kek()
    }

    /// Make a new KEK the write key; returns its key id. Blocks.
    pub(crate) fn rotate(&self) -> Result<String, KmsError> {
        let _c = lock(&self.change);
        self.make_write_kek()
    }

    /// Retire `key_id`: it no longer decrypts, and its HSM key is destroyed.
    /// Refused for the write key, and (unless `force`) for a KEK replaced or
    /// used within [`RETIRE_GRACE`]: kube-apiserver may still be writing
    /// under it, and data only it decrypts would be lost. Blocks.
    pub(crate) fn retire(&self, key_id: &str, force: bool) -> Result<(), KmsError> {
        let _c = lock(&self.change);
        let mut next = lock(&self.file).clone();
        if next.write.as_deref() == Some(key_id) {
            return Err(KmsError::RetireWriteKey(key_id.to_owned()));
        }
        let Some(pos) = next.keks.iter().position(|k| k.key_id == key_id) else {
            return Err(missing(&next, key_id));
        };
        if !force {
            let grace = RETIRE_GRACE.as_secs();
            let replaced_ago = next.keks[pos].replaced_unix.map(|t| now_unix().saturating_sub(t));
            if replaced_ago.is_none_or(|ago| ago < grace) {
                return Err(KmsError::RecentlyReplaced {
                    key_id: key_id.to_owned(),
                    ago: replaced_ago.unwrap_or(0),
                    grace,
                });
            }
            if let Some(at) = lock(&self.used).get(key_id)
                && at.elapsed() < RETIRE_GRACE
            {
                return Err(KmsError::RecentlyUsed {
                    key_id: key_id.to_owned(),
                    ago: at.elapsed().as_secs(),
                });
            }
        }
        let record = next.keks.remove(pos);
        next.retired.push(Retired { key_id: key_id.to_owned(), retired_unix: now_unix() });
        let backend = self.backend();
        self.audit
            .record(KekOp::Retire, key_id, backend, "ok", false)
            .map_err(KmsError::AuditLog)?;
        if let Err(e) = self.store.save(&next) {
            self.not_made(KekOp::Retire, key_id);
            return Err(e.into());
        }
        *lock(&self.file) = next;
        self.forget_kek(key_id);
        let outcome = match &record.kek {
            KekLocation::Token { label, .. } => {
                let (l, copy) = (label.clone(), record.shared.clone());
                self.sealer.call(move |s| {
                    if let Some(c) = &copy {
                        s.destroy(c)?;
                    }
                    s.key_destroy(&l)
                })
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

    /// A `failed` line for a change whose audit line was written but which
    /// did not reach the KEK file; a failure to write it is logged only.
    fn not_made(&self, op: KekOp, key_id: &str) {
        if let Err(e) = self.audit.record(op, key_id, self.backend(), "failed", false) {
            tracing::error!(key_id, error = %e, "cannot write the audit log");
        }
    }

    /// Caller holds `change`.
    fn make_write_kek(&self) -> Result<String, KmsError> {
        if self.clustered {
            return Err(KmsError::NotShared);
        }
        let (record, _) = self.make_kek(false)?;
        let key_id = record.key_id.clone();
        self.add_kek(record, true, KekOp::Create)?;
        tracing::info!(key_id, backend = self.backend(), "new KMS KEK is the write key");
        Ok(key_id)
    }

    /// A new KEK, sealed or in the token (see [`Kms::seal_kek`]), and its
    /// value; its record is not in the file yet.
    pub(super) fn make_kek(
        &self,
        shareable: bool,
    ) -> Result<(KekRecord, Zeroizing<[u8; 32]>), KmsError> {
        let key_id = self.new_key_id()?;
        // A long-term key: prediction resistance (a fresh seed block first).
        let mut value = Zeroizing::new([0u8; 32]);
        self.pool.fill_fresh(&mut value[..])?;
        let (kek, shared) = self.seal_kek(&key_id, &value, shareable)?;
        let record =
            KekRecord { key_id, created_unix: now_unix(), replaced_unix: None, kek, shared };
        Ok((record, value))
    }

    /// A key id derived from fresh pool bytes, never one of ours before.
    pub(super) fn new_key_id(&self) -> Result<String, KmsError> {
        let mut id = [0u8; 16];
        self.pool.fill(&mut id)?;
        let digest = Sha3_256::new_with_prefix(b"qkeyd kms kek id\0").chain_update(id).finalize();
        let key_id = format!("{KEY_ID_PREFIX}{}", hex::encode(&digest[..16]));
        let file = lock(&self.file);
        if file.get(&key_id).is_some() || file.retired.iter().any(|r| r.key_id == key_id) {
            return Err(KmsError::KeyIdCollision);
        }
        Ok(key_id)
    }

    /// Put KEK `key_id` with `value` where this node keeps KEKs: inside the
    /// token (an HSM sealer) or sealed. With `shareable`, a token KEK's value
    /// is sealed as well, so the node can wrap it to another one later.
    /// Blocks.
    pub(super) fn seal_kek(
        &self,
        key_id: &str,
        value: &Zeroizing<[u8; 32]>,
        shareable: bool,
    ) -> Result<(KekLocation, Option<Sealed>), KmsError> {
        let seal = |name: String| {
            let (a, v) = (kek_aad(key_id), Zeroizing::new(value.to_vec()));
            self.sealer.call(move |s| s.seal(&name, &a, &v))
        };
        if !self.holds_keys {
            return Ok((KekLocation::Sealed { sealed: seal(label(key_id))? }, None));
        }
        // The HSM sealer seals under a token key of the given name: not the
        // KEK's own label, which the KEK itself takes next.
        let shared = if shareable { Some(seal(format!("{}/copy", label(key_id)))?) } else { None };
        let (l, v) = (label(key_id), Zeroizing::new(value.to_vec()));
        let name = l.clone();
        self.sealer.call(move |s| s.key_create(&name, &v))?;
        Ok((KekLocation::Token { backend: self.sealer.kind().to_owned(), label: l }, shared))
    }

    /// Add `record` to the KEK file, as the write key if `write`, its audit
    /// line (`op`) first. If it does not reach the file, a token key made
    /// for it is destroyed again. Blocks; the caller holds `change`.
    pub(super) fn add_kek(
        &self,
        record: KekRecord,
        write: bool,
        op: KekOp,
    ) -> Result<(), KmsError> {
        let key_id = record.key_id.clone();
        let mut next = lock(&self.file).clone();
        if write {
            let old = next.write.clone();
            if let Some(prev) = next.keks.iter_mut().find(|k| Some(&k.key_id) == old.as_ref()) {
                prev.replaced_unix = Some(now_unix());
            }
            next.write = Some(key_id.clone());
        }
        next.keks.push(record.clone());
        let saved = self
            .audit
            .record(op, &key_id, self.backend(), "ok", false)
            .map_err(KmsError::AuditLog)
            .and_then(|()| {
                self.store.save(&next).map_err(|e| {
                    self.not_made(op, &key_id);
                    KmsError::from(e)
                })
            });
        if let Err(e) = saved {
            // Not acknowledged: take the new HSM key back out.
            if let KekLocation::Token { label, .. } = record.kek {
                let _ = self.sealer.call(move |s| s.key_destroy(&label));
            }
            return Err(e);
        }
        *lock(&self.file) = next;
        if write {
            self.status.clear();
        }
        Ok(())
    }
}
