//! KEK lifecycle lines in the node's audit log (`STATE_DIR/audit.log`, the
//! vault's): `kek-create` for a new KEK, `kek-import` for one another node
//! of the cluster wrapped to this one, `kek-retire` for a retired one, each written in one `write` and fsynced before the change reaches the
//! KEK file, so no KEK encrypts or decrypts without its line. A change that
//! then fails gets a `failed` line. At open, a KEK in the file whose line is
//! missing (a log lost or older than this) gets one marked `"recovered"`.
//!
//! ```text
//! {"ts":1767225600.25,"op":"kek-create","key":"qkeyd-kek-…","backend":"hsm","outcome":"ok"}
//! ```

use std::{
    collections::HashMap,
    fs,
    io::{self, BufRead as _, Write as _},
    os::unix::fs::{FileExt as _, OpenOptionsExt as _},
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::store::KekFile;

/// What happened to a KEK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KekOp {
    /// Made, as the write key.
    Create,
    /// Retired: it no longer decrypts.
    Retire,
    /// Received from another node of the cluster and sealed here.
    Import,
}

impl KekOp {
    fn name(self) -> &'static str {
        match self {
            Self::Create => "kek-create",
            Self::Retire => "kek-retire",
            Self::Import => "kek-import",
        }
    }
}

#[derive(Serialize)]
struct LineOut<'a> {
    ts: f64,
    op: &'static str,
    key: &'a str,
    backend: &'a str,
    outcome: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    recovered: bool,
}

#[derive(Deserialize)]
struct LineIn {
    op: String,
    key: String,
    outcome: String,
}

/// The audit log, as the KMS writes to it.
#[derive(Debug)]
pub(super) struct KekAudit {
    path: PathBuf,
}

impl KekAudit {
    /// The log in `state_dir`.
    pub(super) fn new(state_dir: &std::path::Path) -> Self {
        Self { path: state_dir.join("audit.log") }
    }

    /// Append one line and fsync it: when this returns `Ok` it survives a
    /// crash or a power cut.
    pub(super) fn record(
        &self,
        op: KekOp,
        key: &str,
        backend: &str,
        outcome: &str,
        recovered: bool,
    ) -> io::Result<()> {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let line = LineOut { ts, op: op.name(), key, backend, outcome, recovered };
        let mut text = serde_json::to_vec(&line).map_err(io::Error::other)?;
        text.push(b'\n');
        let mut f = fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        let before = f.metadata()?.len();
        if before > 0 {
            // Close a line a power cut left open.
            let mut last = [0u8];
            f.read_exact_at(&mut last, before - 1)?;
            if last[0] != b'\n' {
                text.insert(0, b'\n');
            }
        }
        // One write: O_APPEND keeps it whole beside the vault's own lines.
        let written = f.write_all(&text).and_then(|()| f.sync_data());
        if written.is_err() {
            // A full disk may have taken part of it: take that back.
            let _ = f.set_len(before);
        }
        written
    }

    /// The last outcome the log gives each KEK for `op`.
    fn last_words(&self, op: KekOp) -> io::Result<HashMap<String, String>> {
        let file = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => return Err(e),
        };
        let mut words = HashMap::new();
        let needle = format!("\"op\":\"{}\"", op.name());
        for line in io::BufReader::new(file).split(b'\n') {
            let line = line?;
            if !line.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                continue;
            }
            if let Ok(l) = serde_json::from_slice::<LineIn>(&line)
                && l.op == op.name()
            {
                words.insert(l.key, l.outcome);
            }
        }
        Ok(words)
    }

    /// Give every KEK of `file` (live or retired) the line the log lacks,
    /// marked recovered; returns how many were added.
    pub(super) fn reconcile(&self, file: &KekFile, backend: &str) -> io::Result<usize> {
        let mut created = self.last_words(KekOp::Import)?;
        created.extend(self.last_words(KekOp::Create)?);
        let retired = self.last_words(KekOp::Retire)?;
        let ok = |words: &HashMap<String, String>, k: &str| words.get(k).is_some_and(|o| o == "ok");
        let mut added = 0;
        for k in &file.keks {
            if !ok(&created, &k.key_id) {
                self.record(KekOp::Create, &k.key_id, backend, "ok", true)?;
                added += 1;
            }
        }
        for r in &file.retired {
            if !ok(&retired, &r.key_id) {
                self.record(KekOp::Retire, &r.key_id, backend, "ok", true)?;
                added += 1;
            }
        }
        Ok(added)
    }
}
