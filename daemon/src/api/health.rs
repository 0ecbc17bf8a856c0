//! GET /v1/health, /healthz, /readyz, /metrics

use axum::{
    Extension, Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{ApiError, AppState};
use crate::{incident::Incident, tls::Connection};

pub(super) async fn health(
    State(state): State<AppState>,
    conn: Option<Extension<Connection>>,
) -> Json<serde_json::Value> {
    let snap = state.pool.snapshot();
    let conn = conn.map(|Extension(c)| c);
    let rights = super::access::connection_rights(&state, conn.as_ref()).names();
    // What this caller's own connection negotiated: no secret, and only its own.
    let connection = match conn.and_then(|c| c.tls) {
        Some(t) => json!({
            "tls": true,
            "version": t.version,
            "group": t.group,
            "client": t.client.map(|c| c.name),
            "rights": rights,
        }),
        None => json!({ "tls": false, "rights": rights }),
    };
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": snap.serving.is_some(),
        "pool": snap,
        "connection": connection,
    }))
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match state.pool.serving() {
        Some(serving) => Json(json!({ "ready": true, "serving": serving })).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "ready": false,
                "reason": "no healthy entropy source and the pool fails closed"
            })),
        )
            .into_response(),
    }
}

/// What the KMS plugin and the vault show operators.
pub(super) struct Services {
    /// The KMS plugin's KEKs and last Status check, if it is on.
    pub(super) kms: Option<crate::kms::KmsInfo>,
}

/// Read the KMS plugin's state and the vault's key counts, and bring their
/// metrics up to date. The vault's census may read its files (after a
/// change): on a blocking thread.
pub(super) async fn catch_up_services(state: &AppState) -> Services {
    let kms = state.kms.as_ref().map(|k| k.info());
    let vault = state.keys.as_ref().map(|k| k.vault.clone());
    let keys = match vault {
        Some(vault) => {
            tokio::task::spawn_blocking(move || vault.census().ok()).await.ok().flatten()
        }
        None => None,
    };
    state.metrics.catch_up_services(kms.as_ref(), keys.as_deref());
    Services { kms }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    catch_up_services(&state).await;
    let text = state
        .metrics
        .render(&state.pool.snapshot())
        .map_err(|e| ApiError::internal(Incident::log("metrics encoding failed", &e)))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}
