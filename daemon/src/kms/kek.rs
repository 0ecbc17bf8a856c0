//! The one way a call uses a KEK, whatever holds it: a [`KekHandle`] is a
//! token key (the HSM does the AES-GCM) or a sealed KEK's unsealed value (the
//! AES-GCM runs here). A [`Route`] says whether the call may use what is at
//! hand (the token's inline session, a value unsealed lately) or must go
//! through the backend itself, as Status does.

use std::{sync::atomic::Ordering, time::Instant};

use qkeyd_drivers::{Error as SealError, seal::Sealer};
use zeroize::Zeroizing;

use super::{
    Kms, KmsError, Permit,
    format::{IV_LEN, gcm_open, gcm_seal, kek_aad},
    lock, run_blocking,
    store::{KekLocation, KekRecord},
};

/// A KEK as a call uses it.
pub(super) enum KekHandle {
    /// A key inside the token, by label.
    Token(String),
    /// A sealed KEK's value, unsealed.
    Memory(Zeroizing<[u8; 32]>),
}

/// Whether a call may use what is at hand, or must reach the backend.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Route {
    /// Encrypt and Decrypt: the token's inline session when it is free (and
    /// turned on), a value unsealed within `kek_cache`.
    Fast,
    /// Status: the sealer's own session on the token object, a fresh unseal.
    Backend,
}

/// An unsealed KEK and when it was unsealed.
pub(super) struct Cached {
    at: Instant,
    key: Zeroizing<[u8; 32]>,
}

impl Kms {
    /// The handle of `record`'s KEK: without blocking when it is in the token
    /// or (on the fast route) was unsealed lately, else unsealed on the
    /// blocking pool.
    pub(super) async fn kek(
        self: &std::sync::Arc<Self>,
        record: &KekRecord,
        route: Route,
        permit: &Permit,
    ) -> Result<KekHandle, KmsError> {
        match &record.kek {
            KekLocation::Token { label, .. } => Ok(KekHandle::Token(label.clone())),
            KekLocation::Sealed { .. } => {
                if route == Route::Fast
                    && let Some(key) = self.cached_kek(&record.key_id)
                {
                    return Ok(KekHandle::Memory(key));
                }
                let (me, record) = (self.clone(), record.clone());
                let fresh = route == Route::Backend;
                run_blocking(permit, move || me.unseal_kek(&record, fresh).map(KekHandle::Memory))
                    .await
            }
        }
    }

    /// AES-256-GCM of `plaintext` under `kek`: ciphertext ‖ tag.
    pub(super) async fn seal_with(
        &self,
        kek: &KekHandle,
        route: Route,
        iv: &[u8; IV_LEN],
        aad: Vec<u8>,
        plaintext: Zeroizing<Vec<u8>>,
        permit: &Permit,
    ) -> Result<Vec<u8>, KmsError> {
        let label = match kek {
            KekHandle::Memory(key) => return gcm_seal(key, iv, &aad, &plaintext),
            KekHandle::Token(label) => label,
        };
        if route == Route::Fast
            && let Some(body) =
                self.inline_session().and_then(|k| k.try_encrypt(label, iv, &aad, &plaintext))
        {
            self.inline_ops.fetch_add(1, Ordering::Relaxed);
            return Ok(body);
        }
        self.queued_ops.fetch_add(1, Ordering::Relaxed);
        let (label, iv) = (label.clone(), *iv);
        self.on_sealer(permit, move |s| s.key_encrypt(&label, &iv, &aad, &plaintext)).await
    }

