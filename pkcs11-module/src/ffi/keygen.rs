//! Key generation and derivation: C_GenerateKeyPair, C_GenerateKey
//! (CKM_AES_KEY_GEN) and C_DeriveKey (HKDF).

use cryptoki_sys::*;

use super::{guard, mechanism_in, out, template_in};
use crate::token;

pub(super) unsafe extern "C" fn C_GenerateKeyPair(
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

pub(super) unsafe extern "C" fn C_GenerateKey(
    h: CK_SESSION_HANDLE,
    p_mech: *mut CK_MECHANISM,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    ph_key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a valid mechanism.
        let m = unsafe { mechanism_in(p_mech) }?;
        // SAFETY: the caller passes NULL or `count` readable attributes.
        let t = unsafe { template_in(p_template, count) }?;
        // SAFETY: the caller passes NULL or a writable handle.
        let dst = unsafe { out(ph_key) }?;
        *dst = token::generate_key(h, &m, &t)?;
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_DeriveKey(
    h: CK_SESSION_HANDLE,
    p_mech: *mut CK_MECHANISM,
    base: CK_OBJECT_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    ph_key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or a valid mechanism.
        let m = unsafe { mechanism_in(p_mech) }?;
        // SAFETY: the caller passes NULL or `count` readable attributes.
        let t = unsafe { template_in(p_template, count) }?;
        // SAFETY: the caller passes NULL or a writable handle.
        let dst = unsafe { out(ph_key) }?;
        *dst = token::derive_key(h, &m, base, &t)?;
        Ok(())
    })
}
