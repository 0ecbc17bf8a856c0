//! The monitoring files in deploy/, checked with promtool (built from the Go
//! module proxy like the other tools): the alert rules load and pass their unit
//! tests, every alert has a case that fires it and one that does not, every
//! query of the Grafana dashboard parses, the dashboard has a panel for each
//! thing an operator watches, and every qkeyd metric they name is one the
//! daemon registers.
//! Real daemons' scrapes through the same rules: `alert_states.rs`.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use qkeyd_e2e::go_tool;
use serde_json::Value;

/// The promtool release the checks run.
const PROMTOOL: &str = "github.com/prometheus/prometheus/cmd/promtool@v0.316.0";

pub(crate) fn promtool() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| go_tool("promtool", PROMTOOL))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(crate) fn rules_file() -> PathBuf {
    repo().join("deploy/prometheus/qkeyd-rules.yaml")
}

fn rules_test_file() -> PathBuf {
    repo().join("deploy/prometheus/qkeyd-rules.test.yaml")
}

fn dashboard_file() -> PathBuf {
    repo().join("deploy/grafana/qkeyd.json")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Run promtool with `args`: whether it succeeded, and all it printed.
pub(crate) fn run_promtool<I: AsRef<OsStr>>(args: impl IntoIterator<Item = I>) -> (bool, String) {
    let out = Command::new(promtool()).args(args).output().expect("run promtool");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The rules file's alerts, in order, each with the text of its rule (from
/// its `- alert:` line to the next rule). A line scan: the test crate has no
/// YAML parser, and the file keeps one rule per `- alert:` / `- record:` item.
fn alert_rules() -> Vec<(String, String)> {
    let text = read(&rules_file());
    let mut rules: Vec<(String, String)> = Vec::new();
    let mut in_alert = false;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert:") {
            rules.push((name.trim().to_owned(), String::new()));
            in_alert = true;
        } else if t.starts_with("- record:") || t.starts_with("- name:") {
            in_alert = false;
        } else if in_alert && let Some((_, body)) = rules.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    rules
}

pub(crate) fn alert_names() -> Vec<String> {
    alert_rules().into_iter().map(|(name, _)| name).collect()
}

/// For each alertname in a promtool unit-test file: (has a case expecting it
/// to fire, has a case expecting it quiet). A line scan: a case's
/// `alertname:` line comes before its `exp_alerts:` line; `exp_alerts: []` is
/// a quiet case, `exp_alerts:` followed by `- exp_labels:` (or
/// `- exp_annotations:`) a firing one.
fn unit_test_cases(text: &str) -> BTreeMap<String, (bool, bool)> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.strip_prefix("- ").unwrap_or(l))
        .collect();
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().trim_matches('"').to_owned());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name =
                current.take().unwrap_or_else(|| panic!("exp_alerts before an alertname: {line}"));
            let entry = cases.entry(name.clone()).or_default();
            match rest.trim() {
                "[]" => entry.1 = true,
                "" => {
                    let next = lines.get(i + 1).copied().unwrap_or_default();
                    assert!(
                        next.starts_with("exp_labels:") || next.starts_with("exp_annotations:"),
                        "{name}: exp_alerts followed by {next:?}"
                    );
                    entry.0 = true;
                }
                other => panic!("{name}: exp_alerts: {other} (write [] or a list)"),
            }
        }
    }
    cases
}

