//! /v1/keys: the key vault over REST, behind a bearer token.
//!
//! Every route here needs a right (`keys:read`, `keys:use`, `keys:admin`;
//! see [`super::access`]): a client certificate that grants it or the bearer
//! token, compared in constant time (as SHA3-256 digests, so lengths do not
//! leak either). Binary fields are base64.
//! Public keys and fingerprints are returned; seeds and private keys never.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine as _;
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::json;
use sha3::{Digest as _, Sha3_256};
use subtle::ConstantTimeEq as _;

use super::{ApiError, AppState};
use crate::incident::{Chain, Incident};
use crate::vault::{Algorithm, DecapsulateError, KeyInfo, Vault, VaultError, store::valid_id};

/// The routes, with the token check in front of all of them.
pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/keys", post(create).get(list))
        .route("/v1/keys/{id}", get(show).delete(destroy))
        .route("/v1/keys/{id}/rotate", post(rotate))
        .route("/v1/keys/{id}/sign", post(sign))
        .route("/v1/keys/{id}/verify", post(verify))
        .route("/v1/keys/{id}/encapsulate", post(encapsulate))
        .route("/v1/keys/{id}/decapsulate", post(decapsulate))
        .route("/v1/keys/{id}/derive", post(derive))
        .route_layer(middleware::from_fn_with_state(state.clone(), super::access::authorize))
        .route_layer(middleware::from_fn_with_state(state, count_operation))
}

/// Count every answer of a key route (refusals included) in
/// `qkeyd_key_operations_total`, by operation and outcome.
pub(super) async fn count_operation(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str());
    let operation = route.and_then(|r| crate::metrics::key_operation(req.method(), r));
    let response = next.run(req).await;
    if let Some(op) = operation {
        let outcome = crate::metrics::outcome(response.status());
        state.metrics.keys.operations.with_label_values(&[op, outcome]).inc();
    }
    response
}

/// The SHA3-256 digest of the API token.
#[derive(Clone)]
pub(crate) struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// Digest of `token`.
    pub(crate) fn of(token: &str) -> Self {
        Self(Sha3_256::digest(token.as_bytes()).into())
    }

    pub(super) fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha3_256::digest(presented.as_bytes()).into();
        bool::from(self.0.ct_eq(&d))
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

/// The vault and the token, when keys are enabled.
#[derive(Clone)]
pub(crate) struct KeysState {
    /// The vault.
    pub(crate) vault: Arc<Vault>,
    /// The token objects (certificates, data objects, public keys).
    pub(crate) objects: Arc<crate::objects::TokenObjects>,
    /// Digest of the bearer token.
    pub(crate) token: TokenDigest,
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        use qkeyd_drivers::Error as SealError;
        if let Some(full) = ApiError::storage(&e) {
            return full;
        }
        let msg = Chain(&e).to_string();
        match e {
            VaultError::Label | VaultError::DeriveLength(_) | VaultError::Alg(_) => {
                ApiError::bad_request(msg)
            }
            VaultError::Reserved(_) => ApiError::new(StatusCode::CONFLICT, "node_identity", msg),
            VaultError::NoSuchKey { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "key_not_found", msg)
            }
            VaultError::Entropy(_) => ApiError::unavailable(msg),
            VaultError::Seal(SealError::SealerUnavailable(_) | SealError::Timeout(_)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "sealer_unavailable", msg)
            }
            VaultError::Seal(SealError::Auth(_)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "sealer_login_failed", msg)
            }
            VaultError::Seal(
                SealError::Integrity
                | SealError::ObjectGone { .. }
                | SealError::Malformed(_)
                | SealError::Policy(_),
            )
            | VaultError::Store(_)
            | VaultError::AuditLog(_) => ApiError::incident(
                StatusCode::INTERNAL_SERVER_ERROR,
                "key_unusable",
                Incident::log("a stored key is unusable", &e),
            ),
            VaultError::Seal(_) => ApiError::incident(
                StatusCode::BAD_GATEWAY,
                "sealer_error",
                Incident::log("the sealer failed", &e),
            ),
        }
    }
}

impl From<DecapsulateError> for ApiError {
    fn from(e: DecapsulateError) -> Self {
        match e {
            DecapsulateError::VersionRequired { .. } => {
                ApiError::new(StatusCode::CONFLICT, "version_required", Chain(&e).to_string())
            }
            DecapsulateError::Vault(e) => e.into(),
        }
    }
}

fn vault(state: &AppState) -> Result<Arc<Vault>, ApiError> {
    state.keys.as_ref().map(|k| k.vault.clone()).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "keys_disabled", "the key vault is not enabled")
    })
}

pub(super) fn body<T: DeserializeOwned>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(t)| t).map_err(ApiError::from)
}

pub(super) fn key_id(id: &str) -> Result<(), ApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            "no such key: ids are 32 hex digits",
        ))
    }
}

