//! Keys for the gateway end to end: a daemon on a software TPM hands keys to
//! a gateway stand-in that takes them only through the verifier crate; the
//! audit log names them by id and hashes; an altered answer is refused by
//! name; a source below the trust bar gets no key made.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use qkeyd_attest::gateway::{self, RecipientKey, ml_kem::DecapsulationKey768};
use qkeyd_attest::{Check, Policy, VerifierState};
use qkeyd_e2e::{Daemon, Swtpm};
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The gateway's policy after enrollment, as TOML: this node's AK, the PCR
/// values of a first quote, and a state file in `dir`.
fn policy_toml(d: &Daemon, dir: &std::path::Path) -> String {
    let identity = d.keys("GET", "/v1/attest/identity", None).1;
    let (status, key) = d.keys("POST", "/v1/keys", Some(json!({ "alg": "ml-kem-768" })));
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().unwrap();
    let nonce = B64.encode([1u8; 32]);
    let (status, first) =
        d.keys("POST", &format!("/v1/keys/{id}/attest"), Some(json!({ "nonce": nonce })));
    assert_eq!(status, 200, "{first}");
    let pcrs: Vec<String> = first["tpm"]["pcrs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(i, v)| format!("\"{i}\" = {v}"))
        .collect();
    format!(
        "trusted_ak_names = [{}]\npcrs = {{ {} }}\nstate_file = {:?}\n",
        identity["tpm"]["ak_name"],
        pcrs.join(", "),
        dir.join("verifier-state.json")
    )
}

fn tpm_daemon(t: &Swtpm) -> Daemon {
    Daemon::start(&format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n[keys]\nsealer = \"tpm\"\n[keys.tpm]\n\
         tcti = \"{}\"\n[attest]\npcrs = [0, 1, 2, 3, 4, 5, 6, 7]\n",
        t.tcti()
    ))
}

#[test]
fn the_gateway_standin_takes_100_attested_keys_and_the_audit_log_names_them_only() {
    let t = Swtpm::start();
    let d = tpm_daemon(&t);
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, policy_toml(&d, dir.path())).unwrap();

    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_gateway_standin"))
        .arg("--url")
        .arg(d.url(""))
        .arg("--token-file")
        .arg(d.state.join("api-token"))
        .arg("--policy")
        .arg(&policy_file)
        .args(["--count", "100", "--purpose", "qkd-link-7", "--print-keys"])
        .output()
        .unwrap();
    let wall = started.elapsed();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    eprintln!(
        "gateway stand-in: {} ok, {} failed, {} ms in the stand-in, {wall:?} wall",
        summary["ok"], summary["failed"], summary["elapsed_ms"]
    );
    assert!(out.status.success(), "{summary}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(summary["ok"], 100, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["first_error"], Value::Null);
    let strings = |k: &str| -> Vec<String> {
        summary[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
    };
    let (ids, keys, fingerprints) = (strings("key_ids"), strings("keys"), strings("fingerprints"));
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 100, "ids are unique");
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), 100, "keys are distinct");
    assert_eq!(fingerprints.len(), 100);
    // The verifier state remembers the 100 nonces.
    let state = VerifierState::load(&dir.path().join("verifier-state.json")).unwrap();
    assert_eq!(state.nonces.len(), 100);

    // The audit log: one gateway-key line per key, ids and hashes only.
    let audit = std::fs::read_to_string(d.state.join("audit.log")).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .filter(|l| l.contains("\"op\":\"gateway-key\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 100);
    let fields: BTreeSet<&str> = lines[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "ts",
            "op",
            "key",
            "recipient_sha3",
            "ciphertext_sha3",
            "length",
            "purpose",
            "outcome"
        ])
    );
    let logged: BTreeSet<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(logged, ids.iter().map(String::as_str).collect());
    for l in &lines {
        assert_eq!(l["length"], 32);
        assert_eq!(l["purpose"], "qkd-link-7");
        assert_eq!(l["outcome"], "ok");
        assert_eq!(l["recipient_sha3"], lines[0]["recipient_sha3"], "one gateway key pair");
        assert_eq!(l["ciphertext_sha3"].as_str().unwrap().len(), 64);
    }
    for (key, fp) in keys.iter().zip(&fingerprints) {
        let bytes = hex::decode(key).unwrap();
        assert_eq!(&gateway::sha3_hex(&bytes), fp);
        for form in [key.clone(), key.to_uppercase(), B64.encode(&bytes)] {
            assert!(!audit.contains(&form), "a key is in the audit log");
        }
        assert!(!audit.contains(fp.as_str()), "a key's own hash is in the audit log");
    }
    assert!(!d.log().contains(&keys[0]), "a key is in the daemon's log");
}

