//! The C ABI: the only place with `unsafe`. Every function here checks each
//! pointer it is given, copies inputs into Rust values, calls the safe core
//! in `token`, and writes results back, all under `catch_unwind` so a panic
//! is CKR_GENERAL_ERROR and never unwinds into the host.
//!
//! Only `C_GetFunctionList`, `C_GetInterfaceList` and `C_GetInterface` are
//! exported; everything else is reached through the function lists, so this
//! module's entry points cannot be confused with another module's loaded in
//! the same process.
#![allow(unsafe_code)]
// The C names of the PKCS#11 functions, so each reads as the spec names it.
#![allow(non_snake_case)]

pub(crate) mod lists;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    ptr,
};

use cryptoki_sys::*;

use crate::{
    object::{Attr, Read, Rv},
    token::{self, Mech, Out, Param},
};

/// Run `f`, turning a panic into CKR_GENERAL_ERROR.
fn guard(f: impl FnOnce() -> Result<(), Rv>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(rv)) => rv,
        Err(_) => CKR_GENERAL_ERROR,
    }
}

/// `p` as a place to write one `T`.
///
/// # Safety
/// `p` is NULL or valid for writing a `T` (the PKCS#11 caller's contract).
unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T, Rv> {
    // SAFETY: by this function's contract, a non-NULL `p` is valid and aligned
    // for a `T`; `as_mut` checks for NULL.
    unsafe { p.as_mut() }.ok_or(CKR_ARGUMENTS_BAD)
}

/// `len` input bytes at `p` (NULL is allowed only for length 0).
///
/// # Safety
/// `p` is NULL or valid for reading `len` bytes.
unsafe fn bytes_in<'a>(p: *const u8, len: CK_ULONG) -> Result<&'a [u8], Rv> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() || len > isize::MAX as CK_ULONG {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL, and by this function's contract readable for `len`
    // (≤ isize::MAX) bytes that nobody writes during the call.
    Ok(unsafe { std::slice::from_raw_parts(p, len as usize) })
}

