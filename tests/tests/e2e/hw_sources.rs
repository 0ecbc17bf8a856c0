use std::time::Duration;

use qkeyd_e2e::{Daemon, HSM_LABEL, HSM_PIN, SoftHsm, metric};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// The source passed start-up, its samples went through the continuous tests
/// and at least two drift windows, it is fully trusted, and it seeded a draw.
fn check_scored(d: &Daemon, name: &str, kind: &str) -> Value {
    let h = d.wait_health("two drift windows", WAIT, |h| {
        h["pool"]["sources"][0]["drift_windows"].as_u64() >= Some(2)
    });
    let src = &h["pool"]["sources"][0];
    eprintln!("{kind} source: {src}");
    assert_eq!(src["name"], name);
    assert_eq!(src["kind"], kind);
    assert_eq!(src["state"], "healthy", "{src}");
    assert!(src["startups_passed"].as_u64() >= Some(1), "{src}");
    assert!(src["samples"].as_u64() >= Some(2 * 8192 + 1024), "{src}");
    assert_eq!(src["rct_failures"], 0);
    assert_eq!(src["apt_failures"], 0);
    assert!(src["trust_score"].as_f64().unwrap() >= 0.95, "{src}");
    // MCV's 99 % lower bound on 8192 uniform bytes is about 6.9 bits.
    assert!(src["window_h_estimate"].as_f64().unwrap() > 6.5, "{src}");
    let r = d.get("/v1/random?bytes=64&format=hex");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.entropy.as_deref(), Some("sources"));
    let h = d.health();
    let log = h["pool"]["drbg"]["seed_log"].as_array().unwrap();
    assert!(log.iter().any(|s| s["source"] == name), "seeded from {name}: {log:?}");
    let m = d.metrics();
    let series = format!("qkeyd_source_state{{source=\"{name}\",state=\"healthy\"}}");
    assert_eq!(metric(&m, &series), Some(1.0), "{m}");
    h["pool"]["sources"][0].clone()
}

/// An HSM's C_GenerateRandom as a source, on SoftHSM2, beside the HSM sealer on
/// the same module and token in the same process: both work.
#[test]
fn pkcs11_source_on_softhsm_beside_the_hsm_sealer() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, HSM_PIN).unwrap();
    let config = format!(
        "[[source]]\nname = \"hsm-rng\"\nkind = \"pkcs11\"\nmodule = \"{}\"\n\
         token_label = \"{HSM_LABEL}\"\n{}",
        hsm.module.display(),
        hsm.keys_config(&pin)
    );
    let state = dir.path().join("state");
    let d = Daemon::start_with(dir, &config, &state, &[hsm.env()]);
    let src = check_scored(&d, "hsm-rng", "pkcs11");
    assert_eq!(src["identity"], format!("pkcs11:{}#{HSM_LABEL}", hsm.module.display()));
    // Both opened the module at once: neither lost its session to the other's
    // C_Initialize (the source's would show as a disconnect, the sealer's as
    // a refused key below).
    assert_eq!(src["disconnects"], 0, "{src}");
    // The sealer on the same library: a key made and used.
    let (s, k) = d.keys("POST", "/v1/keys", Some(json!({ "alg": "ML-KEM-768", "label": "k" })));
    assert_eq!(s, 201, "{k}\n{}", d.log());
    let id = k["id"].as_str().unwrap();
    let (s, e) = d.keys("POST", &format!("/v1/keys/{id}/encapsulate"), Some(json!({})));
    assert_eq!(s, 200, "{e}");
    assert_eq!(d.source("hsm-rng")["state"], "healthy");
}

/// A TPM's TPM2_GetRandom (64 bytes a call) as a source, on swtpm, beside the
/// TPM sealer on the same TPM. When the TPM goes away the source is
/// unavailable and the pool fails closed; when it comes back the source passes
/// a fresh start-up test and serves again, without a restart.
#[cfg(feature = "tpm")]
#[test]
fn tpm_source_on_swtpm_vanishes_and_comes_back() {
    use qkeyd_e2e::Swtpm;
    let mut tpm = Swtpm::start();
    let d = Daemon::start(&format!(
        "[[source]]\nname = \"tpm-rng\"\nkind = \"tpm\"\ntcti = \"{0}\"\n\
         [keys]\nsealer = \"tpm\"\n[keys.tpm]\ntcti = \"{0}\"\n",
        tpm.tcti()
    ));
    let src = check_scored(&d, "tpm-rng", "tpm");
    assert_eq!(src["identity"], tpm.tcti());
    let (s, k) = d.keys("POST", "/v1/keys", Some(json!({ "alg": "ML-DSA-65", "label": "k" })));
    assert_eq!(s, 201, "{k}\n{}", d.log());

    tpm.stop();
    d.wait_health("the TPM source to be unavailable", WAIT, |h| {
        h["pool"]["sources"][0]["state"] == "unavailable"
    });
    assert_eq!(d.get("/v1/random?bytes=32").status, 503);
    tpm.restart();
    let h = d.wait_health("the TPM source to come back", WAIT, |h| {
        h["pool"]["sources"][0]["state"] == "healthy"
    });
    let src = &h["pool"]["sources"][0];
    assert_eq!(src["disconnects"], 1, "{src}");
    assert_eq!(src["startups_passed"], 2, "a fresh start-up test after the return: {src}");
    assert_eq!(d.get("/v1/random?bytes=32").status, 200);
    assert!(d.log().contains("entropy source unavailable"));
}
