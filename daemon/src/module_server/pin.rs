//! The token's two PINs (the user's and the security officer's): login,
//! C_InitPIN and C_SetPIN, compared in constant time, with wrong PINs counted
//! per role across every connection, and a changed PIN written back where it
//! came from.

use std::{
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use qkeyd_p11_proto::{self as proto, PinCount, Response, Secret};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::{Conn, ModuleError, Outcome, Server};

/// Consecutive wrong PINs (from any connection) before logins pause.
const PIN_TRIES: u32 = 5;
/// How long logins pause after [`PIN_TRIES`] wrong PINs.
const PIN_PAUSE: Duration = Duration::from_secs(10);
/// What each wrong PIN costs its caller.
const PIN_DELAY: Duration = Duration::from_millis(200);

/// Who a connection is logged in as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The token's user: keys and private objects.
    User,
    /// The security officer: the user PIN and the SO PIN, public objects.
    So,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::So => "security officer",
        }
    }
}

/// Where a PIN is kept, so a changed one outlives a restart.
#[derive(Clone, Debug)]
pub(crate) enum PinStore {
    /// A file the daemon may rewrite (its own generated one, or `pin_file`).
    File(PathBuf),
    /// An environment variable: the PIN cannot change from here.
    Env(String),
}

/// A PIN, and where it is kept.
pub(crate) struct TokenPin {
    pub(crate) value: Zeroizing<String>,
    pub(crate) store: PinStore,
}

/// One role's PIN and its wrong-PIN accounting.
struct RolePin {
    pin: Zeroizing<Vec<u8>>,
    store: PinStore,
    failures: u32,
    paused_until: Option<Instant>,
}

impl RolePin {
    fn new(p: TokenPin) -> Self {
        Self {
            pin: Zeroizing::new(p.value.as_bytes().to_vec()),
            store: p.store,
            failures: 0,
            paused_until: None,
        }
    }

    fn count(&self, now: Instant) -> PinCount {
        PinCount {
            failures: self.failures,
            tries: PIN_TRIES,
            locked: self.paused_until.is_some_and(|u| u > now),
        }
    }
}

/// Both PINs, shared by every connection.
pub(super) struct Pins {
    user: RolePin,
    so: RolePin,
}

impl Pins {
    pub(super) fn new(user: TokenPin, so: TokenPin) -> Self {
        Self { user: RolePin::new(user), so: RolePin::new(so) }
    }

    fn role(&mut self, role: Role) -> &mut RolePin {
        match role {
            Role::User => &mut self.user,
            Role::So => &mut self.so,
        }
    }
}

impl Server {
    fn lock_pins(&self) -> std::sync::MutexGuard<'_, Pins> {
        self.pins.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Check `pin` against `role`'s: paused roles refuse at once, a wrong PIN
    /// counts (and pauses the role at [`PIN_TRIES`]) and costs [`PIN_DELAY`].
    fn check_pin(&self, role: Role, pin: &Secret) -> Result<(), ModuleError> {
        let now = Instant::now();
        let mut pins = self.lock_pins();
        let r = pins.role(role);
        if let Some(until) = r.paused_until.filter(|u| *u > now) {
            return Err(ModuleError::PinLocked((until - now).as_secs() + 1));
        }
        if pin.expose().len() == r.pin.len() && bool::from(pin.expose().ct_eq(&r.pin)) {
            r.failures = 0;
            r.paused_until = None;
            return Ok(());
        }
        r.failures += 1;
        let failures = r.failures;
        if failures >= PIN_TRIES {
            r.failures = 0;
            r.paused_until = Some(now + PIN_PAUSE);
        }
        drop(pins);
        tracing::warn!(failures, role = role.name(), "PKCS#11 login with a wrong PIN");
        std::thread::sleep(PIN_DELAY);
        Err(ModuleError::PinIncorrect)
    }

    pub(super) fn login(&self, conn: &mut Conn, so: bool, pin: &Secret) -> Outcome {
        let role = if so { Role::So } else { Role::User };
        self.check_pin(role, pin)?;
        conn.role = Some(role);
        Ok(Response::Done)
    }

