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
mod objects;
mod ops;
mod pin;
mod secrets;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use prometheus::IntCounterVec;
use qkeyd_p11_proto::Response;

use conn::{Conn, SessionKey};
use error::ModuleError;
use pin::Pins;
pub(crate) use pin::{TokenPin, token_pin};

use crate::{
    api::keys::KeysState, config::ModuleSettings, metrics::Metrics, objects::TokenObjects,
    pool::Pool, refusals::Refusals, vault::Vault,
};

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
    objects: Arc<TokenObjects>,
    pins: Mutex<Pins>,
    serial: String,
    key_cache: Duration,
    idle_timeout: Duration,
    first_request_timeout: Duration,
    frame_timeout: Duration,
    slots: Mutex<Slots>,
    max_connections: usize,
    max_per_uid: usize,
    allowed_uids: Vec<u32>,
    allowed_gids: Vec<u32>,
    refusals: Refusals,
    closed: IntCounterVec,
    /// Open connections, for `qkeyd_module_clients`.
    clients: prometheus::IntGauge,
}

/// Connections being served: in all, and per peer uid.
#[derive(Default)]
struct Slots {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// One connection's place among [`Slots`], given back when it drops.
struct Slot {
    server: Arc<Server>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = self.server.lock_slots();
        slots.total -= 1;
        self.server.clients.set(i64::try_from(slots.total).unwrap_or(i64::MAX));
        if let Some(n) = slots.by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                slots.by_uid.remove(&self.uid);
            }
        }
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("serial", &self.serial).finish_non_exhaustive()
    }
}

impl Server {
    /// A server over the vault and token objects of `keys` and `pool`, for
    /// the user and security officer PINs `pins`. `serial` names this token
    /// (stable across restarts).
    pub(crate) fn new(
        keys: &KeysState,
        pool: Arc<Pool>,
        pins: [TokenPin; 2],
        serial: String,
        settings: &ModuleSettings,
        allowed_uids: Vec<u32>,
        metrics: &Metrics,
    ) -> Self {
        let [user, so] = pins;
        Self {
            vault: keys.vault.clone(),
            pool,
            objects: keys.objects.clone(),
            pins: Mutex::new(Pins::new(user, so)),
            serial,
            key_cache: settings.key_cache,
            idle_timeout: settings.idle_timeout,
            first_request_timeout: conn::FIRST_REQUEST_TIMEOUT,
            frame_timeout: conn::FRAME_TIMEOUT,
            slots: Mutex::new(Slots::default()),
            max_connections: settings.max_connections,
            max_per_uid: settings.max_connections_per_uid,
            allowed_uids,
            allowed_gids: settings.allowed_gids.clone(),
            refusals: Refusals::new("module", metrics.connections_refused.clone()),
            closed: metrics.module_closed.clone(),
            clients: metrics.keys.module_clients.clone(),
        }
    }

    /// Refusals counted for `reason`.
    #[cfg(test)]
    fn refusals_counted(&self, reason: &str) -> u64 {
        self.refusals.counted(reason)
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a connection from `uid`, or why there is none: all
    /// connections are taken, or `uid` holds its share.
    fn take_slot(self: &Arc<Self>, uid: u32) -> Result<Slot, &'static str> {
        let mut slots = self.lock_slots();
        if slots.total >= self.max_connections {
            return Err("capacity");
        }
        let mine = slots.by_uid.entry(uid).or_default();
        if *mine >= self.max_per_uid {
            return Err("uid_share");
        }
        *mine += 1;
        slots.total += 1;
        self.clients.set(i64::try_from(slots.total).unwrap_or(i64::MAX));
        Ok(Slot { server: self.clone(), uid })
    }

    /// Accept connections until `stop` changes. Each peer's credentials are
    /// checked (an abstract socket has no file mode) and it must find a place
    /// within both limits; then it gets a thread. Refusals are counted, and
    /// logged at most once per [`WINDOW`](crate::refusals::WINDOW).
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
            let cred = match stream.peer_cred() {
                Ok(c) => c,
                Err(e) => {
                    self.refusals.refuse("credentials", |unlogged| {
                        tracing::warn!(error = %e, unlogged, "PKCS#11 connection refused: no peer credentials");
                    });
                    continue;
                }
            };
            let (uid, gid) = (cred.uid(), cred.gid());
            if !self.allowed_uids.contains(&uid) && !self.allowed_gids.contains(&gid) {
                self.refusals.refuse("uid", |unlogged| {
                    tracing::warn!(uid, gid, pid = ?cred.pid(), unlogged, "PKCS#11 connection refused: neither uid nor gid is allowed (module.allowed_uids, allowed_gids); more refusals in the next 10 s are only counted (qkeyd_connections_refused_total)");
                });
                continue;
            }
            let slot = match self.take_slot(uid) {
                Ok(slot) => slot,
                Err(reason) => {
                    self.refusals.refuse(reason, |unlogged| {
                        tracing::warn!(
                            uid, reason, unlogged,
                            max = self.max_connections, max_per_uid = self.max_per_uid,
                            "PKCS#11 connection refused: too many connections (module.max_connections, max_connections_per_uid); more refusals in the next 10 s are only counted (qkeyd_connections_refused_total)"
                        );
                    });
                    continue;
                }
            };
            let std_stream =
                match stream.into_std().and_then(|s| s.set_nonblocking(false).map(|()| s)) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "PKCS#11 connection dropped");
                        continue;
                    }
                };
            let server = self.clone();
            let spawned = std::thread::Builder::new().name("qkeyd-p11".into()).spawn(move || {
                server.connection(std_stream);
                drop(slot);
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a PKCS#11 connection thread");
            }
        }
    }
}

#[cfg(test)]
mod tests;