/// An output buffer of `len` bytes at `p`; NULL means "length only".
///
/// # Safety
/// `p` is NULL or valid for writing `len` bytes.
unsafe fn bytes_out<'a>(p: *mut u8, len: CK_ULONG) -> Result<Option<&'a mut [u8]>, Rv> {
    if p.is_null() {
        return Ok(None);
    }
    if len > isize::MAX as CK_ULONG {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL, and by this function's contract writable for `len`
    // (≤ isize::MAX) bytes not aliased during the call.
    Ok(Some(unsafe { std::slice::from_raw_parts_mut(p, len as usize) }))
}

/// Copy an input template.
///
/// # Safety
/// `p` is NULL or points to `n` CK_ATTRIBUTEs, each with `pValue` NULL or
/// readable for `ulValueLen` bytes.
unsafe fn template_in(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Vec<Attr>, Rv> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() || n > (isize::MAX as usize / std::mem::size_of::<CK_ATTRIBUTE>()) as CK_ULONG {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL and, by this function's contract, `n` readable
    // attributes; `n` bounds the byte size below isize::MAX.
    let attrs = unsafe { std::slice::from_raw_parts(p, n as usize) };
    attrs
        .iter()
        .map(|a| {
            // SAFETY: by this function's contract, each pValue is NULL or
            // readable for ulValueLen bytes; bytes_in checks the NULL case.
            let v = unsafe { bytes_in(a.pValue.cast::<u8>(), a.ulValueLen) }?;
            Ok((a.type_, v.to_vec()))
        })
        .collect()
}

/// Copy a mechanism, reading a CK_SIGN_ADDITIONAL_CONTEXT parameter of CKM_ML_DSA.
///
/// # Safety
/// `p` is NULL or a valid CK_MECHANISM whose parameter is NULL or readable
/// for `ulParameterLen` bytes (and whose context, for CKM_ML_DSA, is NULL or
/// readable for `ulContextLen` bytes).
unsafe fn mechanism_in(p: *const CK_MECHANISM) -> Result<Mech, Rv> {
    // SAFETY: by this function's contract, a non-NULL `p` is a valid mechanism.
    let m = unsafe { p.as_ref() }.ok_or(CKR_ARGUMENTS_BAD)?;
    let param = if m.pParameter.is_null() || m.ulParameterLen == 0 {
        Param::None
    } else if m.mechanism == CKM_ML_DSA
        && m.ulParameterLen as usize == std::mem::size_of::<CK_SIGN_ADDITIONAL_CONTEXT>()
    {
        // SAFETY: the parameter is non-NULL and exactly one
        // CK_SIGN_ADDITIONAL_CONTEXT long; read_unaligned makes no alignment claim.
        let c = unsafe { ptr::read_unaligned(m.pParameter.cast::<CK_SIGN_ADDITIONAL_CONTEXT>()) };
        if c.ulContextLen > 255 {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        // SAFETY: by this function's contract the context is NULL or readable
        // for ulContextLen (≤ 255) bytes; bytes_in checks the NULL case.
        let context = unsafe { bytes_in(c.pContext, c.ulContextLen) }
            .map_err(|_| CKR_MECHANISM_PARAM_INVALID)?
            .to_vec();
        Param::SignContext { hedge: c.hedgeVariant, context }
    } else {
        Param::Other
    };
    Ok(Mech { mtype: m.mechanism, param })
}

/// Write a length-or-bytes answer: `Out` into `*len_ptr`, with the PKCS#11 rvs.
fn answer(o: Out, len: &mut CK_ULONG) -> Result<(), Rv> {
    match o {
        Out::Length(n) | Out::Written(n) => {
            *len = n as CK_ULONG;
            Ok(())
        }
        Out::TooSmall(n) => {
            *len = n as CK_ULONG;
            Err(CKR_BUFFER_TOO_SMALL)
        }
    }
}

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

unsafe extern "C" fn C_Initialize(p_init_args: *mut std::ffi::c_void) -> CK_RV {
    guard(|| {
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
        token::initialize()
    })
}

unsafe extern "C" fn C_Finalize(p_reserved: *mut std::ffi::c_void) -> CK_RV {
    guard(|| {
        if !p_reserved.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        token::finalize()
    })
}

unsafe extern "C" fn C_GetInfo(p_info: *mut CK_INFO) -> CK_RV {
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

unsafe extern "C" fn C_GetSlotList(
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

unsafe extern "C" fn C_GetSlotInfo(slot_id: CK_SLOT_ID, p_info: *mut CK_SLOT_INFO) -> CK_RV {
    guard(|| {
        token::slot(slot_id)?;
        // SAFETY: the caller passes NULL or a writable CK_SLOT_INFO.
        let info = unsafe { out(p_info) }?;
        let present = token::token_present();
        *info = CK_SLOT_INFO {
            slotDescription: pad("qkeyd daemon (QKEYD_SOCKET)"),
            manufacturerID: pad("qkeyd"),
            // The token comes and goes with the daemon.
            flags: CKF_REMOVABLE_DEVICE | if present { CKF_TOKEN_PRESENT } else { 0 },
            hardwareVersion: crate_version(),
            firmwareVersion: crate_version(),
        };
        Ok(())
    })
}

unsafe extern "C" fn C_GetTokenInfo(slot_id: CK_SLOT_ID, p_info: *mut CK_TOKEN_INFO) -> CK_RV {
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
            flags: CKF_RNG | CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED,
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

unsafe extern "C" fn C_GetMechanismList(
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

unsafe extern "C" fn C_GetMechanismInfo(
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

unsafe extern "C" fn C_OpenSession(
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

unsafe extern "C" fn C_CloseSession(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| token::close_session(h))
}

unsafe extern "C" fn C_CloseAllSessions(slot_id: CK_SLOT_ID) -> CK_RV {
    guard(|| token::close_all_sessions(slot_id))
}

unsafe extern "C" fn C_GetSessionInfo(h: CK_SESSION_HANDLE, p_info: *mut CK_SESSION_INFO) -> CK_RV {
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

unsafe extern "C" fn C_Login(
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

unsafe extern "C" fn C_Logout(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| token::logout(h))
}

unsafe extern "C" fn C_DestroyObject(h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> CK_RV {
    guard(|| token::destroy(h, o))
}

unsafe extern "C" fn C_GetObjectSize(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    pul_size: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::get_attributes(h, o, &[])?;
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        *unsafe { out(pul_size) }? = CK_UNAVAILABLE_INFORMATION;
        Ok(())
    })
}

unsafe extern "C" fn C_GetAttributeValue(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        if count > 0 && p_template.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        if count > (isize::MAX as usize / std::mem::size_of::<CK_ATTRIBUTE>()) as CK_ULONG {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let attrs: &mut [CK_ATTRIBUTE] = if count == 0 {
            &mut []
        } else {
            // SAFETY: non-NULL, and by the caller's contract `count` writable
            // attributes (bounded above to fit isize::MAX bytes).
            unsafe { std::slice::from_raw_parts_mut(p_template, count as usize) }
        };
        let types: Vec<CK_ATTRIBUTE_TYPE> = attrs.iter().map(|a| a.type_).collect();
        let reads = token::get_attributes(h, o, &types)?;
        let mut rv = CKR_OK;
        for (a, r) in attrs.iter_mut().zip(reads) {
            let value = match r {
                Read::Value(v) => v,
                Read::Sensitive => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = if rv == CKR_OK { CKR_ATTRIBUTE_SENSITIVE } else { rv };
                    continue;
                }
                Read::Invalid => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = if rv == CKR_OK { CKR_ATTRIBUTE_TYPE_INVALID } else { rv };
                    continue;
                }
            };
            if a.pValue.is_null() {
                a.ulValueLen = value.len() as CK_ULONG;
            } else if (a.ulValueLen as usize) < value.len() {
                a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = if rv == CKR_OK { CKR_BUFFER_TOO_SMALL } else { rv };
            } else {
                // SAFETY: pValue is non-NULL and, by the caller's contract,
                // writable for ulValueLen ≥ value.len() bytes.
                unsafe {
                    ptr::copy_nonoverlapping(value.as_ptr(), a.pValue.cast::<u8>(), value.len())
                };
                a.ulValueLen = value.len() as CK_ULONG;
            }
        }
        if rv == CKR_OK { Ok(()) } else { Err(rv) }
    })
}

unsafe extern "C" fn C_SetAttributeValue(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: the caller passes NULL or `count` readable attributes.
        unsafe { template_in(p_template, count) }?;
        token::modify(h, o)
    })
}

unsafe extern "C" fn C_CopyObject(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    ph_new: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        // SAFETY: the caller passes NULL or `count` readable attributes.
        unsafe { template_in(p_template, count) }?;
        // SAFETY: the caller passes NULL or a writable handle.
        unsafe { out(ph_new) }?;
        token::modify(h, o)
    })
}

unsafe extern "C" fn C_FindObjectsInit(
    h: CK_SESSION_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: the caller passes NULL or `count` readable attributes.
        let t = unsafe { template_in(p_template, count) }?;
        token::find_init(h, &t)
    })
}

