//! General-purpose, slot and token management functions: C_Initialize,
//! C_Finalize, C_GetInfo, the slot and token info, the mechanisms, and the
//! legacy parallel-function stubs (C_GetFunctionStatus, C_CancelFunction).

use cryptoki_sys::*;

use super::{guard, guard_any, out};
use crate::token;

/// Space-pad `s` into a fixed field.
fn pad<const N: usize>(s: &str) -> [u8; N] {
    let mut f = [b' '; N];
    let n = s.len().min(N);
    f[..n].copy_from_slice(&s.as_bytes()[..n]);
    f
}

/// This crate's version as a CK_VERSION.
fn crate_version() -> CK_VERSION {
    let mut parts = env!("CARGO_PKG_VERSION").split('.').map(|p| p.parse::<u8>().unwrap_or(0));
    CK_VERSION { major: parts.next().unwrap_or(0), minor: parts.next().unwrap_or(0) }
}

pub(super) unsafe extern "C" fn C_Initialize(p_init_args: *mut std::ffi::c_void) -> CK_RV {
    guard_any(|| {
        // SAFETY: PKCS#11 says pInitArgs is NULL or a CK_C_INITIALIZE_ARGS.
        if let Some(args) = unsafe { p_init_args.cast::<CK_C_INITIALIZE_ARGS>().as_ref() } {
            if !args.pReserved.is_null() {
                return Err(CKR_ARGUMENTS_BAD);
            }
            let given = [
                args.CreateMutex.is_some(),
                args.DestroyMutex.is_some(),
                args.LockMutex.is_some(),
                args.UnlockMutex.is_some(),
            ];
            if given.iter().any(|g| *g) && !given.iter().all(|g| *g) {
                return Err(CKR_ARGUMENTS_BAD);
            }
            // Callbacks without CKF_OS_LOCKING_OK would have to be used; this
            // module locks with the OS's primitives only.
            if given[0] && args.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(CKR_CANT_LOCK);
            }
        }
        watch_forks();
        token::initialize()
    })
}

/// Install, once, the fork handler that keeps `pid::current` right in a
/// fork's child (see `pid.rs`).
fn watch_forks() {
    extern "C" fn child() {
        crate::pid::forked();
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: pthread_atfork only records the handlers. The child handler
        // is a plain function that stays loaded as long as the process (a
        // PKCS#11 module is not unloaded while its function lists are in use,
        // and `child` touches only an atomic), and it calls getpid, which is
        // async-signal-safe, as a fork handler must be.
        if unsafe { libc::pthread_atfork(None, None, Some(child)) } == 0 {
            crate::pid::watched();
        }
    });
}

pub(super) unsafe extern "C" fn C_Finalize(p_reserved: *mut std::ffi::c_void) -> CK_RV {
    guard(|| {
        if !p_reserved.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        token::finalize()
    })
}

