//! The key vault over REST: every parameter set through the soft sealer and
//! through a real SoftHSM2 token, tampering, authorization, crash safety.

use std::{fs, path::Path};

use base64::Engine as _;
use qkeyd_e2e::{Daemon, HSM_PIN, SoftHsm, metric};
use serde_json::{Value, json};

const ALGS: [&str; 6] =
    ["ml-kem-512", "ml-kem-768", "ml-kem-1024", "ml-dsa-44", "ml-dsa-65", "ml-dsa-87"];

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap()
}

fn create(d: &Daemon, alg: &str) -> String {
    let (s, k) =
        d.keys("POST", "/v1/keys", Some(json!({ "alg": alg, "label": format!("test {alg}") })));
    assert_eq!(s, 201, "{k}\n{}", d.log());
    assert_eq!(k["alg"], alg);
    assert_eq!(k["current_version"], 1);
    // No field carries the seed. (Field names, not the text: a base64 public
    // key contains "seed" by chance about once in a few hundred keys.)
    assert!(!field_names(&k).iter().any(|f| f.contains("seed")), "{k}");
    k["id"].as_str().unwrap().to_owned()
}

/// Every object key anywhere in `v`.
fn field_names(v: &Value) -> Vec<String> {
    match v {
        Value::Object(m) => {
            m.iter().flat_map(|(k, v)| std::iter::once(k.clone()).chain(field_names(v))).collect()
        }
        Value::Array(a) => a.iter().flat_map(field_names).collect(),
        _ => Vec::new(),
    }
}

/// Use a key at `version` (None: current) and check the answer is right.
fn use_key(d: &Daemon, id: &str, alg: &str, version: Option<u32>) {
    let v = version.map_or(Value::Null, |v| json!(v));
    if alg.starts_with("ml-kem") {
        let (s, e) =
            d.keys("POST", &format!("/v1/keys/{id}/encapsulate"), Some(json!({ "version": v })));
        assert_eq!(s, 200, "{e}");
        let (s, k) = d.keys(
            "POST",
            &format!("/v1/keys/{id}/decapsulate"),
            Some(json!({ "ciphertext": e["ciphertext"], "version": e["version"] })),
        );
        assert_eq!(s, 200, "{k}");
        assert_eq!(k["shared_secret"], e["shared_secret"]);
        let (s, okm) = d.keys(
            "POST",
            &format!("/v1/keys/{id}/derive"),
            Some(json!({ "ciphertext": e["ciphertext"], "info": b64(b"ctx"), "length": 48, "version": e["version"] })),
        );
        assert_eq!(s, 200, "{okm}");
        assert_eq!(unb64(&okm["key"]).len(), 48);
    } else {
        let msg = b64(b"attested payload");
        let (s, sig) = d.keys(
            "POST",
            &format!("/v1/keys/{id}/sign"),
            Some(json!({ "message": msg, "context": b64(b"qkeyd"), "version": v })),
        );
        assert_eq!(s, 200, "{sig}");
        let check = |m: &str, ctx: &[u8]| {
            let (s, r) = d.keys(
                "POST",
                &format!("/v1/keys/{id}/verify"),
                Some(json!({ "message": m, "context": b64(ctx), "signature": sig["signature"], "version": sig["version"] })),
            );
            assert_eq!(s, 200, "{r}");
            r["valid"].as_bool().unwrap()
        };
        assert!(check(&msg, b"qkeyd"));
        assert!(!check(&b64(b"another payload"), b"qkeyd"));
        assert!(!check(&msg, b"other context"));
    }
}

