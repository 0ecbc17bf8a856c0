//! The per-process DRBG behind C_GenerateRandom: CTR_DRBG (the daemon's own
//! implementation, known-answer tested before first use), seeded from the
//! daemon's health-tested pool and reseeded by count, by age, after a fork,
//! and whenever the daemon connection is found gone.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use cryptoki_sys::*;
use qkeyd_drbg::{CtrDrbg, MAX_REQUEST, SEED_LEN};

use crate::{client::Daemon, object::Rv};

/// Generate calls (of up to 64 KiB each) between reseeds.
const RESEED_REQUESTS: u64 = 1 << 16;
/// Longest a seed is used: so a daemon that stops vouching for its entropy
/// (fail-closed) stops this process's output within this time.
const RESEED_AGE: Duration = Duration::from_secs(1);
/// How often the daemon connection is checked between reseeds.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The DRBG and when it was seeded.
pub(crate) struct Rng {
    drbg: Option<CtrDrbg>,
    /// The process that seeded `drbg`.
    pid: u32,
    seeded: Option<Instant>,
    checked: Option<Instant>,
    /// The known-answer test: not run, passed, or failed (then nothing is served).
    kat: Option<bool>,
}

impl Rng {
    pub(crate) const fn new() -> Self {
        Self { drbg: None, pid: 0, seeded: None, checked: None, kat: None }
    }

    /// Drop the state (C_Finalize, or a fork).
    pub(crate) fn reset(&mut self) {
        self.drbg = None;
        self.seeded = None;
        self.checked = None;
    }

    /// Fill `out`. Fails (and forgets the state) if the daemon cannot give a
    /// seed when one is due: never bytes from a seed the daemon did not vouch for.
    pub(crate) fn fill(&mut self, out: &mut [u8], daemon: &Mutex<Daemon>) -> Result<(), Rv> {
        let pid = crate::pid::current();
        if self.pid != pid {
            // A forked child: it must never repeat its parent's stream.
            self.reset();
        }
        let now = Instant::now();
        if self.drbg.is_some() && self.checked.is_none_or(|t| now.duration_since(t) >= CHECK_EVERY)
        {
            self.checked = Some(now);
            if !lock(daemon).alive() {
                self.reset();
            }
        }
        for chunk in out.chunks_mut(MAX_REQUEST) {
            let stale = match (&self.drbg, self.seeded) {
                (Some(d), Some(t)) => d.needs_reseed() || now.duration_since(t) >= RESEED_AGE,
                _ => true,
            };
            if stale && let Err(rv) = self.reseed(daemon, pid) {
                self.reset();
                return Err(rv);
            }
            let drbg = self.drbg.as_mut().ok_or(CKR_GENERAL_ERROR)?;
            drbg.generate(chunk, &[]).map_err(|_| CKR_GENERAL_ERROR)?;
        }
        Ok(())
    }

    fn reseed(&mut self, daemon: &Mutex<Daemon>, pid: u32) -> Result<(), Rv> {
        match self.kat {
            Some(true) => {}
            Some(false) => return Err(CKR_GENERAL_ERROR),
            None => {
                let ok = qkeyd_drbg::kat::run_all().is_ok();
                self.kat = Some(ok);
                if !ok {
                    crate::client::debug("CTR_DRBG known-answer test failed: no random bytes");
                    return Err(CKR_GENERAL_ERROR);
                }
            }
        }
        let seed = lock(daemon)
            .seed(SEED_LEN as u32)
            .map_err(|rv| if rv == CKR_TOKEN_NOT_PRESENT { CKR_DEVICE_ERROR } else { rv })?;
        let seed: &[u8; SEED_LEN] = seed.as_slice().try_into().map_err(|_| CKR_DEVICE_ERROR)?;
        // The pid and time separate instances seeded alike (they are not entropy).
        let mut personal = [0u8; 16];
        personal[..4].copy_from_slice(&pid.to_be_bytes());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        personal[4..12].copy_from_slice(&nanos.to_be_bytes());
        match &mut self.drbg {
            Some(d) if self.pid == pid => d.reseed(seed, &personal),
            _ => CtrDrbg::new(seed, &personal, RESEED_REQUESTS).map(|d| self.drbg = Some(d)),
        }
        .map_err(|_| CKR_GENERAL_ERROR)?;
        self.pid = pid;
        self.seeded = Some(Instant::now());
        self.checked = self.seeded;
        Ok(())
    }
}

/// Lock, ignoring poisoning: a panic is caught at the FFI edge, and every
/// state here stays consistent across one.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
