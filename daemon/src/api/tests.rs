//! The router in process (`oneshot`): routes, the bearer token, JSON errors
//! and the answers' shapes, over a real pool, vault and KMS on the soft
//! sealer.

use std::sync::Arc;

use axum::{
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use super::{AppState, keys::KeysState, keys::TokenDigest, router};
use crate::{kms::Kms, metrics::Metrics, testing, vault::Vault};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct World {
    _dir: tempfile::TempDir,
    state: AppState,
}

fn world() -> World {
    let (dir, sealer) = testing::soft_sealer();
    let pool = testing::pool();
    let vault = Arc::new(Vault::open(dir.path(), sealer.clone(), pool.clone()).unwrap());
    let settings = testing::kms_settings(std::time::Duration::from_secs(1));
    let kms = Kms::open(dir.path(), sealer, pool.clone(), &settings, 8).unwrap();
    let state = AppState {
        access: crate::config::Access::default(),
        attest: None,
        cluster: None,
        pool,
        metrics: Arc::new(Metrics::new().unwrap()),
        max_request_bytes: 1 << 20,
        generate_permits: Arc::new(Semaphore::new(4)),
        keys: Some(KeysState {
            objects: Arc::new(
                crate::objects::TokenObjects::open(dir.path(), vault.clone()).unwrap(),
            ),
            vault,
            token: TokenDigest::of(TOKEN),
        }),
        kms: Some(Arc::new(kms)),
        tls_on: false,
    };
    World { _dir: dir, state }
}

/// One request: (status, body as JSON if it is JSON, else as a string).
async fn call(
    w: &World,
    method: &str,
    uri: &str,
    token: bool,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = Request::builder().method(method).uri(uri);
    if token {
        r = r.header("authorization", format!("Bearer {TOKEN}"));
    }
    let req = match body {
        Some(b) => r.header("content-type", "application/json").body(Body::from(b.to_string())),
        None => r.body(Body::empty()),
    }
    .unwrap();
    let resp = router(w.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = to_bytes(resp.into_body(), 1 << 22).await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

#[tokio::test]
async fn random_bytes_in_every_format_and_json_errors() {
    let w = world();
    let (s, v) = call(&w, "GET", "/v1/random?bytes=16&format=hex", false, None).await;
    assert_eq!(s, 200);
    let hex = v.as_str().unwrap();
    assert_eq!(hex.trim().len(), 32, "{hex}");
    for (uri, status) in [
        ("/v1/random?bytes=0", 400),
        ("/v1/random?bytes=2000000", 413),
        ("/v1/random?format=bogus", 400),
        ("/no/such/route", 404),
    ] {
        let (s, v) = call(&w, "GET", uri, false, None).await;
        assert_eq!(s, status, "{uri}");
        assert_eq!(v["error"]["status"], status, "{uri}: {v}");
        assert!(v["error"]["code"].is_string() && v["error"]["incident"].is_null(), "{v}");
    }
    let (s, v) = call(&w, "POST", "/v1/random", false, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (405, Some("method_not_allowed")));
}

#[tokio::test]
async fn health_and_metrics_answer() {
    let w = world();
    let (s, v) = call(&w, "GET", "/v1/health", false, None).await;
    assert_eq!(s, 200);
    assert!(v["pool"]["sources"].is_array() && v["ready"].is_boolean(), "{v}");
    let (s, v) = call(&w, "GET", "/metrics", false, None).await;
    assert_eq!(s, 200);
    assert!(v.as_str().unwrap().contains("qkeyd_"), "{v}");
}

#[tokio::test]
async fn the_status_page_and_its_data_need_no_token_and_show_no_secret() {
    let w = world();
    for uri in ["/", "/ui/status.js", "/ui/status.css", "/ui/icon.svg"] {
        let req = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let resp = router(w.state.clone()).oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{uri}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        // Nothing but this origin for script and style: no inline, no eval.
        for directive in ["default-src 'none';", "script-src 'self';", "style-src 'self';"] {
            assert!(csp.contains(directive), "{directive} in {csp}");
        }
    }
    let (s, key) = call(&w, "POST", "/v1/keys", true, Some(json!({ "alg": "ml-kem-768" }))).await;
    assert_eq!(s, 201, "{key}");
    let (s, _) = call(&w, "GET", "/v1/keys/no-such-key", true, None).await;
    assert_eq!(s, 404);
    let kms = w.state.kms.clone().unwrap();
    let key_id = kms.status().await.unwrap();
    let (s, v) = call(&w, "GET", "/v1/status", false, None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["pool"]["sources"].is_array() && v["history"].is_object(), "{v}");
    assert_eq!(v["kms"]["write_key_id_hash"], crate::metrics::key_id_hash(&key_id));
    assert_eq!(v["kms"]["last_check"]["ok"], true, "{v}");
    let text = v.to_string();
    for secret in [key_id.as_str(), TOKEN, key["id"].as_str().unwrap()] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let metric = |name: &str, labels: Value| {
        v["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name && m["labels"] == labels)
            .map(|m| m["value"].clone())
    };
    assert_eq!(
        metric("qkeyd_keys", json!({ "algorithm": "ml-kem-768", "sealer": "soft" })),
        Some(json!(1.0))
    );
    assert_eq!(
        metric(
            "qkeyd_key_operations_total",
            json!({ "operation": "show", "outcome": "client_error" })
        ),
        Some(json!(1.0))
    );
    let (_, m) = call(&w, "GET", "/metrics", false, None).await;
    let m = m.as_str().unwrap();
    let info = format!(
        "qkeyd_kms_key_id_info{{key_id_hash=\"{}\"}} 1",
        crate::metrics::key_id_hash(&key_id)
    );
    assert!(m.contains(&info), "{m}");
    assert!(m.contains("qkeyd_kms_status_healthy 1"), "{m}");
}

#[tokio::test]
async fn key_routes_need_the_token_and_work_with_it() {
    let w = world();
    let create = json!({ "alg": "ml-dsa-44", "label": "unit" });
    let (s, _) = call(&w, "POST", "/v1/keys", false, Some(create.clone())).await;
    assert_eq!(s, 401);
    let (s, key) = call(&w, "POST", "/v1/keys", true, Some(create)).await;
    assert_eq!(s, 201, "{key}");
    let id = key["id"].as_str().unwrap().to_owned();
    let msg = json!({ "message": "aGVsbG8=" });
    let (s, sig) = call(&w, "POST", &format!("/v1/keys/{id}/sign"), true, Some(msg)).await;
    assert_eq!(s, 200, "{sig}");
    let verify = json!({ "message": "aGVsbG8=", "signature": sig["signature"] });
    let (s, v) = call(&w, "POST", &format!("/v1/keys/{id}/verify"), true, Some(verify)).await;
    assert_eq!((s, v["valid"].as_bool()), (200, Some(true)), "{v}");
    let (s, v) = call(&w, "POST", "/v1/keys", true, Some(json!({ "alg": "rsa" }))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("bad_request")), "{v}");
    let (s, _) = call(&w, "DELETE", &format!("/v1/keys/{id}"), true, None).await;
    assert!(s == 200 || s == 204, "{s}");
    let (s, v) = call(&w, "GET", &format!("/v1/keys/{id}"), true, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("key_not_found")), "{v}");
}

/// After a rotation, decapsulate and derive without a version are refused
/// (409, naming the versions) instead of answering a wrong secret; sign and
/// verify name the version that signed.
#[tokio::test]
async fn a_rotated_key_answers_with_versions_not_wrong_secrets() {
    let w = world();
    let (_, kem) = call(&w, "POST", "/v1/keys", true, Some(json!({ "alg": "ml-kem-768" }))).await;
    let kem = kem["id"].as_str().unwrap().to_owned();
    let (s, e) = call(&w, "POST", &format!("/v1/keys/{kem}/encapsulate"), true, None).await;
    assert_eq!((s, e["version"].as_u64()), (200, Some(1)), "{e}");
    let (s, _) = call(&w, "POST", &format!("/v1/keys/{kem}/rotate"), true, None).await;
    assert_eq!(s, 200);
    for route in ["decapsulate", "derive"] {
        let body = json!({ "ciphertext": e["ciphertext"], "length": 32 });
        let body = if route == "derive" { body } else { json!({ "ciphertext": e["ciphertext"] }) };
        let (s, v) = call(&w, "POST", &format!("/v1/keys/{kem}/{route}"), true, Some(body)).await;
        assert_eq!((s, v["error"]["code"].as_str()), (409, Some("version_required")), "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("versions 1, 2") && msg.contains("encapsulate"), "{msg}");
    }
    let body = json!({ "ciphertext": e["ciphertext"], "version": e["version"] });
    let (s, v) = call(&w, "POST", &format!("/v1/keys/{kem}/decapsulate"), true, Some(body)).await;
    assert_eq!(
        (s, &v["shared_secret"], v["version"].as_u64()),
        (200, &e["shared_secret"], Some(1))
    );

    let (_, dsa) = call(&w, "POST", "/v1/keys", true, Some(json!({ "alg": "ml-dsa-44" }))).await;
    let dsa = dsa["id"].as_str().unwrap().to_owned();
    let msg = json!({ "message": "aGVsbG8=" });
    let (_, sig) = call(&w, "POST", &format!("/v1/keys/{dsa}/sign"), true, Some(msg)).await;
    assert_eq!(sig["version"], 1);
    call(&w, "POST", &format!("/v1/keys/{dsa}/rotate"), true, None).await;
    let verify = |m: &str| json!({ "message": m, "signature": sig["signature"] });
    let uri = format!("/v1/keys/{dsa}/verify");
    let (s, v) = call(&w, "POST", &uri, true, Some(verify("aGVsbG8="))).await;
    assert_eq!((s, v["valid"].as_bool(), v["version"].as_u64()), (200, Some(true), Some(1)), "{v}");
    let (s, v) = call(&w, "POST", &uri, true, Some(verify("aGVsbG8h"))).await;
    assert_eq!((s, v["valid"].as_bool()), (200, Some(false)), "{v}");
    assert!(v["version"].is_null(), "no version verified: {v}");
}

#[tokio::test]
async fn kms_routes_list_rotate_and_refuse_retiring_the_write_key() {
    let w = world();
    let (s, _) = call(&w, "GET", "/v1/kms", false, None).await;
    assert_eq!(s, 401);
    let (s, rotated) = call(&w, "POST", "/v1/kms/rotate", true, None).await;
    assert_eq!(s, 201);
    let key_id = rotated["key_id"].as_str().unwrap().to_owned();
    let (s, v) = call(&w, "GET", "/v1/kms", true, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["write_key_id"].as_str(), Some(key_id.as_str()));
    assert_eq!(v["keks"][0]["state"], "write");
    assert_eq!(v["keks"][0]["location"], "sealed");
    assert!(v["token_ops"]["inline"].is_u64() && v["status_checks"].is_u64(), "{v}");
    let (s, v) = call(&w, "DELETE", &format!("/v1/kms/keks/{key_id}"), true, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("conflict")), "{v}");
    let (s, v) = call(&w, "DELETE", "/v1/kms/keks/qkeyd-kek-nope", true, None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("kek_not_found")), "{v}");
}

#[test]
fn an_internal_error_shows_an_incident_id_and_no_detail() {
    use axum::response::IntoResponse as _;

    #[derive(Debug, thiserror::Error)]
    #[error("disk /secret/path is on fire")]
    struct Detail;

    let id = crate::incident::Incident::log("unit test", &Detail);
    let resp = super::ApiError::internal(id).into_response();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let bytes = rt.block_on(to_bytes(resp.into_body(), 4096)).unwrap();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["error"]["incident"], id.to_string());
    let text = v.to_string();
    assert!(text.contains(&id.to_string()) && !text.contains("fire") && !text.contains("/secret"));
}