#[test]
fn an_altered_gateway_key_answer_is_refused_by_name() {
    let t = Swtpm::start();
    let d = tpm_daemon(&t);
    let dir = tempfile::tempdir().unwrap();
    let policy = Policy::from_toml(&policy_toml(&d, dir.path())).unwrap();
    let dk = DecapsulationKey768::from_seed([7u8; 64].into());
    let recipient = RecipientKey::from(&dk).encapsulation_key();
    let nonce = [3u8; 32];
    let ask = |recipient: &[u8], length: u64, purpose: &str| {
        d.keys(
            "POST",
            "/v1/gateway/keys",
            Some(json!({
                "recipient": B64.encode(recipient),
                "nonce": B64.encode(nonce),
                "length": length,
                "purpose": purpose,
            })),
        )
    };
    let (status, answer) = ask(&recipient, 48, "link-7");
    assert_eq!(status, 200, "{answer}");
    let open = |v: &Value| {
        gateway::open(
            &serde_json::to_vec(v).unwrap(),
            (&dk).into(),
            &nonce,
            &policy,
            &mut VerifierState::default(),
            now(),
        )
    };
    let check = |v: &Value| open(v).map(|k| k.key_id).unwrap_err().check;

    // A byte of the wrapped key flipped: the AES-GCM tag fails.
    let mut v = answer.clone();
    let mut wrapped = B64.decode(v["wrapped_key"].as_str().unwrap()).unwrap();
    wrapped[20] ^= 0x01;
    v["wrapped_key"] = B64.encode(&wrapped).into();
    assert_eq!(check(&v), Check::Unwrap);
    // Another purpose than the signed statement's.
    let mut v = answer.clone();
    v["purpose"] = "link-8".into();
    assert_eq!(check(&v), Check::GatewayBinding);
    // A later expiry: bound by the transcript.
    let mut v = answer.clone();
    v["expires_unix"] = (v["expires_unix"].as_u64().unwrap() + 60).into();
    assert_eq!(check(&v), Check::Unwrap);
    // The statement inside the evidence: its signature fails.
    let mut v = answer.clone();
    let mut st = B64.decode(v["evidence"]["statement"].as_str().unwrap()).unwrap();
    st[30] ^= 0x01;
    v["evidence"]["statement"] = B64.encode(&st).into();
    assert_eq!(check(&v), Check::Signature);
    // Opened by another gateway's key.
    let other = DecapsulationKey768::from_seed([8u8; 64].into());
    let f = gateway::open(
        &serde_json::to_vec(&answer).unwrap(),
        (&other).into(),
        &nonce,
        &policy,
        &mut VerifierState::default(),
        now(),
    )
    .unwrap_err();
    assert_eq!(f.check, Check::GatewayBinding, "{}", f.detail);

    // The answer as sent opens, with the statement's provenance and quote.
    let k = open(&answer).unwrap_or_else(|f| panic!("{}: {}", f.check, f.detail));
    assert_eq!(k.key.len(), 48);
    assert_eq!(k.purpose, "link-7");
    assert_eq!(k.statement.sealer.kind.name(), "tpm");
    assert_eq!(k.statement.provenance.seed_source, "os");
    assert!(k.expires_unix > now() + 3000, "an hour by default");
    assert_eq!(answer["evidence"]["tpm"]["pcr_bank"], "sha256");

    // Requests that make no key.
    assert_eq!(ask(&[0xff; 1184], 32, "x").0, 400, "not an ML-KEM key");
    assert_eq!(ask(&recipient[..1000], 32, "x").0, 400);
    assert_eq!(ask(&recipient, 8, "x").0, 400);
    assert_eq!(ask(&recipient, 32, "").0, 400);
    let (status, _) = d.key_call("POST", "/v1/gateway/keys", Some(json!({})), None);
    assert_eq!(status, 401, "the gateway right is needed");
    let audit = std::fs::read_to_string(d.state.join("audit.log")).unwrap();
    assert_eq!(audit.matches("\"op\":\"gateway-key\"").count(), 1);
}

/// The only source drifts (one value more likely than the claim allows)
/// while its health tests still pass; with the pool's own bar at 0 it keeps
/// serving, but its trust falls below 0.89 and a gateway key is refused.
#[test]
fn a_source_below_the_trust_bar_gets_503_untrusted_entropy() {
    let d = Daemon::start(
        r#"
        [pool]
        reseed_interval_requests = 1
        [health]
        min_trust = 0.0
        assessment_samples = 0
        [[source]]
        name = "drifty"
        kind = "sim"
        seed = 17
        [[source.schedule]]
        after_samples = 0
        fault = "drift"
        value = 0
        to_p = 0.006
        over_samples = 1
        [danger]
        allow_sim_sources = true
        [attest]
        "#,
    );
    let h = d.wait_health("trust to fall below 0.89", Duration::from_secs(60), |h| {
        let _ = d.get("/v1/random?bytes=1048576&format=raw");
        let s = &h["pool"]["sources"][0];
        s["state"] == "healthy" && s["trust_score"].as_f64().is_some_and(|t| t < 0.89)
    });
    let trust = h["pool"]["sources"][0]["trust_score"].as_f64().unwrap();
    eprintln!("drifting source: trust {trust}, still serving");
    assert_eq!(d.get("/v1/random?bytes=32").status, 200, "the pool still serves");

    let dk = DecapsulationKey768::from_seed([9u8; 64].into());
    let (status, body) = d.keys(
        "POST",
        "/v1/gateway/keys",
        Some(json!({
            "recipient": B64.encode(RecipientKey::from(&dk).encapsulation_key()),
            "nonce": B64.encode([4u8; 32]),
            "length": 32,
            "purpose": "link-7",
        })),
    );
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "untrusted_entropy", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("drifty") && msg.contains("below the 0.89"), "{msg}");
    let audit = std::fs::read_to_string(d.state.join("audit.log")).unwrap_or_default();
    assert!(!audit.contains("gateway-key"), "no key was made");
}
