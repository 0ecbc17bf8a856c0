//! `qkeyd verify`: the gateway's check of an evidence document, offline.
//!
//! It reads the document (a file or standard input), the nonce the evidence
//! was asked for and the verifier policy, loads the verifier state from the
//! policy's `state_file` (empty when the file does not exist yet), runs
//! `qkeyd_attest::verify`, and saves the state only when the evidence
//! holds: a refused document changes nothing, and an accepted one cannot be
//! accepted again (its nonce is recorded). Everything it prints is public:
//! the key's id and public facts, the node's fingerprint, the quote's PCRs
//! and counters, or the name of the check that failed and what it found.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use qkeyd_attest::{NONCE_LEN, Policy, Verified, VerifierState};

/// What `qkeyd verify` was asked.
#[derive(Debug)]
pub(crate) struct Request {
    /// The evidence document; `-` for standard input.
    pub(crate) evidence: PathBuf,
    /// The nonce, base64.
    pub(crate) nonce: String,
    /// The policy file (TOML).
    pub(crate) policy: PathBuf,
    /// The time to verify at (Unix seconds); now when `None`.
    pub(crate) now: Option<u64>,
}

/// How a verification ended, when it ran.
#[derive(Debug, Eq, PartialEq)]
pub(crate) enum Outcome {
    /// Every check passed; the state is saved.
    Valid,
    /// A check refused the evidence; the state is unchanged.
    Invalid,
}

/// Why `qkeyd verify` could not decide: its input or its state file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum VerifyError {
    /// The evidence file (or standard input) cannot be read.
    #[error("cannot read the evidence {path}: {source}")]
    Evidence {
        /// The file, `-` for standard input.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `--nonce` is not base64.
    #[error("--nonce is not base64 (standard alphabet, padded): {0}")]
    NonceBase64(#[source] base64::DecodeError),
    /// `--nonce` has the wrong length.
    #[error("--nonce is {0} bytes; give the 16 to 64 bytes the evidence was asked for, in base64")]
    NonceLength(usize),
    /// The policy cannot be read or is not valid.
    #[error("the verifier policy {}: {source}", path.display())]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: qkeyd_attest::Error,
    },
    /// The state file cannot be read.
    #[error("cannot load the verifier state: {0}")]
    LoadState(#[source] qkeyd_attest::Error),
    /// The state file cannot be written: the evidence verified, but its
    /// nonce and counters cannot be recorded, so it is not accepted.
    #[error(
        "the evidence verified, but the verifier state cannot be saved, so it is not \
         accepted (a replay would go unseen); make the state file's directory writable: {0}"
    )]
    SaveState(#[source] qkeyd_attest::Error),
    /// The clock is before 1970.
    #[error("the system clock is before 1970; give --now")]
    Clock,
    /// Standard output cannot be written.
    #[error("cannot write the result: {0}")]
    Output(#[source] std::io::Error),
}

/// Verify `req`, reading `-` from `stdin` and printing the result on `out`:
/// the facts of valid evidence, or `invalid: CHECK: DETAIL`.
pub(crate) fn run(
    req: &Request,
    stdin: impl Read,
    mut out: impl Write,
) -> Result<Outcome, VerifyError> {
    let evidence = read_evidence(&req.evidence, stdin)?;
    let nonce = base64::engine::general_purpose::STANDARD
        .decode(req.nonce.trim().as_bytes())
        .map_err(VerifyError::NonceBase64)?;
    if !NONCE_LEN.contains(&nonce.len()) {
        return Err(VerifyError::NonceLength(nonce.len()));
    }
    let policy = Policy::load(&req.policy)
        .map_err(|source| VerifyError::Policy { path: req.policy.clone(), source })?;
    let mut state = VerifierState::load(&policy.state_file).map_err(VerifyError::LoadState)?;
    let now = match req.now {
        Some(t) => t,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| VerifyError::Clock)?
            .as_secs(),
    };
    match qkeyd_attest::verify(&evidence, &nonce, &policy, &mut state, now) {
        Ok(verified) => {
            state.save(&policy.state_file).map_err(VerifyError::SaveState)?;
            out.write_all(report(&verified).as_bytes()).map_err(VerifyError::Output)?;
            Ok(Outcome::Valid)
        }
        Err(f) => {
            writeln!(out, "invalid: {}: {}", f.check.name(), f.detail)
                .map_err(VerifyError::Output)?;
            Ok(Outcome::Invalid)
        }
    }
}

fn read_evidence(path: &Path, mut stdin: impl Read) -> Result<Vec<u8>, VerifyError> {
    let err = |source| VerifyError::Evidence { path: path.to_owned(), source };
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        stdin.read_to_end(&mut bytes).map_err(err)?;
        Ok(bytes)
    } else {
        std::fs::read(path).map_err(err)
    }
}

