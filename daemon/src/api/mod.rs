//! The REST API (axum): random bytes, health, readiness, metrics, keys and the
//! KMS plugin's KEKs.
//!
//! The only module that knows HTTP. Errors are answered as JSON
//! `{"error": {"status", "code", "message"}}`, including those an extractor
//! or axum itself makes ([`error::json_errors`]); bodies over
//! [`MAX_BODY_BYTES`] get 413. Bad input is never logged above debug level.

mod access;
mod attest;
mod certificates;
mod enroll;
mod error;
mod health;
pub(crate) mod keys;
mod kms;
mod random;
pub(crate) mod server;
mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::{Router, extract::DefaultBodyLimit, middleware, routing::get};
use tokio::sync::Semaphore;

pub(crate) use error::ApiError;

use crate::{metrics::Metrics, pool::Pool};

/// Shared state of the handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The entropy pool.
    pub(crate) pool: Arc<Pool>,
    /// Metrics.
    pub(crate) metrics: Arc<Metrics>,
    /// Largest `bytes=` for /v1/random.
    pub(crate) max_request_bytes: usize,
    /// Bounds concurrent DRBG work on the blocking pool.
    pub(crate) generate_permits: Arc<Semaphore>,
    /// The key vault and its token (`None`: key routes answer 401).
    pub(crate) keys: Option<keys::KeysState>,
    /// The KMS plugin, if enabled (its routes need the same token).
    pub(crate) kms: Option<Arc<crate::kms::Kms>>,
    /// Who may do what.
    pub(crate) access: crate::config::Access,
    /// Attested keys, if `[attest]` is on.
    pub(crate) attest: Option<Arc<crate::attest::Attestor>>,
    /// The KMS plugin's KEKs shared through etcd, if `[kms.cluster]` is on.
    pub(crate) cluster: Option<Arc<crate::kms::cluster::Cluster>>,
    /// Whether the REST API serves TLS (for the status page).
    pub(crate) tls_on: bool,
}

/// Largest request body; a bigger one is answered 413.
pub(crate) const MAX_BODY_BYTES: usize = 2 << 20;

/// The router with every route.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/random",
            get(random::random)
                .route_layer(middleware::from_fn_with_state(state.clone(), access::authorize)),
        )
        .route("/v1/health", get(health::health))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(status::routes())
        .merge(keys::routes(state.clone()))
        .merge(certificates::routes(state.clone()))
        .merge(kms::routes(state.clone()))
        .merge(attest::routes(state.clone()))
        .merge(enroll::routes(state.clone()))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(error::json_errors))
        .with_state(state)
}
