//! Evidence from a daemon on a software TPM, tampered region by region: every
//! change fails verification, under the check that owns the region. Then the
//! golden swtpm quote (`tests/attest/golden/`) and 1000 single-byte mutations
//! of it, judged by the go-tpm checker (`tests/attest/gochecker`), by
//! `qkeyd_attest::check_quote` and by `tpm2_checkquote`: they agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use qkeyd_attest::evidence::{Evidence, GatewayDelivery, SealerKind, Serving, Statement};
use qkeyd_attest::{Check, Policy, VerifierState, check_quote, verify};
use qkeyd_e2e::{Daemon, Swtpm, gochecker, qkeyd_bin};
use qkeyd_pqc::{Algorithm, PrivateKey};
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

use super::attest::{attest, daemon, policy};

fn golden(name: &str) -> Vec<u8> {
    let path = golden_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn golden_path(name: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "attest", "golden", name].iter().collect()
}

/// The golden quote's PCR values (`pcrs.json`).
fn golden_pcrs() -> BTreeMap<u32, Vec<u8>> {
    let text: BTreeMap<u32, String> = serde_json::from_slice(&golden("pcrs.json")).unwrap();
    text.into_iter().map(|(i, v)| (i, hex::decode(v).unwrap())).collect()
}

/// One evidence document about a fresh ML-KEM key from a daemon on swtpm,
/// the nonce it answers, and the policy that accepts it. The TPM and daemon
/// are returned to keep them running.
struct Fixture {
    _tpm: Swtpm,
    _daemon: Daemon,
    evidence: Evidence,
    nonce: Vec<u8>,
    policy: Policy,
    /// A verification time at which the statement is fresh.
    now: u64,
}

impl Fixture {
    fn new() -> Self {
        let t = Swtpm::start();
        let d = daemon(&t);
        let (status, key) = d.keys("POST", "/v1/keys", Some(json!({ "alg": "ml-kem-768" })));
        assert_eq!(status, 201, "{key}");
        let id = key["id"].as_str().unwrap().to_owned();
        let identity = d.keys("GET", "/v1/attest/identity", None).1;
        let nonce: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(7) ^ 0x5a).collect();
        let (status, ev) = attest(&d, &id, &nonce);
        assert_eq!(status, 200, "{ev}");
        let policy = policy(&identity, &ev);
        let evidence = Evidence::from_json(&serde_json::to_vec(&ev).unwrap()).unwrap();
        let issued = Statement::from_canonical_bytes(&evidence.statement).unwrap().issued_unix;
        let fx = Self { _tpm: t, _daemon: d, evidence, nonce, policy, now: issued + 5 };
        if let Some(f) = fx.check_json(&fx.evidence.to_json()) {
            panic!("the untouched evidence is refused: {f}");
        }
        fx
    }

    /// The check that refuses `json` (`None`: it verifies), with a fresh
    /// verifier state and the fixture's policy.
    fn check_json(&self, json: &[u8]) -> Option<String> {
        self.check_with(json, &self.nonce, &self.policy)
    }

    fn check_with(&self, json: &[u8], nonce: &[u8], policy: &Policy) -> Option<String> {
        let mut state = VerifierState::default();
        match verify(json, nonce, policy, &mut state, self.now) {
            Ok(_) => {
                assert_eq!(state.nonces.len(), 1, "an accepted nonce is recorded");
                None
            }
            Err(f) => {
                assert_eq!(state, VerifierState::default(), "a refusal changes no state");
                Some(format!("{}: {}", f.check.name(), f.detail))
            }
        }
    }

    fn tpm(ev: &mut Evidence) -> &mut qkeyd_attest::evidence::TpmEvidence {
        ev.tpm.as_mut().expect("the daemon quotes with swtpm")
    }
}

/// Counts of refusals by region and check, and the allowed checks per region.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<&'static str, BTreeMap<String, usize>>,
}

