//! Who may call what: every route outside health, readiness and metrics
//! needs a [`Right`]. A request holds the rights of `[tls] anonymous`, of its
//! client certificate's `[[tls.client]]` rule, and every right with the
//! bearer token (unless `[tls] bearer_token = false`). Without the right it is
//! 401 when it brought no credential and 403 when it brought one that does not
//! grant it; a wrong token is always 401. A refused request reaches no
//! handler, changes nothing and is counted in
//! `qkeyd_key_requests_denied_total{reason}`.

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{ApiError, AppState};
use crate::{
    config::{Right, Rights},
    tls::Connection,
};

/// The right a route needs (`None`: open to all).
pub(super) fn required(method: &Method, route: &str) -> Option<Right> {
    if route == "/v1/random" {
        return Some(Right::Random);
    }
    if route.starts_with("/v1/kms") {
        return Some(Right::KmsAdmin);
    }
    if route == "/v1/attest/activate" {
        return Some(Right::KeysAdmin);
    }
    if route.starts_with("/v1/attest")
        || route.starts_with("/v1/gateway")
        || route == "/v1/keys/{id}/attest"
    {
        return Some(Right::Gateway);
    }
    if !route.starts_with("/v1/keys") && !route.starts_with("/v1/objects") {
        return None;
    }
    Some(match (method, route) {
        (&Method::GET | &Method::HEAD, _) => Right::KeysRead,
        (&Method::POST, "/v1/keys" | "/v1/keys/{id}/rotate" | "/v1/keys/{id}/certificate")
        | (&Method::DELETE, _) => Right::KeysAdmin,
        _ => Right::KeysUse,
    })
}

/// The rights of the connection alone: anonymous plus the certificate's.
pub(super) fn connection_rights(state: &AppState, conn: Option<&Connection>) -> Rights {
    let cert = conn
        .and_then(|c| c.tls.as_ref())
        .and_then(|t| t.client.as_ref())
        .map(|c| c.rights)
        .unwrap_or_default();
    state.access.anonymous.union(cert)
}

/// The check in front of every route that needs a right.
pub(super) async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str);
    let Some(right) = required(req.method(), route) else {
        return next.run(req).await;
    };
    let conn = req.extensions().get::<Connection>();
    let has_cert = conn.and_then(|c| c.tls.as_ref()).is_some_and(|t| t.client.is_some());
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    let needs_vault =
        matches!(right, Right::KeysRead | Right::KeysUse | Right::KeysAdmin | Right::KmsAdmin);
    let refusal = if needs_vault && state.keys.is_none() {
        Some("disabled")
    } else {
        match presented {
            Some(t) if !state.keys.as_ref().is_some_and(|k| k.token.matches(t.trim())) => {
                Some("invalid")
            }
            Some(_) if !state.access.bearer_token && !has_cert => Some("token_off"),
            token => {
                let mut rights = connection_rights(&state, conn);
                if token.is_some() && state.access.bearer_token {
                    rights = Rights::all();
                }
                match (rights.has(right), has_cert || token.is_some()) {
                    (true, _) => None,
                    (false, true) => Some("forbidden"),
                    (false, false) => Some("missing"),
                }
            }
        }
    };
    let Some(reason) = refusal else {
        return next.run(req).await;
    };
    state.metrics.key_denied.with_label_values(&[reason]).inc();
    tracing::info!(reason, right = right.name(), path = %req.uri().path(), "request denied");
    if reason == "forbidden" {
        let who = conn
            .and_then(|c| c.tls.as_ref())
            .and_then(|t| t.client.as_ref())
            .map_or_else(|| "this caller".to_owned(), |c| format!("client {}", c.name));
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{who} lacks the right {:?} that this route needs", right.name()),
        )
        .into_response();
    }
    let message = match reason {
        "disabled" => "the key vault is not enabled on this daemon".to_owned(),
        "invalid" => "the bearer token is not valid".to_owned(),
        "token_off" => "the bearer token is not accepted here ([tls] bearer_token = false): \
                        present a client certificate"
            .to_owned(),
        _ => format!(
            "this route needs the right {:?}: a client certificate that grants it, or \
             Authorization: Bearer <token> (see keys.token_file)",
            right.name()
        ),
    };
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_needs_the_right_its_effect_needs() {
        let cases = [
            (Method::GET, "/v1/random", Some(Right::Random)),
            (Method::GET, "/v1/health", None),
            (Method::GET, "/metrics", None),
            (Method::GET, "/v1/keys", Some(Right::KeysRead)),
            (Method::GET, "/v1/keys/{id}", Some(Right::KeysRead)),
            (Method::POST, "/v1/keys", Some(Right::KeysAdmin)),
            (Method::POST, "/v1/keys/{id}/rotate", Some(Right::KeysAdmin)),
            (Method::DELETE, "/v1/keys/{id}", Some(Right::KeysAdmin)),
            (Method::POST, "/v1/keys/{id}/sign", Some(Right::KeysUse)),
            (Method::POST, "/v1/keys/{id}/decapsulate", Some(Right::KeysUse)),
            (Method::GET, "/v1/kms", Some(Right::KmsAdmin)),
            (Method::POST, "/v1/kms/rotate", Some(Right::KmsAdmin)),
            (Method::DELETE, "/v1/kms/keks/{key_id}", Some(Right::KmsAdmin)),
            (Method::GET, "/v1/kms/cluster", Some(Right::KmsAdmin)),
            (Method::DELETE, "/v1/kms/cluster/nodes/{node}", Some(Right::KmsAdmin)),
            (Method::GET, "/v1/attest/identity", Some(Right::Gateway)),
            (Method::POST, "/v1/attest/activate", Some(Right::KeysAdmin)),
            (Method::POST, "/v1/keys/{id}/attest", Some(Right::Gateway)),
            (Method::POST, "/v1/gateway/keys", Some(Right::Gateway)),
        ];
        for (m, route, want) in cases {
            assert_eq!(required(&m, route), want, "{m} {route}");
        }
    }
}
