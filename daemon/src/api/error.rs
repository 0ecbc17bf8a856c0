//! Errors as HTTP answers.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::incident::Incident;

/// An error answer: status, stable code, human message, and for a failure of
/// the daemon's own the incident id of the log line that has the detail.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    incident: Option<Incident>,
}

impl ApiError {
    /// Any status with a stable code and a message for the caller.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), incident: None }
    }

    /// 400 with a message saying what was wrong.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 413: the caller asked for too much.
    pub(crate) fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 503: the pool cannot serve (no healthy source, no seed in time).
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "entropy_unavailable", message)
    }

    /// 500 with a generic message and the incident id; the detail is in the
    /// log line with that id only.
    pub(crate) fn internal(incident: Incident) -> Self {
        Self::incident(StatusCode::INTERNAL_SERVER_ERROR, "internal", incident)
    }

    /// `status` with a generic message and the incident id of a logged
    /// failure of the daemon's own.
    pub(crate) fn incident(status: StatusCode, code: &'static str, incident: Incident) -> Self {
        Self {
            status,
            code,
            message: format!("internal error (incident {incident} in qkeyd's log)"),
            incident: Some(incident),
        }
    }

    /// 507 if `e` was caused by a full or read-only state directory (an
    /// operator can fix that, so the answer says it), else `None`. Every
    /// write is checked before it takes effect, so nothing was changed.
    pub(crate) fn storage(e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut cause = Some(e);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                let what = match io.kind() {
                    std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                        Some("is full")
                    }
                    std::io::ErrorKind::ReadOnlyFilesystem => Some("is read-only"),
                    _ => None,
                };
                if let Some(what) = what {
                    let message = format!(
                        "the state directory {what} ({io}); nothing was changed: free space \
                         or make it writable, then retry"
                    );
                    return Some(Self::new(StatusCode::INSUFFICIENT_STORAGE, "storage", message));
                }
            }
            cause = c.source();
        }
        None
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error =
            json!({ "status": self.status.as_u16(), "code": self.code, "message": self.message });
        if let Some(id) = self.incident {
            error["incident"] = json!(id.to_string());
        }
        let body = json!({ "error": error });
        (self.status, Json(body)).into_response()
    }
}

/// A body that is not the JSON a route takes: its status as axum decides it
/// (413 over the body limit, 415 without a JSON content type, 422 for JSON
/// of the wrong shape, 400 for bad syntax), as a JSON error.
impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        let status = e.status();
        Self::new(status, code_for(status), format!("request body: {}", e.body_text()))
    }
}

/// The stable code of an error status that has no more specific one.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// Most of an error body that is kept as its message.
const MAX_PLAIN_ERROR: usize = 1024;

/// Every error answer is JSON: one that an extractor or axum itself made as
/// text (a malformed path or query, say) is rewritten into the
/// `{"error": {...}}` shape with the same status and its text as message.
pub(super) async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let body = axum::body::to_bytes(res.into_body(), MAX_PLAIN_ERROR).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_owned(),
        t => t.to_owned(),
    };
    ApiError::new(status, code_for(status), message).into_response()
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /v1/random, /v1/health, /v1/keys, /v1/kms, /healthz, /readyz, /metrics",
    )
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
