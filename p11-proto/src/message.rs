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
    /// Log this connection in: as the user, or as the security officer (`so`).
    Login {
        /// Log in as the security officer.
        so: bool,
        /// The PIN.
        pin: Secret,
    },
    /// Set the user PIN (the security officer, logged in).
    InitPin {
        /// The new user PIN.
        pin: Secret,
    },
    /// Change the PIN of the role logged in (the user PIN if none is).
    SetPin {
        /// The current PIN.
        old: Secret,
        /// The new PIN.
        new: Secret,
    },
    /// Wrong-PIN counts and lockouts, for the token's PIN flags.
    PinState,
    /// The token objects that are not keys (data, certificates, public keys)
    /// this connection may see: private ones only when the user is logged in.
    ListObjects,
    /// Store a token object: a new one (`id` empty) or a replacement.
    PutObject {
        /// The object's id (from [`StoredObject`]), or empty for a new one.
        id: String,
        /// A private object (CKA_PRIVATE).
        private: bool,
        /// Its attributes.
        attrs: Vec<Attribute>,
    },
    /// Destroy a token object.
    DestroyObject {
        /// The object's id.
        id: String,
    },
    /// A fresh secret key of `len` bytes from the pool, held by the daemon
    /// for this connection (CKM_AES_KEY_GEN of a sensitive key).
    GenerateSecret {
        /// Its length in bytes.
        len: u32,
    },
    /// ML-KEM decapsulate, the shared secret kept by the daemon.
    DecapsulateKept {
        /// Key reference.
        key: String,
        /// The ciphertext.
        ct: Vec<u8>,
    },
    /// ML-KEM encapsulate to a key, the shared secret kept by the daemon.
    EncapsulateKept {
        /// Key reference.
        key: String,
    },
    /// ML-KEM encapsulate to a public key the application imported.
    EncapsulateTo {
        /// Parameter set.
        alg: Algorithm,
        /// The encapsulation key.
        public_key: Vec<u8>,
        /// Keep the shared secret in the daemon (answer `EncapsulatedKept`).
        keep: bool,
    },
    /// ML-DSA verify with a public key the application imported.
    VerifyWith {
        /// Parameter set.
        alg: Algorithm,
        /// The public key.
        public_key: Vec<u8>,
        /// The message.
        msg: Vec<u8>,
        /// The context string.
        ctx: Vec<u8>,
        /// The signature.
        sig: Vec<u8>,
    },
    /// HKDF (RFC 5869) from a secret key.
    Derive {
        /// The base key.
        base: KeySource,
        /// The hash: SHA-256, SHA-384 or SHA-512.
        prf: Prf,
        /// Run the extract step.
        extract: bool,
        /// Run the expand step.
        expand: bool,
        /// The salt (empty: HashLen zero bytes).
        salt: Vec<u8>,
        /// The expand step's info.
        info: Vec<u8>,
        /// Output bytes (≤ [`MAX_SECRET`](crate::MAX_SECRET)).
        len: u32,
        /// Keep the output in the daemon (answer `Secret`), else return it.
        keep: bool,
    },
    /// AES-GCM (NIST SP 800-38D) encrypt or decrypt.
    AesGcm {
        /// The key.
        key: KeySource,
        /// Encrypt (else decrypt).
        encrypt: bool,
        /// The IV (12 bytes).
        iv: Vec<u8>,
        /// Additional authenticated data.
        aad: Vec<u8>,
        /// Plaintext, or ciphertext with its 16-byte tag.
        data: Vec<u8>,
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

/// The secret key an operation uses.
#[derive(Debug, PartialEq, Eq)]
pub enum KeySource {
    /// One the daemon holds for this connection (`k/N`).
    Held(String),
    /// One the module holds (not sensitive), sent with the request.
    Value(Secret),
}

/// HKDF's hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prf {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// One attribute of a stored object: its CK_ATTRIBUTE_TYPE and value.
pub type Attribute = (u64, Vec<u8>);

/// A token object that is not a key, as the daemon keeps it: opaque
/// attributes, which the module checked when it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    /// The daemon's id for it.
    pub id: String,
    /// A private object: listed only to a logged-in user.
    pub private: bool,
    /// Its attributes.
    pub attrs: Vec<Attribute>,
}

/// One role's wrong-PIN state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinCount {
    /// Wrong PINs since the last right one.
    pub failures: u32,
    /// Wrong PINs that pause logins.
    pub tries: u32,
    /// Logins are paused now.
    pub locked: bool,
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
    /// A new PIN outside the allowed lengths.
    PinLength,
    /// The PIN is kept where the daemon cannot change it (an environment
    /// variable, a read-only file).
    PinFixed,
    /// The request needs the security officer logged in.
    NotSoLoggedIn,
    /// More token objects, or a bigger one, than the daemon keeps.
    TooLarge,
    /// The ciphertext or its tag is not authentic.
    AuthFailed,
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
    /// Answer to `PinState`.
    PinState {
        /// The user PIN.
        user: PinCount,
        /// The security officer's PIN.
        so: PinCount,
    },
    /// Answer to `ListObjects`.
    Objects(Vec<StoredObject>),
    /// Answer to `PutObject`: the object's id.
    ObjectId(String),
    /// A secret key the daemon holds for this connection.
    Secret {
        /// Its reference (`k/N`).
        key: String,
        /// Its length in bytes.
        len: u32,
    },
    /// Answer to `EncapsulateKept` (and `EncapsulateTo` with `keep`).
    EncapsulatedKept {
        /// The ciphertext.
        ct: Vec<u8>,
        /// The shared secret's reference.
        key: String,
    },
    /// Answer to `AesGcm`.
    Output(Vec<u8>),
    /// The request failed.
    Error {
        /// Why.
        code: ErrorCode,
        /// For logs and the application's diagnostics: never a secret.
        message: String,
    },
}
