//! The module's state and every PKCS#11 operation, in safe Rust: `ffi`
//! turns C pointers into the arguments here and the results back.
//!
//! Locks: `state` (sessions, objects, login) is never held while talking to
//! the daemon (C_Initialize and C_Finalize excepted, which reset everything),
//! so one thread's slow signature does not stall another's sessions. The
//! DRBG takes `daemon` only to reseed (each second) or to check the
//! connection (each 100 ms), so random bytes can wait behind a daemon call
//! then. Order: `state` → `rng` → `daemon`, never backwards.
//!
//! This file holds the shared state and its helpers; the operations are in
//! `general` (C_Initialize, C_Finalize, slot and token), `session`
//! (sessions and login), `random`, `keygen`, `objects` (find, attributes,
//! destroy), `sign` (sign and verify) and `kem` (encapsulate, decapsulate).

mod cipher;
mod digest;
mod general;
mod kem;
mod keygen;
mod objects;
mod random;
mod secret;
mod session;
mod sign;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, atomic::Ordering},
};

use cryptoki_sys::*;
use qkeyd_p11_proto::{self as proto, Request, Response};

use crate::{
    client::{Daemon, EPOCH},
    object::{Class, Link, Object, Rv},
    rng::{Rng, lock},
};

pub(crate) use self::{
    cipher::{crypt, crypt_init, crypt_update, end_crypt},
    digest::{digest, digest_init, digest_key, digest_update, end_digest},
    general::{finalize, initialize, initialized, slot, token_info, token_present},
    kem::{decapsulate, encapsulate},
    keygen::generate_key_pair,
    objects::{
        copy_object, create_object, destroy, find, find_final, find_init, get_attributes,
        set_attributes,
    },
    random::{generate_random, seed_random},
    secret::{create_secret, derive_key, generate_key},
    session::{
        close_all_sessions, close_session, init_pin, login, logout, open_session, session_cancel,
        session_info, set_pin,
    },
    sign::{
        end_sign, end_verify, sign, sign_init, sign_update, verify, verify_init, verify_update,
    },
};

/// The one slot.
pub(crate) const SLOT: CK_SLOT_ID = 0;
/// The token's label.
pub(crate) const LABEL: &str = "qkeyd";
/// Longest message C_Sign and C_Verify accept: what one request may carry.
pub(crate) const MAX_DATA: usize = proto::MAX_MESSAGE;

/// The mechanisms: (type, min and max key size in bytes of the public key, flags).
/// Digests have no key: their sizes are 0. Secret key sizes are in bytes.
pub(crate) const MECHANISMS: [(CK_MECHANISM_TYPE, CK_ULONG, CK_ULONG, CK_FLAGS); 14] = [
    (CKM_ML_KEM_KEY_PAIR_GEN, 800, 1568, CKF_GENERATE_KEY_PAIR),
    (CKM_ML_KEM, 800, 1568, CKF_ENCAPSULATE | CKF_DECAPSULATE),
    (CKM_ML_DSA_KEY_PAIR_GEN, 1312, 2592, CKF_GENERATE_KEY_PAIR),
    (CKM_ML_DSA, 1312, 2592, CKF_SIGN | CKF_VERIFY),
    (CKM_SHA256, 0, 0, CKF_DIGEST),
    (CKM_SHA384, 0, 0, CKF_DIGEST),
    (CKM_SHA512, 0, 0, CKF_DIGEST),
    (CKM_SHA3_256, 0, 0, CKF_DIGEST),
    (CKM_SHA3_384, 0, 0, CKF_DIGEST),
    (CKM_SHA3_512, 0, 0, CKF_DIGEST),
    (CKM_AES_KEY_GEN, 16, 32, CKF_GENERATE),
    (CKM_AES_GCM, 16, 32, CKF_ENCRYPT | CKF_DECRYPT),
    (CKM_HKDF_DERIVE, 1, 64, CKF_DERIVE),
    (CKM_HKDF_DATA, 1, 64, CKF_DERIVE),
];

/// Everything the module holds.
pub(crate) struct Module {
    state: Mutex<Option<State>>,
    daemon: Mutex<Daemon>,
    rng: Mutex<Rng>,
}

/// The module.
pub(crate) static MODULE: Module = Module {
    state: Mutex::new(None),
    daemon: Mutex::new(Daemon::new()),
    rng: Mutex::new(Rng::new()),
};

/// A mechanism as the application passed it.
#[derive(Debug)]
pub(crate) struct Mech {
    pub(crate) mtype: CK_MECHANISM_TYPE,
    pub(crate) param: Param,
}

/// A mechanism parameter.
#[derive(Debug)]
pub(crate) enum Param {
    None,
    /// CK_SIGN_ADDITIONAL_CONTEXT.
    SignContext {
        hedge: CK_ULONG,
        context: Vec<u8>,
    },
    /// CK_GCM_PARAMS.
    Gcm {
        iv: Vec<u8>,
        aad: Vec<u8>,
        tag_bits: CK_ULONG,
    },
    /// CK_HKDF_PARAMS: `salt` is `None` for CKF_HKDF_SALT_NULL, and a salt
    /// key (CKF_HKDF_SALT_KEY) is refused when read.
    Hkdf {
        extract: bool,
        expand: bool,
        prf: CK_MECHANISM_TYPE,
        salt: Option<Vec<u8>>,
        info: Vec<u8>,
    },
    /// Anything else (of this length).
    Other,
}

