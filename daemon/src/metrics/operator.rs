//! What an operator watches beyond entropy: the KMS plugin's calls and write
//! key, the sealer's reachability (kept by a thread that asks it), the
//! vault's keys and their operations, and the PKCS#11 module's clients.
//!
//! The KMS write key id is exported only as `sha256:<hex>` of the id, the
//! way kube-apiserver labels its `apiserver_envelope_encryption_*` metrics,
//! so the two join on `key_id_hash`.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use qkeyd_drivers::seal::worker::SealerWorker;
use sha2::Digest as _;

/// How often the sealer is asked whether it answers.
const SEALER_CHECK: Duration = Duration::from_secs(15);

/// The KMS plugin's metrics.
#[derive(Clone)]
pub(crate) struct KmsMetrics {
    /// gRPC calls by method and status code.
    requests: IntCounterVec,
    /// Time to answer, by method.
    seconds: HistogramVec,
    /// 1 for the write key's hashed id.
    key_id: IntGaugeVec,
    /// 1 if the last real Status check passed, 0 if it failed; no series
    /// before the first check (or with the plugin off).
    status_healthy: IntGaugeVec,
}

/// The vault's and its sealer's metrics.
#[derive(Clone)]
pub(crate) struct KeyMetrics {
    /// REST key operations by operation and outcome.
    pub(crate) operations: IntCounterVec,
    /// Keys by algorithm and sealer.
    keys: IntGaugeVec,
    /// 1 if the sealer answered its last check.
    sealer_up: IntGaugeVec,
    /// Open PKCS#11 module connections.
    pub(crate) module_clients: IntGauge,
}

/// kube-apiserver's label for a KMS key id: `sha256:` and the hex SHA-256
/// of the id's bytes.
pub(crate) fn key_id_hash(key_id: &str) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(key_id.as_bytes())))
}

/// A gRPC status code as Go's `codes.Code.String()` spells it, which is
/// what kube-apiserver's `grpc_status_code` label carries.
pub(crate) fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

impl KmsMetrics {
    pub(super) fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "qkeyd_kms_requests_total",
                "KMS v2 gRPC calls answered, by method (Status, Encrypt, Decrypt) and gRPC code.",
            ),
            &["method", "code"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "qkeyd_kms_request_duration_seconds",
                "Time to answer a KMS v2 gRPC call, by method.",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5]),
            &["method"],
        )?;
        let key_id = IntGaugeVec::new(
            Opts::new(
                "qkeyd_kms_key_id_info",
                "1 for the KMS write key, by key_id_hash (sha256:<hex>, as kube-apiserver hashes key ids).",
            ),
            &["key_id_hash"],
        )?;
        let status_healthy = IntGaugeVec::new(
            Opts::new(
                "qkeyd_kms_status_healthy",
                "1 if the last real Status check (a round trip through the KEK's backend) passed, 0 if it failed.",
            ),
            &[],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        registry.register(Box::new(key_id.clone()))?;
        registry.register(Box::new(status_healthy.clone()))?;
        Ok(Self { requests, seconds, key_id, status_healthy })
    }

    /// Count one answered call.
    pub(crate) fn observe(&self, method: &'static str, code: tonic::Code, took: Duration) {
        self.requests.with_label_values(&[method, grpc_code_name(code)]).inc();
        self.seconds.with_label_values(&[method]).observe(took.as_secs_f64());
    }

    /// Bring the write key and the Status outcome up to date.
    pub(super) fn catch_up(&self, write_key_id: Option<&str>, status_ok: Option<bool>) {
        self.key_id.reset();
        if let Some(id) = write_key_id {
            self.key_id.with_label_values(&[&key_id_hash(id)]).set(1);
        }
        if let Some(ok) = status_ok {
            self.status_healthy.with_label_values(&[] as &[&str]).set(i64::from(ok));
        }
    }
}

