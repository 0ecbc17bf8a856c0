//! What the verifier remembers between runs: the nonces it has accepted
//! (so evidence cannot be replayed) and the last TPM counters of each AK
//! (so a node cannot roll its TPM back).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The verifier's memory. The caller loads it from the policy's
/// `state_file` before [`verify`](crate::verify()) and saves it after a
/// success; a verification that fails leaves it as it was.
#[derive(Clone, Debug, Default, Deserialize, Eq, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierState {
    /// Accepted nonces (hex) and the `issued_unix` of their statement. An
    /// entry is dropped once the age check alone refuses that statement, so
    /// the map holds at most the nonces of the last `max_age_secs`.
    #[serde(default)]
    pub nonces: BTreeMap<String, u64>,
    /// The highest clock counters seen per AK Name (hex).
    #[serde(default)]
    pub counters: BTreeMap<String, Counters>,
}

/// A TPM's `resetCount` and `restartCount`, compared in that order: a TPM
/// Reset increments the first and sets the second back to zero.
#[derive(Clone, Copy, Debug, Default, Deserialize, Eq, Ord, PartialEq, PartialOrd, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// `clockInfo.resetCount`.
    pub reset_count: u32,
    /// `clockInfo.restartCount`.
    pub restart_count: u32,
}

impl VerifierState {
    /// Read the state file; a file that does not exist yet is an empty state.
    pub fn load(path: &Path) -> Result<Self, Error> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| Error::StateParse { path: path.to_owned(), source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(Error::Io { path: path.to_owned(), source }),
        }
    }

    /// Write the state file atomically: a temporary file beside it, synced,
    /// then renamed over it, so a crash leaves the old or the new state.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let io = |source| Error::Io { path: path.to_owned(), source };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = Path::new(&tmp);
        // Plain maps of strings and integers: serde_json cannot fail on them.
        let json = serde_json::to_vec_pretty(self).expect("verifier state serializes");
        let mut file = std::fs::File::create(tmp).map_err(io)?;
        file.write_all(&json).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(tmp, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    /// Drop the nonces whose statements the age check refuses by now.
    pub(crate) fn prune(&mut self, now_unix: u64, max_age_secs: u64) {
        self.nonces.retain(|_, issued| now_unix.saturating_sub(*issued) <= max_age_secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(VerifierState::load(&path).unwrap(), VerifierState::default());
        let mut s = VerifierState::default();
        s.nonces.insert("00ff".into(), 10);
        s.counters.insert("000b00".into(), Counters { reset_count: 3, restart_count: 1 });
        s.save(&path).unwrap();
        assert_eq!(VerifierState::load(&path).unwrap(), s);
        std::fs::write(&path, b"{\"nonces\":{},\"extra\":1}").unwrap();
        assert!(matches!(VerifierState::load(&path), Err(Error::StateParse { .. })));
    }

    #[test]
    fn counters_order_by_reset_then_restart() {
        let c = |reset_count, restart_count| Counters { reset_count, restart_count };
        assert!(c(2, 0) > c(1, 9));
        assert!(c(1, 1) > c(1, 0));
        assert!(c(1, 0) < c(1, 1));
    }

    #[test]
    fn prune_keeps_what_the_age_check_still_accepts() {
        let mut s = VerifierState::default();
        s.nonces.insert("a".into(), 100);
        s.nonces.insert("b".into(), 200);
        s.nonces.insert("c".into(), 500);
        s.prune(400, 200);
        assert_eq!(s.nonces.keys().collect::<Vec<_>>(), ["b", "c"]);
    }
}
