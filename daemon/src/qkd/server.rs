//! The GS QKD 014 v1.1.1 server for local SAEs, on its own mutual-TLS
//! listener (`[qkd.serve]`), and the peer API beside it:
//!
//! ```text
//! GET       /api/v1/keys/{slave_SAE_ID}/status
//! GET|POST  /api/v1/keys/{slave_SAE_ID}/enc_keys     number, size (POST: 014's body)
//! GET|POST  /api/v1/keys/{master_SAE_ID}/dec_keys    key_ID (POST: key_IDs)
//! GET       /qkeyd/v1/peer/transport?nonce=HEX       evidence about the transport key
//! POST      /qkeyd/v1/peer/held                      ciphertexts for the peer's SAEs
//! ```
//!
//! An SAE is a client certificate whose CN is one of `[qkd.serve] saes`; a
//! peer node is one matching a `[qkd.peer.NAME] identity`. Anything else,
//! or no certificate, is 401. Errors are 014's `{message, details}`.

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{
    api::{KeyIds, KeyRequest},
    node::{QkdNode, ServeError},
    peer::HeldRequest,
};
use crate::{
    config::{ClientRule, Identity, Rights},
    incident::Incident,
    tls::Connection,
};

/// The certificate rules of the listener: peers first, then one per SAE.
pub(crate) fn client_rules(
    node: &QkdNode,
    peers: &[crate::config::PeerSettings],
) -> Vec<ClientRule> {
    peers
        .iter()
        .map(|p| p.identity.clone())
        .chain(node.settings().saes.iter().map(|s| Identity::Cn(s.clone())))
        .map(|identity| ClientRule { identity, rights: Rights::default() })
        .collect()
}

/// The router.
pub(crate) fn router(node: Arc<QkdNode>) -> Router {
    Router::new()
        .route("/api/v1/keys/{sae}/status", get(status))
        .route("/api/v1/keys/{sae}/enc_keys", get(enc_keys).post(enc_keys))
        .route("/api/v1/keys/{sae}/dec_keys", get(dec_keys).post(dec_keys))
        .route("/qkeyd/v1/peer/transport", get(transport))
        .route("/qkeyd/v1/peer/held", post(held))
        .fallback(|| async {
            error(ServeError::new(404, "no such GS QKD 014 endpoint", Vec::new()))
        })
        .with_state(node)
}

/// Who is calling.
enum Caller {
    Sae(String),
    Peer(String),
}

fn caller(node: &QkdNode, conn: &Connection) -> Result<Caller, ServeError> {
    let Some(client) = conn.tls.as_ref().and_then(|t| t.client.as_ref()) else {
        return Err(ServeError::unauthorized("a client certificate is required"));
    };
    if let Some(peer) = node.peer_named_by(&client.name) {
        return Ok(Caller::Peer(peer.to_owned()));
    }
    match client.name.strip_prefix("cn:") {
        Some(cn) if node.settings().saes.iter().any(|s| s == cn) => Ok(Caller::Sae(cn.to_owned())),
        _ => Err(ServeError::unauthorized(
            "the client certificate is not an SAE of this node (its CN is not in saes)",
        )),
    }
}

fn sae(node: &QkdNode, conn: &Connection) -> Result<String, ServeError> {
    match caller(node, conn)? {
        Caller::Sae(s) => Ok(s),
        Caller::Peer(_) => Err(ServeError::unauthorized("a peer node is not an SAE")),
    }
}

fn error(e: ServeError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = json!({ "message": e.message });
    if !e.details.is_empty() {
        body["details"] = json!(e.details);
    }
    let mut resp = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// Run `op` on the blocking pool, count the answer, and turn it into JSON.
async fn answer<T: serde::Serialize + Send + 'static>(
    node: &Arc<QkdNode>,
    endpoint: &'static str,
    op: impl FnOnce(&QkdNode) -> Result<T, ServeError> + Send + 'static,
) -> Response {
    let started = std::time::Instant::now();
    let n = node.clone();
    let result = tokio::task::spawn_blocking(move || op(&n))
        .await
        .unwrap_or_else(|e| Err(ServeError::internal(Incident::log("a QKD task failed", &e))));
    let resp = match result {
        Ok(v) => {
            node.metrics()
                .seconds
                .with_label_values(&[endpoint])
                .observe(started.elapsed().as_secs_f64());
            Json(v).into_response()
        }
        Err(e) => error(e),
    };
    node.metrics().requests.with_label_values(&[endpoint, resp.status().as_str()]).inc();
    resp
}

