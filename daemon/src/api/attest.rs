//! Attested keys: `GET /v1/attest/identity` (what a verifier enrolls) and
//! `POST /v1/keys/{id}/attest` (evidence about a key for a nonce). Both need
//! the `gateway` right. Evidence is public; making it signs with the node
//! identity key (an audited use) and quotes with the TPM, off the async
//! threads.

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
    attest::{AttestError, Attestor},
    incident::{Chain, Incident},
};

/// The routes, behind the rights check.
pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/attest/identity", get(identity))
        .route("/v1/keys/{id}/attest", post(attest))
        .route_layer(middleware::from_fn_with_state(state, super::access::authorize))
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
