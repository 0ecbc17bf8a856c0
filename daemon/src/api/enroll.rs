//! `POST /v1/attest/activate`: the node's half of enrollment. A registrar's
//! MakeCredential challenge in, the secret out (right `keys:admin`: the
//! operator enrolls the node).

use axum::{
    Json, Router,
    extract::{State, rejection::JsonRejection},
    middleware,
    response::{IntoResponse, Response},
    routing::post,
};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
use crate::incident::Incident;

/// The route, behind the rights check.
pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/attest/activate", post(activate))
        .route_layer(middleware::from_fn_with_state(state, super::access::authorize))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    credential_blob: String,
    encrypted_secret: String,
}

async fn activate(
    State(state): State<AppState>,
    b: Result<Json<ActivateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let a = state.attest.clone().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "attestation_disabled",
            "attestation is not enabled on this daemon (add an [attest] table)",
        )
    })?;
    let b = super::keys::body(b)?;
    let blob = super::keys::b64("credential_blob", &b.credential_blob)?;
    let secret = super::keys::b64("encrypted_secret", &b.encrypted_secret)?;
    let opened = tokio::task::spawn_blocking(move || a.activate(&blob, &secret))
        .await
        .map_err(|e| ApiError::internal(Incident::log("an activate task failed", &e)))??;
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::STANDARD.encode(&opened[..]);
    tracing::info!("enrollment challenge opened with the TPM");
    Ok(Json(json!({ "secret": secret })).into_response())
}
