//! Real /metrics scrapes through the alert rules: [`alerts_firing_on`] turns
//! a daemon's scrapes into promtool input and reports which alerts of
//! deploy/prometheus/qkeyd-rules.yaml fire on them. `alert_states.rs` and
//! the tests of other parts call it where their daemons are in the states
//! the alerts are about.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    fmt::Write as _,
};

use super::rules::{alert_names, rules_file, run_promtool};

/// Minutes each scrape is held (or ramped to) in [`alerts_firing_on`]: more
/// than the longest `for:` in the rules (15m), so a state alert has the time
/// to fire.
const SEGMENT_MINUTES: usize = 20;
/// Samples a segment has, one every 30 s.
const SEGMENT_POINTS: usize = SEGMENT_MINUTES * 2;

/// One sample line of the text exposition format: the series as promtool's
/// input syntax writes it (metric name, then `job="qkeyd"`,
/// `instance="node-1"` as a scrape adds them, then the sample's labels with
/// their escapes as they are: the exposition format's `\\`, `\"` and `\n`
/// are PromQL string escapes too), and the value.
fn parse_sample(line: &str) -> (String, String, f64) {
    fn bad(line: &str) -> ! {
        panic!("not a sample line: {line:?}")
    }
    let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad(line));
    let name = &line[..name_end];
    let mut labels = vec![r#"job="qkeyd""#.to_owned(), r#"instance="node-1""#.to_owned()];
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([' ', ',']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find('=').unwrap_or_else(|| bad(line));
            let label = inner[..eq].trim();
            let value = inner[eq + 1..].trim_start().strip_prefix('"').unwrap_or_else(|| bad(line));
            // The value's end: the first quote not escaped by a backslash.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in value.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| bad(line));
            // A target's own job or instance label is kept as exported_*, as
            // Prometheus does without honor_labels.
            let label = match label {
                "job" | "instance" => format!("exported_{label}"),
                l => l.to_owned(),
            };
            labels.push(format!("{label}=\"{}\"", &value[..end]));
            inner = &value[end + 1..];
        }
    }
    let value = rest.split_whitespace().next().unwrap_or_else(|| bad(line));
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().unwrap_or_else(|_| bad(line)),
    };
    (name.to_owned(), format!("{name}{{{}}}", labels.join(", ")), value)
}

/// A scrape's samples by series, and which sample names are counters
/// (counters, and a histogram's or summary's `_bucket`, `_count`, `_sum`).
fn parse_scrape(text: &str) -> (BTreeMap<String, f64>, BTreeSet<String>) {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut counters = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix('#') {
            // `# TYPE name kind`; `# HELP` and other comments say nothing here.
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE")
                && let (Some(family), Some(kind)) = (words.next(), words.next())
            {
                types.insert(family, kind);
            }
            continue;
        }
        let (name, series, value) = parse_sample(line);
        let counter = types.get(name.as_str()) == Some(&"counter")
            || ["_bucket", "_count", "_sum"].iter().any(|suffix| {
                name.strip_suffix(suffix).is_some_and(|family| {
                    matches!(types.get(family), Some(&"histogram") | Some(&"summary"))
                })
            });
        if counter {
            counters.insert(series.clone());
        }
        samples.insert(series, value);
    }
    (samples, counters)
}

/// A number as promtool's series values write it.
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "Inf".to_owned() } else { "-Inf".to_owned() }
    } else {
        format!("{v}")
    }
}

/// `n` samples of `v` (NaN and the infinities cannot be repeated with `x`).
fn held(v: f64, n: usize) -> String {
    if v.is_finite() { format!("{}x{}", num(v), n - 1) } else { vec![num(v); n].join(" ") }
}