unsafe extern "C" fn C_FindObjects(
    h: CK_SESSION_HANDLE,
    ph_object: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    pul_count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        let count = unsafe { out(pul_count) }?;
        if ph_object.is_null() && max > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let found = token::find(h, max as usize)?;
        for (i, o) in found.iter().enumerate() {
            // SAFETY: the array holds `max` ≥ found.len() handles, by the caller's contract.
            unsafe { ph_object.add(i).write(*o) };
        }
        *count = found.len() as CK_ULONG;
        Ok(())
    })
}

unsafe extern "C" fn C_FindObjectsFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| token::find_final(h))
}

unsafe extern "C" fn C_SignInit(
    h: CK_SESSION_HANDLE,
    p_mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        if p_mech.is_null() {
            // PKCS#11 3.x: a NULL mechanism ends the active operation.
            token::end_sign(h);
            return Ok(());
        }
        // SAFETY: the caller passes NULL or a valid mechanism.
        let m = unsafe { mechanism_in(p_mech) }?;
        token::sign_init(h, &m, key)
    })
}

unsafe extern "C" fn C_Sign(
    h: CK_SESSION_HANDLE,
    p_data: *mut CK_BYTE,
    data_len: CK_ULONG,
    p_sig: *mut CK_BYTE,
    pul_sig_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // Copied first: the caller may sign in place (pSignature over pData).
        // SAFETY: the caller passes NULL or data readable for data_len bytes.
        let data =
            unsafe { bytes_in(p_data, data_len) }.inspect_err(|_| token::end_sign(h))?.to_vec();
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        let len = unsafe { out(pul_sig_len) }.inspect_err(|_| token::end_sign(h))?;
        // SAFETY: the caller passes NULL or a buffer writable for *len bytes;
        // nothing else borrowed from the caller is alive.
        let sig = unsafe { bytes_out(p_sig, *len) }.inspect_err(|_| token::end_sign(h))?;
        answer(token::sign(h, Some(&data), sig)?, len)
    })
}