/// Create, use, rotate, use both versions, destroy: all six parameter sets.
fn exercise(d: &Daemon) {
    for alg in ALGS {
        let id = create(d, alg);
        use_key(d, &id, alg, None);
        let (s, k) = d.keys("POST", &format!("/v1/keys/{id}/rotate"), None);
        assert_eq!(s, 200, "{k}");
        assert_eq!(k["current_version"], 2);
        let versions = k["versions"].as_array().unwrap();
        assert_ne!(versions[0]["fingerprint"], versions[1]["fingerprint"]);
        use_key(d, &id, alg, None);
        use_key(d, &id, alg, Some(1));
        let (s, _) = d.keys("DELETE", &format!("/v1/keys/{id}"), None);
        assert_eq!(s, 204);
        let (s, e) = d.keys("GET", &format!("/v1/keys/{id}"), None);
        assert_eq!(s, 404, "{e}");
        let (s, e) = d.keys("POST", &format!("/v1/keys/{id}/encapsulate"), None);
        assert_eq!(s, 404, "{e}");
    }
    let (s, list) = d.keys("GET", "/v1/keys", None);
    assert_eq!(s, 200);
    assert_eq!(list["keys"], json!([]));
}

#[test]
fn every_parameter_set_through_the_soft_sealer() {
    let d = Daemon::start_default();
    exercise(&d);
    assert!(d.log().contains("DANGER: keys are sealed by the soft sealer"));
}

fn hsm_daemon(hsm: &SoftHsm, pin: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    fs::write(&pin_file, format!("{pin}\n")).unwrap();
    let state = dir.path().join("state");
    let config =
        format!("[[source]]\nname = \"os\"\nkind = \"os\"\n{}", hsm.keys_config(&pin_file));
    Daemon::start_with(dir, &config, &state, &[hsm.env()])
}

#[test]
fn every_parameter_set_through_softhsm() {
    let hsm = SoftHsm::new();
    let d = hsm_daemon(&hsm, HSM_PIN);
    exercise(&d);
    assert!(d.log().contains("keys are sealed in an HSM token"));
    // Destroyed keys took their HSM keys with them: the token holds no qkeyd key.
    let objects = pkcs11_tool(&hsm, &["--list-objects", "--type", "secrkey"]);
    assert!(!objects.contains("qkeyd/"), "{objects}");
}

