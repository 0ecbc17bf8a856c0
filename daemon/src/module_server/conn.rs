//! One connection: read a frame, answer it, in order, until the module
//! closes. Its login, session keys and opened vault keys live here and die
//! with it.

use std::{
    collections::HashMap,
    io::{self, Read as _},
    os::unix::net::UnixStream,
    sync::Arc,
    time::Instant,
};

use qkeyd_p11_proto::{Request, Response, read_frame_after, write_frame};

use super::{ModuleError, Server};
use crate::vault::{ExpandedKey, OpenKey};

/// A connection's own state.
#[derive(Default)]
pub(super) struct Conn {
    pub(super) logged_in: bool,
    pub(super) session: HashMap<String, SessionKey>,
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

impl Server {
    /// Serve one connection until it closes or breaks its framing. Reads are
    /// unbuffered, so PINs, seeds and secrets exist only in zeroizing buffers.
    /// While it holds unsealed vault keys, an idle connection wakes up to let
    /// them go once `key_cache` has passed.
    pub(super) fn connection(&self, stream: UnixStream) {
        let mut conn = Conn::default();
        let mut s = &stream;
        loop {
            let idle_limit = (!conn.open.is_empty()).then_some(self.key_cache);
            if stream.set_read_timeout(idle_limit.filter(|d| !d.is_zero())).is_err() {
                return;
            }
            let mut first = [0u8; 1];
            let frame = match s.read(&mut first) {
                Ok(0) => return,
                Ok(_) => {
                    if stream.set_read_timeout(None).is_err() {
                        return;
                    }
                    match read_frame_after(first[0], &mut s) {
                        Ok(f) => f,
                        Err(e) => {
                            tracing::debug!(error = %e, "PKCS#11 connection closed");
                            return;
                        }
                    }
                }
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    self.prune(&mut conn);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "PKCS#11 connection closed");
                    return;
                }
            };
            let response = match Request::decode(&frame) {
                Ok(req) => self.handle(&mut conn, req),
                // Framing is intact, so the connection can go on.
                Err(e) => ModuleError::Decode(e).into_response(),
            };
            if write_frame(&mut s, &response.encode()).is_err() {
                return;
            }
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
                | Request::Destroy { .. }
        );
        if private && !conn.logged_in {
            return ModuleError::NotLoggedIn.into_response();
        }
        let r = match req {
            Request::Hello { version } => self.hello(version),
            Request::Seed { len } => self.seed(len),
            Request::Login { pin } => self.login(conn, &pin),
            Request::Logout => {
                conn.logged_in = false;
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
        };
        r.unwrap_or_else(ModuleError::into_response)
    }
}
