//! The PKCS#11 sealer: the HSM encrypts each seed under a key of its own.
//!
//! For every sealed secret a fresh AES-256 key is generated inside the token
//! (`CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`), labelled
//! with the record's name, and used exactly once, for one AES-GCM encryption
//! with the record's associated data as AAD. Because each key encrypts one
//! message, a fixed IV is safe. Destroying the record destroys the key: any
//! copy of the blob (a backup) is then useless.
//!
//! The same token also holds long-lived key-encryption keys (the `key_*`
//! methods of [`Sealer`]: the KMS plugin's KEKs). Their values come from the
//! caller (qkeyd's health-tested pool) and go into the token once, as
//! sensitive, non-extractable objects; every encryption under them is
//! AES-GCM inside the token with an IV the caller draws fresh.
//!
//! The session is opened lazily and reopened after the token went away; a
//! reconnect re-initialises the library so that a token that came back is
//! seen again. Object handles found by label are cached per connection.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error as CkError, RvError},
    mechanism::{Mechanism, aead::GcmParams},
    object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle},
    session::{Session, UserType},
    types::AuthPin,
};
use zeroize::Zeroizing;

use super::{InlineKeys, SealError, Sealed, Sealer, Secret};

const TAG_BITS: u64 = 128;
/// Least time between reconnects caused by a key not found.
const MISS_RECONNECT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a reconnect waits for a caller inside the inline session.
const INLINE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
/// The IV of every encryption: each key encrypts exactly one message.
const IV: [u8; 12] = *b"qkeyd-seal-1";

/// Where the token is and how to log in.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The user PIN. Never logged or printed.
    pub pin: Zeroizing<String>,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .finish_non_exhaustive()
    }
}

