//! The append-only audit log of key operations: one JSON line per event, with
//! key ids, versions and public-key fingerprints. Never key material.
//!
//! ```text
//! {"ts":1767225600.25,"op":"create","key":"…","version":1,"alg":"ml-dsa-65","fingerprint":"…","outcome":"ok"}
//! {"ts":1767225601.5,"op":"derive","key":"…","version":1,"alg":"ml-kem-768","fingerprint":"…","outcome":"ok"}
//! {"ts":1767225602.0,"op":"rotate","key":"…","version":2,…,"outcome":"ok","recovered":true}
//! ```
//!
//! Audit comes before effect. A lifecycle event (create, rotate, destroy) is
//! written and fsynced before the rename that makes it take effect; if that
//! fails the change is not made. A use (sign, verify, encapsulate,
//! decapsulate, derive) is written before its result leaves the vault, and a
//! use that cannot be logged is refused; uses are not fsynced one by one (one
//! fsync per signature would cost more than the signature), so a power cut can
//! lose the last few, a daemon crash cannot. Every line is written with one
//! `write` call, and a line cut short by a power cut is closed before the next
//! one is appended.
//!
//! At start-up the vault reads the lifecycle lines back ([`History`]) and
//! appends what the disk shows and the log lacks, marked `"recovered": true`:
//! no key version is usable without its line.

use std::{
    collections::HashMap,
    fs,
    io::{self, BufRead as _, Read as _, Seek as _, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::{Algorithm, VaultError};

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// A key and its first version.
    Create,
    /// A new version.
    Rotate,
    /// Every version of a key.
    Destroy,
    /// A signature.
    Sign,
    /// A signature check.
    Verify,
    /// An encapsulation to the key's public key.
    Encapsulate,
    /// A decapsulation; the shared secret went to the caller.
    Decapsulate,
    /// A decapsulation whose secret went through HKDF to the caller.
    Derive,
}

impl Op {
    /// The name in the log.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Rotate => "rotate",
            Self::Destroy => "destroy",
            Self::Sign => "sign",
            Self::Verify => "verify",
            Self::Encapsulate => "encapsulate",
            Self::Decapsulate => "decapsulate",
            Self::Derive => "derive",
        }
    }

    /// The event that adds `version`: create for the first, rotate after.
    pub(super) fn adding(version: u32) -> Self {
        if version <= 1 { Self::Create } else { Self::Rotate }
    }
}

/// One event about one key version.
#[derive(Clone, Debug)]
pub(super) struct Event<'a> {
    /// What happened.
    pub(super) op: Op,
    /// Key id.
    pub(super) id: &'a str,
    /// Version, when one applies.
    pub(super) version: Option<u32>,
    /// Algorithm, when known.
    pub(super) alg: Option<Algorithm>,
    /// Public-key fingerprint, when known.
    pub(super) fingerprint: &'a str,
}

/// A line as written.
#[derive(Serialize)]
struct LineOut<'a> {
    ts: f64,
    op: &'static str,
    key: &'a str,
    version: Option<u32>,
    alg: Option<&'static str>,
    fingerprint: &'a str,
    outcome: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    recovered: bool,
}

/// A lifecycle line as read back (older lines had other field orders).
#[derive(Deserialize)]
struct LineIn {
    op: String,
    key: String,
    version: Option<u32>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    fingerprint: String,
    outcome: String,
}

/// Where the log leaves a key version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// Created or rotated in, and not destroyed.
    Stored,
    /// A create or rotate that failed, was aborted or is missing.
    NotStored,
    /// Destroyed (or being destroyed).
    Destroyed,
}

/// What the log says about a version: its state and its public identity.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// The last lifecycle state.
    pub(super) state: State,
    /// Algorithm name as logged.
    pub(super) alg: Option<Algorithm>,
    /// Fingerprint as logged.
    pub(super) fingerprint: String,
}

/// The lifecycle lines of the log, replayed: each key version's last state.
#[derive(Debug, Default)]
pub(super) struct History {
    /// By (key id, version).
    pub(super) versions: HashMap<(String, u32), Entry>,
    /// Lines that did not parse (cut short, or not ours).
    pub(super) unreadable: usize,
}

impl History {
    /// The state of one version, if the log names it.
    pub(super) fn state(&self, id: &str, version: u32) -> Option<State> {
        self.versions.get(&(id.to_owned(), version)).map(|e| e.state)
    }

