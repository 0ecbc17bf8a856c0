//! The messages: what the module asks ([`Request`]), what the daemon answers
//! ([`Response`]), the keys it describes ([`KeyEntry`]) and why it refuses
//! ([`ErrorCode`]). Their encoding is in `codec.rs`.

use crate::{Algorithm, Secret};

/// A key as the daemon describes it: public parts only. `key` names it in
/// later requests (`ID/VERSION` for a vault key, `s/N` for a connection's
/// session key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// The reference to use in requests.
    pub key: String,
    /// Parameter set.
    pub alg: Algorithm,
    /// Label.
    pub label: String,
    /// Kept in the vault (true) or only for this connection.
    pub token: bool,
    /// Encoded public key.
    pub public_key: Vec<u8>,
}

/// What the module asks.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// First request on a connection.
    Hello {
        /// The module's [`VERSION`](crate::VERSION).
        version: u32,
    },
    /// `len` (≤ [`MAX_SEED`](crate::MAX_SEED)) bytes from the health-tested pool, to seed the
    /// module's DRBG.
    Seed {
        /// How many bytes.
        len: u32,
    },
    /// Log this connection in with the token PIN.
    Login {
        /// The PIN.
        pin: Secret,
    },
    /// Log out; session keys stay until the connection closes.
    Logout,
    /// The vault's keys (current versions).
    List,
    /// Make a key pair: in the vault (`token`) or for this connection only.
    Generate {
        /// Parameter set.
        alg: Algorithm,
        /// Keep it in the vault.
        token: bool,
        /// Label.
        label: String,
    },
    /// ML-DSA sign.
    Sign {
        /// Key reference.
        key: String,
        /// The message M.
        msg: Vec<u8>,
        /// The FIPS 204 context string (≤ 255 bytes).
        ctx: Vec<u8>,
        /// rnd = 0 (FIPS 204 deterministic variant) instead of fresh randomness.
        deterministic: bool,
    },
    /// ML-DSA verify.
    Verify {
        /// Key reference.
        key: String,
        /// The message.
        msg: Vec<u8>,
        /// The context string.
        ctx: Vec<u8>,
        /// The signature.
        sig: Vec<u8>,
    },
    /// ML-KEM encapsulate to a key.
    Encapsulate {
        /// Key reference.
        key: String,
    },
    /// ML-KEM decapsulate.
    Decapsulate {
        /// Key reference.
        key: String,
        /// The ciphertext.
        ct: Vec<u8>,
    },
    /// Destroy a key (every version of a vault key).
    Destroy {
        /// Key reference.
        key: String,
    },
}

/// Why the daemon refused; the module maps each to a CK_RV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Malformed or out-of-range request.
    BadRequest,
    /// No such key.
    NotFound,
    /// The request needs a logged-in connection.
    NotLoggedIn,
    /// Wrong PIN.
    PinIncorrect,
    /// Too many wrong PINs: refused for a while.
    PinLocked,
    /// No health-tested entropy, or the sealer cannot be reached.
    Unavailable,
    /// The key cannot do that (kind of key, or a bad input for it).
    KeyMismatch,
    /// Anything else.
    Internal,
}

/// What the daemon answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Response {
    /// Answer to `Hello`.
    Hello {
        /// The daemon's [`VERSION`](crate::VERSION).
        version: u32,
        /// The daemon's software version.
        daemon: String,
        /// A stable token serial (from the state directory).
        serial: String,
    },
    /// Answer to `Seed`.
    Seed(Secret),
    /// Done, nothing to return.
    Done,
    /// Answer to `List`.
    Keys(Vec<KeyEntry>),
    /// Answer to `Generate`.
    Key(KeyEntry),
    /// Answer to `Sign`.
    Signature(Vec<u8>),
    /// Answer to `Verify`.
    Verified(bool),
    /// Answer to `Encapsulate`.
    Encapsulated {
        /// The ciphertext.
        ct: Vec<u8>,
        /// The shared secret.
        secret: Secret,
    },
    /// Answer to `Decapsulate`.
    SharedSecret(Secret),
    /// The request failed.
    Error {
        /// Why.
        code: ErrorCode,
        /// For logs and the application's diagnostics: never a secret.
        message: String,
    },
}