pub(super) unsafe extern "C" fn C_GetInfo(p_info: *mut CK_INFO) -> CK_RV {
    guard(|| {
        token::initialized()?;
        // SAFETY: the caller passes NULL or a writable CK_INFO.
        let info = unsafe { out(p_info) }?;
        *info = CK_INFO {
            cryptokiVersion: CK_VERSION { major: 3, minor: 2 },
            manufacturerID: pad("qkeyd"),
            flags: 0,
            libraryDescription: pad("qkeyd PKCS#11 module"),
            libraryVersion: crate_version(),
        };
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_GetSlotList(
    token_present: CK_BBOOL,
    p_slot_list: *mut CK_SLOT_ID,
    pul_count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::initialized()?;
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        let count = unsafe { out(pul_count) }?;
        let slots: &[CK_SLOT_ID] =
            if token_present != 0 && !token::token_present() { &[] } else { &[token::SLOT] };
        if p_slot_list.is_null() {
            *count = slots.len() as CK_ULONG;
            return Ok(());
        }
        if (*count as usize) < slots.len() {
            *count = slots.len() as CK_ULONG;
            return Err(CKR_BUFFER_TOO_SMALL);
        }
        for (i, s) in slots.iter().enumerate() {
            // SAFETY: the list holds *count ≥ slots.len() entries, by the caller's contract.
            unsafe { p_slot_list.add(i).write(*s) };
        }
        *count = slots.len() as CK_ULONG;
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_GetSlotInfo(
    slot_id: CK_SLOT_ID,
    p_info: *mut CK_SLOT_INFO,
) -> CK_RV {
    guard(|| {
        token::slot(slot_id)?;
        // SAFETY: the caller passes NULL or a writable CK_SLOT_INFO.
        let info = unsafe { out(p_info) }?;
        let present = token::token_present();
        *info = CK_SLOT_INFO {
            slotDescription: pad("qkeyd daemon (QKEYD_MODULE_SOCKET)"),
            manufacturerID: pad("qkeyd"),
            // The token comes and goes with the daemon.
            flags: CKF_REMOVABLE_DEVICE | if present { CKF_TOKEN_PRESENT } else { 0 },
            hardwareVersion: crate_version(),
            firmwareVersion: crate_version(),
        };
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_GetTokenInfo(
    slot_id: CK_SLOT_ID,
    p_info: *mut CK_TOKEN_INFO,
) -> CK_RV {
    guard(|| {
        token::slot(slot_id)?;
        // SAFETY: the caller passes NULL or a writable CK_TOKEN_INFO.
        let info = unsafe { out(p_info) }?;
        let t = token::token_info(slot_id)?;
        *info = CK_TOKEN_INFO {
            label: pad(token::LABEL),
            manufacturerID: pad("qkeyd"),
            model: pad("qkeyd daemon"),
            serialNumber: pad(&t.serial),
            flags: CKF_RNG
                | CKF_LOGIN_REQUIRED
                | CKF_USER_PIN_INITIALIZED
                | CKF_TOKEN_INITIALIZED
                | t.pin_flags,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: t.sessions,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: t.rw_sessions,
            ulMaxPinLen: qkeyd_p11_proto::MAX_PIN as CK_ULONG,
            ulMinPinLen: 4,
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: crate_version(),
            firmwareVersion: crate_version(),
            utcTime: [b' '; 16],
        };
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_GetMechanismList(
    slot_id: CK_SLOT_ID,
    p_list: *mut CK_MECHANISM_TYPE,
    pul_count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::slot(slot_id)?;
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        let count = unsafe { out(pul_count) }?;
        let n = token::MECHANISMS.len();
        if p_list.is_null() {
            *count = n as CK_ULONG;
            return Ok(());
        }
        if (*count as usize) < n {
            *count = n as CK_ULONG;
            return Err(CKR_BUFFER_TOO_SMALL);
        }
        for (i, m) in token::MECHANISMS.iter().enumerate() {
            // SAFETY: the list holds *count ≥ n entries, by the caller's contract.
            unsafe { p_list.add(i).write(m.0) };
        }
        *count = n as CK_ULONG;
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_GetMechanismInfo(
    slot_id: CK_SLOT_ID,
    mtype: CK_MECHANISM_TYPE,
    p_info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    guard(|| {
        token::slot(slot_id)?;
        // SAFETY: the caller passes NULL or a writable CK_MECHANISM_INFO.
        let info = unsafe { out(p_info) }?;
        let m = token::MECHANISMS.iter().find(|m| m.0 == mtype).ok_or(CKR_MECHANISM_INVALID)?;
        *info = CK_MECHANISM_INFO { ulMinKeySize: m.1, ulMaxKeySize: m.2, flags: m.3 };
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_GetFunctionStatus(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        Err(CKR_FUNCTION_NOT_PARALLEL)
    })
}

pub(super) unsafe extern "C" fn C_CancelFunction(h: CK_SESSION_HANDLE) -> CK_RV {
    // SAFETY: takes no pointers.
    unsafe { C_GetFunctionStatus(h) }
}
