//! General-purpose, slot and token functions: C_Initialize and C_Finalize,
//! whether the module is initialised, the one slot, and the token's presence
//! and info.

use std::collections::{BTreeMap, HashMap};

use cryptoki_sys::*;

use qkeyd_p11_proto::{PinCount, Request, Response};

use super::{MODULE, SLOT, State, TokenInfo, state_lock, with};
use crate::{object::Rv, rng::lock};

/// A role's PIN flags: a wrong PIN since the last right one (COUNT_LOW), one
/// more pauses logins (FINAL_TRY), logins paused now (LOCKED).
fn pin_flags(c: PinCount, low: CK_FLAGS, last: CK_FLAGS, locked: CK_FLAGS) -> CK_FLAGS {
    let mut f = 0;
    if c.failures > 0 {
        f |= low;
    }
    if c.tries > 0 && c.failures + 1 == c.tries {
        f |= last;
    }
    if c.locked {
        f |= locked;
    }
    f
}

/// C_Initialize. In a forked child the inherited state is thrown away (the
/// parent's sessions and daemon connection are not the child's).
pub(crate) fn initialize() -> Result<(), Rv> {
    let pid = crate::pid::current();
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
        stored_handles: HashMap::new(),
        next_handle: 0,
        logged_in: false,
        so: false,
        destroyed_pairs: std::collections::HashSet::new(),
    });
    Ok(())
}

/// C_Finalize: every session and object goes, and so does the connection
/// (which makes the daemon drop this process's session keys).
pub(crate) fn finalize() -> Result<(), Rv> {
    let mut g = state_lock();
    match g.as_ref() {
        Some(s) if s.pid == crate::pid::current() => {}
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
    let (serial, pins) = {
        let mut d = lock(&MODULE.daemon);
        d.connect()?;
        let pins = match d.call(&Request::PinState, CKR_GENERAL_ERROR) {
            Ok(Response::PinState { user, so }) => Some((user, so)),
            _ => None,
        };
        (d.serial().to_owned(), pins)
    };
    let pin_flags = pins.map_or(0, |(user, so)| {
        pin_flags(user, CKF_USER_PIN_COUNT_LOW, CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED)
            | pin_flags(so, CKF_SO_PIN_COUNT_LOW, CKF_SO_PIN_FINAL_TRY, CKF_SO_PIN_LOCKED)
    });
    with(|s| {
        let rw = s.sessions.values().filter(|x| x.rw).count();
        Ok(TokenInfo {
            serial,
            pin_flags,
            sessions: s.sessions.len() as CK_ULONG,
            rw_sessions: rw as CK_ULONG,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_flags_follow_the_wrong_pin_count() {
        let f = |failures, locked| {
            pin_flags(
                PinCount { failures, tries: 5, locked },
                CKF_USER_PIN_COUNT_LOW,
                CKF_USER_PIN_FINAL_TRY,
                CKF_USER_PIN_LOCKED,
            )
        };
        assert_eq!(f(0, false), 0);
        assert_eq!(f(1, false), CKF_USER_PIN_COUNT_LOW);
        assert_eq!(f(3, false), CKF_USER_PIN_COUNT_LOW);
        assert_eq!(f(4, false), CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY);
        // Paused: the count starts again from 0 while logins wait.
        assert_eq!(f(0, true), CKF_USER_PIN_LOCKED);
        let none = PinCount { failures: 0, tries: 0, locked: false };
        assert_eq!(pin_flags(none, 1, 2, 4), 0);
    }
}
