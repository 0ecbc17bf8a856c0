//! Errors as HTTP answers.

use axum::{
    Json,
    http::StatusCode,
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
