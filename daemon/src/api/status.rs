//! The status page: `/` and its two assets, embedded in the binary, and
//! `GET /v1/status`, the JSON it polls.
//!
//! Read-only and without a token, like /v1/health: it shows states, counts,
//! scores and the KMS write key's *hash*, never a key, a key id of the vault,
//! a PIN or a token. The page loads nothing from elsewhere; its
//! Content-Security-Policy allows only this origin.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use super::AppState;

const PAGE: &str = include_str!("ui/index.html");
const STYLE: &str = include_str!("ui/status.css");
const SCRIPT: &str = include_str!("ui/status.js");
const ICON: &str = include_str!("ui/icon.svg");

/// Only this origin, no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The families the page shows besides the pool (counters and gauges as
/// they are; histograms as `_sum` and `_count`).
const SHOWN: &[&str] = &[
    "qkeyd_keys",
    "qkeyd_key_operations_total",
    "qkeyd_sealer_up",
    "qkeyd_module_clients",
    "qkeyd_kms_requests_total",
    "qkeyd_kms_request_duration_seconds",
    "qkeyd_tls_handshakes_total",
    "qkeyd_qkd_link_trust",
    "qkeyd_qkd_link_out_of_use",
    "qkeyd_qkd_link_keys_total",
    "qkeyd_qkd_keys_delivered_total",
    "qkeyd_kms_cluster_etcd_up",
    "qkeyd_kms_cluster_nodes",
];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/ui/status.css", get(style))
        .route("/ui/status.js", get(script))
        .route("/ui/icon.svg", get(icon))
        .route("/v1/status", get(status))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn page() -> Response {
    asset(PAGE, "text/html; charset=utf-8")
}

async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

async fn icon() -> Response {
    asset(ICON, "image/svg+xml")
}

/// Everything the page shows, in one answer.
async fn status(State(state): State<AppState>) -> Json<Value> {
    let services = super::health::catch_up_services(&state).await;
    let snap = state.pool.snapshot();
    let history: serde_json::Map<String, Value> = state
        .pool
        .trust_history()
        .into_iter()
        .map(|(name, points)| {
            let points: Vec<Value> =
                points.iter().map(|p| json!([p.unix, p.sample, p.drift, p.trust])).collect();
            (name, Value::Array(points))
        })
        .collect();
    let kms = services.kms.map(|k| {
        json!({
            "backend": k.backend,
            "write_key_id_hash": k.write_key_id.as_deref().map(crate::metrics::key_id_hash),
            "keks": k.keks.len(),
            "status_checks": k.status_checks,
            "last_check": k.last_check,
        })
    });
    let metrics: Vec<Value> = state
        .metrics
        .samples(SHOWN)
        .into_iter()
        .map(|s| {
            let labels: serde_json::Map<String, Value> =
                s.labels.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            json!({ "name": s.name, "labels": labels, "value": s.value })
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now_unix": now,
        "ready": snap.serving.is_some(),
        "pool": snap,
        "history": history,
        "sealer": state.keys.as_ref().map(|k| k.vault.sealer_kind()),
        "kms": kms,
        "tls": state.tls_on,
        "attest": state.attest.is_some(),
        "cluster": state.cluster.is_some(),
        "metrics": metrics,
    }))
}
