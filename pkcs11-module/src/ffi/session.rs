//! Session management functions: C_OpenSession, C_CloseSession,
//! C_CloseAllSessions, C_GetSessionInfo, C_SessionCancel, C_Login, C_Logout.

use cryptoki_sys::*;

use super::{bytes_in, guard, out};
use crate::token;

pub(super) unsafe extern "C" fn C_OpenSession(
    slot_id: CK_SLOT_ID,
    flags: CK_FLAGS,
    _application: *mut std::ffi::c_void,
    _notify: CK_NOTIFY,
    ph_session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    guard(|| {
        token::slot(slot_id)?;
        // SAFETY: the caller passes NULL or a writable handle.
        let h = unsafe { out(ph_session) }?;
        *h = token::open_session(slot_id, flags)?;
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_CloseSession(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| token::close_session(h))
}

pub(super) unsafe extern "C" fn C_CloseAllSessions(slot_id: CK_SLOT_ID) -> CK_RV {
    guard(|| token::close_all_sessions(slot_id))
}

pub(super) unsafe extern "C" fn C_GetSessionInfo(
    h: CK_SESSION_HANDLE,
    p_info: *mut CK_SESSION_INFO,
) -> CK_RV {
    guard(|| {
        let s = token::session_info(h)?;
        // SAFETY: the caller passes NULL or a writable CK_SESSION_INFO.
        let info = unsafe { out(p_info) }?;
        *info = CK_SESSION_INFO {
            slotID: token::SLOT,
            state: s.state,
            flags: s.flags,
            ulDeviceError: 0,
        };
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_Login(
    h: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    p_pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        if pin_len > qkeyd_p11_proto::MAX_PIN as CK_ULONG {
            token::session_info(h)?;
            return Err(CKR_PIN_INCORRECT);
        }
        // SAFETY: the caller passes NULL or a PIN readable for pin_len bytes.
        let pin = unsafe { bytes_in(p_pin, pin_len) }?;
        token::login(h, user, pin)
    })
}

pub(super) unsafe extern "C" fn C_Logout(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| token::logout(h))
}

pub(super) unsafe extern "C" fn C_SessionCancel(h: CK_SESSION_HANDLE, flags: CK_FLAGS) -> CK_RV {
    guard(|| token::session_cancel(h, flags))
}
