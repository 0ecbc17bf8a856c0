//! The append-only audit log of key operations: one JSON line per event, with
//! key ids, versions and public-key fingerprints. Never key material.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use super::{Algorithm, VaultError};

/// The audit log file, opened for appending.
#[derive(Debug)]
pub(super) struct Audit {
    file: Mutex<fs::File>,
}

impl Audit {
    pub(super) fn open(path: &Path) -> std::io::Result<Self> {
        let file = fs::OpenOptions::new().append(true).create(true).mode(0o600).open(path)?;
        Ok(Self { file: Mutex::new(file) })
    }

    /// Append one event and fsync it. A failure to log is reported, not fatal.
    pub(super) fn log(
        &self,
        op: &str,
        id: &str,
        version: u32,
        alg: Option<Algorithm>,
        fingerprint: &str,
        outcome: &str,
    ) {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let line = serde_json::json!({
            "ts": ts,
            "op": op,
            "key": id,
            "version": version,
            "alg": alg.map(Algorithm::name),
            "fingerprint": fingerprint,
            "outcome": outcome,
        });
        let mut f = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let written = writeln!(f, "{line}").and_then(|()| f.sync_data());
        if let Err(e) = written {
            tracing::error!(error = %e, op, key = id, "cannot write the audit log");
        }
    }

    /// Log the outcome of an operation that made a record, and pass it on.
    pub(super) fn result<T>(
        &self,
        op: &str,
        id: &str,
        version: u32,
        alg: Option<Algorithm>,
        r: Result<T, VaultError>,
        fingerprint: impl Fn(&T) -> String,
    ) -> Result<T, VaultError> {
        match &r {
            Ok(t) => self.log(op, id, version, alg, &fingerprint(t), "ok"),
            Err(e) => self.log(op, id, version, alg, "", &format!("error: {e}")),
        }
        r
    }
}