unsafe extern "C" fn C_SignUpdate(
    h: CK_SESSION_HANDLE,
    p_part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a part readable for len bytes.
        let part = unsafe { bytes_in(p_part, len) }?;
        token::sign_update(h, part)
    })
}

unsafe extern "C" fn C_SignFinal(
    h: CK_SESSION_HANDLE,
    p_sig: *mut CK_BYTE,
    pul_sig_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        let len = unsafe { out(pul_sig_len) }.inspect_err(|_| token::end_sign(h))?;
        // SAFETY: the caller passes NULL or a buffer writable for *len bytes.
        let sig = unsafe { bytes_out(p_sig, *len) }.inspect_err(|_| token::end_sign(h))?;
        answer(token::sign(h, None, sig)?, len)
    })
}

unsafe extern "C" fn C_VerifyInit(
    h: CK_SESSION_HANDLE,
    p_mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        if p_mech.is_null() {
            token::end_verify(h);
            return Ok(());
        }
        // SAFETY: the caller passes NULL or a valid mechanism.
        let m = unsafe { mechanism_in(p_mech) }?;
        token::verify_init(h, &m, key, None)
    })
}

unsafe extern "C" fn C_Verify(
    h: CK_SESSION_HANDLE,
    p_data: *mut CK_BYTE,
    data_len: CK_ULONG,
    p_sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or data readable for data_len bytes.
        let data = unsafe { bytes_in(p_data, data_len) }?;
        // SAFETY: the caller passes NULL or a signature readable for sig_len bytes.
        let sig = unsafe { bytes_in(p_sig, sig_len) }?;
        token::verify(h, Some(data), Some(sig))
    })
}

unsafe extern "C" fn C_VerifyUpdate(
    h: CK_SESSION_HANDLE,
    p_part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a part readable for len bytes.
        let part = unsafe { bytes_in(p_part, len) }?;
        token::verify_update(h, part)
    })
}

unsafe extern "C" fn C_VerifyFinal(
    h: CK_SESSION_HANDLE,
    p_sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a signature readable for sig_len bytes.
        let sig = unsafe { bytes_in(p_sig, sig_len) }?;
        token::verify(h, None, Some(sig))
    })
}

unsafe extern "C" fn C_VerifySignatureInit(
    h: CK_SESSION_HANDLE,
    p_mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
    p_sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        if p_mech.is_null() {
            token::end_verify(h);
            return Ok(());
        }
        // SAFETY: the caller passes NULL or a valid mechanism.
        let m = unsafe { mechanism_in(p_mech) }?;
        // SAFETY: the caller passes NULL or a signature readable for sig_len bytes.
        let sig = unsafe { bytes_in(p_sig, sig_len) }?;
        token::verify_init(h, &m, key, Some(sig))
    })
}

unsafe extern "C" fn C_VerifySignature(
    h: CK_SESSION_HANDLE,
    p_data: *mut CK_BYTE,
    data_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or data readable for data_len bytes.
        let data = unsafe { bytes_in(p_data, data_len) }?;
        token::verify(h, Some(data), None)
    })
}

unsafe extern "C" fn C_VerifySignatureUpdate(
    h: CK_SESSION_HANDLE,
    p_part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    // SAFETY: the same contract as C_VerifyUpdate's, which this is.
    unsafe { C_VerifyUpdate(h, p_part, len) }
}

unsafe extern "C" fn C_VerifySignatureFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        token::verify(h, None, None)
    })
}

unsafe extern "C" fn C_GenerateKeyPair(
    h: CK_SESSION_HANDLE,
    p_mech: *mut CK_MECHANISM,
    p_pub: *mut CK_ATTRIBUTE,
    pub_count: CK_ULONG,
    p_priv: *mut CK_ATTRIBUTE,
    priv_count: CK_ULONG,
    ph_pub: *mut CK_OBJECT_HANDLE,
    ph_priv: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a valid mechanism.
        let m = unsafe { mechanism_in(p_mech) }?;
        // SAFETY: the caller passes NULL or `pub_count` readable attributes.
        let pubt = unsafe { template_in(p_pub, pub_count) }?;
        // SAFETY: the caller passes NULL or `priv_count` readable attributes.
        let privt = unsafe { template_in(p_priv, priv_count) }?;
        if ph_pub.is_null() || ph_priv.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let (p, q) = token::generate_key_pair(h, &m, &pubt, &privt)?;
        // SAFETY: both are non-NULL and writable by the caller's contract; each
        // is written through its raw pointer, so the two may even be the same.
        unsafe {
            ph_pub.write(p);
            ph_priv.write(q);
        }
        Ok(())
    })
}