impl Tally {
    /// Record the verdict `got` (`None` = valid) on a tampering of `region`
    /// (`what` says which), and assert it is one of `allowed` (`"valid"` for
    /// a change the verifier does not look at).
    #[track_caller]
    fn record(&mut self, region: &'static str, what: &str, got: Option<String>, allowed: &[&str]) {
        let name = got.as_deref().map_or("valid", |g| g.split(':').next().unwrap_or(g));
        assert!(
            allowed.contains(&name),
            "{region} / {what}: got `{}`, allowed {allowed:?}",
            got.as_deref().unwrap_or("valid")
        );
        *self.counts.entry(region).or_default().entry(name.to_owned()).or_default() += 1;
    }

    fn total(&self) -> usize {
        self.counts.values().flat_map(|m| m.values()).sum()
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (region, checks) in &self.counts {
            let parts: Vec<String> = checks.iter().map(|(c, n)| format!("{c} {n}")).collect();
            writeln!(f, "  {region}: {}", parts.join(", "))?;
        }
        write!(f, "  total: {}", self.total())
    }
}

/// `bytes` with bit `bit` of byte `offset` flipped.
fn flipped(bytes: &[u8], offset: usize, bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[offset] ^= 1 << bit;
    out
}

/// A named change to a statement.
type StatementChange = (&'static str, fn(&mut Statement));

/// Every change to the statement. The identity signed the original bytes,
/// and nobody else can sign: each is refused by `signature`, before the
/// statement is even parsed.
fn statement_changes() -> Vec<StatementChange> {
    vec![
        ("format", |s| s.format = "qkeyd-statement/2".into()),
        ("node", |s| s.node = format!("sha3-256:{}", "0".repeat(64))),
        ("nonce", |s| s.nonce[0] ^= 1),
        ("nonce length", |s| s.nonce.push(0)),
        ("issued_unix", |s| s.issued_unix += 1),
        ("key.id", |s| s.key.id.push('x')),
        ("key.version", |s| s.key.version += 1),
        ("key.alg", |s| s.key.alg = "ml-kem-1024".into()),
        ("key.public_key", |s| s.key.public_key[0] ^= 1),
        ("key.fingerprint", |s| s.key.fingerprint = format!("sha3-256:{}", "1".repeat(64))),
        ("key.created_unix", |s| s.key.created_unix -= 1),
        ("sealer.kind", |s| s.sealer.kind = SealerKind::Hsm),
        ("sealer.token_label", |s| s.sealer.token_label = Some("token".into())),
        ("sealer.token_serial", |s| s.sealer.token_serial = Some("1".into())),
        ("sealer.tpm", |s| s.sealer.tpm = !s.sealer.tpm),
        ("provenance.serving", |s| s.provenance.serving = Serving::OsFallback),
        ("provenance.reseed_counter", |s| s.provenance.reseed_counter += 1),
        ("provenance.seed_source", |s| s.provenance.seed_source.push('x')),
        ("provenance.sources[0].name", |s| s.provenance.sources[0].name.push('x')),
        ("provenance.sources[0].state", |s| s.provenance.sources[0].state = "failed".into()),
        ("provenance.sources[0].trust", |s| s.provenance.sources[0].trust -= 0.25),
        ("provenance.sources[0].drift", |s| s.provenance.sources[0].drift += 0.125),
        ("provenance.sources added", |s| {
            let extra = s.provenance.sources[0].clone();
            s.provenance.sources.push(extra);
        }),
        ("provenance.sources removed", |s| s.provenance.sources.clear()),
        ("pool.serving", |s| {
            s.pool.serving = match s.pool.serving {
                Some(Serving::Sources) => Some(Serving::OsFallback),
                _ => Some(Serving::Sources),
            }
        }),
        ("pool.serving null", |s| s.pool.serving = None),
        ("pool.sources[0].trust", |s| s.pool.sources[0].trust -= 0.25),
        ("pool.sources removed", |s| s.pool.sources.clear()),
        ("gateway", |s| {
            s.gateway = Some(GatewayDelivery {
                recipient_sha3: "00".repeat(32),
                ciphertext_sha3: "11".repeat(32),
                key_id: "g-1".into(),
                length: 32,
                purpose: "session".into(),
            });
        }),
    ]
}

#[test]
fn tampered_evidence_fails_by_the_check_that_owns_the_region() {
    let started = std::time::Instant::now();
    let fx = Fixture::new();
    let base = &fx.evidence;
    let mut tally = Tally::default();

    // The document: not JSON, not this format, unknown or missing fields.
    let json = base.to_json();
    let mut unknown: Value = serde_json::from_slice(&json).unwrap();
    unknown["extra"] = json!(1);
    let mut missing: Value = serde_json::from_slice(&json).unwrap();
    missing.as_object_mut().unwrap().remove("identity");
    let mut bad_b64: Value = serde_json::from_slice(&json).unwrap();
    bad_b64["statement"] = json!("not base64!");
    let mut bad_hex: Value = serde_json::from_slice(&json).unwrap();
    bad_hex["tpm"]["pcrs"]["0"] = json!("zz");
    let mut other_format = base.clone();
    other_format.format = "qkeyd-evidence/2".into();
    let documents: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not json", b"qkeyd".to_vec()),
        ("truncated", json[..json.len() / 2].to_vec()),
        ("trailing garbage", [&json[..], b"}"].concat()),
        ("array", b"[]".to_vec()),
        ("null", b"null".to_vec()),
        ("unknown field", unknown.to_string().into_bytes()),
        ("missing identity", missing.to_string().into_bytes()),
        ("bad base64", bad_b64.to_string().into_bytes()),
        ("bad pcr hex", bad_hex.to_string().into_bytes()),
        ("format qkeyd-evidence/2", other_format.to_json()),
    ];
    for (what, doc) in documents {
        tally.record("document", what, fx.check_json(&doc), &["format"]);
    }
    let mut no_tpm = base.clone();
    no_tpm.tpm = None;
    tally.record("document", "tpm: null", fx.check_json(&no_tpm.to_json()), &["tpm_missing"]);

    // Each statement field, changed and re-encoded canonically, not re-signed.
    let statement = Statement::from_canonical_bytes(&base.statement).unwrap();
    for (what, change) in statement_changes() {
        let mut s = statement.clone();
        change(&mut s);
        let mut ev = base.clone();
        ev.statement = s.to_canonical_bytes();
        assert_ne!(ev.statement, base.statement, "{what} changed nothing");
        tally.record("statement field", what, fx.check_json(&ev.to_json()), &["signature"]);
    }
    // The same statement in another encoding, and bytes flipped anywhere.
    let mut spaced = base.clone();
    spaced.statement = serde_json::to_vec_pretty(&statement).unwrap();
    tally.record("statement bytes", "pretty", fx.check_json(&spaced.to_json()), &["signature"]);
    for offset in (0..base.statement.len()).step_by(41) {
        let mut ev = base.clone();
        ev.statement = flipped(&base.statement, offset, 3);
        let got = fx.check_json(&ev.to_json());
        tally.record("statement bytes", &format!("byte {offset}"), got, &["signature"]);
    }

    // The identity's ML-DSA-87 signature.
    for offset in (0..base.signature.len()).step_by(97).chain([base.signature.len() - 1]) {
        let mut ev = base.clone();
        ev.signature = flipped(&base.signature, offset, 0);
        let got = fx.check_json(&ev.to_json());
        tally.record("statement signature", &format!("byte {offset}"), got, &["signature"]);
    }
    for (what, sig) in [("empty", Vec::new()), ("truncated", base.signature[1..].to_vec())] {
        let mut ev = base.clone();
        ev.signature = sig;
        tally.record("statement signature", what, fx.check_json(&ev.to_json()), &["signature"]);
    }

    // The identity key: changed alone its fingerprint no longer matches; with
    // its fingerprint recomputed the signature fails; another key that signs
    // the statement is not the node the statement names; and a statement
    // made over for that key is not the one the TPM quoted.
    let pk = &base.identity.public_key;
    for offset in (0..pk.len()).step_by(131) {
        let mut ev = base.clone();
        ev.identity.public_key = flipped(pk, offset, 5);
        let got = fx.check_json(&ev.to_json());
        tally.record("identity", &format!("key byte {offset}"), got, &["identity_fingerprint"]);
        ev.identity.fingerprint = qkeyd_attest::fingerprint(&ev.identity.public_key);
        let got = fx.check_json(&ev.to_json());
        tally.record("identity", &format!("key byte {offset}, fingerprint"), got, &["signature"]);
    }
    let mut ev = base.clone();
    ev.identity.fingerprint = format!("sha3-256:{}", "2".repeat(64));
    tally.record(
        "identity",
        "fingerprint",
        fx.check_json(&ev.to_json()),
        &["identity_fingerprint"],
    );
    let mut ev = base.clone();
    ev.identity.public_key.pop();
    ev.identity.fingerprint = qkeyd_attest::fingerprint(&ev.identity.public_key);
    tally.record("identity", "short key", fx.check_json(&ev.to_json()), &["signature"]);
    let impostor = PrivateKey::from_seed(Algorithm::MlDsa87, &[0x42; 32]).unwrap();
    let mut ev = base.clone();
    ev.identity.public_key = impostor.public_key();
    ev.identity.fingerprint = qkeyd_attest::fingerprint(&ev.identity.public_key);
    tally.record("identity", "another key", fx.check_json(&ev.to_json()), &["signature"]);
    ev.signature =
        impostor.sign(&ev.statement, qkeyd_attest::evidence::STATEMENT_CONTEXT, &[0; 32]).unwrap();
    let got = fx.check_json(&ev.to_json());
    tally.record("identity", "another key, signed", got, &["identity_fingerprint"]);
    let mut s = statement.clone();
    s.node.clone_from(&ev.identity.fingerprint);
    ev.statement = s.to_canonical_bytes();
    ev.signature =
        impostor.sign(&ev.statement, qkeyd_attest::evidence::STATEMENT_CONTEXT, &[0; 32]).unwrap();
    let got = fx.check_json(&ev.to_json());
    tally.record("identity", "another key, its own statement", got, &["extra_data"]);

    // Every bit of the quote's TPMS_ATTEST and of its TPMT_SIGNATURE. The
    // verifier checks the AK's signature over the raw bytes before it reads
    // any field (magic, type, sizes, extraData, PCRs), so a flipped
    // structural byte fails `quote_signature` too: no earlier check reads
    // them, and no later one is reached.
    let tpm = base.tpm.as_ref().unwrap();
    for (region, field) in [("quote attest", &tpm.attest), ("quote signature", &tpm.signature)] {
        for offset in 0..field.len() {
            for bit in 0..8 {
                let mut ev = base.clone();
                let t = Fixture::tpm(&mut ev);
                let target =
                    if region == "quote attest" { &mut t.attest } else { &mut t.signature };
                *target = flipped(field, offset, bit);
                let got = fx.check_json(&ev.to_json());
                tally.record(
                    region,
                    &format!("byte {offset} bit {bit}"),
                    got,
                    &["quote_signature"],
                );
            }
        }
        for (what, bytes) in
            [("empty", Vec::new()), ("truncated", field[..field.len() - 1].to_vec())]
        {
            let mut ev = base.clone();
            let t = Fixture::tpm(&mut ev);
            *(if region == "quote attest" { &mut t.attest } else { &mut t.signature }) = bytes;
            tally.record(region, what, fx.check_json(&ev.to_json()), &["quote_signature"]);
        }
    }

    // Each PCR value: the quote's pcrDigest binds them.
    for (index, value) in &tpm.pcrs {
        for offset in 0..value.len() {
            let mut ev = base.clone();
            Fixture::tpm(&mut ev).pcrs.insert(*index, flipped(value, offset, offset % 8));
            let got = fx.check_json(&ev.to_json());
            tally.record("pcr values", &format!("PCR {index} byte {offset}"), got, &["pcr_digest"]);
        }
        let mut ev = base.clone();
        Fixture::tpm(&mut ev).pcrs.insert(*index, value[1..].to_vec());
        let got = fx.check_json(&ev.to_json());
        tally.record("pcr values", &format!("PCR {index} short"), got, &["pcr_digest"]);
        let mut ev = base.clone();
        Fixture::tpm(&mut ev).pcrs.remove(index);
        let got = fx.check_json(&ev.to_json());
        tally.record("pcr list", &format!("PCR {index} removed"), got, &["pcr_select"]);
    }
    let mut ev = base.clone();
    Fixture::tpm(&mut ev).pcrs.insert(8, vec![0; 32]);
    tally.record("pcr list", "PCR 8 added", fx.check_json(&ev.to_json()), &["pcr_select"]);
    let mut ev = base.clone();
    Fixture::tpm(&mut ev).pcr_bank = "sha1".into();
    tally.record("pcr list", "bank sha1", fx.check_json(&ev.to_json()), &["pcr_select"]);

    // The nonce: the statement answers the nonce it was made for, only.
    let json = base.to_json();
    let mut other = fx.nonce.clone();
    other[31] ^= 1;
    for (what, nonce) in [
        ("another nonce", other),
        ("a prefix", fx.nonce[..16].to_vec()),
        ("too short", fx.nonce[..8].to_vec()),
        ("longer", [&fx.nonce[..], &[0]].concat()),
    ] {
        tally.record("nonce", what, fx.check_with(&json, &nonce, &fx.policy), &["nonce"]);
    }

    // The AK: its public area, Name and PEM must be one key. A changed Name
    // is compared with the Name of ak_public before the policy's list, so it
    // fails `ak_public` (`ak_trusted` would be next). Another consistent AK
    // is not trusted, and when trusted it did not sign the quote.
    for offset in 0..tpm.ak_public.len() {
        let mut ev = base.clone();
        Fixture::tpm(&mut ev).ak_public = flipped(&tpm.ak_public, offset, offset % 8);
        let got = fx.check_json(&ev.to_json());
        tally.record("ak_public", &format!("byte {offset}"), got, &["ak_public"]);
    }
    for offset in 0..tpm.ak_name.len() {
        let mut ev = base.clone();
        Fixture::tpm(&mut ev).ak_name = flipped(&tpm.ak_name, offset, offset % 8);
        let got = fx.check_json(&ev.to_json());
        tally.record("ak_name", &format!("byte {offset}"), got, &["ak_public", "ak_trusted"]);
    }
    let golden_pem = String::from_utf8(golden("ak.pem")).unwrap();
    for (what, pem) in [
        ("another key", golden_pem.clone()),
        ("not a PEM", "qkeyd".to_owned()),
        ("empty", String::new()),
        ("truncated", tpm.ak_pem[..tpm.ak_pem.len() / 2].to_owned()),
    ] {
        let mut ev = base.clone();
        Fixture::tpm(&mut ev).ak_pem = pem;
        tally.record("ak_pem", what, fx.check_json(&ev.to_json()), &["ak_public"]);
    }
    let mut golden_ak = base.clone();
    let t = Fixture::tpm(&mut golden_ak);
    t.ak_public = golden("ak.pub");
    t.ak_name = golden("ak.name");
    t.ak_pem = golden_pem;
    let got = fx.check_json(&golden_ak.to_json());
    tally.record("another AK", "the golden AK", got, &["ak_trusted"]);
    let mut trusting = fx.policy.clone();
    trusting.trusted_ak_names.push(golden("ak.name"));
    let got = fx.check_with(&golden_ak.to_json(), &fx.nonce, &trusting);
    tally.record("another AK", "the golden AK, trusted", got, &["quote_signature"]);

    // Quotes the golden AK really made, in place of the daemon's, with a
    // policy that trusts that AK: a TPM2_Certify is not a quote, and the
    // golden quote is for another statement and nonce.
    let mut certify = golden_ak.clone();
    let t = Fixture::tpm(&mut certify);
    t.attest = golden("certify_attest.bin");
    t.signature = golden("certify_sig.bin");
    let got = fx.check_with(&certify.to_json(), &fx.nonce, &trusting);
    tally.record("golden quotes", "TPM2_Certify by the AK", got, &["quote_type"]);
    let mut quote = golden_ak.clone();
    let t = Fixture::tpm(&mut quote);
    t.attest = golden("attest.bin");
    t.signature = golden("sig.bin");
    t.pcrs = golden_pcrs();
    let got = fx.check_with(&quote.to_json(), &fx.nonce, &trusting);
    tally.record("golden quotes", "the golden quote", got, &["extra_data"]);

    // The EK chain: the verifier does not read it (a policy trusts an AK by
    // Name), so whatever it holds the evidence verifies; a malformed one is
    // a malformed document.
    let ek = [golden("ek_cert.der"), golden("ek_issuer.der"), golden("ek_root.der")];
    let chains: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("empty", Vec::new()),
        ("the golden EK chain", ek.to_vec()),
        ("reversed", ek.iter().rev().cloned().collect()),
        ("a flipped byte", vec![flipped(&ek[0], 200, 0), ek[1].clone()]),
        ("not DER", vec![b"qkeyd".to_vec()]),
        ("empty entries", vec![Vec::new(); 3]),
        ("100 entries", vec![ek[0].clone(); 100]),
    ];
    for (what, chain) in chains {
        let mut ev = base.clone();
        Fixture::tpm(&mut ev).ek_chain = chain;
        tally.record("ek_chain", what, fx.check_json(&ev.to_json()), &["valid"]);
    }
    let mut bad: Value = serde_json::from_slice(&base.to_json()).unwrap();
    bad["tpm"]["ek_chain"] = json!(["not base64!"]);
    let got = fx.check_json(bad.to_string().as_bytes());
    tally.record("ek_chain", "not base64", got, &["format"]);

    eprintln!("tampered evidence, by region and check:\n{tally}");
    eprintln!("elapsed {:?}", started.elapsed());
}

