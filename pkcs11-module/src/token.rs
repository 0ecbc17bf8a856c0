//! The module's state and every PKCS#11 operation, in safe Rust: `ffi`
//! turns C pointers into the arguments here and the results back.
//!
//! Locks: `state` (sessions, objects, login) is never held while talking to
//! the daemon (C_Initialize and C_Finalize excepted, which reset everything),
//! so one thread's slow signature does not stall another's sessions. The
//! DRBG takes `daemon` only to reseed (each second) or to check the
//! connection (each 100 ms), so random bytes can wait behind a daemon call
//! then. Order: `state` → `rng` → `daemon`, never backwards.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, atomic::Ordering},
};

use cryptoki_sys::*;
use qkeyd_p11_proto::{self as proto, Alg, KeyEntry, Request, Response, Secret};

use crate::{
    client::{Daemon, EPOCH},
    object::{self, Attr, Class, Link, Object, Read, Rv, SHARED_SECRET_LEN},
    rng::{Rng, lock},
};

/// The one slot.
pub(crate) const SLOT: CK_SLOT_ID = 0;
/// The token's label.
pub(crate) const LABEL: &str = "qkeyd";
/// Longest message C_Sign accepts (it travels to the daemon in one frame).
/// (The rest of the frame: the key reference, a context of ≤ 255 bytes and,
/// for Verify, a signature of ≤ 4627.)
pub(crate) const MAX_DATA: usize = proto::MAX_FRAME - 8192;

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

/// C_Initialize. In a forked child the inherited state is thrown away (the
/// parent's sessions and daemon connection are not the child's).
pub(crate) fn initialize() -> Result<(), Rv> {
    let pid = std::process::id();
    let mut g = state_lock();
    if g.as_ref().is_some_and(|s| s.pid == pid) {
        return Err(CKR_CRYPTOKI_ALREADY_INITIALIZED);
    }
    lock(&MODULE.daemon).reset();
    lock(&MODULE.rng).reset();
    *g = Some(State {
        pid,
        sessions: BTreeMap::new(),
        objects: BTreeMap::new(),
        token_handles: HashMap::new(),
        next_handle: 0,
        logged_in: false,
        destroyed_pairs: std::collections::HashSet::new(),
    });
    Ok(())
}

/// C_Finalize: every session and object goes, and so does the connection
/// (which makes the daemon drop this process's session keys).
pub(crate) fn finalize() -> Result<(), Rv> {
    let mut g = state_lock();
    match g.as_ref() {
        Some(s) if s.pid == std::process::id() => {}
        _ => return Err(CKR_CRYPTOKI_NOT_INITIALIZED),
    }
    *g = None;
    lock(&MODULE.daemon).reset();
    lock(&MODULE.rng).reset();
    Ok(())
}

/// Whether the module is initialised (for functions with nothing else to check).
pub(crate) fn initialized() -> Result<(), Rv> {
    with(|_| Ok(()))
}

/// Check a slot id.
pub(crate) fn slot(id: CK_SLOT_ID) -> Result<(), Rv> {
    initialized()?;
    if id == SLOT { Ok(()) } else { Err(CKR_SLOT_ID_INVALID) }
}

/// Whether the daemon answers (the token is "present").
pub(crate) fn token_present() -> bool {
    lock(&MODULE.daemon).connect().is_ok()
}

/// C_GetTokenInfo's variable part.
pub(crate) fn token_info(id: CK_SLOT_ID) -> Result<TokenInfo, Rv> {
    slot(id)?;
    let serial = {
        let mut d = lock(&MODULE.daemon);
        d.connect()?;
        d.serial().to_owned()
    };
    with(|s| {
        let rw = s.sessions.values().filter(|x| x.rw).count();
        Ok(TokenInfo {
            serial,
            sessions: s.sessions.len() as CK_ULONG,
            rw_sessions: rw as CK_ULONG,
        })
    })
}

