//! The KMS v2 gRPC service on a unix socket (tonic). The only part of the
//! plugin that knows protobuf: it validates, calls [`Kms`] (its async paths,
//! or its blocking ones on the blocking pool) and maps its errors to gRPC
//! status codes once, in `to_status`.

use std::{
    collections::BTreeMap,
    io,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::PathBuf,
    sync::Arc,
};

use tokio::{net::UnixListener, sync::Semaphore};
use tonic::{Request, Response, Status};

use super::{Kms, KmsError};

/// Code generated from `proto/kms_v2.proto` (package `v2`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("v2");
}

use proto::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest,
    StatusResponse,
    key_management_service_server::{KeyManagementService, KeyManagementServiceServer},
};

/// The KMS API version kube-apiserver requires.
pub const VERSION: &str = "v2";
/// Longest key id kube-apiserver accepts.
pub const MAX_KEY_ID: usize = 1024;
/// Longest a call takes before it answers Unavailable: under kube-apiserver's
/// 3 s per-call timeout, so a hung HSM is an error it sees, not a timeout.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(2500);
/// Longest uid logged (it is the caller's; truncated, never trusted).
const MAX_UID_LOGGED: usize = 64;

/// Where the plugin listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketSpec {
    /// A socket file, created with `mode`.
    Path {
        /// The file.
        path: PathBuf,
        /// Its permissions (0600 by default).
        mode: u32,
    },
    /// A Linux abstract socket (`@name`): no file, reachable in this network namespace.
    Abstract(String),
}

impl SocketSpec {
    /// Parse `/path`, `@name`, `unix:///path` or `unix:///@name` (the last two
    /// as an EncryptionConfiguration's `endpoint` writes them).
    pub fn parse(s: &str, mode: u32) -> Result<Self, String> {
        let s = s.strip_prefix("unix://").unwrap_or(s);
        let s = if s.starts_with("/@") { &s[1..] } else { s };
        if let Some(name) = s.strip_prefix('@') {
            if name.is_empty() {
                return Err("an abstract socket needs a name after '@'".into());
            }
            return Ok(Self::Abstract(name.to_owned()));
        }
        if !s.starts_with('/') {
            return Err(format!("kms socket {s:?}: give an absolute path or @name"));
        }
        Ok(Self::Path { path: PathBuf::from(s), mode })
    }

    /// How kube-apiserver's EncryptionConfiguration names it.
    pub fn endpoint(&self) -> String {
        match self {
            Self::Path { path, .. } => format!("unix://{}", path.display()),
            Self::Abstract(name) => format!("unix:///@{name}"),
        }
    }
}

/// Bind the socket. A stale socket file (nobody accepts on it) is removed;
/// a live one, or a file that is not a socket, is an error.
pub fn bind(spec: &SocketSpec) -> io::Result<UnixListener> {
    let std_listener = match spec {
        SocketSpec::Path { path, mode } => {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => {
                    match std::os::unix::net::UnixStream::connect(path) {
                        // Nobody accepts on it: left by a process that died.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                            tracing::info!(socket = %path.display(), "removing a stale KMS socket");
                            std::fs::remove_file(path)?;
                        }
                        Ok(_) => {
                            return Err(io::Error::new(
                                io::ErrorKind::AddrInUse,
                                format!("{} is in use by a running process", path.display()),
                            ));
                        }
                        Err(e) => {
                            return Err(io::Error::new(
                                e.kind(),
                                format!("{} exists and cannot be checked: {e}", path.display()),
                            ));
                        }
                    }
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a socket", path.display()),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let l = std::os::unix::net::UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
            l
        }
        SocketSpec::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            std::os::unix::net::UnixListener::bind_addr(&addr)?
        }
    };
    std_listener.set_nonblocking(true)?;
    UnixListener::from_std(std_listener)
}

/// qkeyd's own (effective) uid, as the kernel reports it for this process.
pub fn own_uid() -> io::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata("/proc/self")?.uid())
}

/// The connections to serve: each peer's uid (SO_PEERCRED) must be in
/// `allowed`. An abstract socket has no file permissions, and a socket file's
/// mode can be widened; this check holds either way. A refused peer is
/// logged and its connection closed.
pub fn incoming(
    listener: UnixListener,
    allowed: Vec<u32>,
) -> impl tokio_stream::Stream<Item = io::Result<tokio::net::UnixStream>> {
    use tokio_stream::StreamExt as _;
    tokio_stream::wrappers::UnixListenerStream::new(listener).filter(move |conn| match conn {
        Ok(stream) => match stream.peer_cred() {
            Ok(cred) if allowed.contains(&cred.uid()) => true,
            Ok(cred) => {
                tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "KMS connection refused: uid not allowed (kms.allowed_uids)");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "KMS connection refused: no peer credentials");
                false
            }
        },
        Err(_) => true,
    })
}

/// The gRPC service.
#[derive(Clone)]
pub struct Service {
    kms: Arc<Kms>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    /// A service over `kms`; at most `concurrency` calls are in progress at
    /// once (on the blocking pool or queued at the sealer), the rest wait.
    pub fn new(kms: Arc<Kms>, concurrency: usize) -> Self {
        Self { kms, permits: Arc::new(Semaphore::new(concurrency.max(1))) }
    }

    /// The tonic server for this service.
    pub fn server(self) -> KeyManagementServiceServer<Self> {
        KeyManagementServiceServer::new(self)
    }

