//! Sealers: protect a key seed at rest with a software key, an HSM or a TPM.
//!
//! A sealer turns a secret (a 32- or 64-byte key seed) and its associated data
//! (what the secret belongs to: key id, version, algorithm, fingerprint) into
//! an opaque [`Sealed`] record, and back. Unsealing with different associated
//! data, a changed record, a removed HSM key or a wrong PIN is an error, never
//! a wrong secret.
//!
//! Backends:
//! - [`soft::SoftSealer`]: AES-256-GCM under a key file. For development only:
//!   the key file is as sensitive as every key it protects.
//! - [`pkcs11::Pkcs11Sealer`]: one non-extractable, sensitive AES-256 key per
//!   sealed secret, generated inside the token; the HSM encrypts the seed with
//!   AES-GCM. Destroying the record destroys that HSM key (crypto-shredding).
//! - [`tpm::TpmSealer`] (feature `tpm`): a TPM 2.0 sealed data object under the
//!   storage primary, optionally bound to PCR values.
//!
//! Sealers are blocking and not thread-safe; [`worker::SealerWorker`] keeps one
//! on a thread of its own and gives callers timeouts.

pub mod pkcs11;
pub mod soft;
#[cfg(feature = "tpm")]
pub mod tpm;
pub mod worker;

use std::fmt;

use zeroize::Zeroizing;

use crate::Error;

/// A sealed secret as stored: the backend's name, the object it depends on
/// (an HSM key label), and the ciphertext. None of it is secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sealed {
    /// `soft`, `pkcs11` or `tpm`.
    pub backend: String,
    /// The backend object the blob needs (the HSM key's label), if any.
    pub object: Option<String>,
    /// Backend-specific ciphertext.
    #[serde(with = "b64")]
    pub blob: Vec<u8>,
}

/// A secret handed back by [`Sealer::unseal`]: zeroized on drop, never
/// printed. Not `Clone`: it is moved to where it is used.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wrap bytes a backend unsealed or decrypted.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, still zeroizing, for a caller that keeps them.
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A backend that seals secrets.
pub trait Sealer: Send {
    /// Backend name as stored in [`Sealed::backend`].
    fn kind(&self) -> &'static str;

    /// Seal `secret` bound to `aad`. `name` names the backend object, if the
    /// backend makes one (unique per record, e.g. `qkeyd/<key id>/v<n>`).
    fn seal(&mut self, name: &str, aad: &[u8], secret: &[u8]) -> Result<Sealed, Error>;

    /// Recover the secret; `aad` must be what it was sealed with.
    fn unseal(&mut self, sealed: &Sealed, aad: &[u8]) -> Result<Secret, Error>;

    /// Destroy the backend object of a record, if it has one, so that no copy
    /// of the record can be unsealed again. Destroying what is already gone is
    /// not an error.
    fn destroy(&mut self, sealed: &Sealed) -> Result<(), Error>;

    /// Check that the backend answers (and reconnect if it came back).
    fn check(&mut self) -> Result<(), Error>;

    /// The serial number of the token keys are sealed in, for backends that
    /// have one (an HSM token); evidence about a key names it.
    fn token_serial(&mut self) -> Option<String> {
        None
    }

    /// Whether the backend can hold long-lived AES-256 keys and encrypt with
    /// them itself (the `key_*` methods). Backends that cannot protect such a
    /// key by [`Sealer::seal`]ing its value instead.
    fn holds_keys(&self) -> bool {
        false
    }

    /// Create a long-lived, non-extractable AES-256 key named `name` from
    /// `value` inside the backend (replacing a leftover of the same name).
    fn key_create(&mut self, name: &str, value: &[u8]) -> Result<(), Error> {
        let _ = (name, value);
        Err(Error::Unsupported(self.kind()))
    }

    /// AES-256-GCM encryption under the key `name`, inside the backend:
    /// ciphertext ‖ 16-byte tag. The caller never reuses an `iv` with a key.
    fn key_encrypt(
        &mut self,
        name: &str,
        iv: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let _ = (name, iv, aad, plaintext);
        Err(Error::Unsupported(self.kind()))
    }

    /// The inverse of [`Sealer::key_encrypt`]; a wrong tag is
    /// [`Error::Integrity`].
    fn key_decrypt(
        &mut self,
        name: &str,
        iv: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Secret, Error> {
        let _ = (name, iv, aad, ciphertext);
        Err(Error::Unsupported(self.kind()))
    }

    /// Destroy the key `name`; destroying what is gone is not an error.
    fn key_destroy(&mut self, name: &str) -> Result<(), Error> {
        let _ = name;
        Err(Error::Unsupported(self.kind()))
    }

    /// Key operations callers may run on their own thread (see
    /// [`InlineKeys`]), if this backend offers them. Asked once, before the
    /// sealer moves to its thread.
    fn inline_keys(&mut self) -> Option<std::sync::Arc<dyn InlineKeys>> {
        None
    }
}

/// The AES-GCM of [`Sealer::key_encrypt`]/[`Sealer::key_decrypt`] on the
/// caller's own thread, through a device session of its own that the
/// sealer's thread opens and closes with its connection. A call that would
/// wait (the session busy with another caller, not open, or the key not
/// found) answers `None` at once, and so does any failure: the caller then
/// goes through the sealer's thread, with its timeout, reconnection and error
/// mapping. So a hung device holds at most one caller here; every other call
/// takes the timed path.
pub trait InlineKeys: Send + Sync {
    /// As [`Sealer::key_encrypt`], or `None`.
    fn try_encrypt(
        &self,
        name: &str,
        iv: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Option<Vec<u8>>;
    /// As [`Sealer::key_decrypt`], or `None` (a ciphertext that does not
    /// authenticate is `None` too; the sealer's thread gives the error).
    fn try_decrypt(
        &self,
        name: &str,
        iv: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Secret>;

    /// How many operations ran on a session copy of the key (see the pkcs11
    /// sealer), since start.
    fn copy_ops(&self) -> u64 {
        0
    }
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}
