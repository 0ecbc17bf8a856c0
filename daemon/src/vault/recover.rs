//! Start-up: the audit log and the keystore made to agree after a crash.
//!
//! Lines go before effects at run time, so a crash can leave only these
//! disagreements, each put right here (audit line first, then the change):
//!
//! | found | done |
//! |---|---|
//! | a version on disk the log does not show stored (a keystore from before audit-before-effect, or a lost log) | a `create`/`rotate` line, `"recovered": true` |
//! | a version the log shows stored that is not on disk (the daemon stopped between the line and the rename) | a `create`/`rotate` line with outcome `aborted: …`, `"recovered": true` |
//! | a key the log shows destroyed that is still on disk (stopped between the line and the rename) | the destruction is finished |
//! | a key moved out of sight for destruction (stopped before its objects went) | its missing `destroy` lines, `"recovered": true`; the destruction is finished |
//!
//! A staged version that was never renamed into place also loses its backend
//! object.

use std::collections::{BTreeMap, HashSet};

use super::{
    Algorithm, Vault, VaultError,
    audit::{Event, History, Op, State},
    store::{Leftovers, VersionRecord},
};

/// A line to append, owning its text.
struct Line {
    op: Op,
    id: String,
    version: u32,
    alg: Option<Algorithm>,
    fingerprint: String,
    outcome: &'static str,
}

impl Line {
    fn event(&self) -> Event<'_> {
        Event {
            op: self.op,
            id: &self.id,
            version: Some(self.version),
            alg: self.alg,
            fingerprint: &self.fingerprint,
        }
    }

    fn of(op: Op, r: &VersionRecord) -> Self {
        Self {
            op,
            id: r.id.clone(),
            version: r.version,
            alg: Some(r.alg),
            fingerprint: r.fingerprint.clone(),
            outcome: "ok",
        }
    }
}

/// The outcome of a version the log shows stored and the disk does not have.
const NOT_STORED: &str =
    "aborted: not on disk at start-up (the daemon stopped before it was stored)";
/// The same, when the disk has no trace of it at all.
const MISSING: &str = "missing at start-up: not on disk (removed outside qkeyd?)";

impl Vault {
    /// Reconcile the log's `history` with the store and what the crash `left`.
    pub(super) fn recover(&self, history: History, left: Leftovers) -> Result<(), VaultError> {
        if history.unreadable > 0 {
            tracing::warn!(
                lines = history.unreadable,
                "audit log: lifecycle lines that do not parse were skipped"
            );
        }
        let mut lines = Vec::new();
        // (id, version) the disk accounts for: stored, or being destroyed.
        let mut seen = HashSet::new();
        // Keys being destroyed (out of sight already) and their records.
        let mut destroying: BTreeMap<String, Vec<VersionRecord>> = BTreeMap::new();
        for r in left.destroying {
            destroying.entry(r.id.clone()).or_default().push(r);
        }
        // Keys the log shows destroyed but still in sight: finished below.
        let mut roll_forward = Vec::new();
        for id in self.store.ids()? {
            let versions = self.store.versions(&id)?;
            if versions.iter().any(|&v| history.state(&id, v) == Some(State::Destroyed)) {
                roll_forward.push(id);
                continue;
            }
            for v in versions {
                seen.insert((id.clone(), v));
                if history.state(&id, v) == Some(State::Stored) {
                    continue;
                }
                let op = Op::adding(v);
                lines.push(match self.store.read(&id, v) {
                    Ok(r) => Line::of(op, &r),
                    Err(_) => Line {
                        op,
                        id: id.clone(),
                        version: v,
                        alg: None,
                        fingerprint: String::new(),
                        outcome: "ok",
                    },
                });
            }
        }
        for id in &roll_forward {
            let (records, _) = self.store.records(id)?;
            destroying.entry(id.clone()).or_default().extend(records);
        }
        // Every version of a key being destroyed gets its destroy line: those
        // on disk, and those the log knows of.
        for (id, records) in &destroying {
            let mut versions: BTreeMap<u32, Line> = BTreeMap::new();
            for r in records {
                versions.insert(r.version, Line::of(Op::Destroy, r));
            }
            for ((i, v), e) in &history.versions {
                if i == id && e.state == State::Stored {
                    versions.entry(*v).or_insert_with(|| Line {
                        op: Op::Destroy,
                        id: id.clone(),
                        version: *v,
                        alg: e.alg,
                        fingerprint: e.fingerprint.clone(),
                        outcome: "ok",
                    });
                }
            }
            for (v, line) in versions {
                seen.insert((id.clone(), v));
                if history.state(id, v) != Some(State::Destroyed) {
                    lines.push(line);
                }
            }
        }
        let staged: HashSet<_> =
            left.unpublished.iter().map(|r| (r.id.clone(), r.version)).collect();
        let mut absent: Vec<_> = history
            .versions
            .iter()
            .filter(|(k, e)| e.state == State::Stored && !seen.contains(*k))
            .map(|((id, v), e)| Line {
                op: Op::adding(*v),
                id: id.clone(),
                version: *v,
                alg: e.alg,
                fingerprint: e.fingerprint.clone(),
                outcome: if staged.contains(&(id.clone(), *v)) { NOT_STORED } else { MISSING },
            })
            .collect();
        absent.sort_by(|a, b| (&a.id, a.version).cmp(&(&b.id, b.version)));
        lines.extend(absent);

        if !lines.is_empty() {
            let events: Vec<_> = lines.iter().map(|l| (l.event(), l.outcome)).collect();
            self.audit.lifecycle(&events, true)?;
            tracing::warn!(
                lines = lines.len(),
                "audit log: added what a crash left out, marked \"recovered\""
            );
        }
        // The log is right; now the effects.
        for r in &left.unpublished {
            self.destroy_object_quietly(r);
        }
        for id in &roll_forward {
            self.store.begin_destroy(id)?;
        }
        for r in destroying.values().flatten() {
            self.destroy_object(r)?;
        }
        // Also the folders a crash left with no record in them (stopped in the
        // middle of removing one).
        self.store.purge_destroyed()?;
        if !destroying.is_empty() {
            tracing::info!(keys = destroying.len(), "finished an interrupted key destruction");
        }
        Ok(())
    }
}
