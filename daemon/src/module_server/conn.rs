//! One connection: read a frame, answer it, in order, until the module
//! closes. Its login, session keys and opened vault keys live here and die
//! with it.

use std::{
    collections::HashMap,
    io::{self, Read},
    os::unix::net::UnixStream,
    sync::Arc,
    time::{Duration, Instant},
};

use qkeyd_p11_proto::{Limits, Request, Response, read_message_after, write_frame};

use super::{ModuleError, Server, pin::Role};
use crate::vault::{ExpandedKey, OpenKey};

/// How long a new connection may take to send its first request's first byte.
pub(super) const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take from its first byte to its last, and an
/// answer to be taken by the peer.
pub(super) const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's own state.
#[derive(Default)]
pub(super) struct Conn {
    pub(super) role: Option<Role>,
    pub(super) session: HashMap<String, SessionKey>,
    /// Secret keys held for this connection (`k/N`).
    pub(super) secrets: HashMap<String, zeroize::Zeroizing<Vec<u8>>>,
    pub(super) open: HashMap<(String, u32), (Arc<OpenKey>, Instant)>,
}

impl Conn {
    pub(super) fn session_key(&self, key: &str) -> Result<&SessionKey, ModuleError> {
        self.session.get(key).ok_or_else(|| ModuleError::no_such_key(key))
    }
}

/// A session key pair: private part expanded, in this connection only.
pub(super) struct SessionKey {
    pub(super) key: ExpandedKey,
    pub(super) public_key: Vec<u8>,
}

/// The stream, read against a deadline for the whole of what is read next.
struct Deadline<'a> {
    stream: &'a UnixStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        match (&*self.stream).read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::ErrorKind::TimedOut.into()),
            r => r,
        }
    }
}

/// Why a connection stopped being served.
enum Closed {
    /// The peer closed it, or it broke.
    Gone,
    /// Counted in `qkeyd_module_connections_closed_total`: `idle`, `slow` or `bad_frame`.
    ByUs(&'static str),
}

impl Server {
    /// Serve one connection until it closes, breaks its framing, or times
    /// out: the first request must start within [`FIRST_REQUEST_TIMEOUT`],
    /// each request must arrive whole within [`FRAME_TIMEOUT`] of its first
    /// byte, and a connection holding no session keys is closed after
    /// `idle_timeout` without a request. Reads are unbuffered, so PINs, seeds
    /// and secrets exist only in zeroizing buffers. While it holds unsealed
    /// vault keys, an idle connection wakes up to let them go once
    /// `key_cache` has passed.
    pub(super) fn connection(&self, stream: UnixStream) {
        if stream.set_write_timeout(Some(self.frame_timeout)).is_err() {
            return;
        }
        let mut conn = Conn::default();
        if let Closed::ByUs(reason) = self.serve_requests(&stream, &mut conn) {
            self.closed.with_label_values(&[reason]).inc();
        }
    }

