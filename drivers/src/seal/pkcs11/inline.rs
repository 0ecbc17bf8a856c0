//! The inline session: a second session on the token, opened by the
//! sealer's thread beside its own, through which [`InlineKeys`] callers use
//! token keys on their own thread, one at a time, from session copies of the
//! keys where the token makes them.

use std::{collections::HashMap, sync::Mutex};

use cryptoki::{
    error::Error as CkError,
    object::{Attribute, AttributeType, ObjectHandle},
    session::Session,
};
use zeroize::Zeroizing;

use super::{
    Pkcs11Sealer, TAG_BITS,
    keys::{decrypt_error, gcm_decrypt, gcm_encrypt},
    map_err,
};
use crate::Error;
use crate::seal::{InlineKeys, Secret};

/// The session [`InlineKeys`] callers share: opened by the sealer's thread
/// beside its own (the login is the token's, so it needs none of its own),
/// and closed before that connection goes, so the library can be unloaded
/// and loaded again.
pub(super) struct InlineSession {
    pub(super) session: Session,
    pub(super) keys: HashMap<String, InlineKey>,
    /// The [`Pkcs11Inline::epoch`] `keys` was filled in.
    pub(super) epoch: u64,
}

/// A token key as the inline session uses it.
#[derive(Clone, Copy)]
pub(super) struct InlineKey {
    /// The token object.
    token: ObjectHandle,
    /// A session-object copy of it (`C_CopyObject`, CKA_TOKEN false): still
    /// inside the token, as sensitive and non-extractable as the original,
    /// and gone when this session closes. Some tokens (SoftHSM2) re-read
    /// their files on every use of a token object and not of a session
    /// object. `None` if the token would not copy it.
    copy: Option<ObjectHandle>,
    /// When an operation last went through `token`, which shows it still
    /// exists; the copy serves for [`TOKEN_RECHECK`] after that.
    checked: std::time::Instant,
}

/// How long the inline session uses a key's session copy before it makes
/// the next operation through the token object again, so a key deleted from
/// the token behind qkeyd's back stops being used within this time.
const TOKEN_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl InlineSession {
    /// Destroy every session copy and forget every handle; false if a copy
    /// could not be destroyed (the caller then closes the session, which
    /// destroys it).
    fn forget_all(&mut self) -> bool {
        let mut ok = true;
        for key in self.keys.values() {
            if let Some(copy) = key.copy {
                ok &= self.session.destroy_object(copy).is_ok();
            }
        }
        self.keys.clear();
        ok
    }

    /// Catch up with `epoch`: if keys were made or destroyed since this
    /// session's keys were filled in, drop them all; false as for
    /// [`InlineSession::forget_all`].
    pub(super) fn catch_up(&mut self, epoch: u64) -> bool {
        if self.epoch == epoch {
            return true;
        }
        self.epoch = epoch;
        self.forget_all()
    }

    /// Forget `name`'s handles, destroying its copy; false as for
    /// [`InlineSession::forget_all`].
    fn forget(&mut self, name: &str) -> bool {
        match self.keys.remove(name).and_then(|k| k.copy) {
            Some(copy) => self.session.destroy_object(copy).is_ok(),
            None => true,
        }
    }
}

/// A session copy of the token key `token` (CKA_TOKEN false), if the token
/// makes one that is still private, sensitive and never extractable. PKCS#11
/// lets a copy tighten these and never loosen them, but a token may refuse
/// to have them restated (SoftHSM2 does), so they are read back instead.
fn session_copy(session: &Session, token: ObjectHandle) -> Option<ObjectHandle> {
    let copy = session.copy_object(token, &[Attribute::Token(false)]).ok()?;
    let wanted = [
        AttributeType::Token,
        AttributeType::Private,
        AttributeType::Sensitive,
        AttributeType::Extractable,
    ];
    let safe = session.get_attributes(copy, &wanted).is_ok_and(|attrs| {
        attrs.len() == wanted.len()
            && attrs.iter().all(|a| {
                matches!(
                    a,
                    Attribute::Token(false)
                        | Attribute::Private(true)
                        | Attribute::Sensitive(true)
                        | Attribute::Extractable(false)
                )
            })
    });
    if safe {
        Some(copy)
    } else {
        let _ = session.destroy_object(copy);
        None
    }
}

/// [`InlineKeys`] for a PKCS#11 token: at most one caller at a time, by
/// `try_lock`, so a hung token holds one caller and nobody else.
#[derive(Default)]
pub(super) struct Pkcs11Inline {
    pub(super) slot: Mutex<Option<InlineSession>>,
    /// Bumped when a key is made or destroyed: the session then drops its
    /// copies and handles, at once if it is free, else when the caller
    /// inside finishes (it looks again before letting go).
    pub(super) epoch: std::sync::atomic::AtomicU64,
    /// Operations served from a session copy.
    from_copy: std::sync::atomic::AtomicU64,
}

