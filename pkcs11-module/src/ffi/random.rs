//! Random number generation functions: C_SeedRandom and C_GenerateRandom.

use cryptoki_sys::*;

use super::{bytes_in, bytes_out, guard, guard_any};
use crate::token;

pub(super) unsafe extern "C" fn C_SeedRandom(
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

pub(super) unsafe extern "C" fn C_GenerateRandom(
    h: CK_SESSION_HANDLE,
    p_random: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    // The hot path: token::generate_random checks the initialisation and the
    // session first, so `guard`'s own check would only repeat it.
    guard_any(|| {
        // SAFETY: the caller passes NULL or a buffer writable for len bytes.
        let buf = unsafe { bytes_out(p_random, len) };
        match buf {
            Ok(Some(b)) => token::generate_random(h, b),
            Ok(None) if len == 0 => token::generate_random(h, &mut []),
            Ok(None) => {
                token::session_info(h)?;
                Err(CKR_ARGUMENTS_BAD)
            }
            Err(rv) => {
                token::session_info(h)?;
                Err(rv)
            }
        }
    })
}