/// Bytes as the API shows them: base64.
fn encode(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A key as the API shows it: public parts only, binary values in base64.
fn key_json(k: &KeyInfo) -> serde_json::Value {
    let versions: Vec<_> = k
        .versions
        .iter()
        .map(|v| {
            json!({
                "version": v.version,
                "public_key": encode(&v.public_key),
                "fingerprint": v.fingerprint,
                "created_unix": v.created_unix,
                "entropy": v.entropy,
                "sealer": v.sealer,
            })
        })
        .collect();
    json!({
        "id": k.id,
        "alg": k.alg,
        "label": k.label,
        "current_version": k.current_version,
        "versions": versions,
    })
}

pub(super) fn b64(field: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| ApiError::bad_request(format!("{field}: not base64 ({e})")))
}

/// Run a blocking vault call off the async threads.
async fn blocking<T: Send + 'static, E: Into<ApiError> + Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Vault) -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError> {
    let v = vault(state)?;
    tokio::task::spawn_blocking(move || f(&v))
        .await
        .map_err(|e| ApiError::internal(Incident::log("a key operation's task failed", &e)))?
        .map_err(Into::into)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    alg: String,
    #[serde(default)]
    label: String,
}

async fn create(
    State(state): State<AppState>,
    b: Result<Json<CreateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(b)?;
    let alg = Algorithm::parse(&b.alg).ok_or_else(|| {
        let names: Vec<_> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        ApiError::bad_request(format!("alg {:?}: use one of {}", b.alg, names.join(", ")))
    })?;
    let info = blocking(&state, move |v| v.create(alg, &b.label)).await?;
    tracing::info!(key = %info.id, alg = %alg, "key created");
    Ok((StatusCode::CREATED, Json(key_json(&info))).into_response())
}

async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys = blocking(&state, Vault::list).await?;
    let keys: Vec<_> = keys.iter().map(key_json).collect();
    Ok(Json(json!({ "keys": keys })).into_response())
}

async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    key_id(&id)?;
    Ok(Json(key_json(&blocking(&state, move |v| v.info(&id)).await?)).into_response())
}

async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    key_id(&id)?;
    let info = blocking(&state, move |v| v.rotate(&id)).await?;
    tracing::info!(key = %info.id, version = info.current_version, "key rotated");
    Ok(Json(key_json(&info)).into_response())
}

async fn destroy(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    key_id(&id)?;
    let shown = id.clone();
    blocking(&state, move |v| v.destroy(&id)).await?;
    tracing::info!(key = %shown, "key destroyed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    message: String,
    #[serde(default)]
    context: String,
    version: Option<u32>,
}

async fn sign(
    State(state): State<AppState>,
    Path(id): Path<String>,
    b: Result<Json<SignBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    key_id(&id)?;
    let b = body(b)?;
    let (msg, ctx) = (b64("message", &b.message)?, b64("context", &b.context)?);
    let (version, sig) = blocking(&state, move |v| v.sign(&id, b.version, &msg, &ctx)).await?;
    Ok(Json(json!({ "version": version, "signature": encode(&sig) })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    message: String,
    #[serde(default)]
    context: String,
    signature: String,
    version: Option<u32>,
}

async fn verify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    b: Result<Json<VerifyBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    key_id(&id)?;
    let b = body(b)?;
    let (msg, ctx) = (b64("message", &b.message)?, b64("context", &b.context)?);
    let sig = b64("signature", &b.signature)?;
    let (version, valid) =
        blocking(&state, move |v| v.verify(&id, b.version, &msg, &ctx, &sig)).await?;
    // Without a version every version is tried: `version` is the one that
    // verified, null if none did.
    Ok(Json(json!({ "version": version, "valid": valid })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    version: Option<u32>,
}

async fn encapsulate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    b: Option<Json<VersionBody>>,
) -> Result<Response, ApiError> {
    key_id(&id)?;
    let version = b.and_then(|Json(b)| b.version);
    let e = blocking(&state, move |v| v.encapsulate(&id, version)).await?;
    Ok(Json(json!({
        "version": e.version,
        "ciphertext": encode(&e.ciphertext),
        "shared_secret": encode(&e.shared_secret[..]),
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecapsulateBody {
    ciphertext: String,
    version: Option<u32>,
}

async fn decapsulate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    b: Result<Json<DecapsulateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    key_id(&id)?;
    let b = body(b)?;
    let ct = b64("ciphertext", &b.ciphertext)?;
    let (version, k) = blocking(&state, move |v| v.decapsulate(&id, b.version, &ct)).await?;
    Ok(Json(json!({ "version": version, "shared_secret": encode(&k[..]) })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeriveBody {
    ciphertext: String,
    #[serde(default)]
    salt: String,
    #[serde(default)]
    info: String,
    length: usize,
    version: Option<u32>,
}

async fn derive(
    State(state): State<AppState>,
    Path(id): Path<String>,
    b: Result<Json<DeriveBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    key_id(&id)?;
    let b = body(b)?;
    let ct = b64("ciphertext", &b.ciphertext)?;
    let (salt, info) = (b64("salt", &b.salt)?, b64("info", &b.info)?);
    let (version, okm) =
        blocking(&state, move |v| v.derive(&id, b.version, &ct, &salt, &info, b.length)).await?;
    Ok(Json(json!({ "version": version, "key": encode(&okm) })).into_response())
}
