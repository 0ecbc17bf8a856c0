//! Token keys: the template of every AES-256 key qkeyd makes, finding and
//! destroying keys by label, the per-connection handle cache, and AES-GCM
//! inside the token.

use cryptoki::{
    error::{Error as CkError, RvError},
    mechanism::{Mechanism, aead::GcmParams},
    object::{Attribute, KeyType, ObjectClass, ObjectHandle},
    session::Session,
};

use super::{Pkcs11Sealer, TAG_BITS, map_err};
use crate::Error;

/// Least time between reconnects caused by a key not found.
const MISS_RECONNECT: std::time::Duration = std::time::Duration::from_secs(2);

impl Pkcs11Sealer {
    /// The handle of the secret key `label`, cached; `ObjectGone` if absent.
    fn key_handle(&mut self, label: &str) -> Result<ObjectHandle, Error> {
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
        let h = found.ok_or(Error::ObjectGone { backend: "pkcs11", object: label.to_owned() })?;
        self.handles.insert(label.to_owned(), h);
        Ok(h)
    }

    /// Run `op` with the handle of key `label`. A handle that went stale (the
    /// key was destroyed behind our back) is looked up once more.
    pub(super) fn with_key<T>(
        &mut self,
        label: &str,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, CkError>,
        map: fn(CkError) -> Error,
    ) -> Result<T, Error> {
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
        Err(Error::ObjectGone { backend: "pkcs11", object: label.to_owned() })
    }

    /// The token object (never a session copy, see
    /// [`InlineKey`](super::inline::InlineKey)) of the secret key labelled
    /// `label`.
    pub(super) fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, Error> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        Ok(session.find_objects(&template).map_err(map_err)?.into_iter().next())
    }

    /// Destroy every secret key labelled `label` (none is not an error).
    pub(super) fn destroy_all(session: &Session, label: &str) -> Result<(), Error> {
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
pub(super) fn aes_key_template(label: &str, value: Attribute) -> [Attribute; 10] {
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

/// AES-256-GCM (128-bit tag) of `plaintext` under `key`, inside the token.
pub(super) fn gcm_encrypt(
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
pub(super) fn gcm_decrypt(
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
pub(super) fn decrypt_error(e: CkError) -> Error {
    match e {
        CkError::Pkcs11(RvError::FunctionFailed | RvError::GeneralError, _) => Error::Integrity,
        other => map_err(other),
    }
}