/// A request with a raw body and content type.
async fn raw(w: &World, uri: &str, content_type: &str, body: Vec<u8>) -> (u16, String, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap();
    let resp = router(w.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let bytes = to_bytes(resp.into_body(), 1 << 22).await.unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, ct.unwrap_or_default(), value)
}

#[tokio::test]
async fn every_bad_body_path_and_query_is_a_json_error() {
    let w = world();
    let (_, key) = call(&w, "POST", "/v1/keys", true, Some(json!({"alg": "ML-KEM-768"}))).await;
    let id = key["id"].as_str().unwrap().to_owned();
    let encap = format!("/v1/keys/{id}/encapsulate");
    let cases: Vec<(String, &str, Vec<u8>, u16)> = vec![
        // 10 MB: over the body limit.
        ("/v1/keys".into(), "application/json", vec![b' '; 10 << 20], 413),
        ("/v1/keys".into(), "application/json", b"{not json".to_vec(), 400),
        ("/v1/keys".into(), "application/json", br#"{"alg": 7}"#.to_vec(), 422),
        ("/v1/keys".into(), "text/plain", br#"{"alg": "ML-KEM-768"}"#.to_vec(), 415),
        (encap.clone(), "application/json", br#"{"version": "one"}"#.to_vec(), 422),
        (encap, "application/json", b"[".to_vec(), 400),
        // Invalid UTF-8 in a path segment.
        ("/v1/keys/%FF%FE/rotate".into(), "application/json", b"{}".to_vec(), 400),
    ];
    for (uri, ct, body, status) in cases {
        let (s, content_type, v) = raw(&w, &uri, ct, body).await;
        assert_eq!(s, status, "{uri} {ct}: {v}");
        assert!(content_type.starts_with("application/json"), "{uri}: {content_type}");
        assert_eq!(v["error"]["status"], status, "{uri}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{uri}: {v}");
    }
    let (s, v) = call(&w, "GET", "/v1/random?bytes=1&bytes=2", false, None).await;
    assert_eq!((s, &v["error"]["status"]), (400, &json!(400)), "{v}");
    let (s, v) = call(&w, "GET", "/v1/random?%FF=1", false, None).await;
    assert_eq!((s, &v["error"]["code"]), (400, &json!("bad_request")), "{v}");
}