fn pkcs11_tool(hsm: &SoftHsm, args: &[&str]) -> String {
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &hsm.conf)
        .arg("--module")
        .arg(&hsm.module)
        .args(["--token-label", qkeyd_e2e::HSM_LABEL, "--login", "--pin", HSM_PIN])
        .args(args)
        .output()
        .expect("pkcs11-tool (tests/run-all.sh installs opensc)");
    assert!(out.status.success(), "pkcs11-tool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A key whose HSM key was deleted cannot be unsealed (clear error), and a
/// wrong PIN stops the daemon at start with a clear message.
#[test]
fn softhsm_key_removed_or_wrong_pin_is_a_clear_error() {
    let hsm = SoftHsm::new();
    let d = hsm_daemon(&hsm, HSM_PIN);
    let id = create(&d, "ml-kem-768");
    use_key(&d, &id, "ml-kem-768", None);
    let objects = pkcs11_tool(&hsm, &["--list-objects", "--type", "secrkey"]);
    let label = format!("qkeyd/{id}/v1");
    assert!(objects.contains(&label), "{objects}");
    pkcs11_tool(&hsm, &["--delete-object", "--type", "secrkey", "--label", &label]);
    let (s, e) = d.keys("POST", &format!("/v1/keys/{id}/encapsulate"), None);
    assert_eq!(s, 200, "encapsulation needs only the public key: {e}");
    let (s, e) = d.keys(
        "POST",
        &format!("/v1/keys/{id}/decapsulate"),
        Some(json!({ "ciphertext": e["ciphertext"] })),
    );
    assert_eq!(s, 500, "{e}");
    assert_eq!(e["error"]["code"], "key_unusable");
    let logged = d.incident(e["error"]["message"].as_str().unwrap());
    assert!(logged.contains("no longer exists"), "{logged}");
    drop(d);

    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    fs::write(&pin_file, "wrong-pin\n").unwrap();
    let config =
        format!("[[source]]\nname = \"os\"\nkind = \"os\"\n{}", hsm.keys_config(&pin_file));
    fs::write(dir.path().join("qkeyd.toml"), &config).unwrap();
    let out = std::process::Command::new(qkeyd_e2e::qkeyd_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path().join("qkeyd.toml"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("SOFTHSM2_CONF", &hsm.conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("refused login") && err.contains("PinIncorrect"), "{err}");
    assert!(!err.contains("wrong-pin"), "the PIN is never printed: {err}");
}

fn key_file(d: &Daemon, id: &str, v: u32) -> std::path::PathBuf {
    d.state.join("keys").join(id).join(format!("v{v}.key"))
}

#[test]
fn tampered_and_missing_blobs_are_clear_errors() {
    let d = Daemon::start_default();
    let id = create(&d, "ml-dsa-44");
    d.keys("POST", &format!("/v1/keys/{id}/rotate"), None);
    let path = key_file(&d, &id, 1);
    let good = fs::read(&path).unwrap();
    // A flipped bit anywhere: the checksum catches it before anything is unsealed.
    for &i in &[0usize, 37, good.len() / 2, good.len() - 3] {
        let mut bad = good.clone();
        bad[i] ^= 0x04;
        fs::write(&path, &bad).unwrap();
        let (s, e) = d.keys(
            "POST",
            &format!("/v1/keys/{id}/sign"),
            Some(json!({ "message": b64(b"m"), "version": 1 })),
        );
        assert_eq!(s, 500, "byte {i}: {e}");
        let logged = d.incident(e["error"]["message"].as_str().unwrap());
        assert!(logged.contains("corrupted"), "{logged}");
    }
    fs::write(&path, &good).unwrap();
    let (s, _) = d.keys(
        "POST",
        &format!("/v1/keys/{id}/sign"),
        Some(json!({ "message": b64(b"m"), "version": 1 })),
    );
    assert_eq!(s, 200);
    // A missing version is a clear error; the other version still works.
    fs::remove_file(&path).unwrap();
    let (s, e) = d.keys(
        "POST",
        &format!("/v1/keys/{id}/sign"),
        Some(json!({ "message": b64(b"m"), "version": 1 })),
    );
    assert_eq!(s, 404, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("version 1"), "{e}");
    use_key(&d, &id, "ml-dsa-44", None);
}

#[test]
fn requests_without_the_token_are_refused_and_change_nothing() {
    let d = Daemon::start_default();
    let id = create(&d, "ml-dsa-65");
    let before = fs::read_dir(d.state.join("keys")).unwrap().count();
    let audit_before = fs::read_to_string(d.state.join("audit.log")).unwrap();
    let calls: [(&str, String, Option<Value>); 6] = [
        ("POST", "/v1/keys".into(), Some(json!({ "alg": "ml-dsa-44" }))),
        ("GET", "/v1/keys".into(), None),
        ("POST", format!("/v1/keys/{id}/sign"), Some(json!({ "message": b64(b"m") }))),
        ("POST", format!("/v1/keys/{id}/rotate"), None),
        ("DELETE", format!("/v1/keys/{id}"), None),
        ("GET", format!("/v1/keys/{id}"), None),
    ];
    let wrong = "0".repeat(64);
    for (method, path, body) in &calls {
        for token in [None, Some(wrong.as_str()), Some("")] {
            let (s, e) = d.key_call(method, path, body.clone(), token);
            assert_eq!(s, 401, "{method} {path} with {token:?}: {e}");
            assert_eq!(e["error"]["code"], "unauthorized");
        }
    }
    assert_eq!(fs::read_dir(d.state.join("keys")).unwrap().count(), before);
    assert_eq!(fs::read_to_string(d.state.join("audit.log")).unwrap(), audit_before);
    let (s, k) = d.keys("GET", &format!("/v1/keys/{id}"), None);
    assert_eq!((s, k["current_version"].clone()), (200, json!(1)));
    let m = d.metrics();
    // An empty token counts as missing (the header is just "Bearer").
    assert_eq!(
        metric(&m, "qkeyd_key_requests_denied_total{reason=\"missing\"}"),
        Some(12.0),
        "{m}"
    );
    assert_eq!(metric(&m, "qkeyd_key_requests_denied_total{reason=\"invalid\"}"), Some(6.0), "{m}");
    // Bad input with the token is a 4xx JSON error with a reason, not a
    // crash: 400 for a value the vault refuses, 422 for a body of the wrong
    // shape.
    for (body, status) in [
        (json!({ "alg": "rsa" }), 400),
        (json!({ "alg": 5 }), 422),
        (json!({ "alg": "ml-kem-512", "label": "x".repeat(200) }), 400),
    ] {
        let (s, e) = d.keys("POST", "/v1/keys", Some(body));
        assert_eq!(s, status, "{e}");
        assert!(!e["error"]["message"].as_str().unwrap().is_empty(), "{e}");
    }
    let (s, e) = d.keys(
        "POST",
        &format!("/v1/keys/{id}/decapsulate"),
        Some(json!({ "ciphertext": "AA==" })),
    );
    assert_eq!(s, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("ML-KEM"), "{e}");
    let (s, _) = d.keys("GET", "/v1/keys/..%2F..%2Fetc", None);
    assert_eq!(s, 404);
}

/// Decrypt a soft-sealed seed the way the daemon does, to know what to grep for.
fn soft_seed(state: &Path, id: &str, v: u32) -> Vec<u8> {
    use aes_gcm::{
        Aes256Gcm, KeyInit as _, Nonce,
        aead::{Aead as _, Payload},
    };
    let text = fs::read_to_string(state.join("keys").join(id).join(format!("v{v}.key"))).unwrap();
    let body: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let blob = unb64(&body["sealed"]["blob"]);
    let key = fs::read(state.join("soft-seal.key")).unwrap();
    let aad = format!(
        "qkeyd-key-v1\0{id}\0{v}\0{}\0{}",
        body["alg"].as_str().unwrap(),
        body["fingerprint"].as_str().unwrap()
    );
    let nonce: [u8; 12] = blob[..12].try_into().unwrap();
    Aes256Gcm::new_from_slice(&key)
        .unwrap()
        .decrypt(&Nonce::from(nonce), Payload { msg: &blob[12..], aad: aad.as_bytes() })
        .unwrap()
}

#[test]
fn seeds_never_appear_in_logs() {
    let d = Daemon::start_default();
    let mut seeds = Vec::new();
    for alg in ALGS {
        let id = create(&d, alg);
        use_key(&d, &id, alg, None);
        d.keys("POST", &format!("/v1/keys/{id}/rotate"), None);
        for v in [1, 2] {
            seeds.push(soft_seed(&d.state, &id, v));
        }
    }
    let logs = format!("{}{}", d.log(), fs::read_to_string(d.state.join("audit.log")).unwrap());
    assert!(logs.contains("key created") && logs.contains("\"op\":\"rotate\""));
    for seed in &seeds {
        assert!(seed.len() == 32 || seed.len() == 64);
        for needle in [
            hex::encode(seed),
            hex::encode_upper(seed),
            b64(seed),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed),
            // A 16-byte prefix catches partial dumps too.
            hex::encode(&seed[..16]),
        ] {
            assert!(!logs.contains(&needle), "a seed leaked into the logs");
        }
    }
}

/// kill -9 at random moments of a stream of key creations, rotations and
/// destructions and KMS KEK rotations and retirements, 25 times: the daemon
/// always starts again, nothing acknowledged is lost, every key works and
/// has its audit line, and nothing half-written is left (the checks:
/// `qkeyd_e2e::kill9`; the long campaign: `tests/campaigns/kill9.sh`).
#[test]
fn kill_minus_nine_never_loses_an_acknowledged_key_or_its_audit_line() {
    let settings = qkeyd_e2e::kill9::Settings { rounds: 25, ..Default::default() };
    let report = qkeyd_e2e::kill9::run(&settings);
    eprintln!("{}", report.summary());
    let failures: Vec<_> =
        report.failures.iter().map(|f| format!("round {}: {}", f.round, f.what)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let cut: usize = report.cut.values().sum();
    assert!(cut > 0, "some kills should land mid-request: {}", report.summary());
    assert!(report.acked.get("create").is_some_and(|&n| n > 0), "{}", report.summary());
    assert_eq!(report.restarts.len(), 26);
}

/// The TPM sealer against a real swtpm (build with `--features tpm`).
#[cfg(feature = "tpm")]
mod tpm {
    use qkeyd_e2e::{Daemon, Swtpm};
    use serde_json::json;

    use super::{b64, create, exercise, use_key};

    fn tpm_daemon(t: &Swtpm, pcrs: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = format!(
            "[[source]]\nname = \"os\"\nkind = \"os\"\n[keys]\nsealer = \"tpm\"\n[keys.tpm]\ntcti = \"{}\"\npcrs = {pcrs}\n",
            t.tcti()
        );
        Daemon::start_with_state(dir, &config, &state)
    }

    #[test]
    fn every_parameter_set_through_swtpm() {
        let t = Swtpm::start();
        let d = tpm_daemon(&t, "[]");
        exercise(&d);
        assert!(d.log().contains("keys are sealed by a TPM 2.0"));
    }

    /// Keys bound to PCR 16 unseal until another client extends it; then every
    /// private operation fails with a clear error and public ones still work.
    #[test]
    fn a_pcr_bound_key_cannot_be_unsealed_after_the_pcr_is_extended() {
        let t = Swtpm::start();
        let d = tpm_daemon(&t, "[16]");
        let kem = create(&d, "ml-kem-768");
        let dsa = create(&d, "ml-dsa-44");
        use_key(&d, &kem, "ml-kem-768", None);
        use_key(&d, &dsa, "ml-dsa-44", None);
        t.extend_pcr(16);
        let (s, e) = d.keys("POST", &format!("/v1/keys/{kem}/encapsulate"), None);
        assert_eq!(s, 200, "public operations need no unseal: {e}");
        let (s, err) = d.keys(
            "POST",
            &format!("/v1/keys/{kem}/decapsulate"),
            Some(json!({ "ciphertext": e["ciphertext"] })),
        );
        assert_eq!(s, 500, "{err}");
        assert_eq!(err["error"]["code"], "key_unusable");
        let msg = d.incident(err["error"]["message"].as_str().unwrap());
        assert!(msg.contains("policy") && msg.contains("[16]") && msg.contains("changed"), "{msg}");
        let (s, err) =
            d.keys("POST", &format!("/v1/keys/{dsa}/sign"), Some(json!({ "message": b64(b"m") })));
        assert_eq!(s, 500, "{err}");
        // A key sealed now, under the new PCR value, works.
        let fresh = create(&d, "ml-dsa-44");
        use_key(&d, &fresh, "ml-dsa-44", None);
    }

    /// The TPM vanishes while the daemon serves: private operations and new
    /// keys fail with 503 and a clear message, public ones and listings keep
    /// working, nothing is lost, and everything works again once the TPM is
    /// back, without restarting the daemon.
    #[test]
    fn the_tpm_vanishing_and_coming_back_loses_nothing() {
        let mut t = Swtpm::start();
        let d = tpm_daemon(&t, "[]");
        let dsa = create(&d, "ml-dsa-65");
        let kem = create(&d, "ml-kem-512");
        t.stop();
        let started = std::time::Instant::now();
        let (s, err) =
            d.keys("POST", &format!("/v1/keys/{dsa}/sign"), Some(json!({ "message": b64(b"m") })));
        assert_eq!(s, 503, "{err}");
        assert_eq!(err["error"]["code"], "sealer_unavailable");
        assert!(err["error"]["message"].as_str().unwrap().contains("TPM"), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(6),
            "answered within the seal timeout"
        );
        let (s, err) = d.keys("POST", "/v1/keys", Some(json!({ "alg": "ml-kem-768" })));
        assert_eq!(s, 503, "{err}");
        let (s, list) = d.keys("GET", "/v1/keys", None);
        assert_eq!(s, 200);
        assert_eq!(
            list["keys"].as_array().unwrap().len(),
            2,
            "nothing lost, nothing half-made: {list}"
        );
        let (s, _) = d.keys("POST", &format!("/v1/keys/{kem}/encapsulate"), None);
        assert_eq!(s, 200);
        t.restart();
        use_key(&d, &dsa, "ml-dsa-65", None);
        use_key(&d, &kem, "ml-kem-512", None);
        let again = create(&d, "ml-kem-768");
        use_key(&d, &again, "ml-kem-768", None);
    }
}

/// `qkeyd keys …` against a running daemon: create, list, sign, verify,
/// rotate, show, destroy, and clear errors (exit 2) for a wrong token.
#[test]
fn the_keys_cli_drives_the_vault() {
    let d = Daemon::start_default();
    let token_file = d.state.join("api-token");
    let run = |args: &[&str], token: &Path| {
        let out = std::process::Command::new(qkeyd_e2e::qkeyd_bin())
            .arg("keys")
            .args(["--url", &format!("http://{}", d.addr)])
            .arg("--token-file")
            .arg(token)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, out, err) = run(&["create", "--alg", "ML-DSA-44", "--label", "cli"], &token_file);
    assert_eq!(code, Some(0), "{err}");
    let key: Value = serde_json::from_str(&out).unwrap();
    let id = key["id"].as_str().unwrap().to_owned();
    let (_, list, _) = run(&["list"], &token_file);
    assert!(list.contains(&id) && list.contains("ml-dsa-44") && list.contains("cli"), "{list}");
    let msg = d.dir.path().join("msg");
    fs::write(&msg, b"signed from a shell").unwrap();
    let msg_s = msg.to_str().unwrap();
    let (code, sig, err) = run(&["sign", &id, "--message", msg_s, "--context", "ops"], &token_file);
    assert_eq!(code, Some(0), "{err}");
    let sig = sig.trim().to_owned();
    let (code, out, _) = run(
        &["verify", &id, "--message", msg_s, "--context", "ops", "--signature", &sig],
        &token_file,
    );
    assert_eq!((code, out.trim()), (Some(0), "valid"));
    fs::write(&msg, b"signed from a shell!").unwrap();
    let (code, out, _) = run(
        &["verify", &id, "--message", msg_s, "--context", "ops", "--signature", &sig],
        &token_file,
    );
    assert_eq!((code, out.trim()), (Some(1), "invalid"));
    let (code, out, _) = run(&["rotate", &id], &token_file);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"current_version\": 2"), "{out}");
    let (code, out, _) = run(&["show", &id], &token_file);
    assert_eq!(code, Some(0));
    assert!(!out.contains("seed") && out.contains("fingerprint"), "{out}");
    let bad = d.dir.path().join("bad-token");
    fs::write(&bad, "not-the-token-at-all").unwrap();
    let (code, _, err) = run(&["destroy", &id], &bad);
    assert_eq!(code, Some(2));
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = run(&["destroy", &id], &token_file);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&["show", &id], &token_file);
    assert_eq!(code, Some(2));
    assert!(err.contains("404") && err.contains("no such key"), "{err}");
}

