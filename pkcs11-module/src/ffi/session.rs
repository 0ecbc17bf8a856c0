//! Session management functions: C_OpenSession, C_CloseSession,
//! C_CloseAllSessions, C_GetSessionInfo, C_SessionCancel, C_Login, C_Logout,
//! C_InitPIN and C_SetPIN.

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

/// A PIN argument of at most MAX_PIN bytes (longer: CKR_PIN_LEN_RANGE).
///
/// # Safety
/// `p` is NULL or readable for `len` bytes.
unsafe fn pin_in<'a>(p: *const CK_UTF8CHAR, len: CK_ULONG) -> Result<&'a [u8], CK_RV> {
    if len > qkeyd_p11_proto::MAX_PIN as CK_ULONG {
        return Err(CKR_PIN_LEN_RANGE);
    }
    // SAFETY: by this function's contract, NULL or readable for len bytes.
    unsafe { bytes_in(p, len) }
}

pub(super) unsafe extern "C" fn C_InitPIN(
    h: CK_SESSION_HANDLE,
    p_pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a PIN readable for pin_len bytes.
        let pin = unsafe { pin_in(p_pin, pin_len) }?;
        token::init_pin(h, pin)
    })
}

pub(super) unsafe extern "C" fn C_SetPIN(
    h: CK_SESSION_HANDLE,
    p_old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    p_new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a PIN readable for old_len bytes.
        let old = unsafe { pin_in(p_old, old_len) }.map_err(|_| CKR_PIN_INCORRECT)?;
        // SAFETY: the caller passes NULL or a PIN readable for new_len bytes.
        let new = unsafe { pin_in(p_new, new_len) }?;
        token::set_pin(h, old, new)
    })
}
