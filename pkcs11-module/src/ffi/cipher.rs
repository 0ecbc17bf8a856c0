//! Encryption and decryption functions (AES-GCM): C_EncryptInit, C_Encrypt,
//! C_EncryptUpdate, C_EncryptFinal, and the C_Decrypt* family.

use cryptoki_sys::*;

use super::{bytes_in, guard, mechanism_in, out, output_call};
use crate::token;

/// C_EncryptInit / C_DecryptInit.
///
/// # Safety
/// `p_mech` is NULL or a valid mechanism (see `mechanism_in`).
unsafe fn init(
    h: CK_SESSION_HANDLE,
    p_mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
    encrypt: bool,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        if p_mech.is_null() {
            // PKCS#11 3.x: a NULL mechanism ends the active operation.
            token::end_crypt(h, encrypt);
            return Ok(());
        }
        // SAFETY: the caller passes NULL or a valid mechanism.
        let m = unsafe { mechanism_in(p_mech) }?;
        token::crypt_init(h, &m, key, encrypt)
    })
}

/// C_Encrypt / C_Decrypt.
///
/// # Safety
/// `p_in` is NULL or readable for `in_len` bytes; `pul_out` is NULL or a
/// writable CK_ULONG; `p_out` is NULL or writable for `*pul_out` bytes.
unsafe fn single(
    h: CK_SESSION_HANDLE,
    p_in: *mut CK_BYTE,
    in_len: CK_ULONG,
    p_out: *mut CK_BYTE,
    pul_out: *mut CK_ULONG,
    encrypt: bool,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        let input = Some((p_in.cast_const(), in_len));
        // SAFETY: by this function's contract, as output_call's.
        unsafe {
            output_call(
                input,
                p_out,
                pul_out,
                || token::end_crypt(h, encrypt),
                |d, o| token::crypt(h, d, o, encrypt),
            )
        }
    })
}

/// C_EncryptUpdate / C_DecryptUpdate: nothing is output before the final call.
///
/// # Safety
/// As [`single`].
unsafe fn update(
    h: CK_SESSION_HANDLE,
    p_in: *mut CK_BYTE,
    in_len: CK_ULONG,
    p_out: *mut CK_BYTE,
    pul_out: *mut CK_ULONG,
    encrypt: bool,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        let end = |_: &CK_RV| token::end_crypt(h, encrypt);
        // SAFETY: the caller passes NULL or data readable for in_len bytes.
        let part = unsafe { bytes_in(p_in, in_len) }.inspect_err(end)?;
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        let len = unsafe { out(pul_out) }.inspect_err(end)?;
        // A NULL output only asks how much this part would output: nothing.
        token::crypt_update(h, part, encrypt, !p_out.is_null())?;
        *len = 0;
        Ok(())
    })
}

/// C_EncryptFinal / C_DecryptFinal.
///
/// # Safety
/// `pul_out` is NULL or a writable CK_ULONG; `p_out` is NULL or writable for
/// `*pul_out` bytes.
unsafe fn finish(
    h: CK_SESSION_HANDLE,
    p_out: *mut CK_BYTE,
    pul_out: *mut CK_ULONG,
    encrypt: bool,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: by this function's contract, as output_call's.
        unsafe {
            output_call(
                None,
                p_out,
                pul_out,
                || token::end_crypt(h, encrypt),
                |d, o| token::crypt(h, d, o, encrypt),
            )
        }
    })
}

pub(super) unsafe extern "C" fn C_EncryptInit(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    // SAFETY: the caller's contract is init's.
    unsafe { init(h, m, key, true) }
}

pub(super) unsafe extern "C" fn C_DecryptInit(
    h: CK_SESSION_HANDLE,
    m: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    // SAFETY: the caller's contract is init's.
    unsafe { init(h, m, key, false) }
}

pub(super) unsafe extern "C" fn C_Encrypt(
    h: CK_SESSION_HANDLE,
    p_in: *mut CK_BYTE,
    in_len: CK_ULONG,
    p_out: *mut CK_BYTE,
    pul_out: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: the caller's contract is single's.
    unsafe { single(h, p_in, in_len, p_out, pul_out, true) }
}

pub(super) unsafe extern "C" fn C_Decrypt(
    h: CK_SESSION_HANDLE,
    p_in: *mut CK_BYTE,
    in_len: CK_ULONG,
    p_out: *mut CK_BYTE,
    pul_out: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: the caller's contract is single's.
    unsafe { single(h, p_in, in_len, p_out, pul_out, false) }
}

pub(super) unsafe extern "C" fn C_EncryptUpdate(
    h: CK_SESSION_HANDLE,
    p_in: *mut CK_BYTE,
    in_len: CK_ULONG,
    p_out: *mut CK_BYTE,
    pul_out: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: the caller's contract is update's.
    unsafe { update(h, p_in, in_len, p_out, pul_out, true) }
}

pub(super) unsafe extern "C" fn C_DecryptUpdate(
    h: CK_SESSION_HANDLE,
    p_in: *mut CK_BYTE,
    in_len: CK_ULONG,
    p_out: *mut CK_BYTE,
    pul_out: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: the caller's contract is update's.
    unsafe { update(h, p_in, in_len, p_out, pul_out, false) }
}

pub(super) unsafe extern "C" fn C_EncryptFinal(
    h: CK_SESSION_HANDLE,
    p_out: *mut CK_BYTE,
    pul_out: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: the caller's contract is finish's.
    unsafe { finish(h, p_out, pul_out, true) }
}

pub(super) unsafe extern "C" fn C_DecryptFinal(
    h: CK_SESSION_HANDLE,
    p_out: *mut CK_BYTE,
    pul_out: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: the caller's contract is finish's.
    unsafe { finish(h, p_out, pul_out, false) }
}