/// After a rotation, decapsulate and derive without a version answer 409
/// naming the versions, never a wrong secret; sign and verify name the
/// version; every operation is in the audit log, derive as `derive`.
#[test]
fn a_rotated_key_needs_the_version_to_decapsulate_and_finds_it_to_verify() {
    let d = Daemon::start_default();
    let kem = create(&d, "ml-kem-768");
    let (s, e) = d.keys("POST", &format!("/v1/keys/{kem}/encapsulate"), None);
    assert_eq!((s, e["version"].as_u64()), (200, Some(1)), "{e}");
    let (s, _) = d.keys("POST", &format!("/v1/keys/{kem}/rotate"), None);
    assert_eq!(s, 200);
    let bare = [
        ("decapsulate", json!({ "ciphertext": e["ciphertext"] })),
        ("derive", json!({ "ciphertext": e["ciphertext"], "length": 32 })),
    ];
    for (route, body) in bare {
        let (s, r) = d.keys("POST", &format!("/v1/keys/{kem}/{route}"), Some(body));
        assert_eq!((s, r["error"]["code"].as_str()), (409, Some("version_required")), "{r}");
        let msg = r["error"]["message"].as_str().unwrap();
        assert!(msg.contains("versions 1, 2") && msg.contains("encapsulate answered"), "{msg}");
    }
    let (s, k) = d.keys(
        "POST",
        &format!("/v1/keys/{kem}/decapsulate"),
        Some(json!({ "ciphertext": e["ciphertext"], "version": e["version"] })),
    );
    assert_eq!(
        (s, &k["shared_secret"], k["version"].as_u64()),
        (200, &e["shared_secret"], Some(1))
    );

    let dsa = create(&d, "ml-dsa-65");
    let msg = b64(b"signed before the rotation");
    let (_, sig) = d.keys("POST", &format!("/v1/keys/{dsa}/sign"), Some(json!({ "message": msg })));
    assert_eq!(sig["version"], 1, "{sig}");
    d.keys("POST", &format!("/v1/keys/{dsa}/rotate"), None);
    let (s, v) = d.keys(
        "POST",
        &format!("/v1/keys/{dsa}/verify"),
        Some(json!({ "message": msg, "signature": sig["signature"] })),
    );
    assert_eq!((s, v["valid"].as_bool(), v["version"].as_u64()), (200, Some(true), Some(1)), "{v}");
    let (s, v) = d.keys(
        "POST",
        &format!("/v1/keys/{dsa}/verify"),
        Some(json!({ "message": b64(b"another"), "signature": sig["signature"] })),
    );
    assert_eq!((s, v["valid"].as_bool(), v["version"].is_null()), (200, Some(false), true), "{v}");

    let (_, okm) = d.keys(
        "POST",
        &format!("/v1/keys/{kem}/derive"),
        Some(json!({ "ciphertext": e["ciphertext"], "version": 1, "length": 32 })),
    );
    let audit = fs::read_to_string(d.state.join("audit.log")).unwrap();
    let ops: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["op"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ops,
        [
            "create",
            "encapsulate",
            "rotate",
            "decapsulate",
            "create",
            "sign",
            "rotate",
            "verify",
            "verify",
            "derive"
        ]
    );
    for secret in [&e["shared_secret"], &okm["key"], &sig["signature"]] {
        let s = secret.as_str().unwrap();
        assert!(!audit.contains(&s[..24]), "an output is in the audit log");
    }
}

