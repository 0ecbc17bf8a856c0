//! What the cluster asks of this node's own KEKs: make one to share, take
//! in one another node wrapped, follow the cluster's write key, and read a
//! KEK's value to wrap it for a newcomer. Each blocks on the sealer.

use zeroize::Zeroizing;

use super::super::{
    Kms, KmsError,
    audit::KekOp,
    format::kek_aad,
    lifecycle::RETIRE_GRACE,
    lock, now_unix,
    store::{KekLocation, KekRecord},
};

impl Kms {
    /// The key ids this node holds.
    pub(super) fn held(&self) -> Vec<String> {
        lock(&self.file).keks.iter().map(|k| k.key_id.clone()).collect()
    }

    /// Every KEK this node holds: key id, creation time, and whether its
    /// value can be wrapped for another node.
    pub(super) fn own_keks(&self) -> Vec<(String, u64, bool)> {
        lock(&self.file)
            .keks
            .iter()
            .map(|k| {
                let shareable = matches!(k.kek, KekLocation::Sealed { .. }) || k.shared.is_some();
                (k.key_id.clone(), k.created_unix, shareable)
            })
            .collect()
    }

    /// Whether this node holds `key_id`.
    pub(super) fn holds(&self, key_id: &str) -> bool {
        lock(&self.file).get(key_id).is_some()
    }

    /// Whether `key_id` was retired here.
    pub(super) fn retired_here(&self, key_id: &str) -> bool {
        lock(&self.file).retired.iter().any(|r| r.key_id == key_id)
    }

    /// This node's write key id.
    pub(super) fn local_write(&self) -> Option<String> {
        lock(&self.file).write.clone()
    }

    /// Seconds since `key_id` last encrypted or decrypted here, if within
    /// the retire grace.
    pub(super) fn used_within_grace(&self, key_id: &str) -> Option<u64> {
        let used = lock(&self.used);
        let at = used.get(key_id)?;
        (at.elapsed() < RETIRE_GRACE).then(|| at.elapsed().as_secs())
    }

    /// Make a KEK to share: sealed here (not yet the write key), and its
    /// value for wrapping to the other nodes.
    pub(super) fn new_shared_kek(&self) -> Result<(String, Zeroizing<[u8; 32]>), KmsError> {
        let _c = lock(&self.change);
        let (record, value) = self.make_kek(true)?;
        let key_id = record.key_id.clone();
        self.add_kek(record, false, KekOp::Create)?;
        Ok((key_id, value))
    }

    /// Seal KEK `key_id`, received from another node, here. Nothing is done
    /// if this node holds it already.
    pub(super) fn adopt(
        &self,
        key_id: &str,
        created_unix: u64,
        value: &Zeroizing<[u8; 32]>,
    ) -> Result<(), KmsError> {
        let _c = lock(&self.change);
        if self.holds(key_id) {
            return Ok(());
        }
        if self.retired_here(key_id) {
            return Err(KmsError::Retired { key_id: key_id.to_owned(), at: 0 });
        }
        let (kek, shared) = self.seal_kek(key_id, value, true)?;
        let record =
            KekRecord { key_id: key_id.to_owned(), created_unix, replaced_unix: None, kek, shared };
        self.add_kek(record, false, KekOp::Import)?;
        tracing::info!(key_id, backend = self.backend(), "KMS KEK received from the cluster");
        Ok(())
    }

    /// Make `key_id`, which this node holds, its write key. Returns whether
    /// anything changed.
    pub(super) fn follow_write(&self, key_id: &str) -> Result<bool, KmsError> {
        let _c = lock(&self.change);
        let mut next = lock(&self.file).clone();
        if next.write.as_deref() == Some(key_id) || next.get(key_id).is_none() {
            return Ok(false);
        }
        let old = next.write.replace(key_id.to_owned());
        if let Some(prev) = next.keks.iter_mut().find(|k| Some(&k.key_id) == old.as_ref()) {
            prev.replaced_unix = Some(now_unix());
        }
        self.store.save(&next)?;
        *lock(&self.file) = next;
        self.status.clear();
        tracing::info!(key_id, "the cluster's write KEK is this node's write key");
        Ok(true)
    }

    /// The value of KEK `key_id`, to wrap it for another node: unsealed, or
    /// for a token KEK its sealed copy unsealed.
    pub(super) fn kek_value(&self, key_id: &str) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        let record = self.record(key_id)?;
        let sealed = match (&record.kek, &record.shared) {
            (KekLocation::Sealed { .. }, _) => return self.unseal_kek(&record, false),
            (KekLocation::Token { .. }, Some(s)) => s.clone(),
            (KekLocation::Token { .. }, None) => {
                return Err(KmsError::NotShareable(key_id.to_owned()));
            }
        };
        let a = kek_aad(key_id);
        let secret = self.sealer.call(move |x| x.unseal(&sealed, &a))?;
        let mut key = Zeroizing::new([0u8; 32]);
        if secret.expose().len() != 32 {
            return Err(KmsError::KekLength(key_id.to_owned()));
        }
        key.copy_from_slice(secret.expose());
        Ok(key)
    }
}
