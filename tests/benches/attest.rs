//! Attestation cost, next to the raw TPM2_Quote on the same swtpm in the
//! same run:
//!
//! ```text
//! cargo bench -p qkeyd-e2e --bench attest --features tpm
//! ```
//!
//! Rounds alternate: a raw quote through the driver (connect, quote, read
//! the PCRs: what the daemon's evidence needs from the TPM), then
//! `POST /v1/keys/{id}/attest` on a daemon over the same TPM (the daemon
//! signs the statement with ML-DSA-87 and quotes). The goal is attest ≤
//! quote + 2 ms at the median. Then the verifier alone: documents verified
//! per second on one core. Release build; results go in BENCHMARKS.md.
#![allow(clippy::unwrap_used)]

#[cfg(feature = "tpm")]
fn main() {
    use std::time::{Duration, Instant};

    use base64::Engine as _;
    use qkeyd_attest::{Policy, VerifierState, verify};
    use qkeyd_drivers::attest::{AttestConfig, TpmAttester};
    use qkeyd_e2e::{Daemon, Swtpm};
    use serde_json::json;

    let t = Swtpm::start();
    let d = Daemon::start(&format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n[keys]\nsealer = \"tpm\"\n[keys.tpm]\n\
         tcti = \"{}\"\n[attest]\n",
        t.tcti()
    ));
    let (status, key) = d.keys("POST", "/v1/keys", Some(json!({ "alg": "ml-kem-768" })));
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().unwrap().to_owned();
    let identity = d.keys("GET", "/v1/attest/identity", None).1;
    let (raw, _) = TpmAttester::open(AttestConfig {
        tcti: t.tcti(),
        ak_handle: 0x8101_0A7E,
        pcrs: (0..8).collect(),
    })
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut quote_ms = Vec::new();
    let mut attest_ms = Vec::new();
    let mut docs = Vec::new();
    for i in 0..200u32 {
        let mut nonce = [0u8; 32];
        nonce[..4].copy_from_slice(&i.to_be_bytes());
        let t0 = Instant::now();
        raw.quote(&nonce).unwrap();
        quote_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let t0 = Instant::now();
        let (status, ev) = d.keys(
            "POST",
            &format!("/v1/keys/{id}/attest"),
            Some(json!({ "nonce": b64.encode(nonce) })),
        );
        attest_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200, "{ev}");
        docs.push((serde_json::to_vec(&ev).unwrap(), nonce));
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    let (q50, q99) = (pct(&mut quote_ms, 0.5), pct(&mut quote_ms, 0.99));
    let (a50, a99) = (pct(&mut attest_ms, 0.5), pct(&mut attest_ms, 0.99));
    println!("| raw TPM2_Quote (driver, swtpm), 200 rounds | {q50:.2} | {q99:.2} |");
    println!("| POST /v1/keys/{{id}}/attest, same rounds | {a50:.2} | {a99:.2} |");
    println!("| attest − quote, medians | {:.2} ms (goal ≤ 2 ms) | |", a50 - q50);

    let mut policy = Policy {
        trusted_ak_names: vec![hex::decode(identity["tpm"]["ak_name"].as_str().unwrap()).unwrap()],
        ..Policy::default()
    };
    policy.max_age_secs = 3600;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < Duration::from_secs(3) {
        let (doc, nonce) = &docs[n % docs.len()];
        let mut state = VerifierState::default();
        verify(doc, nonce, &policy, &mut state, now).unwrap_or_else(|f| {
            panic!("{}: {}", f.check.name(), f.detail);
        });
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!("| verify (qkeyd-attest), one thread | {rate:.0} documents/s | |");

    // Gateway keys, one client after another: each is a fresh trusted
    // draw, an ML-KEM-768 encapsulation, a signature and a quote.
    let mut seed = [0u8; 64];
    getrandom::fill(&mut seed).unwrap();
    let recipient = qkeyd_pqc::PrivateKey::from_seed(qkeyd_pqc::Algorithm::MlKem768, &seed)
        .unwrap()
        .public_key();
    let start = Instant::now();
    let mut n = 0u32;
    let mut ms = Vec::new();
    while start.elapsed() < Duration::from_secs(5) {
        let mut nonce = [0u8; 32];
        nonce[..4].copy_from_slice(&n.to_be_bytes());
        let t0 = Instant::now();
        let (status, body) = d.keys(
            "POST",
            "/v1/gateway/keys",
            Some(json!({
                "recipient": b64.encode(&recipient),
                "nonce": b64.encode(nonce),
                "length": 32,
                "purpose": "bench",
            })),
        );
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200, "{body}");
        n += 1;
    }
    let rate = f64::from(n) / start.elapsed().as_secs_f64();
    let (g50, g99) = (pct(&mut ms, 0.5), pct(&mut ms, 0.99));
    println!(
        "| POST /v1/gateway/keys, one client | {rate:.0} keys/s | p50 {g50:.2} / p99 {g99:.2} ms |"
    );
}

#[cfg(not(feature = "tpm"))]
fn main() {
    eprintln!("the attestation bench needs --features tpm (swtpm)");
}