struct Connection {
    // Field order: the session closes before the library is finalised.
    session: Session,
    slot: cryptoki::slot::Slot,
    _ctx: Pkcs11,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The session [`InlineKeys`] callers share: opened by the sealer's thread
/// beside its own (the login is the token's, so it needs none of its own),
/// and closed before that connection goes, so the library can be unloaded
/// and loaded again.
struct InlineSession {
    session: Session,
    keys: HashMap<String, InlineKey>,
    /// The [`Pkcs11Inline::epoch`] `keys` was filled in.
    epoch: u64,
}

/// A token key as the inline session uses it.
#[derive(Clone, Copy)]
struct InlineKey {
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
    fn catch_up(&mut self, epoch: u64) -> bool {
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
struct Pkcs11Inline {
    slot: Mutex<Option<InlineSession>>,
    /// Bumped when a key is made or destroyed: the session then drops its
    /// copies and handles, at once if it is free, else when the caller
    /// inside finishes (it looks again before letting go).
    epoch: std::sync::atomic::AtomicU64,
    /// Operations served from a session copy.
    from_copy: std::sync::atomic::AtomicU64,
}

impl Pkcs11Inline {
    /// The session's lock, waiting at most `wait` for a caller inside (a
    /// caller that panicked inside leaves the session itself usable).
    fn lock_within(
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
        map: fn(CkError) -> SealError,
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
                    SealError::Integrity => {}
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

/// A token reached through a PKCS#11 module.
pub struct Pkcs11Sealer {
    config: Pkcs11Config,
    conn: Option<Connection>,
    /// The second session, for [`InlineKeys`] callers.
    inline: Arc<Pkcs11Inline>,
    /// Key handles by label, valid for the current connection only.
    handles: std::collections::HashMap<String, ObjectHandle>,
    /// When a missing key last made us reconnect (see `key_handle`).
    miss_reconnect: Option<std::time::Instant>,
}

impl std::fmt::Debug for Pkcs11Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Sealer")
            .field("config", &self.config)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

fn map_err(e: CkError) -> SealError {
    match e {
        CkError::Pkcs11(rv, f) => match rv {
            RvError::PinIncorrect | RvError::PinLenRange | RvError::PinLocked => {
                SealError::Auth(format!("{f}: {rv:?}"))
            }
            RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::SlotIdInvalid
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized => SealError::Unavailable(format!("{f}: {rv:?}")),
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange => SealError::Integrity,
            _ => SealError::Backend(format!("{f}: {rv:?}")),
        },
        other => SealError::Backend(other.to_string()),
    }
}

/// AES-256-GCM (128-bit tag) of `plaintext` under `key`, inside the token.
fn gcm_encrypt(
    session: &Session,
    key: ObjectHandle,
    iv: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CkError> {
    let mut iv = *iv;
    let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
    session.encrypt(&Mechanism::AesGcm(params), key, plaintext)
}

/// The inverse of [`gcm_encrypt`]; see [`decrypt_error`] for its failures.
fn gcm_decrypt(
    session: &Session,
    key: ObjectHandle,
    iv: &[u8; 12],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, CkError> {
    let mut iv = *iv;
    let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
    session.decrypt(&Mechanism::AesGcm(params), key, ciphertext)
}

/// A failed [`gcm_decrypt`]: a wrong tag is CKR_ENCRYPTED_DATA_INVALID, or a
/// general failure in some tokens.
fn decrypt_error(e: CkError) -> SealError {
    match e {
        CkError::Pkcs11(RvError::FunctionFailed | RvError::GeneralError, _) => SealError::Integrity,
        other => map_err(other),
    }
}

impl Pkcs11Sealer {
    /// A sealer for the token `config.token_label`; connects now so that a
    /// wrong module, label or PIN is reported at start-up.
    pub fn open(config: Pkcs11Config) -> Result<Self, SealError> {
        let mut s = Self {
            config,
            conn: None,
            inline: Arc::default(),
            handles: Default::default(),
            miss_reconnect: None,
        };
        s.session()?;
        Ok(s)
    }

    /// Drop the connection, so the next call reconnects: the inline session
    /// first (the library cannot be loaded afresh while any session of it
    /// lives). A caller still inside the inline session gets
    /// [`INLINE_WAIT`]; if it is still there (a hung token), the connection
    /// stays for now and the next failure tries again, so this thread is
    /// never stuck behind it.
    fn disconnect(&mut self) {
        let Some(mut g) = self.inline.lock_within(INLINE_WAIT) else { return };
        *g = None;
        drop(g);
        self.conn = None;
        self.handles.clear();
    }

    /// A key was made or destroyed: the inline session drops its copies and
    /// handles, now if it is free within [`INLINE_WAIT`], else when its
    /// caller finishes (see [`Pkcs11Inline::run`]).
    fn forget_inline(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.inline.epoch.fetch_add(1, SeqCst);
        let Some(mut g) = self.inline.lock_within(INLINE_WAIT) else { return };
        if let Some(inline) = g.as_mut()
            && !inline.catch_up(self.inline.epoch.load(SeqCst))
        {
            *g = None;
        }
    }

    fn connect(config: &Pkcs11Config) -> Result<Connection, SealError> {
        let module: &Path = &config.module;
        let ctx = Pkcs11::new(module).map_err(|e| {
            SealError::Backend(format!("cannot load PKCS#11 module {}: {e}", module.display()))
        })?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).map_err(map_err)?;
        let mut found = None;
        for slot in ctx.get_slots_with_token().map_err(map_err)? {
            let info = ctx.get_token_info(slot).map_err(map_err)?;
            if info.label().trim_end() == config.token_label {
                found = Some(slot);
                break;
            }
        }
        let slot = found.ok_or_else(|| {
            SealError::Unavailable(format!("no token labelled {:?}", config.token_label))
        })?;
        let session = ctx.open_rw_session(slot).map_err(map_err)?;
        let pin = AuthPin::from(config.pin.as_str());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(map_err(e)),
        }
        Ok(Connection { session, slot, _ctx: ctx })
    }

    fn session(&mut self) -> Result<&Session, SealError> {
        if self.conn.is_none() {
            let conn = Self::connect(&self.config)?;
            // Without a second session the inline path just stays closed.
            if let Ok(session) = conn._ctx.open_rw_session(conn.slot) {
                let epoch = self.inline.epoch.load(std::sync::atomic::Ordering::SeqCst);
                *lock(&self.inline.slot) =
                    Some(InlineSession { session, keys: HashMap::new(), epoch });
            }
            self.conn = Some(conn);
        }
        match &self.conn {
            Some(c) => Ok(&c.session),
            None => Err(SealError::Unavailable("not connected".into())),
        }
    }

    /// Run `op` on the session; on a transient failure, drop the connection so
    /// the next call reconnects.
    fn with_session<T>(
        &mut self,
        op: impl FnOnce(&Session) -> Result<T, SealError>,
    ) -> Result<T, SealError> {
        let result = self.session().and_then(op);
        if let Err(e) = &result
            && e.is_transient()
        {
            self.disconnect();
        }
        result
    }

    /// The handle of the secret key `label`, cached; `ObjectGone` if absent.
    fn key_handle(&mut self, label: &str) -> Result<ObjectHandle, SealError> {
        if let Some(&h) = self.handles.get(label) {
            return Ok(h);
        }
        let mut found = self.with_session(|session| Self::find_key(session, label))?;
        // A token that was removed and put back is only seen again through a
        // new connection: look once more on one, but not more than every few
        // seconds (a reconnect logs in again; a burst of calls for a key that
        // is really gone must not hammer the token).
        let due = self.miss_reconnect.is_none_or(|t| t.elapsed() >= MISS_RECONNECT);
        if found.is_none() && due {
            self.miss_reconnect = Some(std::time::Instant::now());
            self.disconnect();
            found = self.with_session(|session| Self::find_key(session, label))?;
        }
        let h =
            found.ok_or(SealError::ObjectGone { backend: "pkcs11", object: label.to_owned() })?;
        self.handles.insert(label.to_owned(), h);
        Ok(h)
    }

    /// Run `op` with the handle of key `label`. A handle that went stale (the
    /// key was destroyed behind our back) is looked up once more.
    fn with_key<T>(
        &mut self,
        label: &str,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
        map: fn(CkError) -> SealError,
    ) -> Result<T, SealError> {
        for attempt in 0..2 {
            let h = self.key_handle(label)?;
            match self.with_session(|session| Ok(op(session, h))) {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(CkError::Pkcs11(
                    RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
                    _,
                ))) if attempt == 0 => {
                    self.handles.remove(label);
                }
                Ok(Err(e)) => {
                    let e = map(e);
                    if e.is_transient() {
                        self.disconnect();
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        self.handles.remove(label);
        Err(SealError::ObjectGone { backend: "pkcs11", object: label.to_owned() })
    }

    /// The token object (never a session copy, see [`InlineKey`]) of the
    /// secret key labelled `label`.
    fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, SealError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        Ok(session.find_objects(&template).map_err(map_err)?.into_iter().next())
    }

    /// Destroy every secret key labelled `label` (none is not an error).
    fn destroy_all(session: &Session, label: &str) -> Result<(), SealError> {
        while let Some(key) = Self::find_key(session, label)? {
            session.destroy_object(key).map_err(map_err)?;
        }
        Ok(())
    }
}

/// The attributes of every AES-256 key qkeyd makes in the token: a token
/// object, private, sensitive, never extractable, for encryption and
/// decryption. `value` is the key's value (imported) or its length
/// (generated in the token).
fn aes_key_template(label: &str, value: Attribute) -> [Attribute; 10] {
    [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        value,
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

impl Drop for Pkcs11Sealer {
    fn drop(&mut self) {
        // The inline session may be shared beyond this sealer: close it now
        // (waiting for a caller inside, as nothing else will close it), so
        // the library is unloaded with this sealer.
        *lock(&self.inline.slot) = None;
    }
}

impl Sealer for Pkcs11Sealer {
    fn inline_keys(&mut self) -> Option<Arc<dyn InlineKeys>> {
        Some(self.inline.clone())
    }

    fn kind(&self) -> &'static str {
        "pkcs11"
    }

    fn seal(&mut self, name: &str, aad: &[u8], secret: &[u8]) -> Result<Sealed, SealError> {
        let label = name.to_owned();
        self.with_session(|session| {
            // A leftover key of the same name (a crash between key creation
            // and the record reaching disk) is replaced.
            Self::destroy_all(session, &label)?;
            let template = aes_key_template(&label, Attribute::ValueLen(32.into()));
            let key = session.generate_key(&Mechanism::AesKeyGen, &template).map_err(map_err)?;
            let blob = gcm_encrypt(session, key, &IV, aad, secret).map_err(map_err)?;
            Ok(Sealed { backend: "pkcs11".into(), object: Some(label.clone()), blob })
        })
    }

    fn unseal(&mut self, sealed: &Sealed, aad: &[u8]) -> Result<Secret, SealError> {
        if sealed.backend != self.kind() {
            return Err(SealError::Malformed(format!(
                "sealed by {:?}, not pkcs11",
                sealed.backend
            )));
        }
        let Some(label) = sealed.object.clone() else {
            return Err(SealError::Malformed("no HSM key named".into()));
        };
        if sealed.blob.len() < (TAG_BITS / 8) as usize {
            return Err(SealError::Malformed(format!("blob of {} bytes", sealed.blob.len())));
        }
        self.with_session(|session| {
            let key = Self::find_key(session, &label)?
                .ok_or(SealError::ObjectGone { backend: "pkcs11", object: label.clone() })?;
            gcm_decrypt(session, key, &IV, aad, &sealed.blob)
                .map(|pt| Secret(Zeroizing::new(pt)))
                .map_err(decrypt_error)
        })
    }

    fn destroy(&mut self, sealed: &Sealed) -> Result<(), SealError> {
        let Some(label) = sealed.object.clone() else { return Ok(()) };
        self.with_session(|session| Self::destroy_all(session, &label))
    }

    fn check(&mut self) -> Result<(), SealError> {
        self.with_session(|session| session.get_session_info().map(|_| ()).map_err(map_err))
    }

    fn holds_keys(&self) -> bool {
        true
    }

    fn key_create(&mut self, name: &str, value: &[u8]) -> Result<(), SealError> {
        if value.len() != 32 {
            return Err(SealError::Backend(format!(
                "an AES-256 key is 32 bytes, not {}",
                value.len()
            )));
        }
        self.handles.remove(name);
        let label = name.to_owned();
        let value = Zeroizing::new(value.to_vec());
        let r = self.with_session(|session| {
            Self::destroy_all(session, &label)?;
            let mut template = aes_key_template(&label, Attribute::Value(value.to_vec()));
            let created = session.create_object(&template).map(|_| ()).map_err(map_err);
            for a in &mut template {
                if let Attribute::Value(v) = a {
                    zeroize::Zeroize::zeroize(v);
                }
            }
            created
        });
        // After the token changed, so no copy of a replaced key survives.
        self.forget_inline();
        r
    }

    fn key_encrypt(
        &mut self,
        name: &str,
        iv: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        self.with_key(name, |session, key| gcm_encrypt(session, key, iv, aad, plaintext), map_err)
    }

    fn key_decrypt(
        &mut self,
        name: &str,
        iv: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Secret, SealError> {
        if ciphertext.len() < (TAG_BITS / 8) as usize {
            return Err(SealError::Integrity);
        }
        let pt = self.with_key(
            name,
            |session, key| gcm_decrypt(session, key, iv, aad, ciphertext),
            decrypt_error,
        )?;
        Ok(Secret(Zeroizing::new(pt)))
    }

    fn key_destroy(&mut self, name: &str) -> Result<(), SealError> {
        self.handles.remove(name);
        let label = name.to_owned();
        let r = self.with_session(|session| Self::destroy_all(session, &label));
        // After the token object went, so no copy of it survives.
        self.forget_inline();
        r
    }
}
