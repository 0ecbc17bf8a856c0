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

use super::{ApiError, AppState, access::authorize};
use crate::{
    incident::{Chain, Incident},
    kms::{Kind, Kms, KmsError, KmsInfo, cluster::Cluster},
};

pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/kms", get(info))
        .route("/v1/kms/rotate", post(rotate))
        .route("/v1/kms/keks/{key_id}", delete(retire))
        .route("/v1/kms/cluster", get(cluster_status))
        .route("/v1/kms/cluster/nodes/{node}", delete(remove_node))
        .route_layer(middleware::from_fn_with_state(state, authorize))
}

impl From<KmsError> for ApiError {
    fn from(e: KmsError) -> Self {
        if let Some(full) = ApiError::storage(&e) {
            return full;
        }
        let msg = || Chain(&e).to_string();
        match e.kind() {
            Kind::InvalidArgument => ApiError::bad_request(msg()),
            Kind::NotFound => ApiError::new(StatusCode::NOT_FOUND, "kek_not_found", msg()),
            Kind::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", msg()),
            Kind::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "kms_unavailable", msg())
            }
            Kind::Internal => ApiError::internal(Incident::log("KMS request failed", &e)),
        }
    }
}

/// `GET /v1/kms` as the API shows it.
fn info_json(i: &KmsInfo) -> serde_json::Value {
    let keks: Vec<_> = i
        .keks
        .iter()
        .map(|k| {
            json!({
                "key_id": k.key_id,
                "created_unix": k.created_unix,
                "state": if k.write { "write" } else { "decrypt-only" },
                "location": if k.in_token { "token" } else { "sealed" },
            })
        })
        .collect();
    let retired: Vec<_> = i
        .retired
        .iter()
        .map(|r| json!({ "key_id": r.key_id, "retired_unix": r.retired_unix }))
        .collect();
    json!({
        "write_key_id": i.write_key_id,
        "backend": i.backend,
        "keks": keks,
        "retired": retired,
        "token_ops": {
            "inline": i.inline_ops,
            "queued": i.queued_ops,
            "inline_on_copy": i.inline_on_copy,
        },
        "status_checks": i.status_checks,
    })
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
        .map_err(|_| ApiError::from(KmsError::TaskLost))?
        .map_err(ApiError::from)
}

async fn info(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut v = info_json(&kms(&state)?.info());
    if let Some(c) = &state.cluster {
        let etcd = c.etcd_error().map_or_else(|| "ok".to_owned(), |e| format!("unreachable: {e}"));
        v["cluster"] = json!({ "node": c.node(), "etcd": etcd });
    }
    Ok(Json(v).into_response())
}

async fn rotate(State(state): State<AppState>) -> Result<Response, ApiError> {
    let key_id = match &state.cluster {
        Some(c) => c.rotate().await?,
        None => blocking(&state, Kms::rotate).await?,
    };
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
    match &state.cluster {
        Some(c) => c.retire(&key_id, q.force).await?,
        None => blocking(&state, move |k| k.retire(&key_id, q.force)).await?,
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn cluster(state: &AppState) -> Result<Arc<Cluster>, ApiError> {
    kms(state)?;
    state.cluster.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "cluster_disabled",
            "this node's KEKs are its own: [kms.cluster] is not configured",
        )
    })
}

async fn cluster_status(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(cluster(&state)?.status().await).into_response())
}

async fn remove_node(
    State(state): State<AppState>,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(cluster(&state)?.remove(&node).await?).into_response())
}
