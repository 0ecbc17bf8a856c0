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

mod general;
mod kem;
mod keygen;
mod objects;
mod random;
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
    general::{finalize, initialize, initialized, slot, token_info, token_present},
    kem::{decapsulate, encapsulate},
    keygen::generate_key_pair,
    objects::{destroy, find, find_final, find_init, get_attributes, modify},
    random::{generate_random, seed_random},
    session::{
        close_all_sessions, close_session, login, logout, open_session, session_cancel,
        session_info,
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
pub(crate) const MECHANISMS: [(CK_MECHANISM_TYPE, CK_ULONG, CK_ULONG, CK_FLAGS); 4] = [
    (CKM_ML_KEM_KEY_PAIR_GEN, 800, 1568, CKF_GENERATE_KEY_PAIR),
    (CKM_ML_KEM, 800, 1568, CKF_ENCAPSULATE | CKF_DECAPSULATE),
    (CKM_ML_DSA_KEY_PAIR_GEN, 1312, 2592, CKF_GENERATE_KEY_PAIR),
    (CKM_ML_DSA, 1312, 2592, CKF_SIGN | CKF_VERIFY),
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
    /// Anything else (of this length).
    Other,
}

/// Session state.
struct Session {
    rw: bool,
    find: Option<Vec<CK_OBJECT_HANDLE>>,
    sign: Option<SignOp>,
    verify: Option<VerifyOp>,
}

struct SignOp {
    link: Link,
    ctx: Vec<u8>,
    deterministic: bool,
    data: Vec<u8>,
    multipart: bool,
}

struct VerifyOp {
    link: Link,
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
    next_handle: CK_ULONG,
    logged_in: bool,
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
        Some(s) if s.pid == std::process::id() => f(s),
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