#[test]
fn every_alert_has_a_unit_test_and_the_rules_pass_promtool() {
    let (ok, out) =
        run_promtool([OsStr::new("check"), OsStr::new("rules"), rules_file().as_os_str()]);
    assert!(ok && out.contains("SUCCESS"), "promtool check rules:\n{out}");
    // Relative rule_files in the test file are resolved against its folder.
    let (ok, out) =
        run_promtool([OsStr::new("test"), OsStr::new("rules"), rules_test_file().as_os_str()]);
    assert!(ok, "promtool test rules:\n{out}");

    let rules = alert_rules();
    assert!(rules.len() >= 20, "only {} alerts found: is the line scan still right?", rules.len());
    let cases = unit_test_cases(&read(&rules_test_file()));
    let mut missing = Vec::new();
    for (name, body) in &rules {
        match cases.get(name) {
            Some((true, true)) => {}
            Some((fire, quiet)) => missing.push(format!(
                "{name}: {}{}",
                if *fire { "" } else { "no case where it fires " },
                if *quiet { "" } else { "no case where it stays quiet" }
            )),
            None => missing.push(format!("{name}: no unit test")),
        }
        assert!(
            body.contains("severity: critical") || body.contains("severity: warning"),
            "{name}: severity must be critical or warning:\n{body}"
        );
        for annotation in ["summary:", "description:", "runbook:"] {
            assert!(body.contains(annotation), "{name} has no {annotation}\n{body}");
        }
        assert!(body.contains("for:"), "{name}: say `for:` even when it is 0m\n{body}");
    }
    assert!(missing.is_empty(), "alerts without full unit tests:\n{}", missing.join("\n"));
    let names: BTreeSet<String> = rules.into_iter().map(|(n, _)| n).collect();
    let unknown: Vec<&String> = cases.keys().filter(|n| !names.contains(*n)).collect();
    assert!(unknown.is_empty(), "unit tests of alerts the rules do not have: {unknown:?}");
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every query of a panel.
fn exprs(panel: &Value) -> Vec<&str> {
    panel["targets"].as_array().into_iter().flatten().filter_map(|t| t["expr"].as_str()).collect()
}

fn dashboard() -> Value {
    serde_json::from_str(&read(&dashboard_file())).expect("the dashboard is JSON")
}

/// `expr` with the dashboard's variables replaced by values a query could
/// have: `$name`, `${name}` and `${name:format}`. An unknown variable panics,
/// so a new one gets a value here.
fn substitute(expr: &str) -> String {
    let value = |name: &str| match name {
        "instance" => ".*",
        "kms_provider" => "qkeyd",
        "__rate_interval" => "5m",
        "__interval" => "1m",
        "__range" => "6h",
        other => panic!("the dashboard uses ${other}, which this test does not know: {expr}"),
    };
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').unwrap_or_else(|| panic!("unclosed ${{ in {expr}"));
            let name = braced[..end].split(':').next().unwrap_or_default();
            out.push_str(value(name));
            rest = &braced[end + 1..];
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            assert!(end > 0, "a lone $ in {expr}");
            out.push_str(value(&after[..end]));
            rest = &after[end..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn every_dashboard_query_parses() {
    let dash = dashboard();
    let mut queries = Vec::new();
    for p in panels(&dash) {
        for e in exprs(p) {
            queries.push((p["title"].as_str().unwrap_or_default().to_owned(), substitute(e)));
        }
    }
    assert!(queries.len() >= 30, "only {} queries found", queries.len());
    // Each query as a recording rule: `promtool check rules` parses every one.
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, q)) in queries.iter().enumerate() {
        let quoted = serde_json::to_string(q).expect("a string"); // JSON strings are YAML too
        writeln!(file, "      - record: dashboard:query_{i}\n        expr: {quoted}")
            .expect("write");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&path, &file).expect("write the queries");
    let (ok, out) = run_promtool([OsStr::new("check"), OsStr::new("rules"), path.as_os_str()]);
    let index: Vec<String> = queries
        .iter()
        .enumerate()
        .map(|(i, (title, q))| format!("query_{i} ({title}): {q}"))
        .collect();
    assert!(ok, "a dashboard query does not parse:\n{out}\n{}", index.join("\n"));
}

#[test]
fn the_dashboard_has_a_panel_for_each_thing_an_operator_watches() {
    let dash = dashboard();
    assert!(dash["schemaVersion"].as_u64().unwrap_or(0) >= 39, "schemaVersion");
    let vars = dash["templating"]["list"].as_array().expect("templating variables");
    let var = |name: &str| {
        vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name} variable"))
    };
    let ds = var("datasource");
    assert_eq!(
        (&ds["type"], &ds["query"]),
        (&Value::from("datasource"), &Value::from("prometheus"))
    );
    let instance = var("instance");
    let definition = instance["definition"].as_str().unwrap_or_default();
    let query =
        instance["query"]["query"].as_str().or(instance["query"].as_str()).unwrap_or_default();
    for q in [definition, query] {
        assert_eq!(q, "label_values(qkeyd_source_state, instance)", "{instance}");
    }

    let all = panels(&dash);
    let mut ids = BTreeSet::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(ids.insert(p["id"].as_u64().expect("a panel id")), "panel id twice: {title}");
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "{title} is too wide");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: the panel's data source");
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}: a query's data source");
            let e = t["expr"].as_str().unwrap_or_default();
            if e.contains("qkeyd_") && !e.contains("apiserver_") {
                assert!(
                    e.contains("instance=~\"$instance\""),
                    "{title}: not filtered by $instance: {e}"
                );
            }
            if e.contains("apiserver_envelope_encryption_") {
                assert!(e.contains("provider_name=~\"$kms_provider\""), "{title}: {e}");
            }
        }
    }
    let queries: Vec<&str> = all.iter().flat_map(|p| exprs(p)).collect();
    let uses = |needle: &str| queries.iter().any(|q| q.contains(needle));
    for metric in [
        // sources: state, RCT/APT failures, trust, drift
        "qkeyd_source_state",
        "qkeyd_health_failures_total",
        "qkeyd_source_trust",
        "qkeyd_source_drift",
        // pool and DRBG
        "qkeyd_entropy_serving",
        "qkeyd_drbg_seeds_total",
        // keys and sealers, PKCS#11 clients
        "qkeyd_keys",
        "qkeyd_sealer_up",
        "qkeyd_module_clients",
        // KMS: write key, Status, latency; kube-apiserver's side
        "qkeyd_kms_key_id_info",
        "qkeyd_kms_status_healthy",
        "qkeyd_kms_request_duration_seconds_bucket",
        "apiserver_envelope_encryption_key_id_hash_total",
        "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds",
        "apiserver_envelope_encryption_kms_operations_latency_seconds",
        "apiserver_envelope_encryption_invalid_key_id_from_status_total",
        // cluster and attestation, TLS, QKD
        "qkeyd_kms_cluster_nodes",
        "qkeyd_kms_cluster_etcd_up",
        "qkeyd_tls_handshakes_total",
        "qkeyd_tls_certificate_expiry_timestamp_seconds",
        "qkeyd_qkd_link_trust",
        "qkeyd_qkd_link_out_of_use",
        "qkeyd_qkd_link_keys_total",
    ] {
        assert!(uses(metric), "no panel shows {metric}");
    }
    assert!(
        queries.iter().any(|q| q.contains("qkeyd_kms_key_id_info")
            && q.contains("apiserver_envelope_encryption_")
            && q.contains("on (key_id_hash)")),
        "no panel joins qkeyd's write key with kube-apiserver's key_id_hash"
    );
    assert!(
        queries
            .iter()
            .any(|q| q.contains("qkeyd_tls_handshakes_total") && q.contains("by (group)")),
        "no panel splits TLS handshakes by group"
    );

    let shows = |p: &&&Value, metric: &str| exprs(p).iter().any(|e| e.contains(metric));
    let trust = all
        .iter()
        .find(|p| p["type"] == "timeseries" && shows(p, "qkeyd_source_trust"))
        .expect("a trust time series");
    let defaults = &trust["fieldConfig"]["defaults"];
    let steps = defaults["thresholds"]["steps"].as_array().expect("trust thresholds");
    assert!(steps.iter().any(|s| s["value"] == 0.89), "no threshold at 0.89: {steps:?}");
    let style = defaults["custom"]["thresholdsStyle"]["mode"].as_str().unwrap_or_default();
    assert!(style.contains("line"), "the 0.89 threshold is not drawn as a line: {style}");

    let serving = all
        .iter()
        .find(|p| p["type"] == "stat" && shows(p, "qkeyd_entropy_serving"))
        .expect("a stat of the serving mode");
    let mappings = serving["fieldConfig"]["defaults"]["mappings"].to_string();
    for (word, color) in [("FALLBACK", "orange"), ("FAIL-CLOSED", "red")] {
        assert!(
            mappings.contains(word) && mappings.contains(&format!("\"color\":\"{color}\"")),
            "the serving stat does not show {word} in {color}: {mappings}"
        );
    }
}

