//! The KMS v2 gRPC service on a unix socket (tonic). The only part of the
//! plugin that knows protobuf: it validates, calls [`Kms`] (its async paths,
//! or its blocking ones on the blocking pool) and maps its errors to gRPC
//! status codes once, in `to_status`.

use std::{collections::BTreeMap, io, sync::Arc};

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
    /// Held while a Status call checks the backend (see `Service::check`).
    checking: Arc<tokio::sync::Mutex<()>>,
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
        Self {
            kms,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            checking: Arc::default(),
        }
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
            Err(_) => Err(too_slow()),
        }
    }

    /// Status's real check of the backend, one at a time: a call that finds
    /// the answer stale while another call is checking waits for that check
    /// (on no thread) and takes its answer, so a crowd of Status calls at
    /// the moment the cached answer expires makes one round trip through the
    /// backend, not one each. Waiting and checking together take at most
    /// [`CALL_TIMEOUT`].
    async fn check(&self) -> Result<String, Status> {
        let work = async {
            let _one = self.checking.lock().await;
            match self.kms.cached_status() {
                Some(r) => r.map_err(to_status),
                None => self.blocking(|k| k.status()).await,
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, work).await.unwrap_or_else(|_| Err(too_slow()))
    }
}

/// A call the backend did not answer within [`CALL_TIMEOUT`].
fn too_slow() -> Status {
    to_status(KmsError::Unavailable(format!(
        "the KEK backend did not answer within {CALL_TIMEOUT:?}"
    )))
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
        Err(_) => Err(too_slow()),
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
            None => self.check().await?,
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