/// Session state.
#[derive(Default)]
struct Session {
    rw: bool,
    find: Option<Vec<CK_OBJECT_HANDLE>>,
    sign: Option<SignOp>,
    verify: Option<VerifyOp>,
    digest: Option<digest::DigestOp>,
    encrypt: Option<cipher::CryptOp>,
    decrypt: Option<cipher::CryptOp>,
}

struct SignOp {
    link: Link,
    ctx: Vec<u8>,
    deterministic: bool,
    data: Vec<u8>,
    multipart: bool,
}

/// The key a verification uses.
enum VerifyKey {
    /// A daemon key.
    Daemon(Link),
    /// A public key the application imported: its value and parameter set.
    Imported(Vec<u8>, qkeyd_p11_proto::Algorithm),
}

struct VerifyOp {
    key: VerifyKey,
    ctx: Vec<u8>,
    data: Vec<u8>,
    multipart: bool,
    /// Given at init (C_VerifySignatureInit).
    signature: Option<Vec<u8>>,
}

/// Sessions, objects and the login, for one initialised process.
pub(crate) struct State {
    pid: u32,
    sessions: BTreeMap<CK_SESSION_HANDLE, Session>,
    objects: BTreeMap<CK_OBJECT_HANDLE, Object>,
    /// Token keys' handles, by (key reference, class): stable while listed.
    token_handles: HashMap<(String, Class), CK_OBJECT_HANDLE>,
    /// Token objects' handles, by the daemon's id: stable while listed.
    stored_handles: HashMap<String, CK_OBJECT_HANDLE>,
    next_handle: CK_ULONG,
    /// The user is logged in.
    logged_in: bool,
    /// The security officer is logged in.
    so: bool,
    /// Handles of token key halves destroyed with their other half: destroying
    /// one again succeeds (handles are never reused).
    destroyed_pairs: std::collections::HashSet<CK_OBJECT_HANDLE>,
}

/// What C_GetSessionInfo reports.
pub(crate) struct SessionInfo {
    pub(crate) state: CK_STATE,
    pub(crate) flags: CK_FLAGS,
}

/// What C_GetTokenInfo reports beyond constants.
pub(crate) struct TokenInfo {
    pub(crate) serial: String,
    /// CKF_USER_PIN_* and CKF_SO_PIN_* flags from the daemon's wrong-PIN counts.
    pub(crate) pin_flags: CK_FLAGS,
    pub(crate) sessions: CK_ULONG,
    pub(crate) rw_sessions: CK_ULONG,
}

/// An output buffer's answer: the length, and whether the bytes were written.
pub(crate) enum Out {
    /// Only the length was asked for (NULL buffer).
    Length(usize),
    /// The buffer is too small for this length.
    TooSmall(usize),
    /// Written.
    Written(usize),
}

fn state_lock() -> std::sync::MutexGuard<'static, Option<State>> {
    lock(&MODULE.state)
}

/// Run `f` on the state of an initialised module (in this process).
fn with<T>(f: impl FnOnce(&mut State) -> Result<T, Rv>) -> Result<T, Rv> {
    let mut g = state_lock();
    match g.as_mut() {
        Some(s) if s.pid == crate::pid::current() => f(s),
        _ => Err(CKR_CRYPTOKI_NOT_INITIALIZED),
    }
}

fn daemon_call(req: &Request, bad_request: Rv) -> Result<Response, Rv> {
    lock(&MODULE.daemon).call(req, bad_request)
}

/// A session key made on a connection that has since been replaced is gone.
fn check_epoch(link: &Link) -> Result<(), Rv> {
    if link.key.starts_with("s/") && link.epoch != EPOCH.load(Ordering::Acquire) {
        return Err(CKR_KEY_HANDLE_INVALID);
    }
    Ok(())
}

/// A secret key held by a connection that has since been replaced is gone.
fn check_held(held: &(String, u64)) -> Result<(), Rv> {
    if held.1 != EPOCH.load(Ordering::Acquire) {
        return Err(CKR_KEY_HANDLE_INVALID);
    }
    Ok(())
}

impl State {
    fn handle(&mut self) -> CK_ULONG {
        self.next_handle += 1;
        self.next_handle
    }

    fn session(&mut self, h: CK_SESSION_HANDLE) -> Result<&mut Session, Rv> {
        self.sessions.get_mut(&h).ok_or(CKR_SESSION_HANDLE_INVALID)
    }

    /// An object the application may see now (private ones need a login).
    fn visible(&self, o: CK_OBJECT_HANDLE) -> Result<&Object, Rv> {
        match self.objects.get(&o) {
            Some(obj) if self.logged_in || !obj.private => Ok(obj),
            _ => Err(CKR_OBJECT_HANDLE_INVALID),
        }
    }

    /// A key for a crypto *Init function.
    fn key(&self, o: CK_OBJECT_HANDLE) -> Result<&Object, Rv> {
        self.visible(o).map_err(|_| CKR_KEY_HANDLE_INVALID)
    }
}
