//! The KMS v2 gRPC service on a unix socket (tonic). The only part of the
//! plugin that knows protobuf: it turns requests into [`Kms`] calls, bounds
//! each by [`CALL_TIMEOUT`], and maps errors to gRPC status codes once, in
//! `to_status`.

use std::{collections::BTreeMap, io, sync::Arc};

use tokio::net::UnixListener;
use tonic::{Request, Response, Status};

use super::{Kind, Kms, KmsError};
use crate::{
    incident::{Chain, Incident},
    metrics::KmsMetrics,
    refusals::Refusals,
};

/// Code generated from `proto/kms_v2.proto` (package `v2`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub(crate) mod proto {
    tonic::include_proto!("v2");
}

use proto::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest,
    StatusResponse,
    key_management_service_server::{KeyManagementService, KeyManagementServiceServer},
};

/// The KMS API version kube-apiserver requires.
pub(crate) const VERSION: &str = "v2";
/// Longest a call takes before it answers Unavailable: under kube-apiserver's
/// 3 s per-call timeout, so a hung HSM is an error it sees, not a timeout.
pub(crate) const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(2500);
/// Longest uid logged (it is the caller's; truncated, never trusted).
const MAX_UID_LOGGED: usize = 64;

/// The connections to serve: each peer's uid (SO_PEERCRED) must be in
/// `allowed`. An abstract socket has no file permissions, and a socket file's
/// mode can be widened; this check holds either way. A refused peer's
/// connection is closed, counted, and logged at a bounded rate.
pub(crate) fn incoming(
    listener: UnixListener,
    allowed: Vec<u32>,
    refusals: Refusals,
) -> impl tokio_stream::Stream<Item = io::Result<tokio::net::UnixStream>> {
    use tokio_stream::StreamExt as _;
    tokio_stream::wrappers::UnixListenerStream::new(listener).filter(move |conn| match conn {
        Ok(stream) => match stream.peer_cred() {
            Ok(cred) if allowed.contains(&cred.uid()) => true,
            Ok(cred) => {
                refusals.refuse("uid", |unlogged| {
                    tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), unlogged, "KMS connection refused: uid not allowed (kms.allowed_uids); more refusals in the next 10 s are only counted (qkeyd_connections_refused_total)");
                });
                false
            }
            Err(e) => {
                refusals.refuse("credentials", |unlogged| {
                    tracing::warn!(error = %e, unlogged, "KMS connection refused: no peer credentials");
                });
                false
            }
        },
        Err(_) => true,
    })
}

/// The gRPC service.
#[derive(Clone)]
pub(crate) struct Service {
    kms: Arc<Kms>,
    metrics: KmsMetrics,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

impl Service {
    /// A service over `kms`, counting its calls in `metrics`.
    pub(crate) fn new(kms: Arc<Kms>, metrics: KmsMetrics) -> Self {
        Self { kms, metrics }
    }

    /// Count `answer` as a call to `method` that began at `started`.
    fn counted<T>(
        &self,
        method: &'static str,
        started: std::time::Instant,
        answer: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let code = answer.as_ref().map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.observe(method, code, started.elapsed());
        answer.map(Response::new)
    }

    /// The tonic server for this service.
    pub(crate) fn server(self) -> KeyManagementServiceServer<Self> {
        KeyManagementServiceServer::new(self)
    }
}

/// The one mapping of plugin errors to gRPC. A client's mistake and an
/// unavailable backend are told as they are; an internal failure is logged
/// with an incident id and the client gets only that id.
fn to_status(e: KmsError) -> Status {
    let message = || Chain(&e).to_string();
    match e.kind() {
        Kind::InvalidArgument => Status::invalid_argument(message()),
        Kind::NotFound => Status::not_found(message()),
        Kind::Conflict => Status::failed_precondition(message()),
        Kind::Unavailable => {
            tracing::warn!(error = %Chain(&e), "KMS call failed: backend unavailable");
            Status::unavailable(message())
        }
        Kind::Internal => {
            let id = Incident::log("KMS call failed", &e);
            Status::internal(format!("internal error (incident {id} in qkeyd's log)"))
        }
    }
}

/// `work`'s answer within [`CALL_TIMEOUT`].
async fn in_time<T>(
    work: impl std::future::Future<Output = Result<T, KmsError>>,
) -> Result<T, Status> {
    match tokio::time::timeout(CALL_TIMEOUT, work).await {
        Ok(r) => r.map_err(to_status),
        Err(_) => Err(to_status(KmsError::TooSlow(CALL_TIMEOUT))),
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
        let started = std::time::Instant::now();
        let answer = in_time(self.kms.status()).await.map(|key_id| StatusResponse {
            version: VERSION.into(),
            healthz: "ok".into(),
            key_id,
        });
        self.counted("Status", started, answer)
    }

    async fn encrypt(
        &self,
        req: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let started = std::time::Instant::now();
        let req = req.into_inner();
        tracing::debug!(uid = uid(&req.uid), bytes = req.plaintext.len(), "KMS Encrypt");
        let plaintext = zeroize::Zeroizing::new(req.plaintext);
        let answer = in_time(self.kms.encrypt(plaintext)).await.map(|out| EncryptResponse {
            ciphertext: out.ciphertext,
            key_id: out.key_id,
            annotations: out.annotations.into_iter().collect(),
        });
        self.counted("Encrypt", started, answer)
    }

    async fn decrypt(
        &self,
        req: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let started = std::time::Instant::now();
        let req = req.into_inner();
        tracing::debug!(uid = uid(&req.uid), key_id = %uid(&req.key_id), "KMS Decrypt");
        let annotations: BTreeMap<String, Vec<u8>> = req.annotations.into_iter().collect();
        let answer = in_time(self.kms.decrypt(&req.key_id, &req.ciphertext, &annotations))
            .await
            // The reply buffer is the caller's: it leaves as the response body.
            .map(|plaintext| DecryptResponse { plaintext: plaintext.to_vec() });
        self.counted("Decrypt", started, answer)
    }
}
