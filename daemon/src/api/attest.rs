//! Attested keys: `GET /v1/attest/identity` (what a verifier enrolls),
//! `POST /v1/keys/{id}/attest` (evidence about a key for a nonce) and
//! `POST /v1/gateway/keys` (a fresh key for the gateway, encapsulated to its
//! ML-KEM key, wrapped and attested). All need the `gateway` right. Evidence
//! is public; making it signs with the node identity key (an audited use) and
//! quotes with the TPM, off the async threads. A gateway key's answer holds
//! the key only wrapped, and is never cached.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::{
    attest::{AttestError, Attestor, GatewayError, GatewayRequest},
    incident::{Chain, Incident},
    pool::PoolError,
};

/// The routes, behind the rights check.
pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/attest/identity", get(identity))
        .route("/v1/keys/{id}/attest", post(attest))
        .route("/v1/gateway/keys", post(gateway_key))
        .route_layer(middleware::from_fn_with_state(state.clone(), super::access::authorize))
        .route_layer(middleware::from_fn_with_state(state, super::keys::count_operation))
}

fn attestor(state: &AppState) -> Result<Arc<Attestor>, ApiError> {
    state.attest.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "attestation_disabled",
            "attestation is not enabled on this daemon (add an [attest] table)",
        )
    })
}

impl From<AttestError> for ApiError {
    fn from(e: AttestError) -> Self {
        let msg = Chain(&e).to_string();
        match e {
            AttestError::Nonce(_) => ApiError::bad_request(msg),
            AttestError::NoTpm => ApiError::new(StatusCode::CONFLICT, "no_tpm", msg),
            AttestError::NoProvenance { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_attestable", msg)
            }
            AttestError::Vault(v) => v.into(),
            AttestError::Tpm(qkeyd_drivers::Error::SealerUnavailable(_)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "tpm_unavailable", msg)
            }
            AttestError::Tpm(_) => ApiError::incident(
                StatusCode::INTERNAL_SERVER_ERROR,
                "attestation_failed",
                Incident::log("attestation failed", &e),
            ),
        }
    }
}

async fn identity(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(attestor(&state)?.identity()).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestBody {
    nonce: String,
    version: Option<u32>,
}

async fn attest(
    State(state): State<AppState>,
    Path(id): Path<String>,
    b: Result<Json<AttestBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let a = attestor(&state)?;
    super::keys::key_id(&id)?;
    let b = super::keys::body(b)?;
    let nonce = super::keys::b64("nonce", &b.nonce)?;
    let evidence = tokio::task::spawn_blocking(move || a.evidence(&id, b.version, &nonce))
        .await
        .map_err(|e| ApiError::internal(Incident::log("an attest task failed", &e)))??;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], evidence.to_json())
        .into_response())
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        let msg = Chain(&e).to_string();
        match e {
            GatewayError::Recipient(_) | GatewayError::Length(_) | GatewayError::Purpose(_) => {
                ApiError::bad_request(msg)
            }
            GatewayError::Entropy(PoolError::BelowTrust { .. }) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "untrusted_entropy", msg)
            }
            GatewayError::Entropy(
                PoolError::NoHealthySource | PoolError::SeedTimeout(_) | PoolError::Fallback(_),
            ) => ApiError::unavailable(msg),
            GatewayError::Entropy(p) => ApiError::internal(Incident::log("DRBG failure", &p)),
            GatewayError::Attest(a) => a.into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GatewayBody {
    recipient: String,
    nonce: String,
    length: usize,
    purpose: String,
}

async fn gateway_key(
    State(state): State<AppState>,
    b: Result<Json<GatewayBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let a = attestor(&state)?;
    let b = super::keys::body(b)?;
    let req = GatewayRequest {
        recipient: super::keys::b64("recipient", &b.recipient)?,
        nonce: super::keys::b64("nonce", &b.nonce)?,
        length: b.length,
        purpose: b.purpose,
    };
    let answer = tokio::task::spawn_blocking(move || a.gateway_key(&req))
        .await
        .map_err(|e| ApiError::internal(Incident::log("a gateway key task failed", &e)))??;
    Ok(([(axum::http::header::CACHE_CONTROL, "no-store")], Json(answer)).into_response())
}