    fn apply(&mut self, line: LineIn) {
        let Some(version) = line.version else { return };
        let ok = line.outcome == "ok";
        let key = (line.key, version);
        let state = match line.op.as_str() {
            "create" | "rotate" if ok => State::Stored,
            "create" | "rotate" => State::NotStored,
            "destroy" if ok => State::Destroyed,
            // A destruction that did not happen leaves the version as it was.
            "destroy" => match self.versions.get(&key) {
                Some(e) if e.state == State::Destroyed => State::Stored,
                Some(e) => e.state,
                None => State::Stored,
            },
            _ => return,
        };
        let alg = line.alg.as_deref().and_then(Algorithm::parse);
        self.versions.insert(key, Entry { state, alg, fingerprint: line.fingerprint });
    }
}

/// Whether a line is a lifecycle line, without parsing it: `"op":"…"` is
/// looked for as we write it (compact JSON).
fn is_lifecycle(line: &[u8]) -> bool {
    const NEEDLES: [&[u8]; 3] = [b"\"op\":\"create\"", b"\"op\":\"rotate\"", b"\"op\":\"destroy\""];
    line.windows(5)
        .enumerate()
        .any(|(i, w)| w == b"\"op\":" && NEEDLES.iter().any(|n| line[i..].starts_with(n)))
}

/// The audit log file, opened for appending.
#[derive(Debug)]
pub(super) struct Audit {
    file: Mutex<Log>,
}

/// The open log, and whether its last line was left without its newline.
#[derive(Debug)]
struct Log {
    file: fs::File,
    cut: bool,
}

