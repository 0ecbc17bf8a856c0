//! QKD links through the KME simulator (`tests/qkd/kme_sim.py`): the
//! simulator's own self-test (GS QKD 014 answers, mutual TLS, every fault
//! mode), then `qkeyd qkd status` against it, healthy and faulty.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use qkeyd_e2e::{
    qkd::{KmeSim, make_certs, qkd_dir},
    qkeyd_bin,
};
use serde_json::Value;

#[test]
fn the_kme_simulator_answers_as_gs_qkd_014_says() {
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s"])
        .arg(qkd_dir())
        .args(["-p", "test_*.py", "-v"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the simulator's self-test failed:\n{report}");
    let ran = report.lines().find_map(|l| l.strip_prefix("Ran ")).unwrap_or_default();
    let count: usize = ran.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(count >= 20, "the self-test ran {count} tests:\n{report}");
}

/// `qkeyd qkd status` on a config of `tables` (and the OS source), with `args`.
fn status(tables: &[String], args: &[&str]) -> (Output, String) {
    qkd(&["status"], tables, args)
}

/// `qkeyd qkd probe` on a config of `tables`, with `args`; its JSON answer.
fn probe(tables: &[String], args: &[&str]) -> (Option<i32>, Value) {
    let (out, text) = qkd(&["probe", "--json"], tables, args);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {text}"));
    (out.status.code(), doc)
}

/// `qkeyd qkd SUBCOMMAND` on a config of `tables`, with `args`.
fn qkd(sub: &[&str], tables: &[String], args: &[&str]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("qkeyd.toml");
    let text = format!("[[source]]\nname = \"os\"\nkind = \"os\"\n\n{}", tables.join("\n"));
    std::fs::write(&config, text).unwrap();
    let out = Command::new(qkeyd_bin())
        .arg("qkd")
        .args(sub)
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

#[test]
fn qkd_status_reports_each_link_and_names_what_failed() {
    let sim = KmeSim::start();
    let ca = sim.ca();
    let a = sim.table("a", sim.kme_a, "sae-a", "sae-a", "\"sae-b\"", &ca);
    let b = sim.table("b", sim.kme_b, "sae-b", "sae-b", "\"sae-a\"", &ca);

    // Both ends, as lines and as JSON.
    let (out, text) = status(&[a.clone(), b.clone()], &[]);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&format!(
            "a https://127.0.0.1:{}: sae-a -> sae-b via KME_A -> KME_B: ",
            sim.kme_a
        )),
        "{text}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "b https://127.0.0.1:{}: sae-b -> sae-a via KME_B -> KME_A: ",
            sim.kme_b
        )),
        "{text}"
    );
    assert!(
        lines[0]
            .ends_with("100000 of 100000 keys stored, 256 bits (64-1024), at most 128 per request"),
        "{text}"
    );
    let (out, text) = status(&[a.clone(), b.clone()], &["--kme", "b", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let links = doc["links"].as_array().unwrap();
    assert_eq!(links.len(), 1, "{doc}");
    let st = &links[0]["status"];
    assert_eq!(st["source_KME_ID"], "KME_B", "{doc}");
    assert_eq!(st["master_SAE_ID"], "sae-b", "{doc}");
    assert_eq!(st["slave_SAE_ID"], "sae-a", "{doc}");
    assert_eq!(st["max_key_per_request"], 128, "{doc}");
    assert_eq!(st["max_SAE_ID_count"], 0, "{doc}");

    // A KME name the config lacks; a plain-HTTP URL (014 requires mutual TLS).
    let (out, text) = status(std::slice::from_ref(&a), &["--kme", "nope"]);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("the config has no [qkd.kme.nope]"), "{text}");
    let plain = a.replace("https://", "http://");
    let (out, text) = status(&[plain], &[]);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("[qkd.kme.a]: url") && text.contains("must be https://"), "{text}");

    // Another SAE's certificate under sae_id sae-a: the KME names its owner.
    let other = sim.table("a", sim.kme_a, "sae-a", "sae-other", "\"sae-b\"", &ca);
    let (out, text) = status(&[other], &[]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("answered for sae-other -> sae-b, not sae_id sae-a -> sae-b"), "{text}");

    // A KME whose certificate chains to another CA.
    let elsewhere = tempfile::tempdir().unwrap();
    make_certs(elsewhere.path(), &[]);
    let wrong_ca =
        sim.table("a", sim.kme_a, "sae-a", "sae-a", "\"sae-b\"", &elsewhere.path().join("ca.pem"));
    let (out, text) = status(&[wrong_ca], &[]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("KME a is unreachable at https://127.0.0.1:"), "{text}");
    assert!(text.contains("does not chain to a certificate in ca_file"), "{text}");

    // A stalled KME: each link gives up after timeout_secs (1 s).
    sim.fault(r#"{"mode": "stall", "seconds": 30}"#);
    let started = Instant::now();
    let (out, text) = status(&[a.clone(), b.clone()], &[]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert_eq!(text.matches("no answer within timeout_secs").count(), 2, "{text}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    // The stall over, the KMEs answer again.
    sim.fault(r#"{"mode": "none"}"#);
    let (out, text) = status(&[a, b], &[]);
    assert_eq!(out.status.code(), Some(0), "{text}");
}

#[test]
fn qkd_probe_takes_a_links_keys_out_of_use_for_bias_and_refuses_repeats() {
    let sim = KmeSim::start();
    let a = sim.table("a", sim.kme_a, "sae-a", "sae-a", "\"sae-b\"", &sim.ca());
    let tables = [a];
    let refused = |doc: &Value, why: &str| doc["refused"][why].as_u64().unwrap_or(0);

    // Healthy: the first 1024 bytes (32 keys of 256 bits) are the start-up test.
    let (code, doc) = probe(&tables, &["--kme", "a", "--keys", "1000"]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["keys"], 1000, "{doc}");
    assert_eq!(doc["requests"], 8, "{doc}");
    assert_eq!(doc["usable"], 968, "{doc}");
    assert_eq!(refused(&doc, "startup"), 32, "{doc}");
    assert!(doc["trust"].as_f64().unwrap() > 0.99, "{doc}");
    assert_eq!((doc["rct_failures"].as_u64(), doc["apt_failures"].as_u64()), (Some(0), Some(0)));

    // The KME hands out the last key's bytes again, under a new key_ID, at
    // the start of its next two answers: the second is caught (the first
    // repeats a key of the probe before).
    sim.fault(r#"{"mode": "repeat_key", "count": 2}"#);
    let (code, doc) = probe(&tables, &["--kme", "a", "--keys", "300"]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(refused(&doc, "repeated_key"), 1, "{doc}");
    // Likewise a key_ID handed out again.
    sim.fault(r#"{"mode": "key_id_reuse", "count": 2}"#);
    let (code, doc) = probe(&tables, &["--kme", "a", "--keys", "300"]);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(refused(&doc, "repeated_key_id"), 1, "{doc}");

    // A stream whose bits are 1 with probability 0.6: trust falls below
    // 0.89 and the link goes out of use before RCT or APT fire.
    sim.fault(r#"{"mode": "bias", "p": 0.6}"#);
    let (code, doc) = probe(&tables, &["--kme", "a", "--keys", "1000"]);
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["out_of_use"], true, "{doc}");
    assert_eq!(doc["out_of_use_since"]["reason"], "distrusted", "{doc}");
    assert!(doc["trust"].as_f64().unwrap() < 0.89, "{doc}");
    assert_eq!((doc["rct_failures"].as_u64(), doc["apt_failures"].as_u64()), (Some(0), Some(0)));

    // The link drops after an enc_keys: the KME's 503 and message.
    sim.fault(r#"{"mode": "drop_after_enc"}"#);
    let (code, doc) = probe(&tables, &["--kme", "a", "--keys", "300"]);
    assert_eq!(code, Some(2), "{doc}");
    let error = doc["error"].as_str().unwrap_or_default();
    assert!(error.contains("answered 503") && error.contains("link down"), "{doc}");
    assert_eq!(doc["keys"], 128, "one answer came before the drop: {doc}");
}
