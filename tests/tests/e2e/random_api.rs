use base64::Engine;
use qkeyd_e2e::{Daemon, metric};

#[test]
fn default_config_serves_random_in_every_format() {
    let d = Daemon::start_default();
    let hex = d.get("/v1/random?bytes=32&format=hex");
    assert_eq!(hex.status, 200, "{}", hex.text());
    assert_eq!(hex.entropy.as_deref(), Some("sources"));
    let text = hex.text();
    assert_eq!(text.trim_end().len(), 64);
    assert!(hex::decode(text.trim_end()).is_ok());

    let raw = d.get("/v1/random?bytes=1000&format=raw");
    assert_eq!(raw.status, 200);
    assert_eq!(raw.content_type, "application/octet-stream");
    assert_eq!(raw.body.len(), 1000);

    let b64 = d.get("/v1/random?bytes=48&format=base64");
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64.text().trim_end()).unwrap();
    assert_eq!(decoded.len(), 48);

    // The maximum (1 MiB by default) is served; two draws differ.
    let a = d.get("/v1/random?bytes=1048576&format=raw");
    let b = d.get("/v1/random?bytes=1048576&format=raw");
    assert_eq!(a.body.len(), 1 << 20);
    assert_ne!(a.body, b.body);

    let h = d.health();
    assert_eq!(h["pool"]["mode"], "fail-closed");
    assert_eq!(h["pool"]["serving"], "sources");
    assert_eq!(h["pool"]["sources"][0]["kind"], "os");
    assert_eq!(h["pool"]["sources"][0]["state"], "healthy");
    assert_eq!(h["pool"]["sources"][0]["rct_cutoff"], 4);
    assert_eq!(h["pool"]["sources"][0]["apt_cutoff"], 18);
    assert!(h["pool"]["drbg"]["reseed_counter"].as_u64().unwrap() >= 1);
    assert!(h["pool"]["drbg"]["seed_age_secs"].as_f64().is_some());
    assert_eq!(d.get("/healthz").status, 200);
    assert_eq!(d.get("/readyz").json()["ready"], true);

    let m = d.metrics();
    let served = metric(&m, "qkeyd_random_bytes_served_total{serving=\"sources\"}").unwrap();
    assert_eq!(served, (32 + 1000 + 48 + 2 * (1 << 20)) as f64);
    assert_eq!(metric(&m, "qkeyd_source_state{source=\"os\",state=\"healthy\"}"), Some(1.0));
    assert!(metric(&m, "qkeyd_source_samples_total{source=\"os\"}").unwrap() >= 1024.0);
}

#[test]
fn bad_input_gets_a_json_error_and_the_daemon_keeps_serving() {
    let mut d = Daemon::start_default();
    let cases: &[(&str, u16, &str)] = &[
        ("/v1/random?bytes=abc", 400, "whole number"),
        ("/v1/random?bytes=-5", 400, "whole number"),
        ("/v1/random?bytes=0", 400, "from 1"),
        ("/v1/random?bytes=1.5", 400, "whole number"),
        ("/v1/random?bytes=", 400, "whole number"),
        ("/v1/random?bytes=1048577", 413, "exceeds the maximum"),
        ("/v1/random?bytes=99999999999999999999999999999999", 413, "exceeds the maximum"),
        ("/v1/random?format=binary", 400, "not one of raw, hex, base64"),
        ("/v1/random?format=", 400, "not one of"),
        ("/v1/random?bytes=8&bytes=9", 400, "duplicate"),
        ("/v1/random?count=8", 400, "unknown field"),
        ("/v1/random?bytes=%ff%fe", 400, ""),
        ("/v1/nothing", 404, "no such route"),
    ];
    for (path, status, needle) in cases {
        let r = d.get(path);
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        assert!(r.content_type.starts_with("application/json"), "{path}: {}", r.content_type);
        let e = r.json();
        assert_eq!(e["error"]["status"], *status);
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{path}: {msg}");
    }
    let r = d.request("POST", "/v1/random?bytes=8");
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    // Still serving.
    assert!(d.alive());
    assert_eq!(d.get("/v1/random?bytes=16").status, 200);
    let m = d.metrics();
    assert_eq!(metric(&m, "qkeyd_random_requests_total{status=\"400\"}"), Some(10.0));
    assert_eq!(metric(&m, "qkeyd_random_requests_total{status=\"413\"}"), Some(2.0));
    // Caller input is not logged above debug level.
    assert!(!d.log().contains("abc"), "{}", d.log());
}

#[test]
fn listen_flag_overrides_config_and_default_is_loopback() {
    let d = Daemon::start("listen = \"127.0.0.1:1\"\n[[source]]\nname = \"os\"\nkind = \"os\"\n");
    assert!(d.addr.ip().is_loopback());
    assert_ne!(d.addr.port(), 1, "--listen 127.0.0.1:0 won over the config");
    assert_eq!(d.get("/v1/random?bytes=4").status, 200);
}