impl Audit {
    /// Open (creating) the log, close a line a power cut left open, and read
    /// its lifecycle history back.
    pub(super) fn open(path: &Path) -> io::Result<(Self, History)> {
        let mut file =
            fs::OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path)?;
        // The new name survives a crash too.
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::File::open(dir)?.sync_all()?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other(format!("{} is not a regular file", path.display())));
        }
        let history = replay(&mut file)?;
        let len = meta.len();
        let mut cut = false;
        if len > 0 {
            let mut last = [0u8];
            file.seek(io::SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
            cut = last[0] != b'\n';
        }
        // The cut line is closed by the next append: opening writes nothing,
        // so a full or read-only disk does not stop the daemon from starting.
        Ok((Self { file: Mutex::new(Log { file, cut }) }, history))
    }

    /// Append lifecycle lines, each with its outcome, and fsync them: when
    /// this returns `Ok` they survive a crash or a power cut. The caller makes
    /// the change only then.
    pub(super) fn lifecycle(
        &self,
        lines: &[(Event<'_>, &str)],
        recovered: bool,
    ) -> Result<(), VaultError> {
        let mut text = Vec::new();
        for (ev, outcome) in lines {
            line(&mut text, ev, outcome, recovered);
        }
        self.append(&text, true).map_err(VaultError::AuditLog)
    }

    /// Lifecycle lines for a change that was not made; a failure to write
    /// them is logged only (the caller is already failing).
    pub(super) fn not_made(&self, events: &[Event<'_>], outcome: &str) {
        let mut text = Vec::new();
        for ev in events {
            line(&mut text, ev, outcome, false);
        }
        if let Err(e) = self.append(&text, true) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Append a use of a key, before its result is handed out. Written at
    /// once (it survives the daemon), fsynced with the next lifecycle event
    /// or by the kernel.
    pub(super) fn used(&self, ev: &Event<'_>, outcome: &str) -> Result<(), VaultError> {
        let mut text = Vec::new();
        line(&mut text, ev, outcome, false);
        self.append(&text, false).map_err(VaultError::AuditLog)
    }

    fn append(&self, text: &[u8], sync: bool) -> io::Result<()> {
        let mut log = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut buf;
        let text = if log.cut {
            buf = Vec::with_capacity(text.len() + 1);
            buf.push(b'\n');
            buf.extend_from_slice(text);
            &buf[..]
        } else {
            text
        };
        let before = log.file.metadata()?.len();
        // One write: a line is never split by a crash between two calls.
        let written = log
            .file
            .write_all(text)
            .and_then(|()| if sync { log.file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => log.cut = false,
            // A full disk may have taken part of it: take that back (a
            // shorter file needs no space), or close it with the next line.
            Err(_) => log.cut = log.file.set_len(before).is_err(),
        }
        written
    }

    /// Make every later write fail, as a full disk would.
    #[cfg(test)]
    pub(super) fn break_for_test(&self) {
        let full = fs::OpenOptions::new().append(true).open("/dev/full").expect("/dev/full");
        self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner).file = full;
    }
}

/// A line of another part of the node: `ts`, then the event's fields.
#[derive(Serialize)]
struct Stamped<'a, T: Serialize> {
    ts: f64,
    #[serde(flatten)]
    event: &'a T,
}

impl super::Vault {
    /// Append one line about an event that is not a vault key's own (a key
    /// delivered to the gateway): `ts`, then the fields of `event`, a struct
    /// whose first field is `op` and which holds ids and hashes only, never
    /// key material. Fsynced before it returns; the caller hands its result
    /// out only then.
    pub(crate) fn audit_event<T: Serialize>(&self, event: &T) -> Result<(), VaultError> {
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let mut text = serde_json::to_vec(&Stamped { ts, event })
            .map_err(|e| VaultError::AuditLog(io::Error::other(e)))?;
        text.push(b'\n');
        self.audit.append(&text, true).map_err(VaultError::AuditLog)
    }
}

fn line(out: &mut Vec<u8>, ev: &Event<'_>, outcome: &str, recovered: bool) {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let l = LineOut {
        ts,
        op: ev.op.name(),
        key: ev.id,
        version: ev.version,
        alg: ev.alg.map(Algorithm::name),
        fingerprint: ev.fingerprint,
        outcome,
        recovered,
    };
    // Serialising plain strings and numbers into memory cannot fail.
    if serde_json::to_writer(&mut *out, &l).is_ok() {
        out.push(b'\n');
    }
}

/// Read every lifecycle line of the log from the start.
fn replay(file: &mut fs::File) -> io::Result<History> {
    file.seek(io::SeekFrom::Start(0))?;
    let mut history = History::default();
    let mut reader = io::BufReader::with_capacity(1 << 16, &mut *file);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        if !is_lifecycle(&buf) {
            continue;
        }
        match serde_json::from_slice::<LineIn>(&buf) {
            Ok(l) => history.apply(l),
            Err(_) => history.unreadable += 1,
        }
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_lines_are_found_by_their_op_only() {
        assert!(is_lifecycle(br#"{"ts":1.0,"op":"create","key":"a"}"#));
        assert!(is_lifecycle(br#"{"alg":"x","key":"a","op":"destroy","outcome":"ok"}"#));
        assert!(!is_lifecycle(br#"{"ts":1.0,"op":"sign","key":"create"}"#));
        assert!(!is_lifecycle(br#"{"ts":1.0,"op":"derive","outcome":"\"op\":\"x\""}"#));
    }

    #[test]
    fn a_line_cut_short_is_closed_before_the_next_and_history_replays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let id = "a".repeat(32);
        {
            let (a, h) = Audit::open(&path).unwrap();
            assert!(h.versions.is_empty());
            let ev = |op, v| Event { op, id: &id, version: Some(v), alg: None, fingerprint: "f" };
            a.lifecycle(&[(ev(Op::Create, 1), "ok")], false).unwrap();
            a.lifecycle(&[(ev(Op::Rotate, 2), "ok")], false).unwrap();
            a.used(&ev(Op::Sign, 2), "ok").unwrap();
            a.not_made(&[ev(Op::Rotate, 3)], "aborted: test");
            a.lifecycle(&[(ev(Op::Destroy, 1), "ok")], false).unwrap();
        }
        // A power cut in the middle of a line.
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"ts\":1,\"op\":\"create\",\"key\":\"a")
            .unwrap();
        let (a, h) = Audit::open(&path).unwrap();
        assert_eq!(h.state(&id, 1), Some(State::Destroyed));
        assert_eq!(h.state(&id, 2), Some(State::Stored));
        assert_eq!(h.state(&id, 3), Some(State::NotStored));
        let ev = Event { op: Op::Create, id: &id, version: Some(9), alg: None, fingerprint: "" };
        a.lifecycle(&[(ev, "ok")], true).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let last = text.lines().last().unwrap();
        let v: serde_json::Value = serde_json::from_str(last).unwrap();
        assert_eq!((v["version"].as_u64(), v["recovered"].as_bool()), (Some(9), Some(true)));
        let (_, h) = Audit::open(&path).unwrap();
        assert_eq!(h.unreadable, 1, "the cut line is skipped, not joined to the next");
        assert_eq!(h.state(&id, 9), Some(State::Stored));
    }
}