/// `qkeyd keys` encapsulate, decapsulate and derive, and verify reading the
/// file `keys sign > FILE` wrote; versions on standard error.
#[test]
fn the_keys_cli_does_every_key_operation_with_files() {
    let d = Daemon::start_default();
    let token_file = d.state.join("api-token");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(qkeyd_e2e::qkeyd_bin())
            .arg("keys")
            .args(["--url", &format!("http://{}", d.addr)])
            .arg("--token-file")
            .arg(&token_file)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let path = |name: &str| d.dir.path().join(name).to_str().unwrap().to_owned();

    // ML-KEM: the ciphertext file from `encapsulate > FILE`, base64 or raw.
    let (_, out, _) = run(&["create", "--alg", "ml-kem-512"]);
    let kem = serde_json::from_str::<Value>(&out).unwrap()["id"].as_str().unwrap().to_owned();
    let (code, out, err) = run(&["encapsulate", &kem, "--print-secret"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let (ct, secret) = (lines[0], lines[1]);
    assert_eq!(unb64(&json!(ct)).len(), 768);
    assert!(err.contains("version 1") && err.contains("--version 1"), "{err}");
    let (code, out, err) = run(&["encapsulate", &kem]);
    assert_eq!((code, out.lines().count()), (Some(0), 1), "no secret unless asked: {err}");
    assert!(!err.contains(secret));
    fs::write(path("ct"), format!("{ct}\n")).unwrap();
    fs::write(path("ct.bin"), unb64(&json!(ct))).unwrap();
    for file in ["ct", "ct.bin"] {
        let (code, out, err) = run(&["decapsulate", &kem, "--ciphertext-file", &path(file)]);
        assert_eq!((code, out.trim()), (Some(0), secret), "{file}: {err}");
        assert!(err.contains("decapsulated with version 1"), "{err}");
    }
    let (code, out, err) = run(&["decapsulate", &kem, "--ciphertext", ct]);
    assert_eq!((code, out.trim()), (Some(0), secret), "{err}");
    let (code, okm, err) =
        run(&["derive", &kem, "--ciphertext-file", &path("ct"), "--length", "48", "--info", "app"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, rest) = d.keys(
        "POST",
        &format!("/v1/keys/{kem}/derive"),
        Some(json!({ "ciphertext": ct, "length": 48, "info": b64(b"app") })),
    );
    assert_eq!(okm.trim(), rest["key"].as_str().unwrap());
    assert_eq!(unb64(&json!(okm.trim())).len(), 48);
    run(&["rotate", &kem]);
    let (code, out, err) = run(&["decapsulate", &kem, "--ciphertext-file", &path("ct")]);
    assert_eq!((code, out.as_str()), (Some(2), ""), "a wrong secret is never printed");
    assert!(err.contains("409") && err.contains("versions 1, 2"), "{err}");
    let (code, out, err) =
        run(&["decapsulate", &kem, "--ciphertext-file", &path("ct"), "--version", "1"]);
    assert_eq!((code, out.trim()), (Some(0), secret), "{err}");

    // ML-DSA: `sign > FILE` holds only the signature; verify reads the file.
    let (_, out, _) = run(&["create", "--alg", "ml-dsa-44"]);
    let dsa = serde_json::from_str::<Value>(&out).unwrap()["id"].as_str().unwrap().to_owned();
    fs::write(path("msg"), b"release v1.2.3").unwrap();
    let (code, sig, err) = run(&["sign", &dsa, "--message", &path("msg")]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(sig.lines().count(), 1, "{sig}");
    assert!(err.contains("signed with version 1"), "{err}");
    fs::write(path("sig"), &sig).unwrap();
    fs::write(path("sig.bin"), unb64(&json!(sig.trim()))).unwrap();
    run(&["rotate", &dsa]);
    for file in ["sig", "sig.bin"] {
        let (code, out, err) =
            run(&["verify", &dsa, "--message", &path("msg"), "--signature-file", &path(file)]);
        assert_eq!((code, out.trim()), (Some(0), "valid"), "{file}: {err}");
        assert!(err.contains("verified by version 1"), "{err}");
    }
    let (code, out, _) = run(&[
        "verify",
        &dsa,
        "--message",
        &path("msg"),
        "--signature-file",
        &path("sig"),
        "--version",
        "2",
    ]);
    assert_eq!((code, out.trim()), (Some(1), "invalid"));
    let (code, _, err) = run(&[
        "verify",
        &dsa,
        "--message",
        &path("msg"),
        "--signature",
        sig.trim(),
        "--signature-file",
        &path("sig"),
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, _, err) = run(&["verify", &dsa, "--message", &path("msg")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--signature"), "{err}");
    let (code, _, err) = run(&["sign", &dsa, "--message", &path("msg")]);
    assert_eq!(code, Some(0));
    assert!(err.contains("signed with version 2"), "{err}");

    // Secrets went to stdout only: neither the daemon's log nor the audit log has them.
    let logs = format!("{}{}", d.log(), fs::read_to_string(d.state.join("audit.log")).unwrap());
    for s in [secret, okm.trim()] {
        assert!(!logs.contains(&s[..24]), "a secret is in the logs");
    }
}
