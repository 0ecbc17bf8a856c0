//! Key encapsulation (PKCS#11 3.2): C_EncapsulateKey and C_DecapsulateKey.

use cryptoki_sys::*;

use super::{answer, bytes_in, bytes_out, guard, mechanism_in, out, template_in};
use crate::token;

pub(super) unsafe extern "C" fn C_EncapsulateKey(
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

pub(super) unsafe extern "C" fn C_DecapsulateKey(
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
