//! Certificates for vault keys and the token objects: `POST
//! /v1/keys/{id}/certificate` issues a self-signed X.509 certificate (kept as
//! a PKCS#11 token object with the key's CKA_ID) or a PKCS#10 request for an
//! ML-DSA key; `GET /v1/objects` lists the token objects, `DELETE
//! /v1/objects/{id}` destroys one. Values of data objects are never shown.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    ApiError, AppState,
    keys::{body, key_id},
};
use crate::{
    certificate::{self, Name},
    incident::{Chain, Incident},
    objects::{
        self, CKA_PRIVATE, CKA_TRUSTED, CKO_CERTIFICATE, CKO_DATA, CKO_PUBLIC_KEY, ObjectError,
        TokenObjects,
    },
};

/// PKCS#11 numbers the stored certificate's attributes need.
const CKA_TOKEN: u64 = 0x1;
const CKA_CERTIFICATE_TYPE: u64 = 0x80;
const CKA_ISSUER: u64 = 0x81;
const CKA_SERIAL_NUMBER: u64 = 0x82;
const CKA_CERTIFICATE_CATEGORY: u64 = 0x87;
const CKA_SUBJECT: u64 = 0x101;
const CKA_START_DATE: u64 = 0x110;
const CKA_END_DATE: u64 = 0x111;
const CKA_PUBLIC_KEY_INFO: u64 = 0x129;
const CKA_MODIFIABLE: u64 = 0x170;
const CKA_COPYABLE: u64 = 0x171;
const CKA_DESTROYABLE: u64 = 0x172;
const CKC_X_509: u64 = 0;
/// CK_CERTIFICATE_CATEGORY_TOKEN_USER: the token holds the certificate's key.
const CATEGORY_TOKEN_USER: u64 = 1;

pub(super) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/v1/keys/{id}/certificate", post(certificate))
        .route("/v1/objects", get(list))
        .route("/v1/objects/{id}", delete(destroy))
        .route_layer(middleware::from_fn_with_state(state.clone(), super::access::authorize))
        .route_layer(middleware::from_fn_with_state(state, super::keys::count_operation))
}

