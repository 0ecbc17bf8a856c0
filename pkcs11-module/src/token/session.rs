//! Session management: opening, closing and describing sessions, C_Login
//! and C_Logout, C_SessionCancel, and releasing the daemon's session keys
//! that closed sessions leave unused.

use cryptoki_sys::*;
use qkeyd_p11_proto::{self as proto, Request, Secret};

use super::{MODULE, Session, SessionInfo, State, daemon_call, slot, with};
use crate::{object::Rv, rng::lock};

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
pub(super) fn release(orphans: Vec<String>, logout: bool) {
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
        d.call(&Request::Login { pin: pin.duplicate() }, CKR_PIN_INCORRECT)?;
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

impl State {
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
