//! The connection to the daemon: made on first use, remade when the daemon
//! restarts, never shared with a forked child.

use std::{
    io::{self, Read as _},
    os::unix::net::UnixStream,
    sync::atomic::{AtomicU64, Ordering},
};

use cryptoki_sys::*;
use qkeyd_p11_proto::{
    self as proto, ErrorCode, Limits, Request, Response, Secret, read_message, write_frame,
};
use zeroize::Zeroizing;

use crate::{object::Rv, peer};

/// Set (to anything) to have the module print the daemon's error messages,
/// and why it did not connect, to stderr.
const DEBUG_ENV: &str = "QKEYD_MODULE_DEBUG";

/// Which connection a session key belongs to: bumped on every new connection.
pub(crate) static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Print a diagnostic if the application asked for them.
pub(crate) fn debug(msg: &str) {
    if std::env::var_os(DEBUG_ENV).is_some() {
        eprintln!("libqkeyd_pkcs11: {msg}");
    }
}

/// The daemon, as this process reaches it.
pub(crate) struct Daemon {
    stream: Option<UnixStream>,
    /// The process that opened `stream`.
    pid: u32,
    /// The current login (as the SO?, with this PIN), to log a new
    /// connection in again.
    login: Option<(bool, Secret)>,
    /// The token serial the daemon gave.
    serial: String,
}

impl Daemon {
    pub(crate) const fn new() -> Self {
        Self { stream: None, pid: 0, login: None, serial: String::new() }
    }

    /// Forget the connection and the login. In a forked child the socket is
    /// the parent's too: it is only closed here, never written to.
    pub(crate) fn reset(&mut self) {
        self.stream = None;
        self.login = None;
    }

    /// The serial of the token (empty until connected).
    pub(crate) fn serial(&self) -> &str {
        &self.serial
    }

    /// Remember (or forget) the role and PIN the application logged in with.
    pub(crate) fn set_login(&mut self, login: Option<(bool, Secret)>) {
        self.login = login;
    }

    /// The logged-in role's PIN changed (C_SetPIN).
    pub(crate) fn change_pin(&mut self, pin: Secret) {
        if let Some((_, old)) = &mut self.login {
            *old = pin;
        }
    }

    /// Whether the connection is up: the daemon never speaks first, so
    /// anything readable (data or end of stream) means it is gone.
    pub(crate) fn alive(&mut self) -> bool {
        if self.pid != crate::pid::current() {
            return false;
        }
        let Some(s) = &self.stream else { return false };
        let mut probe = [0u8; 1];
        let up = s.set_nonblocking(true).is_ok()
            && matches!((&*s).read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        up && s.set_nonblocking(false).is_ok()
    }

    /// Connect if not connected (or if the old connection is dead).
    pub(crate) fn connect(&mut self) -> Result<(), Rv> {
        if self.pid != crate::pid::current() {
            self.reset();
        }
        if self.stream.is_some() && self.alive() {
            return Ok(());
        }
        self.stream = None;
        // A server that is not the expected uid is treated as no daemon at all.
        let stream = peer::connect().map_err(|e| {
            debug(&e.to_string());
            CKR_TOKEN_NOT_PRESENT
        })?;
        self.stream = Some(stream);
        self.pid = crate::pid::current();
        EPOCH.fetch_add(1, Ordering::AcqRel);
        match self.exchange(&Request::Hello { version: proto::VERSION }) {
            Ok(Response::Hello { serial, .. }) => self.serial = serial,
            Ok(Response::Error { message, .. }) => {
                debug(&message);
                self.stream = None;
                return Err(CKR_DEVICE_ERROR);
            }
            Ok(_) | Err(_) => {
                self.stream = None;
                return Err(CKR_DEVICE_ERROR);
            }
        }
        if let Some((so, pin)) = self.login.as_ref().map(|(so, p)| (*so, p.duplicate())) {
            // The application is logged in: so is the new connection.
            match self.exchange(&Request::Login { so, pin }) {
                Ok(Response::Done) => {}
                _ => {
                    self.login = None;
                    self.stream = None;
                    return Err(CKR_DEVICE_ERROR);
                }
            }
        }
        Ok(())
    }

    fn exchange(&mut self, req: &Request) -> Result<Response, Rv> {
        let Some(stream) = &self.stream else { return Err(CKR_DEVICE_ERROR) };
        let payload = req.encode();
        if Request::max_len(payload[0]).is_none_or(|max| payload.len() > max) {
            // Over what the daemon accepts for this request: refused before a
            // byte is written, so the connection stays good.
            return Err(CKR_DATA_LEN_RANGE);
        }
        let mut s = stream;
        let reply =
            write_frame(&mut s, &payload).and_then(|()| read_message(&mut s, Limits::RESPONSES));
        match reply {
            Ok(Some(frame)) => Response::decode(&frame).map_err(|e| {
                debug(&format!("from qkeyd: {e}"));
                self.stream = None;
                CKR_DEVICE_ERROR
            }),
            Ok(None) | Err(_) => {
                debug("the connection to qkeyd broke");
                self.stream = None;
                Err(CKR_DEVICE_ERROR)
            }
        }
    }

    /// Send `req` and return the answer; a refusal becomes its CK_RV, with
    /// `bad_request` for a request the daemon found malformed.
    pub(crate) fn call(&mut self, req: &Request, bad_request: Rv) -> Result<Response, Rv> {
        self.connect()?;
        match self.exchange(req)? {
            Response::Error { code, message } => {
                debug(&message);
                Err(match code {
                    ErrorCode::BadRequest => bad_request,
                    ErrorCode::NotFound => CKR_KEY_HANDLE_INVALID,
                    ErrorCode::NotLoggedIn => CKR_USER_NOT_LOGGED_IN,
                    ErrorCode::PinIncorrect => CKR_PIN_INCORRECT,
                    ErrorCode::PinLocked => CKR_PIN_LOCKED,
                    ErrorCode::Unavailable => CKR_DEVICE_ERROR,
                    ErrorCode::KeyMismatch => CKR_KEY_TYPE_INCONSISTENT,
                    ErrorCode::Internal => CKR_GENERAL_ERROR,
                    ErrorCode::PinLength => CKR_PIN_LEN_RANGE,
                    ErrorCode::PinFixed => CKR_TOKEN_WRITE_PROTECTED,
                    ErrorCode::NotSoLoggedIn => CKR_USER_NOT_LOGGED_IN,
                    ErrorCode::TooLarge => CKR_DEVICE_MEMORY,
                    ErrorCode::AuthFailed => CKR_ENCRYPTED_DATA_INVALID,
                })
            }
            r => Ok(r),
        }
    }

    /// `len` seed bytes from the daemon's health-tested pool.
    pub(crate) fn seed(&mut self, len: u32) -> Result<Zeroizing<Vec<u8>>, Rv> {
        match self.call(&Request::Seed { len }, CKR_GENERAL_ERROR)? {
            Response::Seed(s) if s.expose().len() == len as usize => Ok(s.into_inner()),
            _ => Err(CKR_DEVICE_ERROR),
        }
    }
}