impl KeyMetrics {
    pub(super) fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let operations = IntCounterVec::new(
            Opts::new(
                "qkeyd_key_operations_total",
                "REST key operations by operation and outcome: ok, client_error (4xx), server_error (5xx).",
            ),
            &["operation", "outcome"],
        )?;
        let keys = IntGaugeVec::new(
            Opts::new("qkeyd_keys", "Keys in the vault, by algorithm and sealer."),
            &["algorithm", "sealer"],
        )?;
        let sealer_up = IntGaugeVec::new(
            Opts::new(
                "qkeyd_sealer_up",
                "1 if the sealer (soft, hsm, tpm) answered its last check, 0 if not.",
            ),
            &["sealer"],
        )?;
        let module_clients =
            IntGauge::new("qkeyd_module_clients", "Open PKCS#11 module connections.")?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(keys.clone()))?;
        registry.register(Box::new(sealer_up.clone()))?;
        registry.register(Box::new(module_clients.clone()))?;
        Ok(Self { operations, keys, sealer_up, module_clients })
    }

    /// Ask the sealer every [`SEALER_CHECK`] whether it answers (an HSM's
    /// session, a TPM's connection), from a thread of its own, for
    /// `qkeyd_sealer_up`. The check queues on the sealer's thread like any
    /// call, so a stalled backend shows as down after the worker's timeout.
    pub(crate) fn watch_sealer(&self, sealer: SealerWorker) {
        let kind = sealer.kind();
        // The series appears with the first check's answer, not as a 0 before it.
        let gauge = self.sealer_up.clone();
        let spawned = std::thread::Builder::new().name("qkeyd-seal-check".into()).spawn(move || {
            let mut was_up = true;
            loop {
                let up = match sealer.call(|s| s.check()) {
                    Ok(()) => true,
                    Err(e) => {
                        if was_up {
                            tracing::warn!(sealer = kind, error = %e, "the sealer does not answer");
                        }
                        false
                    }
                };
                if up && !was_up {
                    tracing::info!(sealer = kind, "the sealer answers again");
                }
                was_up = up;
                gauge.with_label_values(&[kind]).set(i64::from(up));
                std::thread::sleep(SEALER_CHECK);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the sealer check thread; qkeyd_sealer_up stays unset");
        }
    }

    /// Count keys by (algorithm, sealer).
    pub(super) fn catch_up(&self, keys: &[(String, String)]) {
        self.keys.reset();
        for (alg, sealer) in keys {
            self.keys.with_label_values(&[alg, sealer]).inc();
        }
    }
}

/// The operation a key route does, for `qkeyd_key_operations_total`.
pub(crate) fn key_operation(method: &axum::http::Method, route: &str) -> Option<&'static str> {
    use axum::http::Method;
    Some(match (method, route) {
        (&Method::POST, "/v1/keys") => "create",
        (&Method::GET, "/v1/keys") => "list",
        (&Method::GET, "/v1/keys/{id}") => "show",
        (&Method::DELETE, "/v1/keys/{id}") => "destroy",
        (&Method::POST, "/v1/keys/{id}/rotate") => "rotate",
        (&Method::POST, "/v1/keys/{id}/sign") => "sign",
        (&Method::POST, "/v1/keys/{id}/verify") => "verify",
        (&Method::POST, "/v1/keys/{id}/encapsulate") => "encapsulate",
        (&Method::POST, "/v1/keys/{id}/decapsulate") => "decapsulate",
        (&Method::POST, "/v1/keys/{id}/derive") => "derive",
        (&Method::POST, "/v1/keys/{id}/attest") => "attest",
        (&Method::POST, "/v1/keys/{id}/certificate") => "certificate",
        (&Method::GET, "/v1/objects") => "list_objects",
        (&Method::DELETE, "/v1/objects/{id}") => "destroy_object",
        _ => return None,
    })
}

/// `ok`, `client_error` or `server_error` for an HTTP status.
pub(crate) fn outcome(status: axum::http::StatusCode) -> &'static str {
    if status.is_server_error() {
        "server_error"
    } else if status.is_client_error() {
        "client_error"
    } else {
        "ok"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_id_is_hashed_as_kube_apiserver_hashes_it() {
        // sha256("abc"), the FIPS 180-2 example.
        assert_eq!(
            key_id_hash("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn grpc_codes_are_spelled_as_go_spells_them() {
        assert_eq!(grpc_code_name(tonic::Code::Ok), "OK");
        assert_eq!(grpc_code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(grpc_code_name(tonic::Code::Unavailable), "Unavailable");
    }

    #[test]
    fn the_write_key_gauge_follows_rotation() {
        let registry = prometheus::Registry::new();
        let m = KmsMetrics::new(&registry).unwrap();
        m.catch_up(None, None);
        let before = registry.gather();
        assert!(
            before.iter().all(|f| f.get_metric().is_empty()),
            "no series before a write key or a check"
        );
        m.catch_up(Some("k1"), Some(true));
        m.catch_up(Some("k2"), None);
        let text = {
            let mut out = Vec::new();
            prometheus::Encoder::encode(
                &prometheus::TextEncoder::new(),
                &registry.gather(),
                &mut out,
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(text.contains(&format!("key_id_hash=\"{}\"", key_id_hash("k2"))), "{text}");
        assert!(!text.contains(&key_id_hash("k1")), "{text}");
        assert!(text.contains("qkeyd_kms_status_healthy 1"), "{text}");
    }
}