/// `qkeyd verify` with `args`.
fn qkeyd_verify(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(qkeyd_bin());
    cmd.arg("verify").args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("run qkeyd verify");
    if let Some(bytes) = stdin {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A policy file for `policy`, keeping its state in `state`.
fn policy_toml(policy: &Policy, state: &Path) -> String {
    let names: Vec<String> =
        policy.trusted_ak_names.iter().map(|n| format!("\"{}\"", hex::encode(n))).collect();
    let pcrs: Vec<String> =
        policy.pcrs.iter().map(|(i, v)| format!("\"{i}\" = \"{}\"", hex::encode(v))).collect();
    format!(
        "trusted_ak_names = [{}]\npcrs = {{ {} }}\nstate_file = \"{}\"\n",
        names.join(", "),
        pcrs.join(", "),
        state.display()
    )
}

#[test]
fn qkeyd_verify_exits_0_valid_1_invalid_2_unreadable() {
    let fx = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let state = path("state.json");
    std::fs::write(path("policy.toml"), policy_toml(&fx.policy, &state)).unwrap();
    std::fs::write(path("good.json"), fx.evidence.to_json()).unwrap();
    let mut tampered = fx.evidence.clone();
    Fixture::tpm(&mut tampered).attest[40] ^= 0x10;
    std::fs::write(path("tampered.json"), tampered.to_json()).unwrap();
    let nonce = B64.encode(&fx.nonce);
    let now = fx.now.to_string();
    let policy = path("policy.toml");
    let args = |file: &Path| -> Vec<String> {
        vec![
            file.display().to_string(),
            "--nonce".into(),
            nonce.clone(),
            "--policy".into(),
            policy.display().to_string(),
            "--now".into(),
            now.clone(),
        ]
    };
    let run = |file: &Path, stdin: Option<&[u8]>| {
        let a = args(file);
        qkeyd_verify(&a.iter().map(String::as_str).collect::<Vec<_>>(), stdin)
    };

    // Tampered: exit 1, the check named on stdout, no state written.
    let o = run(&path("tampered.json"), None);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).starts_with("invalid: quote_signature: "), "{}", stdout(&o));
    assert!(!state.exists(), "a refusal writes no state");

    // Good: exit 0 with the key and the quote's facts; the state is written.
    let o = run(&path("good.json"), None);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let out = stdout(&o);
    let statement = Statement::from_canonical_bytes(&fx.evidence.statement).unwrap();
    let ak_name = hex::encode(&fx.policy.trusted_ak_names[0]);
    for line in [
        "valid".to_owned(),
        format!("key_id: {}", statement.key.id),
        format!("version: {}", statement.key.version),
        "alg: ml-kem-768".to_owned(),
        format!("node: {}", fx.evidence.identity.fingerprint),
        "sealer: tpm".to_owned(),
        "tpm: quote".to_owned(),
        format!("ak_name: {ak_name}"),
        "pcrs: sha256:0,1,2,3,4,5,6,7".to_owned(),
    ] {
        assert!(out.lines().any(|l| l == line), "no line `{line}` in:\n{out}");
    }
    assert!(out.contains("\nreset_count: ") && out.contains("\nfirmware_version: 0x"), "{out}");
    let saved = VerifierState::load(&state).unwrap();
    assert!(saved.nonces.contains_key(&hex::encode(&fx.nonce)), "{saved:?}");
    assert!(saved.counters.contains_key(&ak_name), "{saved:?}");

    // The same document again: its nonce was used.
    let o = run(&path("good.json"), None);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stdout(&o).starts_with("invalid: nonce: "), "{}", stdout(&o));

    // Errors: exit 2, a message on stderr, nothing on stdout.
    let o = run(&path("missing.json"), None);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.json"), "{o:?}");
    let bad_nonce = ["-", "--nonce", "%%%", "--policy", policy.to_str().unwrap()];
    let o = qkeyd_verify(&bad_nonce, Some(&fx.evidence.to_json()));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let bad_toml = path("bad.toml");
    std::fs::write(&bad_toml, "trusted_ak_names = [\"000b\"]\n").unwrap();
    let bad_policy = ["-", "--nonce", &nonce, "--policy", bad_toml.to_str().unwrap()];
    let o = qkeyd_verify(&bad_policy, Some(&fx.evidence.to_json()));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("trusted_ak_names"), "{o:?}");

    // Standard input, with a state file that cannot be written: the evidence
    // holds, but it is not accepted when its nonce cannot be recorded.
    let unwritable = path("no-such-dir/state.json");
    std::fs::write(&policy, policy_toml(&fx.policy, &unwritable)).unwrap();
    let o = run(Path::new("-"), Some(&fx.evidence.to_json()));
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    // And with a fresh state file, standard input verifies.
    std::fs::write(&policy, policy_toml(&fx.policy, &path("fresh.json"))).unwrap();
    let o = run(Path::new("-"), Some(&fx.evidence.to_json()));
    assert_eq!(o.status.code(), Some(0), "{o:?}");
}

