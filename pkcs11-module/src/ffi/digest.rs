//! Message digesting functions: C_DigestInit, C_Digest, C_DigestUpdate,
//! C_DigestKey and C_DigestFinal.

use cryptoki_sys::*;

use super::{bytes_in, guard, mechanism_in, output_call};
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
        let input = Some((p_data.cast_const(), data_len));
        // SAFETY: the caller passes NULL or data readable for data_len bytes,
        // NULL or a writable length, and NULL or a buffer writable for it.
        unsafe {
            output_call(
                input,
                p_digest,
                pul_digest_len,
                || token::end_digest(h),
                |d, o| token::digest(h, d, o),
            )
        }
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
        // SAFETY: the caller passes NULL or a writable length, and NULL or a
        // buffer writable for it.
        unsafe {
            output_call(
                None,
                p_digest,
                pul_digest_len,
                || token::end_digest(h),
                |d, o| token::digest(h, d, o),
            )
        }
    })
}
