use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use qkeyd_e2e::{Daemon, metric};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn state(h: &Value, name: &str) -> String {
    h["pool"]["sources"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// A simulated QRNG sticks at sample STUCK. The RCT must trip within its
/// cutoff, and no seed the DRBG ever took from that source may contain a
/// sample at or after the fault: the daemon's seed log is polled often enough
/// to see every seed, while requests keep the DRBG reseeding on every call.
#[test]
fn stuck_source_is_quarantined_within_rct_cutoff_and_never_seeds_after() {
    const STUCK: u64 = 6000;
    let d = Daemon::start(&format!(
        r#"
        [pool]
        reseed_interval_requests = 1
        [[source]]
        name = "stuck"
        kind = "sim"
        seed = 11
        [[source.schedule]]
        after_samples = {STUCK}
        fault = "stuck"
        value = 170
        [[source]]
        name = "good"
        kind = "sim"
        seed = 12
        [danger]
        allow_sim_sources = true
        "#
    ));
    let mut seen: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    let h = loop {
        for _ in 0..8 {
            let r = d.get("/v1/random?bytes=32");
            assert!(r.status == 200 || r.status == 503, "{}", r.text());
        }
        let h = d.health();
        for rec in h["pool"]["drbg"]["seed_log"].as_array().unwrap() {
            let src = rec["source"].as_str().unwrap().to_owned();
            let first = rec["first_sample"].as_u64().unwrap();
            seen.insert((src, first), rec["last_sample"].as_u64().unwrap());
        }
        if state(&h, "stuck") == "failed" {
            break h;
        }
        assert!(Instant::now() < deadline, "stuck source never failed: {h:#}");
    };
    let stuck =
        h["pool"]["sources"].as_array().unwrap().iter().find(|s| s["name"] == "stuck").unwrap();
    let cutoff = stuck["rct_cutoff"].as_u64().unwrap();
    let first = &stuck["failures"][0];
    assert_eq!(first["test"], "rct");
    assert_eq!(first["severity"], "intermittent");
    let at = first["sample"].as_u64().unwrap();
    eprintln!("stuck at sample {STUCK}: RCT tripped at sample {at} (cutoff {cutoff})");
    assert!(
        at >= STUCK && at - STUCK < cutoff,
        "tripped at {at}, fault at {STUCK}, cutoff {cutoff}"
    );
    assert_eq!(stuck["last_failure"]["severity"], "permanent");

    // One snapshot counts a source's seeds and logs them under one lock, so
    // the seeds seen in the polls account for every seed it took.
    let used = stuck["seeds_used"].as_u64().unwrap();
    let from_stuck: Vec<_> = seen.iter().filter(|((s, _), _)| s == "stuck").collect();
    assert!(!from_stuck.is_empty(), "the stuck source seeded the DRBG before its fault");
    assert_eq!(used, from_stuck.len() as u64, "every seed was seen");
    for ((_, first), last) in &from_stuck {
        assert!(**last < STUCK, "seed from samples {first}..={last} reaches the fault at {STUCK}");
    }
    // The healthy source keeps the pool serving.
    assert_eq!(h["pool"]["serving"], "sources");
    // Seeds taken after the failure come from the healthy source (at reseed
    // interval 1, this request takes a new one).
    assert_eq!(d.get("/v1/random?bytes=32").status, 200);
    let after = d.health();
    let last = after["pool"]["drbg"]["seed_log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["source"], "good");
    assert!(d.log().contains("health test failure"));
}

/// A source whose top three bits stick at zero (32 symbols for a claim of 8
/// bits per sample) trips the APT within the first window after the onset.
#[test]
fn biased_source_trips_apt_within_one_window() {
    // Windows start at sample 0 and are 1024 long; the bias starts on a boundary.
    const ONSET: u64 = 8 * 1024;
    let d = Daemon::start(&format!(
        r#"
        [pool]
        reseed_interval_requests = 1
        [[source]]
        name = "biased"
        kind = "sim"
        seed = 21
        [[source.schedule]]
        after_samples = {ONSET}
        fault = "bias"
        keep_bits = 5
        [danger]
        allow_sim_sources = true
        "#
    ));
    let h = d.wait_health("an APT failure", WAIT, |h| {
        // Requests make the source read on; the seed channel holds it back otherwise.
        // 1 MiB = 16 generate calls, each reseeding at interval 1.
        let _ = d.get("/v1/random?bytes=1048576&format=raw");
        h["pool"]["sources"][0]["failures"].as_array().is_some_and(|f| !f.is_empty())
    });
    let src = &h["pool"]["sources"][0];
    let first = &src["failures"][0];
    assert_eq!(first["test"], "apt", "{src:#}");
    let at = first["sample"].as_u64().unwrap();
    let window = src["apt_window"].as_u64().unwrap();
    eprintln!("bias from sample {ONSET}: APT tripped at sample {at} (window {window})");
    assert!(at >= ONSET && at < ONSET + window, "APT tripped at {at}, onset {ONSET}");
    assert_eq!(src["rct_failures"], 0);
}

/// A source stuck from its first sample, with or without `[danger] os_fallback`.
pub(crate) fn dead_source(fallback: bool) -> String {
    format!(
        r#"
        [[source]]
        name = "dead"
        kind = "sim"
        seed = 31
        [[source.schedule]]
        after_samples = 0
        fault = "stuck"
        value = 7
        [danger]
        os_fallback = {fallback}
        allow_sim_sources = true
        "#
    )
}

#[test]
fn fail_closed_answers_503_when_every_source_failed() {
    let d = Daemon::start(&dead_source(false));
    d.wait_health("the source to fail", WAIT, |h| state(h, "dead") == "failed");
    let r = d.get("/v1/random?bytes=32");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "entropy_unavailable");
    let ready = d.get("/readyz");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["ready"], false);
    let h = d.health();
    assert_eq!(h["pool"]["mode"], "fail-closed");
    assert_eq!(h["pool"]["serving"], Value::Null);
    let m = d.metrics();
    assert_eq!(metric(&m, "qkeyd_entropy_serving{mode=\"none\"}"), Some(1.0));
    assert_eq!(metric(&m, "qkeyd_entropy_fail_closed"), Some(1.0));
    assert_eq!(metric(&m, "qkeyd_source_state{source=\"dead\",state=\"failed\"}"), Some(1.0));
    assert!(
        metric(&m, "qkeyd_health_failures_total{source=\"dead\",test=\"rct\"}").unwrap() >= 1.0
    );
    assert_eq!(metric(&m, "qkeyd_random_bytes_served_total{serving=\"sources\"}"), None);
}

#[test]
fn fallback_mode_serves_from_the_os_and_says_so() {
    let d = Daemon::start(&dead_source(true));
    assert!(d.log().contains("DANGER"), "the dangerous option is announced");
    d.wait_health("the source to fail", WAIT, |h| state(h, "dead") == "failed");
    let r = d.get("/v1/random?bytes=32&format=hex");
    assert_eq!(r.status, 200);
    assert_eq!(r.entropy.as_deref(), Some("os-fallback"));
    let ready = d.get("/readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["serving"], "os-fallback");
    let h = d.health();
    assert_eq!(h["pool"]["mode"], "os-fallback");
    assert_eq!(h["pool"]["serving"], "os-fallback");
    assert_eq!(h["pool"]["drbg"]["seeded_by"], "os-fallback");
    let m = d.metrics();
    assert_eq!(metric(&m, "qkeyd_entropy_serving{mode=\"os-fallback\"}"), Some(1.0));
    assert_eq!(metric(&m, "qkeyd_entropy_fail_closed"), Some(0.0));
    assert_eq!(metric(&m, "qkeyd_random_bytes_served_total{serving=\"os-fallback\"}"), Some(32.0));
}

/// A device that vanishes for a while and short reads: the source goes
/// unavailable, comes back through a fresh start-up test, and serves again.
#[test]
fn vanishing_sim_comes_back_without_restart() {
    let d = Daemon::start(
        r#"
        [pool]
        reseed_interval_requests = 1
        [[source]]
        name = "flaky"
        kind = "sim"
        seed = 41
        [[source.schedule]]
        after_samples = 3000
        fault = "short-reads"
        max = 7
        [[source.schedule]]
        after_samples = 4000
        fault = "vanish"
        for_ms = 400
        [danger]
        allow_sim_sources = true
        "#,
    );
    d.wait_health("the device to vanish", WAIT, |h| {
        let _ = d.get("/v1/random?bytes=32");
        state(h, "flaky") == "unavailable"
    });
    assert_eq!(d.get("/v1/random?bytes=32").status, 503);
    let h = d.wait_health("the device to come back", WAIT, |h| state(h, "flaky") == "healthy");
    let src = &h["pool"]["sources"][0];
    assert_eq!(src["disconnects"], 1);
    assert_eq!(src["startups_passed"], 2, "a fresh start-up test after the return");
    assert_eq!(src["rct_failures"], 0);
    assert_eq!(d.get("/v1/random?bytes=32").status, 200);
}

/// A source whose bias grows slowly (P(0) from 1/256 toward 25% over 1M
/// samples) loses trust and leaves the pool before its RCT or APT fires, and
/// comes back only after a fresh, healthy assessment once the bias is gone.
#[test]
fn slow_drift_loses_trust_before_health_tests_fire() {
    let d = Daemon::start(
        r#"
        [pool]
        reseed_interval_requests = 1
        [health]
        assessment_samples = 65536
        assessment_interval_secs = 1
        [[source]]
        name = "drifty"
        kind = "sim"
        seed = 51
        [[source.schedule]]
        after_samples = 20000
        fault = "drift"
        value = 0
        to_p = 0.25
        over_samples = 1000000
        [[source.schedule]]
        after_samples = 90000
        fault = "none"
        [danger]
        allow_sim_sources = true
        "#,
    );
    let h = d.wait_health("trust to fall", WAIT, |h| {
        let _ = d.get("/v1/random?bytes=1048576&format=raw");
        h["pool"]["sources"][0]["distrusted_at_sample"].is_u64()
    });
    let src = &h["pool"]["sources"][0];
    let at = src["distrusted_at_sample"].as_u64().unwrap();
    eprintln!("drift from sample 20000: distrusted at sample {at}; failures {}", src["failures"]);
    assert!(at > 20000 && at < 90000, "distrusted at {at}");
    // Any RCT/APT failure of the drift phase came after trust was lost.
    for f in src["failures"].as_array().unwrap() {
        assert!(f["sample"].as_u64().unwrap() > at, "health test fired first: {f}");
    }
    // Healthy again from sample 90000: back after 8 clean windows and a full
    // assessment of samples taken since they began.
    let h = d.wait_health("trust to come back", WAIT, |h| {
        let _ = d.get("/v1/random?bytes=32");
        h["pool"]["sources"][0]["state"] == "healthy"
    });
    let src = &h["pool"]["sources"][0];
    assert!(src["trust_score"].as_f64().unwrap() >= 0.95, "{src}");
    // The assessment's samples are recorded while the clean windows run.
    assert!(src["samples"].as_u64().unwrap() >= 90000 + 8 * 8192, "{src}");
    let full = &src["last_full_assessment"];
    eprintln!("recovery assessment: {full}");
    assert_eq!(full["fresh"], true, "{src}");
    assert_eq!(full["passed"], true, "{src}");
    assert_eq!(full["samples"], 65536);
    assert!(full["h_assessed"].as_f64().unwrap() >= full["floor"].as_f64().unwrap());
    assert!(src["full_assessments"].as_u64().unwrap() >= 1);
    let m = d.metrics();
    assert!(metric(&m, "qkeyd_source_trust{source=\"drifty\"}").unwrap() >= 0.95);
    assert!(d.log().contains("entropy source distrusted"));
    assert!(d.log().contains("trusted again"));
    assert!(d.log().contains("full entropy assessment passed"));
    let passed =
        metric(&m, "qkeyd_source_full_assessments_total{result=\"pass\",source=\"drifty\"}");
    assert!(passed.unwrap() >= 1.0, "{m}");
}

/// A healthy source is assessed in full periodically: the result shows in
/// /v1/health and the metrics, and the credited entropy per sample becomes
/// min(claim, assessment), while every seed still carries ≥ 448 bits.
#[test]
fn periodic_full_assessment_sets_the_credited_entropy() {
    let d = Daemon::start(
        r#"
        [pool]
        reseed_interval_requests = 1
        [health]
        assessment_samples = 65536
        assessment_interval_secs = 1
        [[source]]
        name = "steady"
        kind = "sim"
        seed = 77
        claimed_h = 7.9
        [danger]
        allow_sim_sources = true
        "#,
    );
    let h = d.wait_health("two full assessments", WAIT, |h| {
        let _ = d.get("/v1/random?bytes=32");
        h["pool"]["sources"][0]["full_assessments"].as_u64() >= Some(2)
    });
    let src = &h["pool"]["sources"][0];
    let full = &src["last_full_assessment"];
    eprintln!("{full}");
    assert_eq!(full["passed"], true, "{src}");
    assert_eq!(src["full_assessments_failed"], 0);
    let assessed = full["h_assessed"].as_f64().unwrap();
    assert!(assessed > 5.9 && assessed <= 8.0, "{full}");
    assert_eq!(full["credited_h"].as_f64().unwrap(), assessed.min(7.9));
    assert_eq!(src["state"], "healthy");
    // Seeds made after the assessment are accounted at the credited rate.
    let h = d.wait_health("a seed at the credited rate", WAIT, |h| {
        let _ = d.get("/v1/random?bytes=32");
        let log = h["pool"]["drbg"]["seed_log"].as_array().cloned().unwrap_or_default();
        log.iter().any(|s| s["input_entropy_bits"].as_f64().is_some_and(|b| b < 448.0 + 8.0))
    });
    for s in h["pool"]["drbg"]["seed_log"].as_array().unwrap() {
        assert!(s["input_entropy_bits"].as_f64().unwrap() >= 448.0, "{s}");
    }
    let m = d.metrics();
    let g = metric(&m, "qkeyd_source_assessed_min_entropy_bits{source=\"steady\"}").unwrap();
    assert!(g > 5.9, "{m}");
}
