//! Message digesting functions: C_DigestInit, C_Digest, C_DigestUpdate,
//! C_DigestKey and C_DigestFinal.

use cryptoki_sys::*;

use super::{answer, bytes_in, bytes_out, guard, mechanism_in, out};
use crate::token;

pub(super) unsafe extern "C" fn C_DigestInit(
    h: CK_SESSION_HANDLE,
    p_mech: *mut CK_MECHANISM,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        if p_mech.is_null() {
            // PKCS#11 3.x: a NULL mechanism ends the active operation.
            token::end_digest(h);
            return Ok(());
        }
        // SAFETY: the caller passes NULL or a valid mechanism.
        let m = unsafe { mechanism_in(p_mech) }?;
        if !matches!(m.param, token::Param::None) {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        token::digest_init(h, m.mtype)
    })
}

pub(super) unsafe extern "C" fn C_Digest(
    h: CK_SESSION_HANDLE,
    p_data: *mut CK_BYTE,
    data_len: CK_ULONG,
    p_digest: *mut CK_BYTE,
    pul_digest_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // Copied first: the caller may digest in place.
        // SAFETY: the caller passes NULL or data readable for data_len bytes.
        let data =
            unsafe { bytes_in(p_data, data_len) }.inspect_err(|_| token::end_digest(h))?.to_vec();
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        let len = unsafe { out(pul_digest_len) }.inspect_err(|_| token::end_digest(h))?;
        // SAFETY: the caller passes NULL or a buffer writable for *len bytes;
        // nothing else borrowed from the caller is alive.
        let dst = unsafe { bytes_out(p_digest, *len) }.inspect_err(|_| token::end_digest(h))?;
        answer(token::digest(h, Some(&data), dst)?, len)
    })
}

pub(super) unsafe extern "C" fn C_DigestUpdate(
    h: CK_SESSION_HANDLE,
    p_part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a part readable for len bytes.
        let part = unsafe { bytes_in(p_part, len) }.inspect_err(|_| token::end_digest(h))?;
        token::digest_update(h, part)
    })
}

pub(super) unsafe extern "C" fn C_DigestKey(h: CK_SESSION_HANDLE, key: CK_OBJECT_HANDLE) -> CK_RV {
    guard(|| token::digest_key(h, key))
}

pub(super) unsafe extern "C" fn C_DigestFinal(
    h: CK_SESSION_HANDLE,
    p_digest: *mut CK_BYTE,
    pul_digest_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        let len = unsafe { out(pul_digest_len) }.inspect_err(|_| token::end_digest(h))?;
        // SAFETY: the caller passes NULL or a buffer writable for *len bytes.
        let dst = unsafe { bytes_out(p_digest, *len) }.inspect_err(|_| token::end_digest(h))?;
        answer(token::digest(h, None, dst)?, len)
    })
}
