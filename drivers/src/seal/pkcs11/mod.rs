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
//!
//! This module holds the configuration and the [`Sealer`] implementation;
//! `session.rs` connects and reconnects, `keys.rs` finds, caches and uses
//! token keys, and `inline.rs` is the second session behind [`InlineKeys`].

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use cryptoki::{
    error::{Error as CkError, RvError},
    mechanism::Mechanism,
    object::{Attribute, ObjectHandle},
};
use zeroize::Zeroizing;

use self::{
    inline::Pkcs11Inline,
    keys::{aes_key_template, decrypt_error, gcm_decrypt, gcm_encrypt},
    session::Connection,
};
use super::{InlineKeys, Sealed, Sealer, Secret};
use crate::Error;

mod inline;
mod keys;
mod session;

pub(crate) use session::initialize;

const TAG_BITS: u64 = 128;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

impl Pkcs11Sealer {
    /// A sealer for the token `config.token_label`; connects now so that a
    /// wrong module, label or PIN is reported at start-up.
    pub fn open(config: Pkcs11Config) -> Result<Self, Error> {
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

    fn token_serial(&mut self) -> Option<String> {
        self.session().ok()?;
        self.conn.as_ref().map(|c| c.serial.clone())
    }

    fn seal(&mut self, name: &str, aad: &[u8], secret: &[u8]) -> Result<Sealed, Error> {
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

    fn unseal(&mut self, sealed: &Sealed, aad: &[u8]) -> Result<Secret, Error> {
        if sealed.backend != self.kind() {
            return Err(Error::Malformed(format!("sealed by {:?}, not pkcs11", sealed.backend)));
        }
        let Some(label) = sealed.object.clone() else {
            return Err(Error::Malformed("no HSM key named".into()));
        };
        if sealed.blob.len() < (TAG_BITS / 8) as usize {
            return Err(Error::Malformed(format!("blob of {} bytes", sealed.blob.len())));
        }
        self.with_session(|session| {
            let key = Self::find_key(session, &label)?
                .ok_or(Error::ObjectGone { backend: "pkcs11", object: label.clone() })?;
            gcm_decrypt(session, key, &IV, aad, &sealed.blob)
                .map(|pt| Secret(Zeroizing::new(pt)))
                .map_err(decrypt_error)
        })
    }

    fn destroy(&mut self, sealed: &Sealed) -> Result<(), Error> {
        let Some(label) = sealed.object.clone() else { return Ok(()) };
        self.with_session(|session| Self::destroy_all(session, &label))
    }

    fn check(&mut self) -> Result<(), Error> {
        self.with_session(|session| session.get_session_info().map(|_| ()).map_err(map_err))
    }

    fn holds_keys(&self) -> bool {
        true
    }

    fn key_create(&mut self, name: &str, value: &[u8]) -> Result<(), Error> {
        if value.len() != 32 {
            return Err(Error::Backend(format!("an AES-256 key is 32 bytes, not {}", value.len())));
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
    ) -> Result<Vec<u8>, Error> {
        self.with_key(name, |session, key| gcm_encrypt(session, key, iv, aad, plaintext), map_err)
    }

    fn key_decrypt(
        &mut self,
        name: &str,
        iv: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Secret, Error> {
        if ciphertext.len() < (TAG_BITS / 8) as usize {
            return Err(Error::Integrity);
        }
        let pt = self.with_key(
            name,
            |session, key| gcm_decrypt(session, key, iv, aad, ciphertext),
            decrypt_error,
        )?;
        Ok(Secret(Zeroizing::new(pt)))
    }

    fn key_destroy(&mut self, name: &str) -> Result<(), Error> {
        self.handles.remove(name);
        let label = name.to_owned();
        let r = self.with_session(|session| Self::destroy_all(session, &label));
        // After the token object went, so no copy of it survives.
        self.forget_inline();
        r
    }
}

fn map_err(e: CkError) -> Error {
    match e {
        CkError::Pkcs11(rv, f) => match rv {
            RvError::PinIncorrect | RvError::PinLenRange | RvError::PinLocked => {
                Error::Auth(format!("{f}: {rv:?}"))
            }
            RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::SlotIdInvalid
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized => Error::SealerUnavailable(format!("{f}: {rv:?}")),
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange => Error::Integrity,
            _ => Error::Backend(format!("{f}: {rv:?}")),
        },
        other => Error::Backend(other.to_string()),
    }
}