/// Every `qkeyd_…` name in `text`.
fn qkeyd_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("qkeyd_") {
        let before = rest[..at].chars().next_back();
        let end = rest[at..].find(|c: char| !word(c)).map_or(rest.len(), |e| at + e);
        if !before.is_some_and(word) {
            names.insert(rest[at..end].to_owned());
        }
        rest = &rest[end..];
    }
    names
}

/// Every `"qkeyd_…` string literal in the daemon's sources: the metric names
/// it registers.
fn registered_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("read daemon/src") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = read(&path);
                for piece in text.split("\"qkeyd_").skip(1) {
                    let end = piece
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(piece.len());
                    if piece[end..].starts_with('"') {
                        out.insert(format!("qkeyd_{}", &piece[..end]));
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&repo().join("daemon/src"), &mut out);
    out
}

#[test]
fn every_qkeyd_metric_the_rules_and_dashboard_name_is_one_the_daemon_registers() {
    let registered = registered_metrics();
    assert!(registered.contains("qkeyd_source_state"), "the scan found {registered:?}");
    let mut used = qkeyd_names(&read(&rules_file()));
    for p in panels(&dashboard()) {
        for e in exprs(p) {
            used.extend(qkeyd_names(e));
        }
    }
    let unknown: Vec<&String> = used
        .iter()
        .filter(|name| {
            let stem = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name.as_str());
            !registered.contains(name.as_str()) && !registered.contains(stem)
        })
        .collect();
    assert!(unknown.is_empty(), "named in deploy/ but not registered by the daemon: {unknown:?}");
}