impl Pkcs11Inline {
    /// The session's lock, waiting at most `wait` for a caller inside (a
    /// caller that panicked inside leaves the session itself usable).
    pub(super) fn lock_within(
        &self,
        wait: std::time::Duration,
    ) -> Option<std::sync::MutexGuard<'_, Option<InlineSession>>> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            match self.slot.try_lock() {
                Ok(g) => return Some(g),
                Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {
                    if std::time::Instant::now() >= deadline {
                        return None;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }

    fn run<T>(
        &self,
        name: &str,
        map: fn(CkError) -> Error,
        op: impl FnOnce(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Option<T> {
        use std::sync::atomic::Ordering::SeqCst;
        let mut guard = self.lock_within(std::time::Duration::ZERO)?;
        let inline = guard.as_mut()?;
        if !inline.catch_up(self.epoch.load(SeqCst)) {
            *guard = None;
            return None;
        }
        let key = match inline.keys.get(name) {
            Some(k) => *k,
            None => {
                let token = Pkcs11Sealer::find_key(&inline.session, name).ok()??;
                let copy = session_copy(&inline.session, token);
                // Checked just now, by finding it.
                let k = InlineKey { token, copy, checked: std::time::Instant::now() };
                inline.keys.insert(name.to_owned(), k);
                k
            }
        };
        let (handle, recheck) = match key.copy {
            Some(copy) if key.checked.elapsed() < TOKEN_RECHECK => (copy, false),
            // Through the token object, found afresh: a handle alone could
            // have been reused for another object since.
            _ => match Pkcs11Sealer::find_key(&inline.session, name) {
                Ok(Some(h)) if h == key.token => (h, true),
                _ => {
                    if !inline.forget(name) {
                        *guard = None;
                    }
                    return None;
                }
            },
        };
        let result = match op(&inline.session, handle) {
            Ok(v) => {
                if recheck {
                    if let Some(k) = inline.keys.get_mut(name) {
                        k.checked = std::time::Instant::now();
                    }
                } else {
                    self.from_copy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Some(v)
            }
            Err(e) => {
                // Whatever went wrong, the sealer's thread looks at it afresh;
                // a session-level failure also closes this session (and its
                // copies) until the sealer reconnects and opens a new one.
                match map(e) {
                    e if e.is_transient() => {
                        *guard = None;
                        return None;
                    }
                    // A ciphertext that does not authenticate says nothing
                    // about the key: keep it, or a stream of bad ones would
                    // make a copy per call.
                    Error::Integrity => {}
                    _ => {
                        if !inline.forget(name) {
                            *guard = None;
                            return None;
                        }
                    }
                }
                None
            }
        };
        // A key made or destroyed while this ran: drop the copies now rather
        // than at the next call, which may be a long way off.
        if !inline.catch_up(self.epoch.load(SeqCst)) {
            *guard = None;
        }
        result
    }
}

impl InlineKeys for Pkcs11Inline {
    fn try_encrypt(
        &self,
        name: &str,
        iv: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Option<Vec<u8>> {
        self.run(name, map_err, |session, key| gcm_encrypt(session, key, iv, aad, plaintext))
    }

    fn try_decrypt(
        &self,
        name: &str,
        iv: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Secret> {
        if ciphertext.len() < (TAG_BITS / 8) as usize {
            return None;
        }
        self.run(name, decrypt_error, |session, key| gcm_decrypt(session, key, iv, aad, ciphertext))
            .map(|pt| Secret(Zeroizing::new(pt)))
    }

    fn copy_ops(&self) -> u64 {
        self.from_copy.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, mpsc},
        time::{Duration, Instant},
    };

    use super::*;
    use crate::seal::pkcs11::session::INLINE_WAIT;

    /// Hold the session's lock on a thread of its own, as a caller inside a
    /// token operation would, until told to leave (or for `hold`).
    fn caller_inside(inline: &Arc<Pkcs11Inline>, hold: Duration) -> std::thread::JoinHandle<()> {
        let (entered, inside) = mpsc::channel();
        let inline = inline.clone();
        let t = std::thread::spawn(move || {
            let _guard = inline.lock_within(Duration::ZERO).unwrap();
            entered.send(()).unwrap();
            std::thread::sleep(hold);
        });
        inside.recv().unwrap();
        t
    }

    #[test]
    fn a_busy_session_sends_the_next_caller_away_without_waiting() {
        let inline = Arc::new(Pkcs11Inline::default());
        let t = caller_inside(&inline, Duration::from_millis(300));
        let started = Instant::now();
        assert!(inline.lock_within(Duration::ZERO).is_none(), "busy: no second caller inside");
        assert!(inline.try_encrypt("k", &[0; 12], b"", b"x").is_none());
        assert!(inline.try_decrypt("k", &[0; 12], b"", &[0; 32]).is_none());
        // Sent away at once, not after the caller inside finished.
        assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
        t.join().unwrap();
        assert!(inline.lock_within(Duration::ZERO).is_some(), "free again");
    }

    #[test]
    fn a_hung_caller_holds_the_sealer_thread_at_most_inline_wait() {
        let inline = Arc::new(Pkcs11Inline::default());
        let hung = caller_inside(&inline, Duration::from_millis(600));
        // What `disconnect` and `forget_inline` do on the sealer's thread.
        let started = Instant::now();
        assert!(inline.lock_within(INLINE_WAIT).is_none());
        let waited = started.elapsed();
        assert!(waited >= INLINE_WAIT && waited < Duration::from_millis(500), "{waited:?}");
        // The epoch still moves on, so the caller inside drops the copies
        // itself when it leaves (`run` looks at it again before unlocking).
        inline.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        hung.join().unwrap();
        assert!(inline.lock_within(INLINE_WAIT).is_some());
    }

    #[test]
    fn a_caller_that_panicked_inside_leaves_the_session_usable() {
        let inline = Arc::new(Pkcs11Inline::default());
        let poisoner = inline.clone();
        let r = std::thread::spawn(move || {
            let _guard = poisoner.lock_within(Duration::ZERO).unwrap();
            panic!("a caller panicked inside the inline session");
        })
        .join();
        assert!(r.is_err());
        assert!(inline.slot.is_poisoned());
        assert!(inline.lock_within(Duration::ZERO).is_some());
    }
}