/// `valid`, then one `name: value` line per fact.
fn report(v: &Verified) -> String {
    let s = &v.statement;
    let mut lines = vec![
        "valid".to_owned(),
        format!("key_id: {}", s.key.id),
        format!("version: {}", s.key.version),
        format!("alg: {}", s.key.alg),
        format!("key_fingerprint: {}", s.key.fingerprint),
        format!("node: {}", v.node),
        format!("sealer: {}", s.sealer.kind.name()),
        format!("issued_unix: {}", s.issued_unix),
    ];
    match &v.quote {
        None => lines.push("tpm: none".to_owned()),
        Some(q) => {
            lines.push("tpm: quote".to_owned());
            lines.push(format!("ak_name: {}", hex::encode(&q.ak_name)));
            let indices: Vec<String> = q.pcrs.keys().map(u32::to_string).collect();
            lines.push(format!("pcrs: sha256:{}", indices.join(",")));
            for (i, value) in &q.pcrs {
                lines.push(format!("pcr.{i}: {}", hex::encode(value)));
            }
            lines.push(format!("pcr_digest: {}", hex::encode(&q.pcr_digest)));
            lines.push(format!("clock: {}", q.clock_info.clock));
            lines.push(format!("reset_count: {}", q.clock_info.reset_count));
            lines.push(format!("restart_count: {}", q.clock_info.restart_count));
            lines.push(format!("firmware_version: {:#018x}", q.firmware_version));
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use qkeyd_attest::evidence::{
        Evidence, Identity, KeyInfo, PoolInfo, Provenance, SealerInfo, SealerKind, Serving,
        SourceReport, Statement,
    };
    use qkeyd_pqc::{Algorithm, PrivateKey};

    use super::*;
    use crate::cli::{Cli, Command};

    const NOW: u64 = 1_733_250_000;
    const NONCE: [u8; 32] = [3; 32];

    /// A no-TPM evidence document for `nonce`, signed by a fixed identity.
    fn evidence(nonce: &[u8]) -> Vec<u8> {
        let identity = PrivateKey::from_seed(Algorithm::MlDsa87, &[1; 32]).unwrap();
        let public_key = identity.public_key();
        let node = qkeyd_attest::fingerprint(&public_key);
        let key_public = vec![5u8; 1184];
        let source = SourceReport {
            name: "qrng0".into(),
            state: "healthy".into(),
            trust: 0.97,
            drift: 0.01,
        };
        let statement = Statement {
            format: "qkeyd-statement/1".into(),
            node: node.clone(),
            nonce: nonce.to_vec(),
            issued_unix: NOW - 10,
            key: KeyInfo {
                id: "k-0001".into(),
                version: 2,
                alg: "ml-kem-768".into(),
                fingerprint: qkeyd_attest::fingerprint(&key_public),
                public_key: key_public,
                created_unix: NOW - 20,
            },
            sealer: SealerInfo {
                kind: SealerKind::Soft,
                token_label: None,
                token_serial: None,
                tpm: false,
            },
            provenance: Provenance {
                serving: Serving::Sources,
                reseed_counter: 1,
                seed_source: "qrng0".into(),
                sources: vec![source.clone()],
            },
            pool: PoolInfo { serving: Some(Serving::Sources), sources: vec![source] },
            gateway: None,
        };
        let bytes = statement.to_canonical_bytes();
        Evidence {
            format: "qkeyd-evidence/1".into(),
            signature: identity
                .sign(&bytes, qkeyd_attest::evidence::STATEMENT_CONTEXT, &[0; 32])
                .unwrap(),
            statement: bytes,
            identity: Identity { public_key, fingerprint: node },
            tpm: None,
        }
        .to_json()
    }

    /// A directory with `evidence.json` and a policy that accepts it (soft
    /// sealer, no TPM) and keeps its state in the directory.
    struct World {
        dir: tempfile::TempDir,
    }

    impl World {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("evidence.json"), evidence(&NONCE)).unwrap();
            let w = Self { dir };
            w.policy(&w.path("state.json"));
            w
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn policy(&self, state: &Path) {
            let text = format!(
                "require_tpm = false\nsealers = [\"soft\"]\nstate_file = \"{}\"\n",
                state.display()
            );
            std::fs::write(self.path("policy.toml"), text).unwrap();
        }

        fn request(&self, evidence: &str) -> Request {
            Request {
                evidence: self.path(evidence),
                nonce: base64::engine::general_purpose::STANDARD.encode(NONCE),
                policy: self.path("policy.toml"),
                now: Some(NOW),
            }
        }

        fn run(&self, req: &Request) -> (Result<Outcome, VerifyError>, String) {
            let mut out = Vec::new();
            let r = run(req, std::io::empty(), &mut out);
            (r, String::from_utf8(out).unwrap())
        }
    }

    #[test]
    fn valid_evidence_prints_its_facts_and_is_accepted_once() {
        let w = World::new();
        let req = w.request("evidence.json");
        let (r, out) = w.run(&req);
        assert_eq!(r.unwrap(), Outcome::Valid, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[..4], ["valid", "key_id: k-0001", "version: 2", "alg: ml-kem-768"]);
        assert!(out.contains("\nnode: sha3-256:"), "{out}");
        assert!(out.contains("\nsealer: soft\n") && out.ends_with("tpm: none\n"), "{out}");
        let state = VerifierState::load(&w.path("state.json")).unwrap();
        assert_eq!(state.nonces.keys().collect::<Vec<_>>(), [&hex::encode(NONCE)]);

        let (r, out) = w.run(&req);
        assert_eq!(r.unwrap(), Outcome::Invalid);
        assert!(out.starts_with("invalid: nonce: "), "{out}");
        assert_eq!(VerifierState::load(&w.path("state.json")).unwrap(), state);
    }

    #[test]
    fn refused_evidence_names_the_check_and_leaves_the_state_alone() {
        let w = World::new();
        let mut ev: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.path("evidence.json")).unwrap()).unwrap();
        ev["signature"] = serde_json::Value::String(
            base64::engine::general_purpose::STANDARD.encode([0u8; 4627]),
        );
        std::fs::write(w.path("tampered.json"), ev.to_string()).unwrap();
        let (r, out) = w.run(&w.request("tampered.json"));
        assert_eq!(r.unwrap(), Outcome::Invalid);
        assert!(out.starts_with("invalid: signature: "), "{out}");
        assert_eq!(out.lines().count(), 1);
        assert!(!w.path("state.json").exists(), "a refusal writes no state");

        // Too old by the policy's default 300 s.
        let req = Request { now: Some(NOW + 1000), ..w.request("evidence.json") };
        let (r, out) = w.run(&req);
        assert_eq!(r.unwrap(), Outcome::Invalid);
        assert!(out.starts_with("invalid: age: "), "{out}");
    }

    #[test]
    fn evidence_comes_from_standard_input_with_a_dash() {
        let w = World::new();
        let req = Request { evidence: PathBuf::from("-"), ..w.request("") };
        let mut out = Vec::new();
        let r = run(&req, evidence(&NONCE).as_slice(), &mut out);
        assert_eq!(r.unwrap(), Outcome::Valid, "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn unreadable_input_and_state_are_errors_not_verdicts() {
        let w = World::new();
        let (r, out) = w.run(&w.request("missing.json"));
        assert!(matches!(r, Err(VerifyError::Evidence { .. })), "{r:?}");
        assert!(out.is_empty());

        let bad_b64 = Request { nonce: "not base64!".into(), ..w.request("evidence.json") };
        assert!(matches!(w.run(&bad_b64).0, Err(VerifyError::NonceBase64(_))));
        let short = Request { nonce: "AAAA".into(), ..w.request("evidence.json") };
        assert!(matches!(w.run(&short).0, Err(VerifyError::NonceLength(3))));

        let no_policy = Request { policy: w.path("none.toml"), ..w.request("evidence.json") };
        let e = w.run(&no_policy).0.unwrap_err();
        assert!(e.to_string().contains("none.toml"), "{e}");
        std::fs::write(w.path("policy.toml"), "min_trust = 7\n").unwrap();
        let e = w.run(&w.request("evidence.json")).0.unwrap_err();
        assert!(e.to_string().contains("min_trust"), "{e}");

        w.policy(&w.path("state.json"));
        std::fs::write(w.path("state.json"), "not json").unwrap();
        assert!(matches!(w.run(&w.request("evidence.json")).0, Err(VerifyError::LoadState(_))));

        // Valid evidence whose nonce cannot be recorded is not accepted.
        w.policy(&w.path("no/such/dir/state.json"));
        let (r, out) = w.run(&w.request("evidence.json"));
        assert!(matches!(r, Err(VerifyError::SaveState(_))), "{r:?}");
        assert!(out.is_empty(), "nothing is printed as valid: {out}");
    }

    #[test]
    fn the_command_line_takes_evidence_nonce_policy_and_now() {
        let cli =
            Cli::try_parse_from(["qkeyd", "verify", "-", "--nonce", "AAAA", "--policy", "p.toml"])
                .unwrap();
        let Command::Verify { evidence, nonce, policy, now } = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(evidence, PathBuf::from("-"));
        assert_eq!((nonce.as_str(), now), ("AAAA", None));
        assert_eq!(policy, PathBuf::from("p.toml"));
        let with_now = ["qkeyd", "verify", "e", "--nonce", "A", "--policy", "p", "--now", "5"];
        let Command::Verify { now, .. } = Cli::try_parse_from(with_now).unwrap().command else {
            panic!("parsed as another command")
        };
        assert_eq!(now, Some(5));
        assert!(Cli::try_parse_from(["qkeyd", "verify", "e", "--policy", "p"]).is_err());
        assert!(Cli::try_parse_from(["qkeyd", "verify", "e", "--nonce", "A"]).is_err());
    }
}