/// One mutation the Go checker listed: which file, where, the new byte.
struct Mutation {
    sig: bool,
    offset: usize,
    byte: u8,
    go_valid: bool,
}

fn parse_mutation(line: &str) -> Mutation {
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!(f.len(), 4, "{line}");
    let sig = match f[0] {
        "attest" => false,
        "sig" => true,
        other => panic!("target `{other}` in {line}"),
    };
    let go_valid = match f[3] {
        "true" => true,
        "false" => false,
        other => panic!("verdict `{other}` in {line}"),
    };
    Mutation { sig, offset: f[1].parse().unwrap(), byte: f[2].parse().unwrap(), go_valid }
}

/// The Go checker's arguments for the golden quote.
fn go_args() -> Vec<String> {
    let g = |name: &str| golden_path(name).display().to_string();
    let extra = String::from_utf8(golden("extra_data.hex")).unwrap().trim().to_owned();
    vec![
        "-attest".into(),
        g("attest.bin"),
        "-sig".into(),
        g("sig.bin"),
        "-ak".into(),
        g("ak.pub"),
        "-pcrs".into(),
        g("pcrs.json"),
        "-extra".into(),
        extra,
    ]
}

/// `tpm2_checkquote` on a quote, with the golden AK, PCRs and extraData.
fn tpm2_checkquote(attest: &Path, sig: &Path) -> bool {
    let extra = String::from_utf8(golden("extra_data.hex")).unwrap().trim().to_owned();
    let out = Command::new("tpm2_checkquote")
        .arg("-u")
        .arg(golden_path("ak.pem"))
        .arg("-m")
        .arg(attest)
        .arg("-s")
        .arg(sig)
        .arg("-f")
        .arg(golden_path("pcrs.bin"))
        .args(["-g", "sha256", "-q", &extra])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("tpm2_checkquote (tests/run-all.sh installs tpm2-tools)");
    out.success()
}

