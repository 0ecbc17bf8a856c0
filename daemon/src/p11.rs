//! The daemon side of `libqkeyd_pkcs11.so`: a unix socket speaking
//! `qkeyd-p11-proto`, one blocking thread per connection.
//!
//! A connection is one application process. It may always ask for seed bytes
//! (the module's DRBG seeds from the pool) and public operations; key
//! generation, signing, decapsulation and destruction need the token PIN first.
//! Token keys are the vault's; session keys (`CKA_TOKEN` false) live in the
//! connection's memory and die with it. Private keys never leave the daemon.

use std::{
    collections::HashMap,
    io::{self, Read as _},
    os::unix::net::UnixStream,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use qkeyd_p11_proto::{
    self as proto, Alg, ErrorCode, KeyEntry, Request, Response, Secret, read_frame_after,
    write_frame,
};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::{
    pool::Pool,
    unix_socket::SocketSpec,
    vault::{self, AlgError, Algorithm, ExpandedKey, OpenKey, PrivateKey, Vault, VaultError},
};

/// `[pkcs11]` settings, checked.
#[derive(Clone, Debug)]
pub struct P11Settings {
    /// Where the module connects; `None`: not served.
    pub socket: Option<SocketSpec>,
    /// Mode of a socket file (0660 by default: owner and group).
    pub mode: u32,
    /// Besides root and qkeyd's own user, the uids that may connect.
    pub allowed_uids: Vec<u32>,
    /// Groups that may connect: the peer's primary gid (SO_PEERCRED gives no
    /// supplementary groups).
    pub allowed_gids: Vec<u32>,
    /// The token PIN; `None`: `STATE_DIR/pkcs11-pin`, generated on first start.
    pub pin: Option<crate::config::PinSource>,
    /// How long a connection keeps a vault key unsealed after its last use.
    pub key_cache: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
}

/// The default socket mode: the owner and the socket's group.
pub const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// The path the module tries when `QKEYD_SOCKET` is not set.
pub const DEFAULT_SOCKET: &str = "/run/qkeyd/pkcs11.sock";
/// Consecutive wrong PINs (from any connection) before logins pause.
const PIN_TRIES: u32 = 5;
/// How long logins pause after [`PIN_TRIES`] wrong PINs.
const PIN_PAUSE: Duration = Duration::from_secs(10);
/// What each wrong PIN costs its caller.
const PIN_DELAY: Duration = Duration::from_millis(200);
/// Session keys one connection may hold.
const MAX_SESSION_KEYS: usize = 1024;
/// Session key numbers, unique across connections: a module that reconnects
/// and still holds an old connection's reference gets NotFound, never
/// another key.
static SESSION_KEYS: AtomicU64 = AtomicU64::new(0);

/// Wrong-PIN accounting, shared by every connection.
#[derive(Debug, Default)]
struct PinGuard {
    failures: u32,
    paused_until: Option<Instant>,
}

/// What every connection shares.
pub struct Server {
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
    pub fn new(
        vault: Arc<Vault>,
        pool: Arc<Pool>,
        pin: Zeroizing<String>,
        serial: String,
        settings: &P11Settings,
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
    pub async fn serve(
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
                    tracing::warn!(uid = c.uid(), gid = c.gid(), pid = ?c.pid(), "PKCS#11 connection refused: neither uid nor gid is allowed (pkcs11.allowed_uids, allowed_gids)");
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

    /// Serve one connection until it closes or breaks its framing. Reads are
    /// unbuffered, so PINs, seeds and secrets exist only in zeroizing buffers.
    /// While it holds unsealed vault keys, an idle connection wakes up to let
    /// them go once `key_cache` has passed.
    fn connection(&self, stream: UnixStream) {
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
                Err(e) => error(ErrorCode::BadRequest, e.to_string()),
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

    fn handle(&self, conn: &mut Conn, req: Request) -> Response {
        self.prune(conn);
        let private = matches!(
            req,
            Request::Generate { .. }
                | Request::Sign { .. }
                | Request::Decapsulate { .. }
                | Request::Destroy { .. }
        );
        if private && !conn.logged_in {
            return error(ErrorCode::NotLoggedIn, "log in with the token PIN first");
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
        r.unwrap_or_else(|(code, message)| error(code, message))
    }

    fn hello(&self, version: u32) -> Outcome {
        if version != proto::VERSION {
            return Err((
                ErrorCode::BadRequest,
                format!(
                    "protocol version {version}; this qkeyd speaks {}: use the module that came with it",
                    proto::VERSION
                ),
            ));
        }
        Ok(Response::Hello {
            version: proto::VERSION,
            daemon: env!("CARGO_PKG_VERSION").into(),
            serial: self.serial.clone(),
        })
    }

    fn seed(&self, len: u32) -> Outcome {
        if !(1..=proto::MAX_SEED).contains(&len) {
            return Err((
                ErrorCode::BadRequest,
                format!("seed length must be 1..={}", proto::MAX_SEED),
            ));
        }
        let mut buf = Zeroizing::new(vec![0u8; len as usize]);
        self.pool
            .fill(&mut buf)
            .map_err(|e| (ErrorCode::Unavailable, format!("no health-tested entropy: {e}")))?;
        Ok(Response::Seed(Secret(buf)))
    }

    fn login(&self, conn: &mut Conn, pin: &Secret) -> Outcome {
        let now = Instant::now();
        {
            let g = self.guard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(until) = g.paused_until.filter(|u| *u > now) {
                return Err((
                    ErrorCode::PinLocked,
                    format!(
                        "too many wrong PINs: logins pause for {} s",
                        (until - now).as_secs() + 1
                    ),
                ));
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
        Err((ErrorCode::PinIncorrect, "wrong PIN".into()))
    }

    fn list(&self) -> Outcome {
        let keys = self.vault.current().map_err(vault_error)?;
        Ok(Response::Keys(keys.into_iter().map(vault_entry).collect()))
    }

    fn generate(&self, conn: &mut Conn, alg: Alg, token: bool, label: &str) -> Outcome {
        let algorithm = algorithm(alg);
        if token {
            let info = self.vault.create(algorithm, label).map_err(vault_error)?;
            tracing::info!(key = %info.id, alg = %algorithm, "PKCS#11 token key created");
            return Ok(Response::Key(vault_entry(
                self.vault.current_key(&info.id).map_err(vault_error)?,
            )));
        }
        if conn.session.len() >= MAX_SESSION_KEYS {
            return Err((
                ErrorCode::BadRequest,
                format!("at most {MAX_SESSION_KEYS} session keys per application"),
            ));
        }
        if label.len() > vault::MAX_LABEL {
            return Err((
                ErrorCode::BadRequest,
                format!("label longer than {} bytes", vault::MAX_LABEL),
            ));
        }
        let mut seed = Zeroizing::new(vec![0u8; algorithm.seed_len()]);
        self.pool
            .fill_fresh(&mut seed)
            .map_err(|e| (ErrorCode::Unavailable, format!("no health-tested entropy: {e}")))?;
        let key = PrivateKey::from_seed(algorithm, &seed).map_err(alg_error)?;
        vault::alg::pairwise_consistency(&key, &*self.random32()?).map_err(alg_error)?;
        let public_key = key.public_key();
        let reference = format!("s/{}", SESSION_KEYS.fetch_add(1, Ordering::Relaxed) + 1);
        conn.session.insert(
            reference.clone(),
            SessionKey { key: key.expand(), public_key: public_key.clone() },
        );
        Ok(Response::Key(KeyEntry {
            key: reference,
            alg,
            label: label.to_owned(),
            token: false,
            public_key,
        }))
    }

    fn random32(&self) -> Result<Zeroizing<[u8; 32]>, Failure> {
        let mut b = Zeroizing::new([0u8; 32]);
        self.pool
            .fill(&mut b[..])
            .map_err(|e| (ErrorCode::Unavailable, format!("no health-tested entropy: {e}")))?;
        Ok(b)
    }

    /// A vault key, unsealed once and kept for `key_cache` after its last use.
    fn open(&self, conn: &mut Conn, id: &str, version: u32) -> Result<Arc<OpenKey>, Failure> {
        let now = Instant::now();
        let k = (id.to_owned(), version);
        if let Some((key, used)) = conn.open.get_mut(&k) {
            *used = now;
            return Ok(key.clone());
        }
        let key = Arc::new(self.vault.open_key(id, Some(version)).map_err(vault_error)?);
        if !self.key_cache.is_zero() {
            conn.open.insert(k, (key.clone(), now));
        }
        Ok(key)
    }

    fn sign(
        &self,
        conn: &mut Conn,
        key: &str,
        msg: &[u8],
        ctx: &[u8],
        deterministic: bool,
    ) -> Outcome {
        let sig = match parse_ref(key)? {
            KeyRef::Session => {
                let k = conn.session_key(key)?;
                let rnd = if deterministic { Zeroizing::new([0; 32]) } else { self.random32()? };
                k.key.sign(msg, ctx, &rnd).map_err(alg_error)?
            }
            KeyRef::Vault(id, v) => {
                let k = self.open(conn, id, v)?;
                self.vault.sign_open(&k, msg, ctx, deterministic).map_err(vault_error)?
            }
        };
        Ok(Response::Signature(sig))
    }

    fn verify(&self, conn: &Conn, key: &str, msg: &[u8], ctx: &[u8], sig: &[u8]) -> Outcome {
        let ok = match parse_ref(key)? {
            KeyRef::Session => {
                let k = conn.session_key(key)?;
                vault::alg::verify(k.key.alg(), &k.public_key, msg, ctx, sig).map_err(alg_error)?
            }
            KeyRef::Vault(id, v) => {
                self.vault.verify(id, Some(v), msg, ctx, sig).map_err(vault_error)?.1
            }
        };
        Ok(Response::Verified(ok))
    }

    fn encapsulate(&self, conn: &Conn, key: &str) -> Outcome {
        let (ct, secret) = match parse_ref(key)? {
            KeyRef::Session => {
                let k = conn.session_key(key)?;
                vault::alg::encapsulate(k.key.alg(), &k.public_key, &*self.random32()?)
                    .map_err(alg_error)?
            }
            KeyRef::Vault(id, v) => {
                let e = self.vault.encapsulate(id, Some(v)).map_err(vault_error)?;
                (e.ciphertext, e.shared_secret)
            }
        };
        Ok(Response::Encapsulated { ct, secret: Secret::new(secret.to_vec()) })
    }

    fn decapsulate(&self, conn: &mut Conn, key: &str, ct: &[u8]) -> Outcome {
        let secret = match parse_ref(key)? {
            KeyRef::Session => conn.session_key(key)?.key.decapsulate(ct).map_err(alg_error)?,
            KeyRef::Vault(id, v) => {
                let k = self.open(conn, id, v)?;
                self.vault.decapsulate_open(&k, ct).map_err(vault_error)?
            }
        };
        Ok(Response::SharedSecret(Secret::new(secret.to_vec())))
    }

    fn destroy(&self, conn: &mut Conn, key: &str) -> Outcome {
        match parse_ref(key)? {
            KeyRef::Session => {
                conn.session.remove(key).ok_or_else(|| not_found(key))?;
            }
            KeyRef::Vault(id, _) => {
                self.vault.destroy(id).map_err(vault_error)?;
                conn.open.retain(|(i, _), _| i != id);
                tracing::info!(key = %id, "PKCS#11 token key destroyed");
            }
        }
        Ok(Response::Done)
    }
}

/// A connection's own state.
#[derive(Default)]
struct Conn {
    logged_in: bool,
    session: HashMap<String, SessionKey>,
    open: HashMap<(String, u32), (Arc<OpenKey>, Instant)>,
}

impl Conn {
    fn session_key(&self, key: &str) -> Result<&SessionKey, Failure> {
        self.session.get(key).ok_or_else(|| not_found(key))
    }
}

/// A session key pair: private part expanded, in this connection only.
struct SessionKey {
    key: ExpandedKey,
    public_key: Vec<u8>,
}

type Failure = (ErrorCode, String);
type Outcome = Result<Response, Failure>;

enum KeyRef<'a> {
    Session,
    Vault(&'a str, u32),
}

fn parse_ref(key: &str) -> Result<KeyRef<'_>, Failure> {
    if key.starts_with("s/") {
        return Ok(KeyRef::Session);
    }
    let (id, v) = key.split_once('/').ok_or_else(|| not_found(key))?;
    let v = v.parse().map_err(|_| not_found(key))?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found(key));
    }
    Ok(KeyRef::Vault(id, v))
}

fn not_found(key: &str) -> Failure {
    let shown: String = key.chars().take(80).collect();
    (ErrorCode::NotFound, format!("no such key: {shown:?}"))
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error { code, message: message.into() }
}

fn algorithm(alg: Alg) -> Algorithm {
    match alg {
        Alg::MlKem512 => Algorithm::MlKem512,
        Alg::MlKem768 => Algorithm::MlKem768,
        Alg::MlKem1024 => Algorithm::MlKem1024,
        Alg::MlDsa44 => Algorithm::MlDsa44,
        Alg::MlDsa65 => Algorithm::MlDsa65,
        Alg::MlDsa87 => Algorithm::MlDsa87,
    }
}

fn wire_alg(alg: Algorithm) -> Alg {
    match alg {
        Algorithm::MlKem512 => Alg::MlKem512,
        Algorithm::MlKem768 => Alg::MlKem768,
        Algorithm::MlKem1024 => Alg::MlKem1024,
        Algorithm::MlDsa44 => Alg::MlDsa44,
        Algorithm::MlDsa65 => Alg::MlDsa65,
        Algorithm::MlDsa87 => Alg::MlDsa87,
    }
}

fn vault_entry(k: vault::CurrentKey) -> KeyEntry {
    KeyEntry {
        key: format!("{}/{}", k.id, k.version),
        alg: wire_alg(k.alg),
        label: k.label,
        token: true,
        public_key: k.public_key,
    }
}

fn alg_error(e: AlgError) -> Failure {
    let code = match e {
        AlgError::WrongKind { .. } | AlgError::InvalidPublicKey(_) => ErrorCode::KeyMismatch,
        AlgError::Length { .. } | AlgError::Context(_) => ErrorCode::BadRequest,
        AlgError::Consistency(_) => ErrorCode::Internal,
    };
    (code, e.to_string())
}

fn vault_error(e: VaultError) -> Failure {
    let message = e.to_string();
    let code = match e {
        VaultError::BadRequest(_) => ErrorCode::BadRequest,
        VaultError::NotFound(_) => ErrorCode::NotFound,
        VaultError::Alg(a) => return alg_error(a),
        VaultError::Seal(_) | VaultError::Entropy(_) => ErrorCode::Unavailable,
        VaultError::Store(_) => ErrorCode::Internal,
    };
    if code == ErrorCode::Internal || code == ErrorCode::Unavailable {
        tracing::warn!(error = %message, "PKCS#11 request failed");
    }
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_references_parse_strictly() {
        assert!(matches!(parse_ref("s/3"), Ok(KeyRef::Session)));
        assert!(matches!(parse_ref("00ff/2"), Ok(KeyRef::Vault("00ff", 2))));
        for bad in ["", "/1", "00ff", "00ff/x", "../etc/1", "zz/1", "00ff/-1"] {
            assert!(matches!(parse_ref(bad), Err((ErrorCode::NotFound, _))), "{bad:?}");
        }
    }

    #[test]
    fn every_parameter_set_maps_both_ways() {
        for a in Alg::ALL {
            assert_eq!(wire_alg(algorithm(a)), a);
            assert_eq!(algorithm(a).name(), a.name());
            assert_eq!(vault::alg::public_key_len(algorithm(a)), a.public_key_len());
        }
    }
}
