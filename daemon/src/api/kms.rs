//! /v1/kms: manage the KMS plugin's KEKs (list, rotate, retire), behind the
//! same bearer token as the key routes. Encrypt and Decrypt are gRPC only.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde_json::json;

use super::{ApiError, AppState, keys::authorize};
use crate::kms::{Kms, KmsError};

pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/kms", get(info))
        .route("/v1/kms/rotate", post(rotate))
        .route("/v1/kms/keks/{key_id}", delete(retire))
        .route_layer(middleware::from_fn_with_state(state, authorize))
}

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> Self {
        let msg = e.to_string();
        match e {
            KmsError::InvalidArgument(_) => ApiError::bad_request(msg),
            KmsError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "kek_not_found", msg),
            KmsError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", msg),
            KmsError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "kms_unavailable", msg)
            }
            _ => {
                tracing::error!(error = %msg, "KMS request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "kms_error", msg)
            }
        }
    }
}

fn kms(state: &AppState) -> Result<Arc<Kms>, ApiError> {
    state.kms.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "kms_disabled",
            "the KMS plugin is not enabled (see [kms] socket or --kms-socket)",
        )
    })
}

async fn blocking<T: Send + 'static>(
    state: &AppState,
    op: impl FnOnce(&Kms) -> Result<T, KmsError> + Send + 'static,
) -> Result<T, ApiError> {
    let k = kms(state)?;
    tokio::task::spawn_blocking(move || op(&k))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(ApiError::from)
}

async fn info(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(kms(&state)?.info()).into_response())
}

async fn rotate(State(state): State<AppState>) -> Result<Response, ApiError> {
    let key_id = blocking(&state, Kms::rotate).await?;
    Ok((StatusCode::CREATED, Json(json!({ "key_id": key_id }))).into_response())
}

/// `?force=true` retires a KEK within its grace period.
#[derive(serde::Deserialize)]
struct RetireQuery {
    #[serde(default)]
    force: bool,
}

async fn retire(
    State(state): State<AppState>,
    Path(key_id): Path<String>,
    query: Result<Query<RetireQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    blocking(&state, move |k| k.retire(&key_id, q.force)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
