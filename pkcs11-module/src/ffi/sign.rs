//! Signing and verification functions: C_Sign*, C_Verify* and the PKCS#11
//! 3.2 C_VerifySignature* family.

use cryptoki_sys::*;

use super::{bytes_in, guard, mechanism_in, output_call};
use crate::token;

pub(super) unsafe extern "C" fn C_SignInit(
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

pub(super) unsafe extern "C" fn C_Sign(
    h: CK_SESSION_HANDLE,
    p_data: *mut CK_BYTE,
    data_len: CK_ULONG,
    p_sig: *mut CK_BYTE,
    pul_sig_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        let input = Some((p_data.cast_const(), data_len));
        // SAFETY: the caller passes NULL or data readable for data_len bytes,
        // NULL or a writable length, and NULL or a buffer writable for it.
        unsafe {
            output_call(
                input,
                p_sig,
                pul_sig_len,
                || token::end_sign(h),
                |d, o| token::sign(h, d, o),
            )
        }
    })
}

pub(super) unsafe extern "C" fn C_SignUpdate(
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

pub(super) unsafe extern "C" fn C_SignFinal(
    h: CK_SESSION_HANDLE,
    p_sig: *mut CK_BYTE,
    pul_sig_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a writable length, and NULL or a
        // buffer writable for it.
        unsafe {
            output_call(
                None,
                p_sig,
                pul_sig_len,
                || token::end_sign(h),
                |d, o| token::sign(h, d, o),
            )
        }
    })
}

pub(super) unsafe extern "C" fn C_VerifyInit(
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

pub(super) unsafe extern "C" fn C_Verify(
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

pub(super) unsafe extern "C" fn C_VerifyUpdate(
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

pub(super) unsafe extern "C" fn C_VerifyFinal(
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

pub(super) unsafe extern "C" fn C_VerifySignatureInit(
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

pub(super) unsafe extern "C" fn C_VerifySignature(
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

pub(super) unsafe extern "C" fn C_VerifySignatureUpdate(
    h: CK_SESSION_HANDLE,
    p_part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    // SAFETY: the same contract as C_VerifyUpdate's, which this is.
    unsafe { C_VerifyUpdate(h, p_part, len) }
}

pub(super) unsafe extern "C" fn C_VerifySignatureFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        token::verify(h, None, None)
    })
}