/// Which of the rules file's alerts fire on a daemon that showed `scrapes`
/// (its /metrics text, oldest first), evaluated by promtool against
/// deploy/prometheus/qkeyd-rules.yaml.
///
/// The first scrape is held for 20 minutes, one sample every 30 s; each later
/// one takes another 20 minutes, in which gauges hold its value and counters
/// rise steadily from the previous scrape's value to its own, so rates are
/// those between the two scrapes. The alerts are evaluated at the end, as
/// if Prometheus had scraped the daemon all along (series `job="qkeyd"`,
/// `instance="node-1"`, and `up` 1). One scrape can fire state alerts only;
/// alerts on a rate (errors, failures counted) need a second scrape after the
/// counters moved. A series missing from a later scrape goes stale; an empty
/// scrape is one that failed (`up` 0, every series stale). A gauge named
/// `*_timestamp_seconds` is moved to promtool's clock, the end of the
/// evaluation standing for now.
pub(crate) fn alerts_firing_on(scrapes: &[&str]) -> BTreeSet<String> {
    assert!(!scrapes.is_empty(), "no scrape");
    let parsed: Vec<(BTreeMap<String, f64>, BTreeSet<String>)> =
        scrapes.iter().map(|s| parse_scrape(s)).collect();
    let mut all: BTreeMap<String, bool> = BTreeMap::new(); // series -> counter
    for (samples, counters) in &parsed {
        for series in samples.keys() {
            *all.entry(series.clone()).or_default() |= counters.contains(series);
        }
    }
    all.insert(r#"up{job="qkeyd", instance="node-1"}"#.to_owned(), false);

    // promtool's clock starts at 0; a gauge that holds a Unix time (a
    // certificate's notAfter) moves with it, so that now is the end of the
    // evaluation and `x - time()` means what it means on a live Prometheus.
    let end = (SEGMENT_MINUTES * 60 * scrapes.len()) as f64;
    let shift = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
        - end;
    let mut input = String::new();
    for (series, counter) in &all {
        let is_time = series.split('{').next().is_some_and(|n| n.ends_with("_timestamp_seconds"));
        let value_in = |k: usize| -> Option<f64> {
            if series.starts_with("up{") {
                // An empty scrape is one that failed: the target is down.
                Some(if scrapes[k].trim().is_empty() { 0.0 } else { 1.0 })
            } else if is_time && !counter {
                parsed[k].0.get(series).map(|v| v - shift)
            } else {
                parsed[k].0.get(series).copied()
            }
        };
        let mut parts = Vec::new();
        for k in 0..scrapes.len() {
            let n = if k == 0 { SEGMENT_POINTS + 1 } else { SEGMENT_POINTS };
            let before = if k == 0 { None } else { value_in(k - 1) };
            parts.push(match (value_in(k), before) {
                (None, Some(_)) => {
                    if n > 1 {
                        format!("stale _x{}", n - 2)
                    } else {
                        "stale".to_owned()
                    }
                }
                (None, None) => format!("_x{}", n - 1),
                (Some(v), before) if *counter && k > 0 => {
                    // A counter new in this scrape rises from 0, as a
                    // client library creates it; a reset is a step.
                    let from = before.unwrap_or(0.0);
                    if v.is_finite() && from.is_finite() && v >= from {
                        // `a+bxN`: a, a+b, ..., a+N*b; the last is v.
                        let step = (v - from) / SEGMENT_POINTS as f64;
                        format!("{}+{}x{}", num(from + step), num(step), n - 1)
                    } else {
                        held(v, n)
                    }
                }
                (Some(v), _) => held(v, n),
            });
        }
        // YAML single quotes: backslashes stay as they are, a quote doubles.
        writeln!(
            input,
            "      - series: '{}'\n        values: '{}'",
            series.replace('\'', "''"),
            parts.join(" ")
        )
        .expect("write");
    }

    let eval = format!("{}m", SEGMENT_MINUTES * scrapes.len());
    let names = alert_names();
    let mut cases = String::new();
    for name in &names {
        writeln!(
            cases,
            "      - eval_time: {eval}\n        alertname: {name}\n        exp_alerts: []"
        )
        .expect("write");
    }
    let rules = serde_json::to_string(&rules_file().to_string_lossy()).expect("a string");
    let test = format!(
        "rule_files:\n  - {rules}\nevaluation_interval: 30s\ntests:\n  - interval: 30s\n    \
         input_series:\n{input}    alert_rule_test:\n{cases}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("scrape.test.yaml");
    std::fs::write(&path, &test).expect("write the promtool test");
    // Each case expects its alert quiet: promtool names every alert that
    // fired instead ("alertname: NAME, time: ...").
    let (ok, out) = run_promtool([OsStr::new("test"), OsStr::new("rules"), path.as_os_str()]);
    let fired: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("alertname: "))
        .filter_map(|l| l.split(',').next())
        .map(str::to_owned)
        .collect();
    assert!(ok || !fired.is_empty(), "promtool failed on the scrape's test file:\n{out}\n{test}");
    assert!(fired.iter().all(|f| names.contains(f)), "{out}");
    fired
}

/// Whether `alert` (a name in deploy/prometheus/qkeyd-rules.yaml) fires on a
/// daemon that showed this /metrics text for 20 minutes (see
/// [`alerts_firing_on`]).
pub(crate) fn alert_fires_on(scrape: &str, alert: &str) -> bool {
    assert!(alert_names().iter().any(|a| a == alert), "no alert {alert} in the rules");
    alerts_firing_on(&[scrape]).contains(alert)
}

/// A scrape in the exposition format with what a converter has to get right:
/// HELP and TYPE lines, a histogram, escaped label values, NaN and +Inf, a
/// counter that moves between two scrapes.
#[test]
fn a_scrape_becomes_promtool_series_that_fire_the_alerts_it_should() {
    let scrape = |serving: &str, not_found: u64| {
        format!(
            r#"# HELP qkeyd_entropy_serving 1 for where served bytes come from now: sources, os-fallback or none.
# TYPE qkeyd_entropy_serving gauge
qkeyd_entropy_serving{{mode="none"}} {none}
qkeyd_entropy_serving{{mode="os-fallback"}} 0
qkeyd_entropy_serving{{mode="sources"}} {sources}
# HELP qkeyd_source_trust Trust score of the source, 0..1 (1 = fully trusted).
# TYPE qkeyd_source_trust gauge
qkeyd_source_trust{{source="odd \"name\" with \\ and\nnewline, 'quotes', ü"}} 0.5
qkeyd_source_trust{{source="good"}} 1
# TYPE qkeyd_source_assessed_min_entropy_bits gauge
qkeyd_source_assessed_min_entropy_bits{{source="good"}} NaN
# HELP qkeyd_kms_request_duration_seconds Time to answer a KMS v2 gRPC call, by method.
# TYPE qkeyd_kms_request_duration_seconds histogram
qkeyd_kms_request_duration_seconds_bucket{{method="Decrypt",le="0.0005"}} 0
qkeyd_kms_request_duration_seconds_bucket{{method="Decrypt",le="2.5"}} {not_found}
qkeyd_kms_request_duration_seconds_bucket{{method="Decrypt",le="+Inf"}} {not_found}
qkeyd_kms_request_duration_seconds_sum{{method="Decrypt"}} 0.001
qkeyd_kms_request_duration_seconds_count{{method="Decrypt"}} {not_found}
# HELP qkeyd_kms_requests_total KMS v2 gRPC calls answered.
# TYPE qkeyd_kms_requests_total counter
qkeyd_kms_requests_total{{code="NotFound",method="Decrypt"}} {not_found}
# TYPE qkeyd_tls_certificate_expiry_timestamp_seconds gauge
qkeyd_tls_certificate_expiry_timestamp_seconds +Inf
"#,
            none = u8::from(serving == "none"),
            sources = u8::from(serving == "sources"),
        )
    };
    let healthy = scrape("sources", 3);
    let refusing = scrape("none", 3);
    let trust_low: BTreeSet<String> = ["QkeydSourceTrustLow".to_owned()].into();
    // The odd source's trust, 0.5, fires whatever the pool does.
    assert_eq!(alerts_firing_on(&[&healthy]), trust_low);
    assert!(alert_fires_on(&refusing, "QkeydEntropyFailClosed"));
    assert!(!alert_fires_on(&healthy, "QkeydEntropyFailClosed"));
    assert!(!alert_fires_on(&refusing, "QkeydEntropyOsFallback"));
    // A counter that did not move fires no rate alert; one that did, does.
    assert_eq!(alerts_firing_on(&[&healthy, &healthy]), trust_low);
    let moved = scrape("sources", 9);
    let fired = alerts_firing_on(&[&healthy, &moved]);
    assert!(fired.contains("QkeydKmsDecryptRefused"), "{fired:?}");
    // A series gone from the later scrape goes stale instead of lingering.
    let gone =
        healthy.replace("qkeyd_source_trust{source=\"odd", "# was qkeyd_source_trust{source=\"odd");
    assert!(alerts_firing_on(&[&healthy, &gone]).is_empty());
}