#[test]
fn the_go_checker_tpm2_checkquote_and_ours_agree_on_the_golden_quote_and_its_mutations() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (attest, sig, ak) = (golden("attest.bin"), golden("sig.bin"), golden("ak.pub"));
    let (extra, pcrs) = (golden("extra_data.bin"), golden_pcrs());

    // The unmutated quote: valid for all three.
    let facts = check_quote(&attest, &sig, &ak, &extra, &pcrs).expect("ours: the golden quote");
    assert_eq!(facts.ak_name, golden("ak.name"));
    let out = Command::new(gochecker()).args(go_args()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["valid"], true, "{line}");
    assert!(tpm2_checkquote(&golden_path("attest.bin"), &golden_path("sig.bin")));

    // 1000 mutations, listed and judged by the Go checker.
    let out = Command::new(gochecker())
        .args(go_args())
        .args(["-mutations", "1000", "-seed", "7"])
        .output()
        .unwrap();
    let go_summary = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "a mutation was valid for Go: {go_summary}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mutations: Vec<Mutation> = text.lines().map(parse_mutation).collect();
    assert_eq!(mutations.len(), 1000);

    let mut ours: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut agree, mut valid, mut changed) = (0, 0, 0);
    let mut mutated_files = Vec::new();
    for (i, m) in mutations.iter().enumerate() {
        let (mut a, mut s) = (attest.clone(), sig.clone());
        let target = if m.sig { &mut s } else { &mut a };
        if target[m.offset] != m.byte {
            changed += 1;
        }
        target[m.offset] = m.byte;
        let verdict = check_quote(&a, &s, &ak, &extra, &pcrs);
        let our_valid = verdict.is_ok();
        assert_eq!(
            our_valid,
            m.go_valid,
            "mutation {i} ({} byte {} = {}): Go says {}, ours {:?}",
            if m.sig { "sig" } else { "attest" },
            m.offset,
            m.byte,
            m.go_valid,
            verdict.as_ref().map(|_| ()).map_err(|f| f.to_string())
        );
        agree += 1;
        match verdict {
            Ok(_) => valid += 1,
            Err(f) => *ours.entry(f.check.name()).or_default() += 1,
        }
        if i < 20 {
            mutated_files.push((i, a, s, our_valid));
        }
    }
    assert_eq!((agree, valid, changed), (1000, 0, 1000));
    // The Go checker's summary names the same checks, as often.
    let ours_text: Vec<String> = ours.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let want = format!("mutations 1000, valid 0, invalid 1000 ({})", ours_text.join(", "));
    assert!(go_summary.contains(&want), "Go: {go_summary}; ours: {want}");
    assert_eq!(ours.get(Check::QuoteSignature.name()), Some(&1000), "{ours:?}");

    // tpm2_checkquote on 20 of them (10 of the attest, 10 of the signature).
    let mut tpm2_invalid = 0;
    for (i, a, s, our_valid) in mutated_files {
        let (ap, sp) = (dir.path().join(format!("attest{i}")), dir.path().join(format!("sig{i}")));
        std::fs::write(&ap, a).unwrap();
        std::fs::write(&sp, s).unwrap();
        let tpm2_valid = tpm2_checkquote(&ap, &sp);
        assert_eq!(tpm2_valid, our_valid, "mutation {i}: tpm2_checkquote disagrees");
        tpm2_invalid += usize::from(!tpm2_valid);
    }
    assert_eq!(tpm2_invalid, 20);
    eprintln!(
        "golden quote: 1000 mutations, Go and ours agree on {agree} ({ours:?}); \
         tpm2_checkquote agrees on 20 of 20; elapsed {:?}",
        started.elapsed()
    );
}
