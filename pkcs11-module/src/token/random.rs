//! C_GenerateRandom and C_SeedRandom, served by this process's DRBG.

use cryptoki_sys::*;

use super::{MODULE, with};
use crate::{object::Rv, rng::lock};

/// C_GenerateRandom: from this process's DRBG, never from a seed the daemon
/// did not give.
pub(crate) fn generate_random(h: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<(), Rv> {
    with(|s| s.session(h).map(|_| ()))?;
    if out.is_empty() {
        return Ok(());
    }
    lock(&MODULE.rng).fill(out, &MODULE.daemon)
}

/// C_SeedRandom: the DRBG takes entropy only from the daemon's tested pool.
pub(crate) fn seed_random(h: CK_SESSION_HANDLE) -> Result<(), Rv> {
    with(|s| s.session(h).map(|_| ()))?;
    Err(CKR_RANDOM_SEED_NOT_SUPPORTED)
}