    /// The inverse of [`Kms::seal_with`]. A body that does not authenticate is
    /// [`KmsError::NotAuthentic`], never other bytes.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn open_with(
        &self,
        kek: &KekHandle,
        route: Route,
        iv: &[u8; IV_LEN],
        aad: Vec<u8>,
        body: &[u8],
        key_id: &str,
        permit: &Permit,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let not_authentic = || KmsError::NotAuthentic(key_id.to_owned());
        let label = match kek {
            KekHandle::Memory(key) => {
                return gcm_open(key, iv, &aad, body).ok_or_else(not_authentic);
            }
            KekHandle::Token(label) => label,
        };
        if route == Route::Fast
            && let Some(secret) =
                self.inline_session().and_then(|k| k.try_decrypt(label, iv, &aad, body))
        {
            self.inline_ops.fetch_add(1, Ordering::Relaxed);
            return Ok(secret.into_inner());
        }
        self.queued_ops.fetch_add(1, Ordering::Relaxed);
        let (label, iv, body) = (label.clone(), *iv, body.to_vec());
        let opened = self
            .on_sealer(permit, move |s| match s.key_decrypt(&label, &iv, &aad, &body) {
                Err(SealError::Integrity) => Ok(None),
                r => r.map(Some),
            })
            .await?;
        opened.map(|secret| secret.into_inner()).ok_or_else(not_authentic)
    }

    /// The token's inline session, when the sealer has one and it is on.
    fn inline_session(&self) -> Option<&dyn qkeyd_drivers::seal::InlineKeys> {
        if self.inline { self.sealer.inline() } else { None }
    }

    /// Queue `op` on the sealer's thread and await it, at most its timeout.
    /// The permit is released when `op` has run, not when this returns.
    async fn on_sealer<T: Send + 'static>(
        &self,
        permit: &Permit,
        op: impl FnOnce(&mut dyn Sealer) -> Result<T, SealError> + Send + 'static,
    ) -> Result<T, KmsError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let permit = permit.clone();
        self.sealer.submit(op, move |r| {
            drop(permit);
            let _ = tx.send(r);
        });
        let timeout = self.sealer.timeout();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => Ok(r?),
            Ok(Err(_)) => Err(KmsError::TaskLost),
            Err(_) => Err(KmsError::TooSlow(timeout)),
        }
    }

    /// A sealed KEK's value if it was unsealed within `kek_cache` (no I/O).
    pub(super) fn cached_kek(&self, key_id: &str) -> Option<Zeroizing<[u8; 32]>> {
        let cache = lock(&self.unsealed);
        let c = cache.get(key_id)?;
        (c.at.elapsed() < self.kek_cache).then(|| c.key.clone())
    }

    /// Forget the unsealed value of `key_id` (it was retired).
    pub(super) fn forget_kek(&self, key_id: &str) {
        lock(&self.unsealed).remove(key_id);
    }

    /// The unsealed value of a sealed KEK, from memory if unsealed within
    /// `kek_cache` (and `fresh` is false). Blocks on the sealer.
    pub(super) fn unseal_kek(
        &self,
        record: &KekRecord,
        fresh: bool,
    ) -> Result<Zeroizing<[u8; 32]>, KmsError> {
        let KekLocation::Sealed { sealed } = &record.kek else {
            return Err(KmsError::Seal(SealError::Unsupported("unsealing a token key")));
        };
        // Nothing stays past its time, used or not.
        lock(&self.unsealed).retain(|_, c| c.at.elapsed() < self.kek_cache);
        if !fresh && let Some(key) = self.cached_kek(&record.key_id) {
            return Ok(key);
        }
        let (s, a) = (sealed.clone(), kek_aad(&record.key_id));
        let secret = match self.sealer.call(move |x| x.unseal(&s, &a)) {
            Ok(s) => s,
            Err(e) => {
                self.forget_kek(&record.key_id);
                return Err(e.into());
            }
        };
        if secret.expose().len() != 32 {
            return Err(KmsError::KekLength(record.key_id.clone()));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(secret.expose());
        // Not for a KEK retired while it was being unsealed.
        if !self.kek_cache.is_zero() && lock(&self.file).get(&record.key_id).is_some() {
            lock(&self.unsealed)
                .insert(record.key_id.clone(), Cached { at: Instant::now(), key: key.clone() });
        }
        Ok(key)
    }
}
