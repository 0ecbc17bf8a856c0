//! Two qkeyd nodes on the two ends of a simulated QKD link, each with its own
//! KME (`tests/qkd/kme_sim.py`) and its own SAE, serving GS QKD 014 on
//! `[qkd.serve]`: hybrid keys asked for at A and fetched at B, recomputed
//! from their parts by an independent HKDF, every fault mode of the KME
//! simulator, an unreachable peer and a replaced transport key with the
//! answer each must give, and GS QKD 014 clients written by others.

use std::{path::Path, process::Command, time::Instant};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use qkeyd_e2e::{
    metric,
    qkd::{KmeSim, Pair, call, free_port, ids},
    tls_agent,
};
use serde_json::{Value, json};

/// The transport key's seed of a node on the soft sealer, unsealed here
/// from its state directory (the key id file, the key file, the seal key).
fn transport_seed(state: &Path) -> zeroize::Zeroizing<Vec<u8>> {
    use qkeyd_drivers::seal::{Sealed, Sealer as _, soft::SoftSealer};
    let body = |p: &Path| {
        let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        t.lines().next().unwrap().to_owned()
    };
    let id = body(&state.join("kms/cluster-transport"));
    let rec: Value = serde_json::from_str(&body(&state.join(format!("keys/{id}/v1.key")))).unwrap();
    let sealed: Sealed = serde_json::from_value(rec["sealed"].clone()).unwrap();
    assert_eq!(rec["alg"], "ml-kem-1024");
    let aad = format!(
        "qkeyd-key-v1\0{id}\0{}\0{}\0{}",
        rec["version"],
        rec["alg"].as_str().unwrap(),
        rec["fingerprint"].as_str().unwrap()
    );
    let mut sealer = SoftSealer::open(&state.join("soft-seal.key")).unwrap();
    sealer.unseal(&sealed, aad.as_bytes()).unwrap().into_inner()
}

/// Take the held record of `key_id` from A as node B would (B's
/// certificate on the peer API): its ciphertext, and its QKD key as the KME
/// simulator recorded it.
fn take_held(p: &Pair, key_id: &str) -> (Vec<u8>, Vec<u8>) {
    let certs = p.sim.certs.path();
    let as_b =
        tls_agent(&p.sim.ca(), Some((&certs.join("qkeyd-b.pem"), &certs.join("qkeyd-b.key"))));
    let (s, held) = call(
        &as_b,
        "POST",
        &Pair::url(&p.a, "/qkeyd/v1/peer/held"),
        Some(json!({ "key_IDs": [key_id] })),
    );
    assert_eq!(s, 200, "{held}");
    let rec = &held["held"][0];
    assert_eq!(rec["key_ID"].as_str(), Some(key_id), "{held}");
    let index = usize::try_from(rec["ciphertext"].as_u64().unwrap()).unwrap();
    let ct = B64.decode(held["ciphertexts"][index].as_str().unwrap()).unwrap();
    let qkd_id = rec["qkd_key_ID"].as_str().unwrap();
    let url = format!("http://127.0.0.1:{}/key/{qkd_id}", p.sim.control);
    let qkd_rec: Value =
        serde_json::from_str(&ureq::get(&url).call().unwrap().body_mut().read_to_string().unwrap())
            .unwrap();
    (ct, B64.decode(qkd_rec["key"].as_str().unwrap()).unwrap())
}

