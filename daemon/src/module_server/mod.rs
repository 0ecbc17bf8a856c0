//! The daemon side of `libqkeyd_pkcs11.so`: a unix socket speaking
//! `qkeyd-p11-proto`, one blocking thread per connection.
//!
//! A connection is one application process. It may always ask for seed bytes
//! (the module's DRBG seeds from the pool) and public operations; key
//! generation, signing, decapsulation and destruction need the token PIN first.
//! Token keys are the vault's; session keys (`CKA_TOKEN` false) live in the
//! connection's memory and die with it. Private keys never leave the daemon.

mod conn;
mod error;
mod ops;
mod pin;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use qkeyd_p11_proto::Response;
use zeroize::Zeroizing;

use conn::{Conn, SessionKey};
use error::ModuleError;
use pin::PinGuard;

use crate::{config::ModuleSettings, pool::Pool, vault::Vault};

/// Session keys one connection may hold.
const MAX_SESSION_KEYS: usize = 1024;
/// Session key numbers, unique across connections: a module that reconnects
/// and still holds an old connection's reference gets NotFound, never
/// another key.
static SESSION_KEYS: AtomicU64 = AtomicU64::new(0);

/// A request's answer, or why it failed.
type Outcome = Result<Response, ModuleError>;

/// What every connection shares.
pub(crate) struct Server {
    vault: Arc<Vault>,
    pool: Arc<Pool>,
    pin: Zeroizing<Vec<u8>>,
    serial: String,
    key_cache: Duration,
    guard: Mutex<PinGuard>,
    connections: AtomicUsize,
    max_connections: usize,
    allowed_uids: Vec<u32>,
    allowed_gids: Vec<u32>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("serial", &self.serial).finish_non_exhaustive()
    }
}

impl Server {
    /// A server over `vault` and `pool`, for the token PIN `pin`.
    /// `serial` names this token (stable across restarts).
    pub(crate) fn new(
        vault: Arc<Vault>,
        pool: Arc<Pool>,
        pin: Zeroizing<String>,
        serial: String,
        settings: &ModuleSettings,
        allowed_uids: Vec<u32>,
    ) -> Self {
        Self {
            vault,
            pool,
            pin: Zeroizing::new(pin.as_bytes().to_vec()),
            serial,
            key_cache: settings.key_cache,
            guard: Mutex::new(PinGuard::default()),
            connections: AtomicUsize::new(0),
            max_connections: settings.max_connections,
            allowed_uids,
            allowed_gids: settings.allowed_gids.clone(),
        }
    }

    /// Accept connections until `stop` changes. Each peer's credentials are
    /// checked (an abstract socket has no file mode), then it gets a thread.
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: tokio::net::UnixListener,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = stop.changed() => return,
            };
            let stream = match conn {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "PKCS#11 accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                Ok(c)
                    if self.allowed_uids.contains(&c.uid())
                        || self.allowed_gids.contains(&c.gid()) => {}
                Ok(c) => {
                    tracing::warn!(uid = c.uid(), gid = c.gid(), pid = ?c.pid(), "PKCS#11 connection refused: neither uid nor gid is allowed (module.allowed_uids, allowed_gids)");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "PKCS#11 connection refused: no peer credentials");
                    continue;
                }
            }
            if self.connections.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(
                    max = self.max_connections,
                    "PKCS#11 connection refused: too many connections"
                );
                continue;
            }
            let std_stream =
                match stream.into_std().and_then(|s| s.set_nonblocking(false).map(|()| s)) {
                    Ok(s) => s,
                    Err(e) => {
                        self.connections.fetch_sub(1, Ordering::AcqRel);
                        tracing::warn!(error = %e, "PKCS#11 connection dropped");
                        continue;
                    }
                };
            let server = self.clone();
            let spawned = std::thread::Builder::new().name("qkeyd-p11".into()).spawn(move || {
                server.connection(std_stream);
                server.connections.fetch_sub(1, Ordering::AcqRel);
            });
            if let Err(e) = spawned {
                self.connections.fetch_sub(1, Ordering::AcqRel);
                tracing::error!(error = %e, "cannot start a PKCS#11 connection thread");
            }
        }
    }
}

#[cfg(test)]
mod tests;