    /// A place among the calls in progress. It is owned, so it goes with
    /// the work: a caller that gives up (a deadline) does not free it while
    /// the work still runs.
    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        self.permits.clone().acquire_owned().await.map_err(|_| Status::unavailable("shutting down"))
    }

    /// `op` on the blocking pool, answered within [`CALL_TIMEOUT`]; the work
    /// keeps its permit until it ends even if the answer was a timeout.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Kms) -> Result<T, KmsError> + Send + 'static,
    ) -> Result<T, Status> {
        let permit = self.permit().await?;
        let kms = self.kms.clone();
        let work = tokio::task::spawn_blocking(move || {
            let r = op(&kms);
            drop(permit);
            r
        });
        match tokio::time::timeout(CALL_TIMEOUT, work).await {
            Ok(Ok(r)) => r.map_err(to_status),
            Ok(Err(_)) => Err(Status::internal("the KMS call failed")),
            Err(_) => Err(to_status(KmsError::Unavailable(format!(
                "the KEK backend did not answer within {CALL_TIMEOUT:?}"
            )))),
        }
    }
}

/// The one mapping of plugin errors to gRPC.
fn to_status(e: KmsError) -> Status {
    match e {
        KmsError::InvalidArgument(m) => Status::invalid_argument(m),
        KmsError::NotFound(m) => Status::not_found(m),
        KmsError::Conflict(m) => Status::failed_precondition(m),
        KmsError::Unavailable(m) => {
            tracing::warn!(error = %m, "KMS call failed: backend unavailable");
            Status::unavailable(m)
        }
        KmsError::Internal(m) => {
            tracing::error!(error = %m, "KMS call failed");
            Status::internal(m)
        }
    }
}

/// `work`'s answer within [`CALL_TIMEOUT`].
async fn in_time<T>(
    work: impl std::future::Future<Output = Result<T, KmsError>>,
) -> Result<T, Status> {
    match tokio::time::timeout(CALL_TIMEOUT, work).await {
        Ok(r) => r.map_err(to_status),
        Err(_) => Err(to_status(KmsError::Unavailable(format!(
            "the KEK backend did not answer within {CALL_TIMEOUT:?}"
        )))),
    }
}

fn uid(u: &str) -> &str {
    let end = u.char_indices().nth(MAX_UID_LOGGED).map_or(u.len(), |(i, _)| i);
    &u[..end]
}

#[tonic::async_trait]
impl KeyManagementService for Service {
    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        // A fresh answer needs no thread: only a real check goes to the pool.
        let key_id = match self.kms.cached_status() {
            Some(r) => r.map_err(to_status)?,
            None => self.blocking(|k| k.status()).await?,
        };
        Ok(Response::new(StatusResponse { version: VERSION.into(), healthz: "ok".into(), key_id }))
    }

    async fn encrypt(
        &self,
        req: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let req = req.into_inner();
        tracing::debug!(uid = uid(&req.uid), bytes = req.plaintext.len(), "KMS Encrypt");
        let plaintext = zeroize::Zeroizing::new(req.plaintext);
        let permit = self.permit().await?;
        let out = in_time(self.kms.clone().encrypt_async(plaintext, permit)).await?;
        Ok(Response::new(EncryptResponse {
            ciphertext: out.ciphertext,
            key_id: out.key_id,
            annotations: out.annotations.into_iter().collect(),
        }))
    }

    async fn decrypt(
        &self,
        req: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let req = req.into_inner();
        tracing::debug!(uid = uid(&req.uid), key_id = %uid(&req.key_id), "KMS Decrypt");
        if req.key_id.len() > MAX_KEY_ID {
            return Err(Status::invalid_argument(format!(
                "key_id of {} bytes: at most {MAX_KEY_ID}",
                req.key_id.len()
            )));
        }
        let annotations: BTreeMap<String, Vec<u8>> = req.annotations.into_iter().collect();
        let permit = self.permit().await?;
        let kms = self.kms.clone();
        let plaintext =
            in_time(kms.decrypt_async(req.key_id, req.ciphertext, annotations, permit)).await?;
        // The reply buffer is the caller's: it leaves as the response body.
        Ok(Response::new(DecryptResponse { plaintext: plaintext.to_vec() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_specs_parse_like_an_encryption_configuration_endpoint() {
        let p = |s: &str| SocketSpec::parse(s, 0o600);
        let path = SocketSpec::Path { path: "/run/qkeyd/kms.sock".into(), mode: 0o600 };
        assert_eq!(p("/run/qkeyd/kms.sock").unwrap(), path);
        assert_eq!(p("unix:///run/qkeyd/kms.sock").unwrap(), path);
        assert_eq!(p("@qkeyd").unwrap(), SocketSpec::Abstract("qkeyd".into()));
        assert_eq!(p("unix:///@qkeyd").unwrap(), SocketSpec::Abstract("qkeyd".into()));
        assert_eq!(p("unix:///@qkeyd").unwrap().endpoint(), "unix:///@qkeyd");
        assert_eq!(path.endpoint(), "unix:///run/qkeyd/kms.sock");
        assert!(p("relative.sock").is_err());
        assert!(p("@").is_err());
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.sock");
        let spec = SocketSpec::Path { path: path.clone(), mode: 0o600 };
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = bind(&spec).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = bind(&spec).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        drop(live);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"not a socket").unwrap();
        assert_eq!(bind(&spec).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    }
}
