//! GET /v1/random?bytes=N&format=raw|hex|base64

use axum::{
    extract::{Query, State, rejection::QueryRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::{
    incident::Incident,
    pool::{PoolError, Serving},
};

/// Bytes returned when `bytes` is not given.
const DEFAULT_BYTES: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RandomQuery {
    bytes: Option<String>,
    format: Option<String>,
}

#[derive(Clone, Copy)]
enum Format {
    Raw,
    Hex,
    Base64,
}

pub(super) async fn random(
    State(state): State<AppState>,
    query: Result<Query<RandomQuery>, QueryRejection>,
) -> Response {
    let result = answer(&state, query).await;
    let status = match &result {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status(),
    };
    state.metrics.random_requests.with_label_values(&[status.as_str()]).inc();
    match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn answer(
    state: &AppState,
    query: Result<Query<RandomQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let n = parse_bytes(q.bytes.as_deref(), state.max_request_bytes)?;
    let format = match q.format.as_deref() {
        None | Some("hex") => Format::Hex,
        Some("raw") => Format::Raw,
        Some("base64") => Format::Base64,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format {other:?} is not one of raw, hex, base64"
            )));
        }
    };
    // A small draw with no reseed due is microseconds of AES: served here.
    // Anything else may wait for a seed block, so it goes to a blocking thread.
    let mut inline = vec![0u8; n];
    let drawn = match state.pool.fill_now(&mut inline) {
        Some(r) => r.map(|s| (s, inline)),
        None => {
            drop(inline);
            let permit =
                state.generate_permits.clone().acquire_owned().await.map_err(|e| {
                    ApiError::internal(Incident::log("random generation permit", &e))
                })?;
            let pool = state.pool.clone();
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let mut buf = vec![0u8; n];
                pool.fill(&mut buf).map(|s| (s, buf))
            })
            .await
            .map_err(|e| ApiError::internal(Incident::log("random generation task failed", &e)))?
        }
    };
    let (serving, bytes) = drawn.map_err(|e| match e {
        PoolError::NoHealthySource | PoolError::SeedTimeout(_) | PoolError::Fallback(_) => {
            ApiError::unavailable(e.to_string())
        }
        e => ApiError::internal(Incident::log("DRBG failure", &e)),
    })?;
    let origin = match serving {
        Serving::Sources => "sources",
        Serving::OsFallback => "os-fallback",
    };
    state.metrics.bytes_served.with_label_values(&[origin]).inc_by(n as u64);
    let headers = [
        (header::CACHE_CONTROL, "no-store"),
        (header::HeaderName::from_static("x-qkeyd-entropy"), origin),
    ];
    Ok(match format {
        Format::Raw => {
            (headers, [(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Format::Hex => {
            let mut s = hex::encode(&bytes);
            s.push('\n');
            (headers, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], s).into_response()
        }
        Format::Base64 => {
            let mut s = base64::engine::general_purpose::STANDARD.encode(&bytes);
            s.push('\n');
            (headers, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], s).into_response()
        }
    })
}

fn parse_bytes(raw: Option<&str>, max: usize) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_BYTES.min(max));
    };
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    if !digits {
        return Err(ApiError::bad_request(format!(
            "bytes must be a whole number from 1 to {max}, got {:?}",
            truncate(raw)
        )));
    }
    match raw.parse::<usize>() {
        Ok(0) => Err(ApiError::bad_request(format!("bytes must be from 1 to {max}, got 0"))),
        Ok(n) if n <= max => Ok(n),
        // Digits that are too many for usize are a size too, not a syntax error.
        _ => Err(ApiError::too_large(format!(
            "bytes={} exceeds the maximum of {max} per request",
            truncate(raw)
        ))),
    }
}

/// Echo at most a short prefix of caller input in messages.
fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(32).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_bytes_rules() {
        assert_eq!(parse_bytes(None, 1000).unwrap(), 32);
        assert_eq!(parse_bytes(Some("1"), 1000).unwrap(), 1);
        assert_eq!(parse_bytes(Some("1000"), 1000).unwrap(), 1000);
        assert_eq!(parse_bytes(Some("1001"), 1000).unwrap_err().status(), 413);
        assert_eq!(
            parse_bytes(Some("99999999999999999999999999"), 1000).unwrap_err().status(),
            413
        );
        for bad in ["0", "", "-1", "1e3", " 5", "0x10", "ten"] {
            assert_eq!(parse_bytes(Some(bad), 1000).unwrap_err().status(), 400, "{bad:?}");
        }
    }
}