/// C_OpenSession.
pub(crate) fn open_session(id: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE, Rv> {
    slot(id)?;
    if flags & CKF_SERIAL_SESSION == 0 {
        return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    }
    lock(&MODULE.daemon).connect()?;
    with(|s| {
        let h = s.handle();
        s.sessions.insert(
            h,
            Session { rw: flags & CKF_RW_SESSION != 0, find: None, sign: None, verify: None },
        );
        Ok(h)
    })
}

/// C_CloseSession: its session objects go; the last session logs out.
pub(crate) fn close_session(h: CK_SESSION_HANDLE) -> Result<(), Rv> {
    let (orphans, logout) = with(|s| {
        s.sessions.remove(&h).ok_or(CKR_SESSION_HANDLE_INVALID)?;
        Ok(s.drop_session_objects(|owner| owner == h))
    })?;
    release(orphans, logout);
    Ok(())
}

/// C_CloseAllSessions.
pub(crate) fn close_all_sessions(id: CK_SLOT_ID) -> Result<(), Rv> {
    slot(id)?;
    let (orphans, logout) = with(|s| {
        s.sessions.clear();
        Ok(s.drop_session_objects(|_| true))
    })?;
    release(orphans, logout);
    Ok(())
}

/// Tell the daemon to drop session keys no object refers to any more, and
/// log out if the last session closed. Failures change nothing for the
/// application: a lost connection dropped those keys already.
fn release(orphans: Vec<String>, logout: bool) {
    let mut d = lock(&MODULE.daemon);
    if logout {
        // Forgotten first, so a later connection is not logged in for the application.
        d.set_pin(None);
    }
    if !d.alive() {
        return;
    }
    for key in orphans {
        let _ = d.call(&Request::Destroy { key }, CKR_GENERAL_ERROR);
    }
    if logout {
        let _ = d.call(&Request::Logout, CKR_GENERAL_ERROR);
    }
}

/// C_GetSessionInfo.
pub(crate) fn session_info(h: CK_SESSION_HANDLE) -> Result<SessionInfo, Rv> {
    with(|s| {
        let logged_in = s.logged_in;
        let x = s.session(h)?;
        let state = match (x.rw, logged_in) {
            (false, false) => CKS_RO_PUBLIC_SESSION,
            (false, true) => CKS_RO_USER_FUNCTIONS,
            (true, false) => CKS_RW_PUBLIC_SESSION,
            (true, true) => CKS_RW_USER_FUNCTIONS,
        };
        let flags = CKF_SERIAL_SESSION | if x.rw { CKF_RW_SESSION } else { 0 };
        Ok(SessionInfo { state, flags })
    })
}

/// C_Login.
pub(crate) fn login(h: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Result<(), Rv> {
    with(|s| {
        s.session(h)?;
        match user {
            CKU_USER => {}
            CKU_SO => return Err(CKR_USER_TYPE_INVALID),
            CKU_CONTEXT_SPECIFIC => return Err(CKR_OPERATION_NOT_INITIALIZED),
            _ => return Err(CKR_USER_TYPE_INVALID),
        }
        if s.logged_in { Err(CKR_USER_ALREADY_LOGGED_IN) } else { Ok(()) }
    })?;
    if !(4..=proto::MAX_PIN).contains(&pin.len()) {
        return Err(CKR_PIN_INCORRECT);
    }
    let pin = Secret::new(pin.to_vec());
    {
        let mut d = lock(&MODULE.daemon);
        d.call(&Request::Login { pin: pin.clone() }, CKR_PIN_INCORRECT)?;
        d.set_pin(Some(pin));
    }
    with(|s| {
        s.logged_in = true;
        Ok(())
    })
}

/// C_Logout: private session objects are destroyed (PKCS#11 §5.6), and
/// operations with private keys end.
pub(crate) fn logout(h: CK_SESSION_HANDLE) -> Result<(), Rv> {
    let orphans = with(|s| {
        s.session(h)?;
        if !s.logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        s.logged_in = false;
        for x in s.sessions.values_mut() {
            x.sign = None;
            x.find = None;
        }
        let mut dropped = Vec::new();
        s.objects.retain(|_, o| {
            let goes = o.private && o.owner.is_some();
            if goes && let Some(l) = &o.link {
                dropped.push(l.key.clone());
            }
            !goes
        });
        Ok(s.unused(dropped))
    })?;
    lock(&MODULE.daemon).set_pin(None);
    release(orphans, false);
    let _ = daemon_call(&Request::Logout, CKR_GENERAL_ERROR);
    Ok(())
}

/// C_GenerateRandom: from this process's DRBG, never from a seed the daemon
/// did not give.
pub(crate) fn generate_random(h: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<(), Rv> {
    with(|s| s.session(h).map(|_| ()))?;
    if out.is_empty() {
        return Ok(());
    }
    lock(&MODULE.rng).fill(out, &MODULE.daemon)
}

/// C_SeedRandom: the DRBG takes entropy only from the daemon's tested pool.
pub(crate) fn seed_random(h: CK_SESSION_HANDLE) -> Result<(), Rv> {
    with(|s| s.session(h).map(|_| ()))?;
    Err(CKR_RANDOM_SEED_NOT_SUPPORTED)
}

/// C_GenerateKeyPair: (public, private) handles.
pub(crate) fn generate_key_pair(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    public: &[Attr],
    private: &[Attr],
) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE), Rv> {
    let kem = match mech.mtype {
        CKM_ML_KEM_KEY_PAIR_GEN => true,
        CKM_ML_DSA_KEY_PAIR_GEN => false,
        _ => return Err(CKR_MECHANISM_INVALID),
    };
    if !matches!(mech.param, Param::None) {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let pubs = object::key_pair_half(public, Class::Public, kem)?;
    let privs = object::key_pair_half(private, Class::Private, kem)?;
    let set = match (pubs.parameter_set, privs.parameter_set) {
        (Some(a), Some(b)) if a != b => return Err(CKR_TEMPLATE_INCONSISTENT),
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return Err(CKR_TEMPLATE_INCOMPLETE),
    };
    let alg = Alg::from_parameter_set(kem, set).ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
    let token = match (pubs.token, privs.token) {
        (Some(a), Some(b)) if a != b => return Err(CKR_TEMPLATE_INCONSISTENT),
        (a, b) => a.or(b).unwrap_or(false),
    };
    if token {
        // The vault keeps one label per pair, names it by its own id, and
        // keeps public halves public and private halves private and usable.
        let same = |a: &Option<Vec<u8>>, b: &Option<Vec<u8>>| a.is_none() || b.is_none() || a == b;
        if !same(&pubs.label, &privs.label)
            || pubs.private == Some(true)
            || privs.private == Some(false)
            || pubs.usage == Some(false)
            || privs.usage == Some(false)
        {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        if pubs.id.iter().chain(&privs.id).any(|id| !id.is_empty()) {
            return Err(CKR_ATTRIBUTE_READ_ONLY);
        }
    }
    let label = privs.label.clone().or_else(|| pubs.label.clone()).unwrap_or_default();
    let label_text = String::from_utf8(label.clone()).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
    if label_text.len() > proto::MAX_LABEL {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    with(|s| {
        let logged_in = s.logged_in;
        let x = s.session(h)?;
        if !logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        if token && !x.rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        Ok(())
    })?;
    let entry = match daemon_call(
        &Request::Generate { alg, token, label: label_text },
        CKR_ATTRIBUTE_VALUE_INVALID,
    )? {
        Response::Key(k) if k.alg == alg && k.token == token => k,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    let epoch = EPOCH.load(Ordering::Acquire);
    let made = with(|s| {
        // The session may have closed meanwhile: a token key then simply
        // stays in the vault; a session key is released below.
        s.session(h)?;
        if token {
            s.merge_token_key(&entry, epoch);
            let p = s.token_handles.get(&(entry.key.clone(), Class::Public)).copied();
            let q = s.token_handles.get(&(entry.key.clone(), Class::Private)).copied();
            return p.zip(q).ok_or(CKR_GENERAL_ERROR);
        }
        let link = Link { key: entry.key.clone(), alg, epoch };
        let mut p = Object::key(
            Class::Public,
            link.clone(),
            false,
            pubs.label.as_deref().unwrap_or_default(),
            pubs.id.as_deref().unwrap_or_default(),
            &entry.public_key,
        );
        p.private = pubs.private.unwrap_or(false);
        p.owner = Some(h);
        if pubs.usage == Some(false) {
            p.caps.verify = false;
            p.caps.encapsulate = false;
        }
        let mut q = Object::key(
            Class::Private,
            link,
            false,
            privs.label.as_deref().unwrap_or_default(),
            privs.id.as_deref().unwrap_or_default(),
            &[],
        );
        q.private = privs.private.unwrap_or(true);
        q.owner = Some(h);
        if privs.usage == Some(false) {
            q.caps.sign = false;
            q.caps.decapsulate = false;
        }
        let (hp, hq) = (s.handle(), s.handle());
        s.objects.insert(hp, p);
        s.objects.insert(hq, q);
        Ok((hp, hq))
    });
    if made.is_err() && !token {
        release(vec![entry.key], false);
    }
    made
}

/// The refreshed list of token keys, from the daemon.
fn refresh_token_objects() -> Result<(), Rv> {
    let keys = match daemon_call(&Request::List, CKR_GENERAL_ERROR)? {
        Response::Keys(k) => k,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    let epoch = EPOCH.load(Ordering::Acquire);
    with(|s| {
        let listed: std::collections::HashSet<&str> = keys.iter().map(|k| k.key.as_str()).collect();
        let gone: Vec<CK_OBJECT_HANDLE> = s
            .objects
            .iter()
            .filter(|(_, o)| {
                o.token && o.link.as_ref().is_some_and(|l| !listed.contains(l.key.as_str()))
            })
            .map(|(h, _)| *h)
            .collect();
        for h in gone {
            s.objects.remove(&h);
        }
        s.token_handles.retain(|(k, _), _| listed.contains(k.as_str()));
        for k in &keys {
            s.merge_token_key(k, epoch);
        }
        Ok(())
    })
}

/// C_FindObjectsInit.
pub(crate) fn find_init(h: CK_SESSION_HANDLE, template: &[Attr]) -> Result<(), Rv> {
    with(|s| {
        let x = s.session(h)?;
        if x.find.is_some() { Err(CKR_OPERATION_ACTIVE) } else { Ok(()) }
    })?;
    refresh_token_objects()?;
    with(|s| {
        let logged_in = s.logged_in;
        let found: Vec<CK_OBJECT_HANDLE> = s
            .objects
            .iter()
            .filter(|(_, o)| (logged_in || !o.private) && o.matches(template))
            .map(|(h, _)| *h)
            .collect();
        let x = s.session(h)?;
        if x.find.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        x.find = Some(found);
        Ok(())
    })
}

/// C_FindObjects: up to `max` handles.
pub(crate) fn find(h: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>, Rv> {
    with(|s| {
        let found = s.session(h)?.find.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let n = max.min(found.len());
        Ok(found.drain(..n).collect())
    })
}

/// C_FindObjectsFinal.
pub(crate) fn find_final(h: CK_SESSION_HANDLE) -> Result<(), Rv> {
    with(|s| s.session(h)?.find.take().map(|_| ()).ok_or(CKR_OPERATION_NOT_INITIALIZED))
}

/// C_GetAttributeValue: each attribute's reading, in order.
pub(crate) fn get_attributes(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    types: &[CK_ATTRIBUTE_TYPE],
) -> Result<Vec<Read>, Rv> {
    with(|s| {
        s.session(h)?;
        let obj = s.visible(o)?;
        Ok(types.iter().map(|t| obj.read(*t)).collect())
    })
}

/// C_SetAttributeValue and C_CopyObject: these objects are not modifiable.
pub(crate) fn modify(h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Result<(), Rv> {
    with(|s| {
        s.session(h)?;
        s.visible(o)?;
        Err(CKR_ACTION_PROHIBITED)
    })
}

/// C_DestroyObject. A token key pair is one vault key: destroying either
/// half destroys both, and destroying the other half afterwards succeeds.
pub(crate) fn destroy(h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Result<(), Rv> {
    enum Then {
        Nothing,
        Session(String),
        Vault(String),
    }
    let then = with(|s| {
        let logged_in = s.logged_in;
        let rw = s.session(h)?.rw;
        if s.destroyed_pairs.contains(&o) {
            return Ok(Then::Nothing);
        }
        let obj = s.visible(o)?;
        if obj.token && !rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        if obj.private && !logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        if obj.token && !logged_in {
            // The vault key goes with its private half, which needs the PIN.
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        match (&obj.link, obj.token) {
            (Some(l), true) => Ok(Then::Vault(l.key.clone())),
            (Some(l), false) => {
                let key = l.key.clone();
                s.objects.remove(&o);
                let still =
                    s.objects.values().any(|x| x.link.as_ref().is_some_and(|l| l.key == key));
                Ok(if still { Then::Nothing } else { Then::Session(key) })
            }
            (None, _) => {
                s.objects.remove(&o);
                Ok(Then::Nothing)
            }
        }
    })?;
    match then {
        Then::Nothing => Ok(()),
        Then::Session(key) => {
            release(vec![key], false);
            Ok(())
        }
        Then::Vault(key) => {
            daemon_call(&Request::Destroy { key: key.clone() }, CKR_GENERAL_ERROR)?;
            with(|s| {
                let halves: Vec<CK_OBJECT_HANDLE> = s
                    .token_handles
                    .iter()
                    .filter(|((k, _), _)| *k == key)
                    .map(|(_, h)| *h)
                    .collect();
                for half in halves {
                    s.objects.remove(&half);
                    s.destroyed_pairs.insert(half);
                }
                s.token_handles.retain(|(k, _), _| *k != key);
                Ok(())
            })
        }
    }
}

/// ML-DSA parameter: (context, deterministic).
fn dsa_param(p: &Param) -> Result<(Vec<u8>, bool), Rv> {
    match p {
        Param::None => Ok((Vec::new(), false)),
        Param::SignContext { hedge, context } => {
            if context.len() > 255 {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            match *hedge {
                CKH_HEDGE_PREFERRED | CKH_HEDGE_REQUIRED => Ok((context.clone(), false)),
                CKH_DETERMINISTIC_REQUIRED => Ok((context.clone(), true)),
                _ => Err(CKR_MECHANISM_PARAM_INVALID),
            }
        }
        Param::Other => Err(CKR_MECHANISM_PARAM_INVALID),
    }
}

/// C_SignInit.
pub(crate) fn sign_init(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
) -> Result<(), Rv> {
    with(|s| {
        let logged_in = s.logged_in;
        if s.session(h)?.sign.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        if mech.mtype != CKM_ML_DSA {
            return Err(CKR_MECHANISM_INVALID);
        }
        let (ctx, deterministic) = dsa_param(&mech.param)?;
        let obj = s.key(key)?;
        if obj.class != Class::Private || obj.key_type != CKK_ML_DSA {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        if !obj.caps.sign {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        if !logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        let link = obj.link.clone().ok_or(CKR_KEY_HANDLE_INVALID)?;
        s.session(h)?.sign =
            Some(SignOp { link, ctx, deterministic, data: Vec::new(), multipart: false });
        Ok(())
    })
}

/// End a signing operation (a NULL mechanism, or a C_Sign refused for its arguments).
pub(crate) fn end_sign(h: CK_SESSION_HANDLE) {
    let _ = with(|s| {
        s.session(h)?.sign = None;
        Ok(())
    });
}

/// End a verification operation.
pub(crate) fn end_verify(h: CK_SESSION_HANDLE) {
    let _ = with(|s| {
        s.session(h)?.verify = None;
        Ok(())
    });
}

/// C_SignUpdate.
pub(crate) fn sign_update(h: CK_SESSION_HANDLE, part: &[u8]) -> Result<(), Rv> {
    with(|s| {
        let x = s.session(h)?;
        let op = x.sign.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if op.data.len() + part.len() > MAX_DATA {
            x.sign = None;
            return Err(CKR_DATA_LEN_RANGE);
        }
        op.multipart = true;
        op.data.extend_from_slice(part);
        Ok(())
    })
}

/// C_Sign (`data` given) or C_SignFinal (`None`). `out` of `None` asks for
/// the length; a short buffer gets the length and keeps the operation.
pub(crate) fn sign(
    h: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    out: Option<&mut [u8]>,
) -> Result<Out, Rv> {
    let op = with(|s| {
        let x = s.session(h)?;
        let op = x.sign.as_ref().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if data.is_some() && op.multipart {
            x.sign = None;
            return Err(CKR_OPERATION_ACTIVE);
        }
        let len = op.link.alg.output_len();
        match &out {
            None => return Ok(Err(Out::Length(len))),
            Some(o) if o.len() < len => return Ok(Err(Out::TooSmall(len))),
            Some(_) => {}
        }
        if data.is_some_and(|d| d.len() > MAX_DATA) {
            x.sign = None;
            return Err(CKR_DATA_LEN_RANGE);
        }
        Ok(Ok(x.sign.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?))
    })?;
    let mut op = match op {
        Ok(op) => op,
        Err(answer) => return Ok(answer),
    };
    check_epoch(&op.link)?;
    let msg = match data {
        Some(d) => d.to_vec(),
        None => std::mem::take(&mut op.data),
    };
    let req = Request::Sign {
        key: op.link.key.clone(),
        msg,
        ctx: op.ctx.clone(),
        deterministic: op.deterministic,
    };
    let sig = match daemon_call(&req, CKR_ARGUMENTS_BAD)? {
        Response::Signature(sig) if sig.len() == op.link.alg.output_len() => sig,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    let out = out.ok_or(CKR_GENERAL_ERROR)?;
    out[..sig.len()].copy_from_slice(&sig);
    Ok(Out::Written(sig.len()))
}

/// C_VerifyInit, or C_VerifySignatureInit with the signature up front.
pub(crate) fn verify_init(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    signature: Option<&[u8]>,
) -> Result<(), Rv> {
    with(|s| {
        if s.session(h)?.verify.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        if mech.mtype != CKM_ML_DSA {
            return Err(CKR_MECHANISM_INVALID);
        }
        let (ctx, _) = dsa_param(&mech.param)?;
        let obj = s.key(key)?;
        if obj.class != Class::Public || obj.key_type != CKK_ML_DSA {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        if !obj.caps.verify {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        let link = obj.link.clone().ok_or(CKR_KEY_HANDLE_INVALID)?;
        if signature.is_some_and(|sig| sig.len() != link.alg.output_len()) {
            return Err(CKR_SIGNATURE_LEN_RANGE);
        }
        let signature = signature.map(<[u8]>::to_vec);
        s.session(h)?.verify =
            Some(VerifyOp { link, ctx, data: Vec::new(), multipart: false, signature });
        Ok(())
    })
}

/// C_VerifyUpdate / C_VerifySignatureUpdate.
pub(crate) fn verify_update(h: CK_SESSION_HANDLE, part: &[u8]) -> Result<(), Rv> {
    with(|s| {
        let x = s.session(h)?;
        let op = x.verify.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if op.data.len() + part.len() > MAX_DATA {
            x.verify = None;
            return Err(CKR_DATA_LEN_RANGE);
        }
        op.multipart = true;
        op.data.extend_from_slice(part);
        Ok(())
    })
}

/// Finish a verification: C_Verify (`data` and `signature`), C_VerifyFinal
/// (`signature`), C_VerifySignature (`data`), C_VerifySignatureFinal (neither).
/// The operation ends whatever the outcome.
pub(crate) fn verify(
    h: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    signature: Option<&[u8]>,
) -> Result<(), Rv> {
    let mut op = with(|s| {
        let x = s.session(h)?;
        let op = x.verify.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        // The signature comes at init or at the end, not both or neither.
        if op.signature.is_some() == signature.is_some() || (data.is_some() && op.multipart) {
            return Err(if op.signature.is_some() {
                CKR_OPERATION_ACTIVE
            } else {
                CKR_ARGUMENTS_BAD
            });
        }
        Ok(op)
    })?;
    let sig = match signature {
        Some(sig) => sig.to_vec(),
        None => op.signature.take().unwrap_or_default(),
    };
    if sig.len() != op.link.alg.output_len() {
        return Err(CKR_SIGNATURE_LEN_RANGE);
    }
    let msg = match data {
        Some(d) if d.len() > MAX_DATA => return Err(CKR_DATA_LEN_RANGE),
        Some(d) => d.to_vec(),
        None => std::mem::take(&mut op.data),
    };
    check_epoch(&op.link)?;
    let req = Request::Verify { key: op.link.key.clone(), msg, ctx: op.ctx.clone(), sig };
    match daemon_call(&req, CKR_ARGUMENTS_BAD)? {
        Response::Verified(true) => Ok(()),
        Response::Verified(false) => Err(CKR_SIGNATURE_INVALID),
        _ => Err(CKR_DEVICE_ERROR),
    }
}

/// C_SessionCancel: end the operations named in `flags`.
pub(crate) fn session_cancel(h: CK_SESSION_HANDLE, flags: CK_FLAGS) -> Result<(), Rv> {
    with(|s| {
        let x = s.session(h)?;
        if flags & CKF_FIND_OBJECTS != 0 {
            x.find = None;
        }
        if flags & CKF_SIGN != 0 {
            x.sign = None;
        }
        if flags & CKF_VERIFY != 0 {
            x.verify = None;
        }
        Ok(())
    })
}

/// A session key made on a connection that has since been replaced is gone.
fn check_epoch(link: &Link) -> Result<(), Rv> {
    if link.key.starts_with("s/") && link.epoch != EPOCH.load(Ordering::Acquire) {
        return Err(CKR_KEY_HANDLE_INVALID);
    }
    Ok(())
}

/// Check an ML-KEM key and a secret-key template for encapsulation or
/// decapsulation; returns the key's link and the template's spec.
fn kem_prepare(
    s: &mut State,
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    class: Class,
    template: &[Attr],
) -> Result<(Link, object::SecretSpec), Rv> {
    let logged_in = s.logged_in;
    s.session(h)?;
    if mech.mtype != CKM_ML_KEM {
        return Err(CKR_MECHANISM_INVALID);
    }
    if !matches!(mech.param, Param::None) {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let obj = s.key(key)?;
    if obj.class != class || obj.key_type != CKK_ML_KEM {
        return Err(CKR_KEY_TYPE_INCONSISTENT);
    }
    let allowed = if class == Class::Public { obj.caps.encapsulate } else { obj.caps.decapsulate };
    if !allowed {
        return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
    }
    let link = obj.link.clone().ok_or(CKR_KEY_HANDLE_INVALID)?;
    let spec = object::secret_key(template)?;
    if (spec.private || class == Class::Private) && !logged_in {
        return Err(CKR_USER_NOT_LOGGED_IN);
    }
    check_epoch(&link)?;
    Ok((link, spec))
}

/// C_EncapsulateKey: `ct` of `None` asks for the ciphertext length and makes nothing.
pub(crate) fn encapsulate(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    template: &[Attr],
    ct: Option<&mut [u8]>,
) -> Result<(Out, Option<CK_OBJECT_HANDLE>), Rv> {
    let (link, spec) = with(|s| kem_prepare(s, h, mech, key, Class::Public, template))?;
    let len = link.alg.output_len();
    let ct = match ct {
        None => return Ok((Out::Length(len), None)),
        Some(c) if c.len() < len => return Ok((Out::TooSmall(len), None)),
        Some(c) => c,
    };
    let (ciphertext, secret) =
        match daemon_call(&Request::Encapsulate { key: link.key.clone() }, CKR_ARGUMENTS_BAD)? {
            Response::Encapsulated { ct, secret }
                if ct.len() == len && secret.expose().len() == SHARED_SECRET_LEN =>
            {
                (ct, secret)
            }
            _ => return Err(CKR_DEVICE_ERROR),
        };
    let handle = with(|s| {
        s.session(h)?;
        let hk = s.handle();
        s.objects.insert(hk, spec.object(secret.0, h));
        Ok(hk)
    })?;
    ct[..len].copy_from_slice(&ciphertext);
    Ok((Out::Written(len), Some(handle)))
}

/// C_DecapsulateKey.
pub(crate) fn decapsulate(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    template: &[Attr],
    ct: &[u8],
) -> Result<CK_OBJECT_HANDLE, Rv> {
    let (link, spec) = with(|s| kem_prepare(s, h, mech, key, Class::Private, template))?;
    if ct.len() != link.alg.output_len() {
        return Err(CKR_WRAPPED_KEY_LEN_RANGE);
    }
    let secret = match daemon_call(
        &Request::Decapsulate { key: link.key.clone(), ct: ct.to_vec() },
        CKR_WRAPPED_KEY_LEN_RANGE,
    )? {
        Response::SharedSecret(s) if s.expose().len() == SHARED_SECRET_LEN => s,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    with(|s| {
        s.session(h)?;
        let hk = s.handle();
        s.objects.insert(hk, spec.object(secret.0, h));
        Ok(hk)
    })
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

    /// Add (or keep) the two objects of a listed vault key.
    fn merge_token_key(&mut self, k: &KeyEntry, epoch: u64) {
        let id = k.key.split_once('/').map_or(&k.key[..], |(id, _)| id);
        let id = hex_decode(id);
        for class in [Class::Public, Class::Private] {
            if self.token_handles.contains_key(&(k.key.clone(), class)) {
                continue;
            }
            let link = Link { key: k.key.clone(), alg: k.alg, epoch };
            let obj = Object::key(class, link, true, k.label.as_bytes(), &id, &k.public_key);
            let h = self.handle();
            self.objects.insert(h, obj);
            self.token_handles.insert((k.key.clone(), class), h);
        }
    }

    /// The session keys of `keys` that no object refers to any more.
    fn unused(&self, mut keys: Vec<String>) -> Vec<String> {
        keys.sort();
        keys.dedup();
        keys.retain(|k| {
            k.starts_with("s/")
                && !self.objects.values().any(|o| o.link.as_ref().is_some_and(|l| &l.key == k))
        });
        keys
    }

    /// Remove the session objects of the sessions `owned` picks; returns the
    /// session keys no object uses any more, and whether no session is left
    /// (which logs the application out).
    fn drop_session_objects(
        &mut self,
        owned: impl Fn(CK_SESSION_HANDLE) -> bool,
    ) -> (Vec<String>, bool) {
        let mut dropped = Vec::new();
        self.objects.retain(|_, o| match o.owner {
            Some(owner) if owned(owner) => {
                if let Some(l) = &o.link {
                    dropped.push(l.key.clone());
                }
                false
            }
            _ => true,
        });
        let dropped = self.unused(dropped);
        let logout = self.sessions.is_empty() && self.logged_in;
        if self.sessions.is_empty() {
            self.logged_in = false;
        }
        (dropped, logout)
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    let digits: Vec<u8> =
        s.bytes().filter_map(|b| (b as char).to_digit(16).map(|d| d as u8)).collect();
    if digits.len() != s.len() || !digits.len().is_multiple_of(2) {
        return s.as_bytes().to_vec();
    }
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_decode() {
        assert_eq!(hex_decode("00ff10"), vec![0, 255, 16]);
        assert_eq!(hex_decode("xyz"), b"xyz".to_vec());
        assert_eq!(hex_decode("abc"), b"abc".to_vec());
    }

    #[test]
    fn sign_parameters_follow_the_hedge() {
        assert_eq!(dsa_param(&Param::None), Ok((vec![], false)));
        let p = |hedge, context: &[u8]| {
            dsa_param(&Param::SignContext { hedge, context: context.to_vec() })
        };
        assert_eq!(p(CKH_DETERMINISTIC_REQUIRED, b"c"), Ok((b"c".to_vec(), true)));
        assert_eq!(p(CKH_HEDGE_REQUIRED, b""), Ok((vec![], false)));
        assert_eq!(p(7, b""), Err(CKR_MECHANISM_PARAM_INVALID));
        assert_eq!(p(CKH_HEDGE_PREFERRED, &[0; 256]), Err(CKR_MECHANISM_PARAM_INVALID));
        assert_eq!(dsa_param(&Param::Other), Err(CKR_MECHANISM_PARAM_INVALID));
    }
}
