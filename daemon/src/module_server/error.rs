//! Why a module request failed, and the one mapping of that to the wire.

use qkeyd_p11_proto::{self as proto, ErrorCode, Response};

use crate::{
    incident::{Chain, Incident},
    objects::ObjectError,
    pool::PoolError,
    vault::{self, VaultError},
};

/// Why a request from the module failed. Messages name keys and limits,
/// never a PIN or key material.
#[derive(Debug, thiserror::Error)]
pub(super) enum ModuleError {
    /// A private operation before a login.
    #[error("log in with the token PIN first")]
    NotLoggedIn,
    /// Logins pause after too many wrong PINs.
    #[error("too many wrong PINs: logins pause for {0} s")]
    PinLocked(u64),
    /// The PIN is wrong.
    #[error("wrong PIN")]
    PinIncorrect,
    /// A new PIN outside the lengths a PIN may have, or not UTF-8.
    #[error("a PIN is 4..={max} bytes of UTF-8", max = proto::MAX_PIN)]
    PinLength,
    /// The PIN is kept where qkeyd cannot change it.
    #[error("the PIN comes from {0}, which qkeyd cannot change: change it there")]
    PinFixed(String),
    /// An SO function without the security officer logged in.
    #[error("log in as the security officer first")]
    NotSoLoggedIn,
    /// A secret key length outside what the daemon holds or derives.
    #[error("a secret key is 1..={max} bytes, not {0}", max = proto::MAX_SECRET)]
    SecretLength(usize),
    /// HKDF parameters that do not fit.
    #[error("HKDF: {0}")]
    Hkdf(&'static str),
    /// AES-GCM parameters that do not fit.
    #[error("AES-GCM: {0}")]
    Gcm(&'static str),
    /// The ciphertext or its tag is not authentic.
    #[error("AES-GCM: the ciphertext or its tag is not authentic")]
    AuthFailed,
    /// A token object that is not one the token keeps: not a data object,
    /// certificate or public key, a CKA_PRIVATE that disagrees, or a trusted
    /// certificate from anyone but the security officer.
    #[error("not a token object qkeyd keeps (class, CKA_PRIVATE or CKA_TRUSTED)")]
    BadObject,
    /// A token object could not be stored, found or destroyed.
    #[error(transparent)]
    Objects(#[from] ObjectError),
    /// The module speaks another protocol version.
    #[error(
        "protocol version {0}; this qkeyd speaks {v}: use the module that came with it",
        v = proto::VERSION
    )]
    Version(u32),
    /// A seed request outside the limits.
    #[error("seed length must be 1..={max}", max = proto::MAX_SEED)]
    SeedLength,
    /// The connection holds as many session keys as it may.
    #[error("at most {0} session keys per application")]
    TooManySessionKeys(usize),
    /// A label longer than the vault keeps.
    #[error("label longer than {max} bytes", max = vault::MAX_LABEL)]
    LabelLength,
    /// A key reference that names no key (shown truncated).
    #[error("no such key: {0:?}")]
    NoSuchKey(String),
    /// A frame whose framing is intact but whose payload does not decode.
    #[error(transparent)]
    Decode(proto::DecodeError),
    /// No health-tested entropy.
    #[error("no health-tested entropy")]
    Entropy(#[source] PoolError),
    /// A key operation refused its input.
    #[error(transparent)]
    Alg(qkeyd_pqc::Error),
    /// The vault failed.
    #[error(transparent)]
    Vault(VaultError),
}

impl ModuleError {
    /// No such key: `key`, truncated for the message.
    pub(super) fn no_such_key(key: &str) -> Self {
        Self::NoSuchKey(key.chars().take(80).collect())
    }

    fn code(&self) -> ErrorCode {
        match self {
            Self::NotLoggedIn => ErrorCode::NotLoggedIn,
            Self::PinLength => ErrorCode::PinLength,
            Self::PinFixed(_) => ErrorCode::PinFixed,
            Self::NotSoLoggedIn => ErrorCode::NotSoLoggedIn,
            Self::SecretLength(_) | Self::Hkdf(_) | Self::Gcm(_) | Self::BadObject => {
                ErrorCode::BadRequest
            }
            Self::AuthFailed => ErrorCode::AuthFailed,
            Self::Objects(e) => match e {
                ObjectError::TooMany(_) | ObjectError::TooLarge(_) => ErrorCode::TooLarge,
                ObjectError::NotFound(_) => ErrorCode::NotFound,
                ObjectError::Store(..) | ObjectError::Audit(_) => ErrorCode::Internal,
            },
            Self::PinLocked(_) => ErrorCode::PinLocked,
            Self::PinIncorrect => ErrorCode::PinIncorrect,
            Self::Version(_)
            | Self::SeedLength
            | Self::TooManySessionKeys(_)
            | Self::LabelLength
            | Self::Decode(_) => ErrorCode::BadRequest,
            Self::NoSuchKey(_) => ErrorCode::NotFound,
            Self::Entropy(_) => ErrorCode::Unavailable,
            Self::Alg(e) => alg_code(e),
            Self::Vault(e) => match e {
                VaultError::Label | VaultError::DeriveLength(_) | VaultError::Reserved(_) => {
                    ErrorCode::BadRequest
                }
                VaultError::NoSuchKey { .. } => ErrorCode::NotFound,
                VaultError::Alg(a) => alg_code(a),
                VaultError::Seal(_) | VaultError::Entropy(_) => ErrorCode::Unavailable,
                VaultError::Store(_) | VaultError::AuditLog(_) => ErrorCode::Internal,
            },
        }
    }

    /// The answer the module gets. A failure of the daemon's own is logged
    /// with an incident id, and the module gets only that id (it becomes
    /// `CKR_GENERAL_ERROR`).
    pub(super) fn into_response(self) -> Response {
        let code = self.code();
        let message = match code {
            ErrorCode::Internal => {
                let id = Incident::log("PKCS#11 module request failed", &self);
                format!("internal error (incident {id} in qkeyd's log)")
            }
            ErrorCode::Unavailable => {
                tracing::warn!(error = %Chain(&self), "PKCS#11 module request failed");
                Chain(&self).to_string()
            }
            _ => Chain(&self).to_string(),
        };
        Response::Error { code, message: fit(message) }
    }
}

/// `message` cut (at a character boundary) to what the module accepts.
fn fit(mut message: String) -> String {
    let max = qkeyd_p11_proto::MAX_ERROR_MESSAGE;
    if message.len() > max {
        let cut = (0..=max).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
        message.truncate(cut);
    }
    message
}

fn alg_code(e: &qkeyd_pqc::Error) -> ErrorCode {
    use qkeyd_pqc::Error as E;
    match e {
        E::WrongKind { .. } | E::InvalidPublicKey(_) => ErrorCode::KeyMismatch,
        E::Length { .. } | E::Context(_) => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    }
}

impl From<VaultError> for ModuleError {
    fn from(e: VaultError) -> Self {
        Self::Vault(e)
    }
}

impl From<qkeyd_pqc::Error> for ModuleError {
    fn from(e: qkeyd_pqc::Error) -> Self {
        Self::Alg(e)
    }
}

impl From<PoolError> for ModuleError {
    fn from(e: PoolError) -> Self {
        Self::Entropy(e)
    }
}