    /// C_InitPIN: the security officer sets the user PIN.
    pub(super) fn init_pin(&self, conn: &Conn, pin: &Secret) -> Outcome {
        if conn.role != Some(Role::So) {
            return Err(ModuleError::NotSoLoggedIn);
        }
        self.store_pin(Role::User, pin)?;
        tracing::info!("PKCS#11 user PIN set by the security officer (C_InitPIN)");
        Ok(Response::Done)
    }

    /// C_SetPIN: the role logged in (the user if none is) changes its PIN.
    pub(super) fn set_pin(&self, conn: &Conn, old: &Secret, new: &Secret) -> Outcome {
        let role = conn.role.unwrap_or(Role::User);
        self.check_pin(role, old)?;
        self.store_pin(role, new)?;
        tracing::info!(role = role.name(), "PKCS#11 PIN changed (C_SetPIN)");
        Ok(Response::Done)
    }

    /// Write `role`'s new PIN where it is kept, then use it.
    fn store_pin(&self, role: Role, pin: &Secret) -> Result<(), ModuleError> {
        let new = pin.expose();
        if !(4..=proto::MAX_PIN).contains(&new.len()) || std::str::from_utf8(new).is_err() {
            return Err(ModuleError::PinLength);
        }
        let mut pins = self.lock_pins();
        let r = pins.role(role);
        match &r.store {
            PinStore::Env(var) => return Err(ModuleError::PinFixed(format!("${var}"))),
            PinStore::File(path) => write_pin(path, new).map_err(|e| {
                tracing::warn!(file = %path.display(), error = %e, role = role.name(), "cannot write the changed PKCS#11 PIN");
                ModuleError::PinFixed(path.display().to_string())
            })?,
        }
        r.pin = Zeroizing::new(new.to_vec());
        r.failures = 0;
        r.paused_until = None;
        Ok(())
    }

    pub(super) fn pin_state(&self) -> Outcome {
        let now = Instant::now();
        let pins = self.lock_pins();
        Ok(Response::PinState { user: pins.user.count(now), so: pins.so.count(now) })
    }
}

/// Replace the PIN file at `path` with `pin` (0600, through a temp file in
/// the same folder, fsynced), so a crash leaves the old PIN or the new one.
fn write_pin(path: &std::path::Path, pin: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut text = Zeroizing::new(pin.to_vec());
    text.push(b'\n');
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    crate::durable::publish(&tmp, path).map_err(|(_, e)| e)
}

/// A PIN from its configured source, or from `generated` (made on first
/// start), checked for length; `what` names it in errors.
pub(crate) fn token_pin(
    source: Option<&crate::config::PinSource>,
    generated: &std::path::Path,
    what: &str,
) -> anyhow::Result<TokenPin> {
    use crate::config::PinSource;
    let (value, store) = match source {
        Some(s) => {
            let store = match s {
                PinSource::File(f) => PinStore::File(f.clone()),
                PinSource::Env(v) => PinStore::Env(v.clone()),
            };
            (s.read().with_context(|| what.to_owned())?, store)
        }
        None => (
            secret_file(generated, 12).with_context(|| what.to_owned())?,
            PinStore::File(generated.to_owned()),
        ),
    };
    anyhow::ensure!(
        (4..=qkeyd_p11_proto::MAX_PIN).contains(&value.len()),
        "{what} must be 4..={} bytes",
        qkeyd_p11_proto::MAX_PIN
    );
    Ok(TokenPin { value, store })
}

/// Read a secret from `path`, or create it (0600) with `len` random bytes, hex.
fn secret_file(path: &std::path::Path, len: usize) -> anyhow::Result<zeroize::Zeroizing<String>> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(zeroize::Zeroizing::new(t.trim_end_matches(['\n', '\r']).to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // An access credential, not key material: the OS generator will do.
            let mut raw = zeroize::Zeroizing::new(vec![0u8; len]);
            getrandom::fill(&mut raw[..]).context("generating a secret")?;
            let t = zeroize::Zeroizing::new(hex::encode(&raw[..]));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(format!("{}\n", &*t).as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::info!(file = %path.display(), "generated a PKCS#11 PIN");
            Ok(t)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