/// The documented KDF, written again in Python (hashlib, hmac): HKDF-SHA256
/// without salt over secret ‖ QKD key, info = label, key_ID, SAEs, size,
/// SHA-256 of the ciphertext.
fn python_kdf(
    secret: &[u8],
    qkd: &[u8],
    key_id: &str,
    master: &str,
    slave: &str,
    bits: u32,
    ct: &[u8],
) -> Vec<u8> {
    let script = r#"
import hashlib, hmac, struct, sys
ss, q, kid, m, s, bits, ct = sys.argv[1:]
ikm = bytes.fromhex(ss) + bytes.fromhex(q)
info = b"qkeyd-qkd-hybrid/1" + b"\0" + kid.encode() + b"\0" + m.encode() + b"\0" + s.encode() + b"\0" \
    + struct.pack(">I", int(bits)) + hashlib.sha256(bytes.fromhex(ct)).digest()
prk = hmac.new(b"\0" * 32, ikm, hashlib.sha256).digest()
out, t, i = b"", b"", 1
while len(out) < int(bits) // 8:
    t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
    out += t
    i += 1
print(out[: int(bits) // 8].hex())
"#;
    let out = Command::new("python3")
        .args(["-c", script, &hex::encode(secret), &hex::encode(qkd), key_id, master, slave])
        .arg(bits.to_string())
        .arg(hex::encode(ct))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    hex::decode(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

#[test]
fn hybrid_keys_asked_at_one_node_are_fetched_equal_at_the_other() {
    let p = Pair::start("");

    // Status as 014 says, for the SAE pair.
    let (s, st) = call(&p.sae_a, "GET", &Pair::url(&p.a, "/api/v1/keys/sae-b/status"), None);
    assert_eq!(s, 200, "{st}");
    assert_eq!(
        (st["master_SAE_ID"].as_str(), st["slave_SAE_ID"].as_str()),
        (Some("sae-a"), Some("sae-b"))
    );
    assert_eq!(
        (st["source_KME_ID"].as_str(), st["target_KME_ID"].as_str()),
        (Some("KME_A"), Some("KME_B"))
    );
    assert_eq!(st["key_size"], 256, "{st}");
    assert_eq!(st["max_key_per_request"], 128, "{st}");
    assert_eq!(st["status_extension"]["qkeyd_combiner"], "hkdf-sha256", "{st}");

    // 1,000 keys asked for at A (GET and POST), fetched at B (GET and POST).
    let mut delivered_a = std::collections::BTreeMap::new();
    let mut batches: Vec<Vec<String>> = Vec::new();
    while delivered_a.len() < 1000 {
        let n = (1000 - delivered_a.len()).min(100);
        let (s, c) = if batches.len().is_multiple_of(2) {
            p.enc(json!({ "number": n, "size": 256 }))
        } else {
            call(
                &p.sae_a,
                "GET",
                &Pair::url(&p.a, &format!("/api/v1/keys/sae-b/enc_keys?number={n}")),
                None,
            )
        };
        assert_eq!(s, 200, "{c}");
        for k in c["keys"].as_array().unwrap() {
            let id = k["key_ID"].as_str().unwrap().to_owned();
            assert_eq!(id.len(), 36, "a UUID: {id}");
            assert_eq!(&id[14..15], "4", "a version 4 UUID: {id}");
            assert!(
                delivered_a.insert(id, k["key"].as_str().unwrap().to_owned()).is_none(),
                "a key_ID twice"
            );
        }
        batches.push(ids(&c));
    }
    let mut at_b = 0;
    for (i, batch) in batches.iter().enumerate() {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        let (s, c) = if i == 0 {
            // GET with one key_ID, then POST for the rest.
            let (s, one) = call(
                &p.sae_b,
                "GET",
                &Pair::url(&p.b, &format!("/api/v1/keys/sae-a/dec_keys?key_ID={}", refs[0])),
                None,
            );
            assert_eq!(s, 200, "{one}");
            assert_eq!(one["keys"][0]["key"].as_str(), Some(delivered_a[refs[0]].as_str()));
            at_b += 1;
            p.dec(&refs[1..])
        } else {
            p.dec(&refs)
        };
        assert_eq!(s, 200, "{c}");
        for k in c["keys"].as_array().unwrap() {
            let id = k["key_ID"].as_str().unwrap();
            assert_eq!(
                k["key"].as_str(),
                Some(delivered_a[id].as_str()),
                "key {id} differs between the sides"
            );
            at_b += 1;
        }
    }
    assert_eq!(at_b, 1000);
    let distinct: std::collections::BTreeSet<&String> = delivered_a.values().collect();
    assert_eq!(distinct.len(), 1000, "all 1,000 keys are distinct");

    // Released once per side: a second dec_keys is refused.
    let first = batches[1][0].as_str();
    let (s, e) = p.dec(&[first]);
    assert_eq!(s, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("already delivered"), "{e}");

    // A key recomputed from its parts: the held record taken from A as node
    // B would (B's certificate), B's transport key unsealed here, the QKD key
    // from the KME simulator, and the HKDF written again in Python.
    let (s, c) = p.enc(json!({ "number": 1, "size": 512 }));
    assert_eq!(s, 200, "{c}");
    let key_id = ids(&c)[0].clone();
    let delivered = B64.decode(c["keys"][0]["key"].as_str().unwrap()).unwrap();
    assert_eq!(delivered.len(), 64);
    let (ct, qkd) = take_held(&p, &key_id);
    assert_eq!(ct.len(), 1568);
    let seed = transport_seed(&p.b.state);
    let dk = qkeyd_pqc::PrivateKey::from_seed(qkeyd_pqc::Algorithm::MlKem1024, &seed).unwrap();
    let secret = dk.decapsulate(&ct).unwrap();
    let expected = python_kdf(&secret[..], &qkd, &key_id, "sae-a", "sae-b", 512, &ct);
    assert_eq!(
        hex::encode(&expected),
        hex::encode(&delivered),
        "the key is the documented KDF of its parts"
    );
    // A keeps a record until it expires (so a failed dec_keys can be asked
    // again); B makes the same key from it, once.
    let (s, d) = p.dec(&[&key_id]);
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["keys"][0]["key"].as_str(), Some(B64.encode(&delivered).as_str()));

    let certs = p.sim.certs.path();
    let as_b =
        tls_agent(&p.sim.ca(), Some((&certs.join("qkeyd-b.pem"), &certs.join("qkeyd-b.key"))));

    // 014's errors.
    for (body, what) in [
        (json!({ "number": 1, "size": 100 }), "size"),
        (json!({ "number": 1, "size": 16 }), "size"),
        (json!({ "number": 1, "size": 16384 }), "size"),
        (json!({ "number": 129 }), "number"),
        (json!({ "number": 0 }), "number"),
        (json!({ "number": 1, "additional_slave_SAE_IDs": ["sae-x"] }), "additional"),
        (json!({ "number": 1, "extension_mandatory": [{ "abc": 1 }] }), "extension"),
    ] {
        let (s, e) = p.enc(body.clone());
        assert_eq!(s, 400, "{body} -> {e}");
        assert!(e["message"].as_str().unwrap().contains(what), "{body} -> {e}");
    }
    let (s, e) = call(&p.sae_a, "POST", &Pair::url(&p.a, "/api/v1/keys/sae-b/enc_keys"), None);
    assert_eq!(s, 400, "not JSON: {e}");
    let (s, e) = call(
        &p.sae_a,
        "POST",
        &Pair::url(&p.a, "/api/v1/keys/sae-nobody/enc_keys"),
        Some(json!({})),
    );
    assert_eq!(s, 400, "{e}");
    // A certificate of another SAE (known to the CA, not to the node); none.
    let x = tls_agent(&p.sim.ca(), Some((&certs.join("sae-x.pem"), &certs.join("sae-x.key"))));
    let (s, e) = call(&x, "POST", &Pair::url(&p.a, "/api/v1/keys/sae-b/enc_keys"), Some(json!({})));
    assert_eq!(s, 401, "{e}");
    let anon = tls_agent(&p.sim.ca(), None);
    let (s, e) = call(&anon, "GET", &Pair::url(&p.a, "/api/v1/keys/sae-b/status"), None);
    assert_eq!(s, 401, "{e}");
    // An SAE on the peer API; a peer on the SAE API.
    let (s, e) = call(
        &p.sae_b,
        "POST",
        &Pair::url(&p.b, "/qkeyd/v1/peer/held"),
        Some(json!({ "key_IDs": [] })),
    );
    assert_eq!(s, 401, "{e}");
    assert!(message(&e).contains("the peer API is for peer nodes"), "{e}");
    let (s, _) =
        call(&as_b, "POST", &Pair::url(&p.a, "/api/v1/keys/sae-b/enc_keys"), Some(json!({})));
    assert_eq!(s, 401);
    // dec_keys for a key issued to another SAE: sae-b2 (also served by B)
    // asks for a key of sae-b.
    let (s, c) = p.enc(json!({ "number": 1 }));
    assert_eq!(s, 200, "{c}");
    let id = ids(&c)[0].clone();
    let b2 = tls_agent(&p.sim.ca(), Some((&certs.join("sae-b2.pem"), &certs.join("sae-b2.key"))));
    let (s, e) = call(
        &b2,
        "POST",
        &Pair::url(&p.b, "/api/v1/keys/sae-a/dec_keys"),
        Some(json!({ "key_IDs": [{ "key_ID": id }] })),
    );
    assert_eq!(s, 401, "a dec_keys by an SAE the key was not issued to: {e}");
    let (s, c) = p.dec(&[&id]);
    assert_eq!(s, 200, "the right SAE still gets it: {c}");

    let m = p.a.daemon.metrics();
    assert_eq!(metric(&m, "qkeyd_qkd_keys_delivered_total{side=\"enc\"}"), Some(1002.0), "{m}");
    assert!(
        metric(&m, "qkeyd_qkd_link_keys_total{kme=\"link\",outcome=\"usable\"}").unwrap() >= 1002.0,
        "{m}"
    );
    let m = p.b.daemon.metrics();
    assert_eq!(metric(&m, "qkeyd_qkd_keys_delivered_total{side=\"dec\"}"), Some(1002.0), "{m}");
}

/// Keys ask for until `pred` holds on an answer, at most `limit` requests.
fn enc_until(p: &Pair, limit: usize, pred: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    for _ in 0..limit {
        let (s, v) = p.enc(json!({ "number": 32 }));
        if pred(s, &v) {
            return (s, v);
        }
    }
    panic!("no such answer in {limit} requests")
}

/// Whether a 503's details name a key refused for `why`.
fn refused(v: &Value, why: &str) -> bool {
    v["details"].as_array().is_some_and(|d| d.iter().any(|x| x["refusal"] == why))
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

#[test]
fn qkd_faults_give_their_documented_answers() {
    let p = Pair::start("");
    // B's evidence does not pass A's policy (a soft sealer where it wants an
    // HSM): 503 naming the peer, and no QKD key is drawn for it. A reads the
    // policy again at its next try.
    let policy = p.a.state.parent().unwrap().join("peer-policy.toml");
    let good = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, good.replace("sealers = [\"soft\"]", "sealers = [\"hsm\"]")).unwrap();
    let (s, e) = p.enc(json!({ "number": 4 }));
    assert_eq!(s, 503, "{e}");
    assert!(message(&e).contains("peer node b's transport key is not trusted"), "{e}");
    assert!(e.to_string().contains("sealer"), "the failed check is named: {e}");
    let m = p.a.daemon.metrics();
    assert_eq!(
        metric(&m, "qkeyd_qkd_link_keys_total{kme=\"link\",outcome=\"usable\"}"),
        None,
        "{m}"
    );
    std::fs::write(&policy, good).unwrap();
    let (s, c) = p.enc(json!({ "number": 4 }));
    assert_eq!(s, 200, "{c}");

    // Stall: the KME does not answer within timeout_secs: 503, KME
    // unreachable; served again once it answers.
    let before = p.a.daemon.metrics();
    p.sim.fault(r#"{"mode": "stall", "seconds": 60, "then": "serve"}"#);
    let (s, e) = p.enc(json!({ "number": 1 }));
    assert_eq!(s, 503, "{e}");
    assert!(message(&e).contains("unreachable"), "{e}");
    let fired = super::scrapes::alerts_firing_on(&[&before, &p.a.daemon.metrics()]);
    assert!(fired.contains("QkeydQkdKmeErrors"), "{fired:?}");
    p.sim.fault(r#"{"mode": "none"}"#);
    let (s, c) = enc_until(&p, 5, |s, _| s == 200);
    assert_eq!(s, 200, "{c}");

    // A repeated key, a reused key_ID: the link refuses them.
    p.sim.fault(r#"{"mode": "repeat_key", "count": 1}"#);
    let (s, e) = enc_until(&p, 5, |s, _| s != 200);
    assert_eq!(s, 503, "{e}");
    assert!(refused(&e, "repeated_key"), "{e}");
    p.sim.fault(r#"{"mode": "key_id_reuse", "count": 1}"#);
    let (s, e) = enc_until(&p, 5, |s, _| s != 200);
    assert_eq!(s, 503, "{e}");
    assert!(refused(&e, "repeated_key_id"), "{e}");
    p.sim.fault(r#"{"mode": "none"}"#);

    // Drop after enc_keys: A delivered, the key never reached KME_B: B says 503
    // with the KME's refusal, and gives no key.
    p.sim.fault(r#"{"mode": "drop_after_enc"}"#);
    let (s, c) = p.enc(json!({ "number": 1 }));
    assert_eq!(s, 200, "{c}");
    let lost = ids(&c)[0].clone();
    let (s, e) = p.dec(&[&lost]);
    assert_eq!(s, 503, "{e}");
    assert!(message(&e).contains("KME") && e.to_string().contains("kme_status"), "{e}");
    p.sim.fault(r#"{"mode": "none"}"#);

    // Peer unreachable: A holds the ciphertext B needs; with A gone, B
    // answers 503 and delivers nothing.
    let (s, c) = p.enc(json!({ "number": 1 }));
    assert_eq!(s, 200, "{c}");
    let waiting = ids(&c)[0].clone();
    let Pair { a, b, sim, sae_b, .. } = p;
    drop(a);
    let url = format!("https://127.0.0.1:{}/api/v1/keys/sae-a/dec_keys", b.port);
    let (s, e) = call(&sae_b, "POST", &url, Some(json!({ "key_IDs": [{ "key_ID": waiting }] })));
    assert_eq!(s, 503, "{e}");
    assert!(message(&e).contains("peer node a is unreachable"), "{e}");
    drop((b, sim));
}

#[test]
fn a_biased_or_drifting_link_loses_trust_and_goes_out_of_use_before_its_health_tests_fire() {
    // Bits that are 1 with probability 0.57; bits whose bias grows by 10^-4
    // per key from none.
    for fault in [
        r#"{"mode": "bias", "p": 0.57}"#,
        r#"{"mode": "drift", "start": 0.5, "step": 0.0001, "max": 0.75}"#,
    ] {
        let p = Pair::start("");
        let (s, c) = p.enc(json!({ "number": 4 }));
        assert_eq!(s, 200, "{c}");
        p.sim.fault(fault);
        let started = Instant::now();
        let (s, e) = enc_until(&p, 400, |s, _| s == 503);
        assert_eq!(s, 503, "{fault}: {e}");
        assert!(message(&e).contains("out of use"), "{fault}: {e}");
        let m = p.a.daemon.metrics();
        let trust = metric(&m, "qkeyd_qkd_link_trust{kme=\"link\"}").unwrap();
        assert!(trust < 0.89, "{fault}: trust {trust}");
        assert_eq!(metric(&m, "qkeyd_qkd_link_out_of_use{kme=\"link\"}"), Some(1.0), "{m}");
        let fired = super::scrapes::alerts_firing_on(&[&m]);
        for alert in ["QkeydQkdLinkOutOfUse", "QkeydQkdLinkTrustLow"] {
            assert!(fired.contains(alert), "{fault}: {alert} not in {fired:?}");
        }
        let count = |o: &str| {
            metric(&m, &format!("qkeyd_qkd_link_keys_total{{kme=\"link\",outcome=\"{o}\"}}"))
                .unwrap_or(0.0)
        };
        assert_eq!((count("rct"), count("apt")), (0.0, 0.0), "{fault}: RCT/APT fired first: {m}");
        eprintln!(
            "{fault}: out of use after {:?} and {} usable keys, trust {trust}",
            started.elapsed(),
            count("usable")
        );
        // Still out of use: no key leaves while distrusted.
        let (s, e) = p.enc(json!({ "number": 1 }));
        assert_eq!(s, 503, "{fault}: {e}");
    }
}

#[test]
fn without_ml_kem_only_where_danger_says_so() {
    // [qkd.serve] without [attest] (no transport key) is refused unless
    // [danger] allows keys without ML-KEM.
    let sim = KmeSim::start_for(&["qkeyd-a", "qkeyd-b", "sae-a"]);
    let c = sim.certs.path();
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n\n\
         [qkd.kme.link]\nurl = \"https://127.0.0.1:{}\"\nca_file = \"{ca}\"\ncert_file = \"{c}/qkeyd-a.pem\"\n\
         key_file = \"{c}/qkeyd-a.key\"\nsae_id = \"qkeyd-a\"\npeers = [\"qkeyd-b\"]\n\n\
         [qkd.serve]\nlisten = \"127.0.0.1:{}\"\ncert_file = \"{c}/qkeyd-a.pem\"\nkey_file = \"{c}/qkeyd-a.key\"\n\
         client_ca = \"{ca}\"\nsaes = [\"sae-a\"]\n\n\
         [qkd.peer.b]\nurl = \"https://127.0.0.1:1\"\nca_file = \"{ca}\"\nidentity = \"cn:qkeyd-b\"\n\
         policy = \"/nonexistent\"\nkme = \"link\"\nkme_sae_id = \"qkeyd-b\"\nsaes = [\"sae-b\"]\n",
        sim.kme_a,
        free_port(),
        ca = sim.ca().display(),
        c = c.display(),
    );
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("q.toml");
        std::fs::write(&path, text).unwrap();
        let out =
            Command::new(qkeyd_e2e::qkeyd_bin()).arg("check-config").arg(&path).output().unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, text) = check(&config);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("needs [attest]") && text.contains("qkd_without_ml_kem"), "{text}");
    let (code, text) = check(&format!("{config}\n[danger]\nqkd_without_ml_kem = true\n"));
    assert_eq!(code, Some(0), "{text}");
    drop(sim);

    // Both nodes say so: QKD-only keys, equal at both ends, and the HKDF of
    // the QKD key alone.
    let danger = "\n[danger]\nqkd_without_ml_kem = true\n";
    let p = Pair::start(danger);
    assert!(
        p.a.daemon.log().contains("DANGER: [danger] qkd_without_ml_kem"),
        "{}",
        p.a.daemon.log()
    );
    let (s, st) = call(&p.sae_a, "GET", &Pair::url(&p.a, "/api/v1/keys/sae-b/status"), None);
    assert_eq!(s, 200, "{st}");
    assert_eq!(st["status_extension"]["qkeyd_combiner"], "qkd-only-hkdf-sha256", "{st}");
    let (s, c) = p.enc(json!({ "number": 2 }));
    assert_eq!(s, 200, "{c}");
    let got = ids(&c);
    let (s, d) = p.dec(&[&got[0], &got[1]]);
    assert_eq!(s, 200, "{d}");
    assert_eq!(c["keys"], d["keys"]);
    // A key recomputed from its parts: no ciphertext, the QKD key alone.
    let (s, c) = p.enc(json!({ "number": 1 }));
    assert_eq!(s, 200, "{c}");
    let key_id = ids(&c)[0].clone();
    let (ct, qkd) = take_held(&p, &key_id);
    assert!(ct.is_empty(), "no ML-KEM ciphertext");
    let expected = python_kdf(&[], &qkd, &key_id, "sae-a", "sae-b", 256, &[]);
    assert_eq!(B64.encode(expected), c["keys"][0]["key"].as_str().unwrap());
    drop(p);

    // Only A says so: B refuses A's QKD-only keys.
    let p = Pair::start_each(danger, "");
    let (s, c) = p.enc(json!({ "number": 1 }));
    assert_eq!(s, 200, "{c}");
    let (s, e) = p.dec(&[&ids(&c)[0]]);
    assert_eq!(s, 503, "{e}");
    assert!(message(&e).contains("another combiner"), "{e}");
    assert_eq!(e["details"][0]["peer_combiner"], "qkd-only-hkdf-sha256", "{e}");
}

/// Run a third-party client; its exit code and whole output.
fn client(program: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (pip install etsi-qkd-014-client qkdsec[cli]): {e}"));
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("$ {program} {}\n{text}", args.join(" "));
    (out.status.code(), text)
}

#[test]
fn third_party_gs_qkd_014_clients_get_hybrid_keys() {
    let p = Pair::start("");
    let certs = p.sim.certs.path();
    let (ca, a_host, b_host) =
        (p.sim.ca(), format!("127.0.0.1:{}", p.a.port), format!("127.0.0.1:{}", p.b.port));
    let pem = |n: &str| certs.join(format!("{n}.pem")).display().to_string();
    let key = |n: &str| certs.join(format!("{n}.key")).display().to_string();
    let ca = ca.display().to_string();
    let (sae_a, sae_a_key, sae_b, sae_b_key) =
        (pem("sae-a"), key("sae-a"), pem("sae-b"), key("sae-b"));
    let a_args = ["-H", &a_host, "-c", &sae_a, "-k", &sae_a_key, "-r", &ca];
    let b_args = ["-H", &b_host, "-c", &sae_b, "-k", &sae_b_key, "-r", &ca];

    // PyPI's etsi-qkd-014-client: status and a key at A, the same key at B.
    let (code, text) = client("qkd014-client", &[&a_args[..], &["get_status", "sae-b"]].concat());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("sae-a") && text.contains("sae-b") && text.contains("KME_A"), "{text}");
    let (code, text) = client("qkd014-client", &[&a_args[..], &["get_key", "sae-b"]].concat());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("Response code : 200"), "{text}");
    let (key_id, key) = (field(&text, "Key id"), field(&text, "Key"));
    assert_eq!(B64.decode(&key).unwrap().len(), 32, "{text}");
    let (code, text) =
        client("qkd014-client", &[&b_args[..], &["get_key_with_id", &key_id, "sae-a"]].concat());
    assert_eq!(code, Some(0), "{text}");
    assert_eq!((field(&text, "Key id"), field(&text, "Key")), (key_id, key), "the same key at B");

    // qkdsec's GS QKD 014 conformance probe, against A with sae-a's
    // certificate. Every probe passes but two, where qkdsec and GS QKD 014
    // v1.1.1 disagree: `dec_keys_roundtrip` asks the same KME, with the
    // master's own certificate, for the key it just took, naming the slave
    // where 014 §5.4 puts the master SAE id (`…/{master_SAE_ID}/dec_keys`);
    // a key is for its slave SAE, so that is refused (400, unknown key_ID:
    // no such key was issued by sae-b). And `error_contract_404` expects 404
    // for an unknown key_ID, where 014 answers dec_keys with 200, 400, 401
    // or 503 only.
    let url = format!("https://{a_host}");
    let args =
        ["doctor", &url, "-s", "sae-b", "--cert", &sae_a, "--key", &sae_a_key, "--ca-cert", &ca];
    let (_, text) = client("qkdsec", &args);
    assert!(text.contains("8 pass"), "{text}");
    let (code, text) = client("qkdsec", &[&args[..], &["-f", "json"]].concat());
    assert_eq!(code, Some(1), "qkdsec's verdict is non-conformant for the two probes: {text}");
    let report: Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    let mut other: Vec<(String, String)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] != "pass")
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r["status"].as_str().unwrap().to_owned()))
        .collect();
    other.sort();
    assert_eq!(
        other,
        [
            ("dec_keys_roundtrip".to_owned(), "fail".to_owned()),
            ("error_contract_404".to_owned(), "warn".to_owned())
        ],
        "{report}"
    );
    let round = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "dec_keys_roundtrip")
        .unwrap();
    assert!(round["summary"].as_str().unwrap().contains("HTTP 400: unknown key_ID"), "{round}");
    assert_eq!(report["counts"]["pass"], 8, "{report}");
}