fn refused(node: &QkdNode, endpoint: &'static str, e: ServeError) -> Response {
    let resp = error(e);
    node.metrics().requests.with_label_values(&[endpoint, resp.status().as_str()]).inc();
    resp
}

/// A JSON body, or 014's 400.
pub(crate) fn body<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ServeError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ServeError::bad_request(
            format!("the request body is not {what}"),
            // Category and position only: serde's message may quote a value.
            vec![json!({ "error": format!("{:?} at line {} column {}", e.classify(), e.line(), e.column()) })],
        )
    })
}

/// The query's parameters, decoded; a parameter twice or unknown is a 400.
pub(crate) fn query(
    raw: Option<&str>,
    known: &[&str],
) -> Result<Vec<(String, String)>, ServeError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if !known.contains(&k.as_ref()) {
            return Err(ServeError::bad_request(
                format!("unknown query parameter {k}"),
                vec![json!({ "parameter": k })],
            ));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(ServeError::bad_request(
                format!("query parameter {k} given twice"),
                vec![json!({ "parameter": k })],
            ));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn number(name: &str, v: &str) -> Result<u32, ServeError> {
    v.parse().map_err(|_| {
        ServeError::bad_request(
            format!("{name} must be a positive integer"),
            vec![json!({ "parameter": name })],
        )
    })
}

async fn status(
    State(node): State<Arc<QkdNode>>,
    Extension(conn): Extension<Connection>,
    Path(slave): Path<String>,
) -> Response {
    let caller = match sae(&node, &conn) {
        Ok(c) => c,
        Err(e) => return refused(&node, "status", e),
    };
    answer(&node, "status", move |n| n.status(&caller, &slave)).await
}

async fn enc_keys(
    State(node): State<Arc<QkdNode>>,
    Extension(conn): Extension<Connection>,
    method: Method,
    Path(slave): Path<String>,
    RawQuery(raw): RawQuery,
    bytes: Bytes,
) -> Response {
    let parsed = sae(&node, &conn).and_then(|caller| {
        let req = if method == Method::POST {
            body::<KeyRequest>(&bytes, "a GS QKD 014 key request")?
        } else {
            let mut req = KeyRequest {
                number: None,
                size: None,
                additional_slave_sae_ids: Vec::new(),
                extension_mandatory: None,
                extension_optional: None,
            };
            for (k, v) in query(raw.as_deref(), &["number", "size"])? {
                let n = number(&k, &v)?;
                if k == "number" { req.number = Some(n) } else { req.size = Some(n) }
            }
            req
        };
        Ok((caller, req))
    });
    match parsed {
        Ok((caller, req)) => {
            answer(&node, "enc_keys", move |n| n.enc_keys(&caller, &slave, &req)).await
        }
        Err(e) => refused(&node, "enc_keys", e),
    }
}

async fn dec_keys(
    State(node): State<Arc<QkdNode>>,
    Extension(conn): Extension<Connection>,
    method: Method,
    Path(master): Path<String>,
    RawQuery(raw): RawQuery,
    bytes: Bytes,
) -> Response {
    let parsed = sae(&node, &conn).and_then(|caller| {
        let ids: Vec<String> = if method == Method::POST {
            body::<KeyIds>(&bytes, "a GS QKD 014 key ID list")?
                .key_ids
                .into_iter()
                .map(|k| k.key_id)
                .collect()
        } else {
            query(raw.as_deref(), &["key_ID"])?.into_iter().map(|(_, v)| v).collect()
        };
        Ok((caller, ids))
    });
    match parsed {
        Ok((caller, ids)) => {
            answer(&node, "dec_keys", move |n| n.dec_keys(&caller, &master, &ids)).await
        }
        Err(e) => refused(&node, "dec_keys", e),
    }
}

async fn transport(
    State(node): State<Arc<QkdNode>>,
    Extension(conn): Extension<Connection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let nonce = match caller(&node, &conn) {
        Ok(Caller::Peer(_)) => query(raw.as_deref(), &["nonce"]).and_then(|q| {
            q.into_iter()
                .find_map(|(_, v)| hex::decode(v).ok().filter(|n| (16..=64).contains(&n.len())))
                .ok_or_else(|| {
                    ServeError::bad_request(
                        "nonce must be 16 to 64 bytes in hex",
                        vec![json!({ "parameter": "nonce" })],
                    )
                })
        }),
        Ok(Caller::Sae(_)) => Err(ServeError::unauthorized("the peer API is for peer nodes")),
        Err(e) => Err(e),
    };
    let nonce = match nonce {
        Ok(n) => n,
        Err(e) => return refused(&node, "peer_transport", e),
    };
    let started = std::time::Instant::now();
    let n = node.clone();
    let result = tokio::task::spawn_blocking(move || n.evidence(&nonce))
        .await
        .unwrap_or_else(|e| Err(ServeError::internal(Incident::log("a QKD task failed", &e))));
    let resp = match result {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => error(e),
    };
    node.metrics()
        .seconds
        .with_label_values(&["peer_transport"])
        .observe(started.elapsed().as_secs_f64());
    node.metrics().requests.with_label_values(&["peer_transport", resp.status().as_str()]).inc();
    resp
}

async fn held(
    State(node): State<Arc<QkdNode>>,
    Extension(conn): Extension<Connection>,
    bytes: Bytes,
) -> Response {
    let parsed = match caller(&node, &conn) {
        Ok(Caller::Peer(p)) => body::<HeldRequest>(&bytes, "a list of key_IDs").map(|r| (p, r)),
        Ok(Caller::Sae(_)) => Err(ServeError::unauthorized("the peer API is for peer nodes")),
        Err(e) => Err(e),
    };
    match parsed {
        Ok((peer, req)) => {
            answer(&node, "peer_held", move |n| Ok(n.take_held(&peer, &req.key_ids))).await
        }
        Err(e) => refused(&node, "peer_held", e),
    }
}

/// Start the GS QKD 014 server of `[qkd.serve]` (if any): its listener,
/// mutual TLS and certificate reloads, serving until `stop`.
pub(crate) async fn start(
    config: &crate::config::Config,
    dir: &std::path::Path,
    pool: &Arc<crate::pool::Pool>,
    vault: &Arc<crate::vault::Vault>,
    attestor: Option<Arc<crate::attest::Attestor>>,
    metrics: &crate::metrics::Metrics,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use anyhow::Context as _;
    let Some(settings) = &config.qkd_serve else { return Ok(None) };
    let without_ml_kem = config.danger.qkd_without_ml_kem;
    let transport_id = match (&attestor, without_ml_kem) {
        (Some(_), false) => Some(crate::attest::transport_key(vault, dir)?),
        _ => None,
    };
    let node = Arc::new(QkdNode::new(super::node::Parts {
        settings: settings.clone(),
        without_ml_kem,
        kmes: config.kmes.clone(),
        peers: config.qkd_peers.clone(),
        pool: pool.clone(),
        vault: vault.clone(),
        attestor,
        transport_id,
        metrics: metrics.qkd.clone(),
    })?);
    let tls = crate::tls::TlsServer::new(
        &crate::config::TlsSettings {
            cert: settings.cert_file.clone(),
            key: settings.key_file.clone(),
            groups: crate::config::Groups::Hybrid,
            allow_tls12: false,
            handshake_timeout: std::time::Duration::from_secs(10),
            reload_interval: std::time::Duration::from_secs(5),
            client_ca: Some(settings.client_ca.clone()),
            clients: client_rules(&node, &config.qkd_peers),
        },
        metrics.tls.clone(),
    )
    .context("[qkd.serve] TLS")?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("[qkd.serve] cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    if without_ml_kem {
        tracing::warn!(
            "DANGER: [danger] qkd_without_ml_kem is on: QKD keys are delivered without ML-KEM, \
             only as safe as the QKD link and its KMEs"
        );
    }
    tracing::info!(
        combiner = node.settings().combiner.as_str(),
        saes = ?node.settings().saes,
        peers = config.qkd_peers.len(),
        "GS QKD 014 server listening on https://{addr}"
    );
    let tls = Arc::new(tls);
    let store = tls.store().clone();
    let mut reload_stop = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = reload_stop.changed() => return,
            }
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || store.check(false)).await;
        }
    });
    Ok(Some(tokio::spawn(crate::api::server::serve(listener, router(node), Some(tls), stop))))
}