    fn serve_requests(&self, stream: &UnixStream, conn: &mut Conn) -> Closed {
        let mut idle_until = Instant::now() + self.first_request_timeout;
        loop {
            // Wake for whichever comes first: the idle limit (none while the
            // connection holds session keys) or the next cached key to let go.
            let idle = (conn.session.is_empty() && conn.secrets.is_empty()).then_some(idle_until);
            let prune = conn.open.values().map(|(_, used)| *used + self.key_cache).min();
            let wake = idle.into_iter().chain(prune).min();
            let mut first = [0u8; 1];
            let read = match wake {
                Some(t) => Deadline { stream, until: t }.read(&mut first),
                None => stream.set_read_timeout(None).and_then(|()| (&*stream).read(&mut first)),
            };
            match read {
                Ok(0) => return Closed::Gone,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    if idle.is_some_and(|t| Instant::now() >= t) {
                        tracing::debug!("PKCS#11 connection closed: idle");
                        return Closed::ByUs("idle");
                    }
                    self.prune(conn);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "PKCS#11 connection closed");
                    return Closed::Gone;
                }
            }
            let mut rest = Deadline { stream, until: Instant::now() + self.frame_timeout };
            let frame = match read_message_after(first[0], &mut rest, Limits::REQUESTS) {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(error = %e, "PKCS#11 connection closed");
                    return match e.kind() {
                        io::ErrorKind::TimedOut => Closed::ByUs("slow"),
                        io::ErrorKind::InvalidData => Closed::ByUs("bad_frame"),
                        _ => Closed::Gone,
                    };
                }
            };
            let response = match Request::decode(&frame) {
                Ok(req) => self.handle(conn, req),
                // Framing is intact, so the connection can go on.
                Err(e) => ModuleError::Decode(e).into_response(),
            };
            drop(frame);
            if write_frame(&mut &*stream, &response.encode()).is_err() {
                return Closed::Gone;
            }
            idle_until = Instant::now() + self.idle_timeout;
        }
    }

    /// Let go of vault keys unused for `key_cache`.
    fn prune(&self, conn: &mut Conn) {
        let now = Instant::now();
        conn.open.retain(|_, (_, used)| now.duration_since(*used) < self.key_cache);
    }

    pub(super) fn handle(&self, conn: &mut Conn, req: Request) -> Response {
        self.prune(conn);
        let private = matches!(
            req,
            Request::Generate { .. }
                | Request::Sign { .. }
                | Request::Decapsulate { .. }
                | Request::DecapsulateKept { .. }
        ) || matches!(&req, Request::Destroy { key } if !key.starts_with("k/"));
        if private && conn.role != Some(Role::User) {
            return ModuleError::NotLoggedIn.into_response();
        }
        let r = match req {
            Request::Hello { version } => self.hello(version),
            Request::Seed { len } => self.seed(len),
            Request::Login { so, pin } => self.login(conn, so, &pin),
            Request::Logout => {
                conn.role = None;
                conn.open.clear();
                Ok(Response::Done)
            }
            Request::List => self.list(),
            Request::Generate { alg, token, label } => self.generate(conn, alg, token, &label),
            Request::Sign { key, msg, ctx, deterministic } => {
                self.sign(conn, &key, &msg, &ctx, deterministic)
            }
            Request::Verify { key, msg, ctx, sig } => self.verify(conn, &key, &msg, &ctx, &sig),
            Request::Encapsulate { key } => self.encapsulate(conn, &key),
            Request::Decapsulate { key, ct } => self.decapsulate(conn, &key, &ct),
            Request::Destroy { key } => self.destroy(conn, &key),
            Request::InitPin { pin } => self.init_pin(conn, &pin),
            Request::SetPin { old, new } => self.set_pin(conn, &old, &new),
            Request::PinState => self.pin_state(),
            Request::ListObjects => self.list_objects(conn),
            Request::PutObject { id, private, attrs } => self.put_object(conn, &id, private, attrs),
            Request::DestroyObject { id } => self.destroy_object(conn, &id),
            Request::GenerateSecret { len } => self.generate_secret(conn, len),
            Request::DecapsulateKept { key, ct } => self.decapsulate_kept(conn, &key, &ct),
            Request::EncapsulateKept { key } => self.encapsulate_kept(conn, &key),
            Request::EncapsulateTo { alg, public_key, keep } => {
                self.encapsulate_to(conn, alg, &public_key, keep)
            }
            Request::VerifyWith { alg, public_key, msg, ctx, sig } => {
                self.verify_with(alg, &public_key, &msg, &ctx, &sig)
            }
            Request::Derive { base, prf, extract, expand, salt, info, len, keep } => {
                self.derive(conn, &base, prf, (extract, expand), &salt, &info, len, keep)
            }
            Request::AesGcm { key, encrypt, iv, aad, data } => {
                self.aes_gcm(conn, &key, encrypt, &iv, &aad, &data)
            }
        };
        r.unwrap_or_else(ModuleError::into_response)
    }
}
