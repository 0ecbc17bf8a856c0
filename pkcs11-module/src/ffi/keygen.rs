//! Key generation: C_GenerateKeyPair.

use cryptoki_sys::*;

use super::{guard, mechanism_in, template_in};
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
