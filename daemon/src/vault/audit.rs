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

    /// Append a lifecycle event (create, rotate, destroy) and fsync it, which
    /// also makes every use event before it durable. A failure to log is
    /// reported, not fatal.
    pub(super) fn log(
        &self,
        op: &str,
        id: &str,
        version: u32,
        alg: Option<Algorithm>,
        fingerprint: &str,
        outcome: &str,
    ) {
        self.write(op, id, version, alg, fingerprint, outcome, true);
    }

    /// Append a use of a key (sign, decapsulate): written at once, so it
    /// survives the daemon, and synced with the next lifecycle event or by the
    /// kernel; a power cut may lose the last few. One fsync per signature
    /// would cost more than the signature.
    pub(super) fn log_use(
        &self,
        op: &str,
        id: &str,
        version: u32,
        alg: Option<Algorithm>,
        fingerprint: &str,
    ) {
        self.write(op, id, version, alg, fingerprint, "ok", false);
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        op: &str,
        id: &str,
        version: u32,
        alg: Option<Algorithm>,
        fingerprint: &str,
        outcome: &str,
        sync: bool,
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
        let written =
            writeln!(f, "{line}").and_then(|()| if sync { f.sync_data() } else { Ok(()) });
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
