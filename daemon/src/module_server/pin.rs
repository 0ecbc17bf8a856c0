//! Login: the token PIN, compared in constant time, with wrong PINs counted
//! across every connection.

use std::time::{Duration, Instant};

use qkeyd_p11_proto::{Response, Secret};
use subtle::ConstantTimeEq as _;

use super::{Conn, ModuleError, Outcome, Server};

/// Consecutive wrong PINs (from any connection) before logins pause.
const PIN_TRIES: u32 = 5;
/// How long logins pause after [`PIN_TRIES`] wrong PINs.
const PIN_PAUSE: Duration = Duration::from_secs(10);
/// What each wrong PIN costs its caller.
const PIN_DELAY: Duration = Duration::from_millis(200);

/// Wrong-PIN accounting, shared by every connection.
#[derive(Debug, Default)]
pub(super) struct PinGuard {
    failures: u32,
    paused_until: Option<Instant>,
}

impl Server {
    pub(super) fn login(&self, conn: &mut Conn, pin: &Secret) -> Outcome {
        let now = Instant::now();
        {
            let g = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(until) = g.paused_until.filter(|u| *u > now) {
                return Err(ModuleError::PinLocked((until - now).as_secs() + 1));
            }
        }
        let good =
            pin.expose().len() == self.pin.len() && bool::from(pin.expose().ct_eq(&self.pin));
        let mut g = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if good {
            g.failures = 0;
            g.paused_until = None;
            conn.logged_in = true;
            return Ok(Response::Done);
        }
        g.failures += 1;
        let failures = g.failures;
        if failures >= PIN_TRIES {
            g.failures = 0;
            g.paused_until = Some(now + PIN_PAUSE);
        }
        drop(g);
        tracing::warn!(failures, "PKCS#11 login with a wrong PIN");
        std::thread::sleep(PIN_DELAY);
        Err(ModuleError::PinIncorrect)
    }
}
