//! General-purpose, slot and token functions: C_Initialize and C_Finalize,
//! whether the module is initialised, the one slot, and the token's presence
//! and info.

use std::collections::{BTreeMap, HashMap};

use cryptoki_sys::*;

use super::{MODULE, SLOT, State, TokenInfo, state_lock, with};
use crate::{object::Rv, rng::lock};

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