unsafe extern "C" fn C_SeedRandom(
    h: CK_SESSION_HANDLE,
    p_seed: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: the caller passes NULL or a seed readable for len bytes.
        unsafe { bytes_in(p_seed, len) }?;
        token::seed_random(h)
    })
}

unsafe extern "C" fn C_GenerateRandom(
    h: CK_SESSION_HANDLE,
    p_random: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: the caller passes NULL or a buffer writable for len bytes.
        let buf = unsafe { bytes_out(p_random, len) }?;
        match buf {
            Some(b) => token::generate_random(h, b),
            None if len == 0 => token::generate_random(h, &mut []),
            None => {
                token::session_info(h)?;
                Err(CKR_ARGUMENTS_BAD)
            }
        }
    })
}

unsafe extern "C" fn C_SessionCancel(h: CK_SESSION_HANDLE, flags: CK_FLAGS) -> CK_RV {
    guard(|| token::session_cancel(h, flags))
}

unsafe extern "C" fn C_EncapsulateKey(
    h: CK_SESSION_HANDLE,
    p_mech: *mut CK_MECHANISM,
    public: CK_OBJECT_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    p_ct: *mut CK_BYTE,
    pul_ct_len: *mut CK_ULONG,
    ph_key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a valid mechanism.
        let m = unsafe { mechanism_in(p_mech) }?;
        // SAFETY: the caller passes NULL or `count` readable attributes.
        let t = unsafe { template_in(p_template, count) }?;
        if pul_ct_len.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: non-NULL, and a readable CK_ULONG by the caller's contract.
        let have = unsafe { pul_ct_len.read() };
        // A length query needs no handle; a real call does, checked first.
        if !p_ct.is_null() && ph_key.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        // SAFETY: the caller passes NULL or a buffer writable for `have` bytes;
        // the length and the handle are written through raw pointers below,
        // so they may lie anywhere, even inside it.
        let ct = unsafe { bytes_out(p_ct, have) }?;
        let (o, handle) = token::encapsulate(h, &m, public, &t, ct)?;
        let mut len = have;
        let r = answer(o, &mut len);
        // SAFETY: non-NULL and writable by the caller's contract (checked above).
        unsafe { pul_ct_len.write(len) };
        if let Some(k) = handle {
            // SAFETY: a handle is made only by a real call, for which ph_key
            // was checked non-NULL; writable by the caller's contract.
            unsafe { ph_key.write(k) };
        }
        r
    })
}

unsafe extern "C" fn C_DecapsulateKey(
    h: CK_SESSION_HANDLE,
    p_mech: *mut CK_MECHANISM,
    private: CK_OBJECT_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    p_ct: *mut CK_BYTE,
    ct_len: CK_ULONG,
    ph_key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a valid mechanism.
        let m = unsafe { mechanism_in(p_mech) }?;
        // SAFETY: the caller passes NULL or `count` readable attributes.
        let t = unsafe { template_in(p_template, count) }?;
        // SAFETY: the caller passes NULL or a ciphertext readable for ct_len bytes.
        let ct = unsafe { bytes_in(p_ct, ct_len) }?;
        // SAFETY: the caller passes NULL or a writable handle.
        let dst = unsafe { out(ph_key) }?;
        *dst = token::decapsulate(h, &m, private, &t, ct)?;
        Ok(())
    })
}

unsafe extern "C" fn C_GetFunctionStatus(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        Err(CKR_FUNCTION_NOT_PARALLEL)
    })
}

unsafe extern "C" fn C_CancelFunction(h: CK_SESSION_HANDLE) -> CK_RV {
    // SAFETY: takes no pointers.
    unsafe { C_GetFunctionStatus(h) }
}

pub use lists::{C_GetFunctionList, C_GetInterface, C_GetInterfaceList};

#[cfg(test)]
mod tests;