fn store(state: &AppState) -> Result<Arc<TokenObjects>, ApiError> {
    state.keys.as_ref().map(|k| k.objects.clone()).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "keys_disabled", "the key vault is not enabled")
    })
}

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        let msg = Chain(&e).to_string();
        match e {
            ObjectError::TooMany(_) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "too_many_objects", msg)
            }
            ObjectError::TooLarge(_) => ApiError::too_large(msg),
            ObjectError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "object_not_found", msg)
            }
            ObjectError::Audit(v) => v.into(),
            ObjectError::Store(..) => {
                ApiError::internal(Incident::log("a token object could not be stored", &e))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateBody {
    /// `CN=…,O=…`.
    subject: String,
    /// Days of validity (self-signed only), 1..=3650.
    #[serde(default = "default_days")]
    days: u32,
    /// A PKCS#10 request instead of a self-signed certificate.
    #[serde(default)]
    csr: bool,
}

fn default_days() -> u32 {
    365
}

fn ulong(v: u64) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

async fn certificate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    b: Result<Json<CertificateBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    key_id(&id)?;
    let b = body(b)?;
    let subject = Name::parse(&b.subject).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !(1..=3650).contains(&b.days) {
        return Err(ApiError::bad_request("days must be 1..=3650"));
    }
    let vault = state.keys.as_ref().map(|k| k.vault.clone());
    let vault = vault.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "keys_disabled", "the key vault is not enabled")
    })?;
    let objects = store(&state)?;
    let pool = state.pool.clone();
    tokio::task::spawn_blocking(move || -> Result<Response, ApiError> {
        let key = vault.current_key(&id)?;
        let not_dsa = || {
            ApiError::bad_request(format!(
                "key {id} is {}: certificates are for ML-DSA keys",
                key.alg.name()
            ))
        };
        if b.csr {
            let info = certificate::request_info(key.alg, &key.public_key, &subject)
                .ok_or_else(not_dsa)?;
            let (version, sig) = vault.sign(&id, Some(key.version), &info, b"")?;
            let der = certificate::signed(key.alg, &info, &sig).ok_or_else(not_dsa)?;
            return Ok(Json(json!({
                "key": id,
                "version": version,
                "subject": subject.text(),
                "csr": certificate::pem("CERTIFICATE REQUEST", &der),
            }))
            .into_response());
        }
        let mut serial = [0u8; 16];
        pool.fill(&mut serial).map_err(|e| ApiError::unavailable(Chain(&e).to_string()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let not_after = now + i64::from(b.days) * 86_400;
        let tbs = certificate::tbs_certificate(
            key.alg,
            &key.public_key,
            &subject,
            serial,
            now,
            not_after,
        )
        .ok_or_else(not_dsa)?;
        let (version, sig) = vault.sign(&id, Some(key.version), &tbs.der, b"")?;
        let der = certificate::signed(key.alg, &tbs.der, &sig).ok_or_else(not_dsa)?;
        let spki = certificate::spki(key.alg, &key.public_key).ok_or_else(not_dsa)?;
        let cka_id = hex::decode(&id).unwrap_or_default();
        let t = |b: bool| vec![u8::from(b)];
        let attrs = vec![
            (objects::CKA_CLASS, ulong(CKO_CERTIFICATE)),
            (CKA_TOKEN, t(true)),
            (CKA_PRIVATE, t(false)),
            (CKA_MODIFIABLE, t(true)),
            (CKA_COPYABLE, t(true)),
            (CKA_DESTROYABLE, t(true)),
            (objects::CKA_LABEL, key.label.as_bytes().to_vec()),
            (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
            (CKA_TRUSTED, t(false)),
            (CKA_CERTIFICATE_CATEGORY, ulong(CATEGORY_TOKEN_USER)),
            (CKA_START_DATE, certificate::ck_date(now)),
            (CKA_END_DATE, certificate::ck_date(not_after)),
            (CKA_PUBLIC_KEY_INFO, spki),
            (CKA_SUBJECT, subject.der().to_vec()),
            (objects::CKA_ID, cka_id.clone()),
            (CKA_ISSUER, subject.der().to_vec()),
            (CKA_SERIAL_NUMBER, tbs.serial.clone()),
            (objects::CKA_VALUE, der.clone()),
        ];
        let object = objects.put(None, false, attrs, true, "rest")?;
        tracing::info!(key = %id, version, object, "certificate issued");
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "object": object,
                "key": id,
                "version": version,
                "subject": subject.text(),
                "serial": hex::encode(&tbs.serial[2..]),
                "not_before_unix": now,
                "not_after_unix": not_after,
                "cka_id": hex::encode(&cka_id),
                "certificate": certificate::pem("CERTIFICATE", &der),
            })),
        )
            .into_response())
    })
    .await
    .map_err(|e| ApiError::internal(Incident::log("a certificate task failed", &e)))?
}

/// A token object as the API lists it: never a data object's value.
fn object_json(o: &qkeyd_p11_proto::StoredObject) -> serde_json::Value {
    let get = |t| objects::attr(&o.attrs, t).unwrap_or_default();
    let class = objects::class_of(&o.attrs);
    let mut j = json!({
        "id": o.id,
        "class": match class {
            Some(CKO_DATA) => "data",
            Some(CKO_CERTIFICATE) => "certificate",
            Some(CKO_PUBLIC_KEY) => "public_key",
            _ => "other",
        },
        "label": String::from_utf8_lossy(get(objects::CKA_LABEL)),
        "cka_id": hex::encode(get(objects::CKA_ID)),
        "private": o.private,
    });
    if class == Some(CKO_CERTIFICATE) {
        use x509_parser::prelude::FromDer as _;
        let subject = x509_parser::x509::X509Name::from_der(get(CKA_SUBJECT))
            .map(|(_, n)| n.to_string())
            .unwrap_or_default();
        j["subject"] = json!(subject);
        j["certificate"] = json!(certificate::pem("CERTIFICATE", get(objects::CKA_VALUE)));
    }
    j
}

async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let objects = store(&state)?.list(true);
    let listed: Vec<_> = objects.iter().map(object_json).collect();
    Ok(Json(json!({ "objects": listed })).into_response())
}

async fn destroy(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !objects::valid_id(&id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "object_not_found",
            "no such token object: ids are o and 16 hex digits",
        ));
    }
    let objects = store(&state)?;
    tokio::task::spawn_blocking(move || objects.destroy(&id, true, "rest"))
        .await
        .map_err(|e| ApiError::internal(Incident::log("a token object task failed", &e)))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}
