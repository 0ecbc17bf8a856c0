use std::time::{Duration, Instant};

use qkeyd_e2e::{Daemon, metric};
use serde_json::Value;

/// The default `[health] monitor_rate`, in samples a second.
const RATE: f64 = 4096.0;
/// Samples in a drift window (`qkeyd_health::drift::WINDOW`).
const WINDOW: u64 = 8192;
/// Where the simulated source starts to drift: 10 s of idle sampling.
const ONSET: u64 = 40_960;

/// An idle default daemon whose one simulated QRNG, "drifty", starts to
/// drift at sample [`ONSET`] (10 s of idle sampling): value 0 ramps from
/// 1/256 toward 1.5 % over the next [`ONSET`] samples.
pub(crate) fn drifting_sim() -> String {
    format!(
        r#"
        [[source]]
        name = "drifty"
        kind = "sim"
        seed = 81
        [[source.schedule]]
        after_samples = {ONSET}
        fault = "drift"
        value = 0
        to_p = 0.015
        over_samples = {ONSET}
        [danger]
        allow_sim_sources = true
        "#
    )
}

fn drifty(h: &Value) -> &Value {
    &h["pool"]["sources"][0]
}

/// An idle daemon on the default config, a simulated QRNG that starts to drift
/// after 10 s: with no request at all, the source is still read at the monitor
/// rate, and distrusted within four drift windows of the onset (8 s of samples
/// at 4096 a second, plus a second of slack for the monitor's reads and the
/// polling). The drift ramps value 0 from 1/256 toward 1.5 % over five windows.
/// The onset falls inside a window; the next sees value 0 at about twice the
/// claimed probability (z ≈ 6.5 against κ = 4.5), the one after at three times
/// (z ≈ 11), which takes the CUSUM past the 0.89 trust line.
#[test]
fn an_idle_daemon_distrusts_a_drifting_source_without_requests() {
    let d = Daemon::start(&drifting_sim());
    let h = d.wait_health("the source to pass start-up", Duration::from_secs(10), |h| {
        drifty(h)["state"] == "healthy"
    });
    let seeds = h["pool"]["drbg"]["seeds"].clone();
    // Idle sampling: samples keep coming at about the monitor rate.
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    let before = drifty(&d.health())["samples"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let h = d.health();
    let src = drifty(&h);
    let rate = (src["samples"].as_u64().unwrap() - before) as f64 / t.elapsed().as_secs_f64();
    eprintln!("idle sampling: {rate:.0} samples/s");
    assert!(rate > RATE * 0.7 && rate < RATE * 1.3, "{rate} samples/s at monitor_rate {RATE}");
    assert_eq!(src["monitor_rate"], 4096, "{src}");
    assert!(src["sample_age_secs"].as_f64().unwrap() < 1.0, "{src}");
    assert_eq!(src["state"], "healthy", "no drift before the onset: {src}");

    // The onset, seen from outside: the first health answer past it.
    let onset = loop {
        let h = d.health();
        let src = drifty(&h);
        if src["samples"].as_u64().unwrap() >= ONSET {
            assert_eq!(src["state"], "healthy", "{src}");
            break Instant::now();
        }
        assert!(t.elapsed() < Duration::from_secs(30), "never reached the onset: {src}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let h = d.wait_health("the drifting source to be distrusted", Duration::from_secs(30), |h| {
        drifty(h)["state"] == "distrusted"
    });
    let took = onset.elapsed();
    // Scraped at once: the drift goes on, and health tests fail the source soon after.
    let m = d.metrics();
    let src = drifty(&h);
    let at = src["distrusted_at_sample"].as_u64().unwrap();
    eprintln!(
        "drift from sample {ONSET}: distrusted at sample {at} ({} windows), {:.1} s after the \
         onset was seen; trust {}",
        (at - ONSET).div_ceil(WINDOW),
        took.as_secs_f64(),
        src["trust_score"]
    );
    assert!(at > ONSET && at <= ONSET + 4 * WINDOW, "distrusted at sample {at}");
    assert!(took <= Duration::from_secs_f64(4.0 * WINDOW as f64 / RATE + 1.0), "took {took:?}");
    assert!(src["trust_score"].as_f64().unwrap() < 0.89, "{src}");
    for f in src["failures"].as_array().unwrap() {
        assert!(f["sample"].as_u64().unwrap() > at, "a health test fired before drift: {f}");
    }
    // No request drew anything meanwhile.
    assert_eq!(h["pool"]["drbg"]["seeds"], seeds);
    assert_eq!(metric(&m, "qkeyd_random_bytes_served_total{serving=\"sources\"}"), None);
    assert!(metric(&m, "qkeyd_source_trust{source=\"drifty\"}").unwrap() < 0.89);
    let fired = super::scrapes::alerts_firing_on(&[&m]);
    for alert in ["QkeydSourceDistrusted", "QkeydSourceTrustLow"] {
        assert!(fired.contains(alert), "{alert} not in {fired:?}");
    }
    assert!(d.log().contains("entropy source distrusted"));
}