/// The value of a `NAME : VALUE` line of qkd014-client's output.
fn field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| {
            l.split_once(" : ").filter(|(k, _)| k.trim() == name).map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn a_ciphertext_for_a_replaced_transport_key_gives_no_key_not_a_wrong_one() {
    // A caches B's transport key (verified evidence) for minutes. B then
    // restarts with a new transport key under the same identity: A's next
    // keys are encapsulated to the old one, which B's ML-KEM would open to
    // a different secret without an error. The key confirmation makes B
    // refuse them.
    let p = Pair::start("");
    let (s, c) = p.enc(json!({ "number": 2 }));
    assert_eq!(s, 200, "{c}");
    let got = ids(&c);
    let (s, d) = p.dec(&[&got[0], &got[1]]);
    assert_eq!((s, &c["keys"]), (200, &d["keys"]), "{d}");

    let Pair { sim, a, b, sae_a, sae_b } = p;
    let port = b.port;
    let dir = b.daemon.kill();
    std::fs::remove_file(dir.path().join("state/kms/cluster-transport")).unwrap();
    let config = std::fs::read_to_string(dir.path().join("qkeyd.toml")).unwrap();
    let daemon = qkeyd_e2e::Daemon::start_in(dir, &config);
    daemon.wait_log("the GS QKD 014 server", std::time::Duration::from_secs(30), |l| {
        l.contains("GS QKD 014 server listening")
    });
    let b = qkeyd_e2e::qkd::Node { daemon, port, state: b.state };
    let p = Pair { sim, a, b, sae_a, sae_b };
    assert!(p.b.daemon.log().contains("made the transport key"), "{}", p.b.daemon.log());

    let (s, c) = p.enc(json!({ "number": 1 }));
    assert_eq!(s, 200, "A still encapsulates to the key it verified: {c}");
    let (s, e) = p.dec(&[&ids(&c)[0]]);
    assert_eq!(s, 503, "{e}");
    assert!(message(&e).contains("does not open to the same secret"), "{e}");
    assert!(e["details"][0]["key_ID"] == c["keys"][0]["key_ID"], "{e}");
}
