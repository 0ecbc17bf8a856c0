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
        if s.so && flags & CKF_RW_SESSION == 0 {
            return Err(CKR_SESSION_READ_WRITE_SO_EXISTS);
        }
        let h = s.handle();
        s.sessions.insert(h, Session { rw: flags & CKF_RW_SESSION != 0, ..Session::default() });
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
        d.set_login(None);
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
        let (logged_in, so) = (s.logged_in, s.so);
        let x = s.session(h)?;
        let state = match (x.rw, logged_in) {
            // The security officer has R/W sessions only.
            _ if so => CKS_RW_SO_FUNCTIONS,
            (false, false) => CKS_RO_PUBLIC_SESSION,
            (false, true) => CKS_RO_USER_FUNCTIONS,
            (true, false) => CKS_RW_PUBLIC_SESSION,
            (true, true) => CKS_RW_USER_FUNCTIONS,
        };
        let flags = CKF_SERIAL_SESSION | if x.rw { CKF_RW_SESSION } else { 0 };
        Ok(SessionInfo { state, flags })
    })
}

/// C_Login, as the user or the security officer. One of them at a time, and
/// the SO only while every session is R/W (PKCS#11 §5.6).
pub(crate) fn login(h: CK_SESSION_HANDLE, user: CK_USER_TYPE, pin: &[u8]) -> Result<(), Rv> {
    let so = with(|s| {
        s.session(h)?;
        let so = match user {
            CKU_USER => false,
            CKU_SO => true,
            CKU_CONTEXT_SPECIFIC => return Err(CKR_OPERATION_NOT_INITIALIZED),
            _ => return Err(CKR_USER_TYPE_INVALID),
        };
        match (so, s.logged_in, s.so) {
            (false, true, _) | (true, _, true) => Err(CKR_USER_ALREADY_LOGGED_IN),
            (false, _, true) | (true, true, _) => Err(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
            (true, ..) if s.sessions.values().any(|x| !x.rw) => Err(CKR_SESSION_READ_ONLY_EXISTS),
            _ => Ok(so),
        }
    })?;
    if !(4..=proto::MAX_PIN).contains(&pin.len()) {
        return Err(CKR_PIN_INCORRECT);
    }
    let pin = Secret::new(pin.to_vec());
    {
        let mut d = lock(&MODULE.daemon);
        d.call(&Request::Login { so, pin: pin.duplicate() }, CKR_PIN_INCORRECT)?;
        d.set_login(Some((so, pin)));
    }
    with(|s| {
        if so {
            s.so = true;
        } else {
            s.logged_in = true;
        }
        Ok(())
    })
}

/// C_InitPIN: the security officer sets the user PIN.
pub(crate) fn init_pin(h: CK_SESSION_HANDLE, pin: &[u8]) -> Result<(), Rv> {
    with(|s| {
        let rw = s.session(h)?.rw;
        match (s.so, rw) {
            (false, _) => Err(CKR_USER_NOT_LOGGED_IN),
            (true, false) => Err(CKR_SESSION_READ_ONLY),
            (true, true) => Ok(()),
        }
    })?;
    if !(4..=proto::MAX_PIN).contains(&pin.len()) {
        return Err(CKR_PIN_LEN_RANGE);
    }
    daemon_call(&Request::InitPin { pin: Secret::new(pin.to_vec()) }, CKR_PIN_INVALID).map(|_| ())
}

/// C_SetPIN: the PIN of whoever is logged in (the user's if nobody is).
pub(crate) fn set_pin(h: CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> Result<(), Rv> {
    let logged_in = with(|s| {
        if !s.session(h)?.rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        Ok(s.logged_in || s.so)
    })?;
    if !(4..=proto::MAX_PIN).contains(&new.len()) {
        return Err(CKR_PIN_LEN_RANGE);
    }
    if !(4..=proto::MAX_PIN).contains(&old.len()) {
        return Err(CKR_PIN_INCORRECT);
    }
    let new = Secret::new(new.to_vec());
    let mut d = lock(&MODULE.daemon);
    d.call(
        &Request::SetPin { old: Secret::new(old.to_vec()), new: new.duplicate() },
        CKR_PIN_INVALID,
    )?;
    if logged_in {
        // A new connection logs in with the new PIN.
        d.change_pin(new);
    }
    Ok(())
}

/// C_Logout: private session objects are destroyed (PKCS#11 §5.6), and
/// operations with private keys end.
pub(crate) fn logout(h: CK_SESSION_HANDLE) -> Result<(), Rv> {
    let orphans = with(|s| {
        s.session(h)?;
        if !s.logged_in && !s.so {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        s.logged_in = false;
        s.so = false;
        for x in s.sessions.values_mut() {
            x.sign = None;
            x.find = None;
        }
        let mut dropped = Vec::new();
        s.objects.retain(|_, o| {
            let goes = o.private && o.owner.is_some();
            if goes {
                dropped.extend(o.daemon_key().map(str::to_owned));
            }
            !goes
        });
        Ok(s.unused(dropped))
    })?;
    lock(&MODULE.daemon).set_login(None);
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
        if flags & CKF_DIGEST != 0 {
            x.digest = None;
        }
        if flags & CKF_ENCRYPT != 0 {
            x.encrypt = None;
        }
        if flags & CKF_DECRYPT != 0 {
            x.decrypt = None;
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
            (k.starts_with("s/") || k.starts_with("k/"))
                && !self.objects.values().any(|o| o.daemon_key() == Some(k.as_str()))
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
                dropped.extend(o.daemon_key().map(str::to_owned));
                false
            }
            _ => true,
        });
        let dropped = self.unused(dropped);
        let logout = self.sessions.is_empty() && (self.logged_in || self.so);
        if self.sessions.is_empty() {
            self.logged_in = false;
            self.so = false;
        }
        (dropped, logout)
    }
}
