//! Alerts on real daemons: each test puts a daemon into a state an alert is
//! about (a source failed, distrusted, quarantined, flapping, silent or
//! stuck in start-up; the pool fail-closed or on OS fallback; the TPM gone
//! under the sealer, the KMS plugin and the vault; misusing clients; the
//! daemon gone) and checks what fires on its scrapes ([`alerts_firing_on`]).
//! Other parts' tests do the same where their daemons are in such a state;
//! the last test here checks that every alert is raised somewhere, or says
//! why no daemon can raise it.

use std::{collections::BTreeSet, time::Duration};

use qkeyd_e2e::Daemon;
use serde_json::Value;

use super::{faults::dead_source, rules::alert_names, scrapes::alerts_firing_on};

const WAIT: Duration = Duration::from_secs(30);

fn all_sources(h: &Value, state: &str) -> bool {
    h["pool"]["sources"]
        .as_array()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["state"] == state))
}

/// Real daemons through the rules: a healthy one fires nothing (no alert
/// mistakes a quiet default for trouble), one whose only source failed fires
/// the fail-closed and failed-source alerts, and with `os_fallback` the
/// fallback alert instead of fail-closed.
#[test]
fn a_real_daemon_fires_the_alerts_of_its_state_and_no_other() {
    let d = Daemon::start_default();
    d.wait_health("the sources to be healthy", WAIT, |h| all_sources(h, "healthy"));
    let scrape = d.metrics();
    let fired = alerts_firing_on(&[&scrape]);
    assert!(fired.is_empty(), "a healthy default daemon fires {fired:?}; its scrape:\n{scrape}");
    drop(d);

    // Trust is 0 after a permanent failure, so QkeydSourceTrustLow comes too.
    let expected_with = |pool_alert: &str| -> BTreeSet<String> {
        [pool_alert, "QkeydSourceFailed", "QkeydSourceTrustLow"].map(str::to_owned).into()
    };
    for (fallback, pool_alert) in
        [(false, "QkeydEntropyFailClosed"), (true, "QkeydEntropyOsFallback")]
    {
        let d = Daemon::start(&dead_source(fallback));
        d.wait_health("the source to fail", WAIT, |h| all_sources(h, "failed"));
        let scrape = d.metrics();
        let fired = alerts_firing_on(&[&scrape]);
        assert_eq!(fired, expected_with(pool_alert), "os_fallback = {fallback}; scrape:\n{scrape}");
    }
}

/// A source whose samples stick for a run long enough to trip the RCT at its
/// intermittent cutoff but short of the permanent one is quarantined while
/// its start-up test re-runs (4 s of samples at a monitor rate of 256 a
/// second); meanwhile its scrape fires the quarantine alert, and with the
/// scrape before it the health-test failure alert, but not the failed one.
#[test]
fn a_quarantined_source_fires_the_quarantine_alert() {
    let d = Daemon::start(
        r#"
        [health]
        monitor_rate = 256
        [[source]]
        name = "flaky"
        kind = "sim"
        seed = 41
        [[source.schedule]]
        after_samples = 3000
        fault = "stuck"
        value = 170
        [[source.schedule]]
        after_samples = 3004
        fault = "none"
        [danger]
        allow_sim_sources = true
        "#,
    );
    let h = d.wait_health("start-up", WAIT, |h| all_sources(h, "healthy"));
    let src = &h["pool"]["sources"][0];
    let (cutoff, permanent) = (src["rct_cutoff"].as_u64(), src["rct_cutoff_permanent"].as_u64());
    assert!(cutoff <= Some(4) && permanent > Some(5), "a run of 4 must be intermittent: {src}");
    let before = d.metrics();
    d.wait_health("the quarantine", WAIT, |h| all_sources(h, "quarantined"));
    let during = d.metrics();
    assert!(during.contains("qkeyd_source_state{source=\"flaky\",state=\"quarantined\"} 1"));
    let fired = alerts_firing_on(&[&before, &during]);
    assert!(fired.contains("QkeydSourceQuarantined"), "{fired:?}");
    assert!(fired.contains("QkeydHealthTestFailures"), "{fired:?}");
    assert!(!fired.contains("QkeydSourceFailed"), "{fired:?}");
    // A fresh start-up test passes and the alert clears.
    d.wait_health("the source back", WAIT, |h| all_sources(h, "healthy"));
    assert!(!alerts_firing_on(&[&d.metrics()]).contains("QkeydSourceQuarantined"));
}

/// The TPM behind the entropy source, the key vault and the KMS plugin goes
/// away: the sealer check finds it down, KMS Status fails, key creation
/// fails on qkeyd's side and the pool fails closed, and the alerts for each
/// fire from the daemon's own scrapes. When the TPM comes back they clear.
#[cfg(feature = "tpm")]
#[test]
fn a_vanished_tpm_fires_the_sealer_kms_and_key_alerts() {
    let mut tpm = qkeyd_e2e::Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let state = dir.path().join("state");
    let config = format!(
        "[[source]]\nname = \"tpm-rng\"\nkind = \"tpm\"\ntcti = \"{0}\"\n\
         [keys]\nsealer = \"tpm\"\n[keys.tpm]\ntcti = \"{0}\"\n\
         [kms]\nsocket = \"{1}\"\n",
        tpm.tcti(),
        socket.display()
    );
    let d = Daemon::start_with(dir, &config, &state, &[]);
    d.wait_health("the TPM source", WAIT, |h| all_sources(h, "healthy"));
    let mut kms = qkeyd_e2e::kms::Client::connect(socket.to_str().unwrap());
    kms.status().unwrap();
    kms.encrypt(b"a DEK seed of 32 bytes, or so...").unwrap();
    let (s, k) = d.keys("POST", "/v1/keys", Some(serde_json::json!({ "alg": "ml-dsa-44" })));
    assert_eq!(s, 201, "{k}");
    d.wait_metric("qkeyd_sealer_up{sealer=\"tpm\"}", WAIT, |v| v == 1.0);
    let up = d.metrics();
    let fired = alerts_firing_on(&[&up]);
    assert!(fired.is_empty(), "a healthy TPM node fires {fired:?}");

    tpm.stop();
    // The sealer is checked every 15 s.
    d.wait_metric("qkeyd_sealer_up{sealer=\"tpm\"}", Duration::from_secs(60), |v| v == 0.0);
    let e = kms.status().expect_err("Status with the TPM gone");
    eprintln!("KMS Status with the TPM gone: {:?} {}", e.code(), e.message());
    for _ in 0..3 {
        let e = kms.encrypt(b"a DEK seed of 32 bytes, or so...").expect_err("Encrypt, TPM gone");
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    }
    for _ in 0..3 {
        let (s, v) = d.keys("POST", "/v1/keys", Some(serde_json::json!({ "alg": "ml-dsa-44" })));
        assert!((500..600).contains(&s), "{s} {v}");
    }
    let down = d.metrics();
    let fired = alerts_firing_on(&[&up, &down]);
    for alert in [
        "QkeydSealerDown",
        "QkeydKmsStatusFailing",
        "QkeydKmsRequestsFailing",
        "QkeydKeyOperationServerErrors",
        "QkeydEntropyFailClosed",
        "QkeydSourceUnavailable",
    ] {
        assert!(fired.contains(alert), "{alert} not in {fired:?}; scrape:\n{down}");
    }

    tpm.restart();
    d.wait_metric("qkeyd_sealer_up{sealer=\"tpm\"}", Duration::from_secs(60), |v| v == 1.0);
    d.wait_health("the TPM source back", Duration::from_secs(60), |h| all_sources(h, "healthy"));
    kms.status().unwrap();
    let back = d.metrics();
    let fired = alerts_firing_on(&[&back]);
    assert!(fired.is_empty(), "after the TPM came back: {fired:?}");
}

/// A node its clients misuse: a wrong bearer token again and again, reads of
/// keys that do not exist, a KMS Decrypt under an unknown key id, an
/// oversized module frame, a uid the module socket does not serve (as root,
/// through setpriv), and more module connections than allowed. The
/// second scrape, against the first, fires each alert about it.
#[test]
fn a_misused_node_fires_the_refusal_and_client_error_alerts() {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    // The module's socket where another uid can reach it (and be refused).
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kms_socket = dir.path().join("kms.sock");
    let module_socket = open.path().join("module.sock");
    let state = dir.path().join("state");
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n[kms]\nsocket = \"{}\"\n\
         [module]\nsocket = \"{}\"\nsocket_mode = \"0666\"\nmax_connections = 1\n",
        kms_socket.display(),
        module_socket.display()
    );
    let d = Daemon::start_with(dir, &config, &state, &[]);
    d.wait_health("the OS source", WAIT, |h| all_sources(h, "healthy"));
    let mut kms = qkeyd_e2e::kms::Client::connect(kms_socket.to_str().unwrap());
    let good = kms.encrypt(b"a DEK seed of 32 bytes, or so...").unwrap();
    let before = d.metrics();
    assert!(alerts_firing_on(&[&before]).is_empty());

    // 150 wrong tokens and 400 unknown keys: alerts_firing_on spreads them
    // over the 20 minutes between the scrapes, and the alerts' floors (0.1
    // denials a second; 0.05 client errors a second for 15 minutes) hold.
    for _ in 0..150 {
        assert_eq!(d.key_call("GET", "/v1/keys", None, Some("not-the-token")).0, 401);
    }
    for _ in 0..400 {
        assert_eq!(d.keys("GET", "/v1/keys/no-such-key", None).0, 404);
    }
    let e = kms.decrypt("qkeyd-kek-00", &good.ciphertext, &good.annotations).unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // An oversized frame: closed unread.
    let mut bad = std::os::unix::net::UnixStream::connect(&module_socket).unwrap();
    let mut wire = ((16u32 << 20) + 1000).to_be_bytes().to_vec();
    wire.extend_from_slice(&[200, 1, 2, 3]);
    bad.write_all(&wire).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Closed unread: an end of file, or a reset for the bytes left unread.
    assert!(
        matches!(bad.read(&mut [0u8; 16]), Ok(0) | Err(_)),
        "the bad frame's connection closed"
    );
    // A uid the module socket does not serve (nobody): refused on connect.
    let nobody = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c"])
        .arg(format!(
            "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?}); \
             s.settimeout(10); assert s.recv(1) == b''",
            module_socket.to_str().unwrap()
        ))
        .output()
        .unwrap();
    assert!(nobody.status.success(), "{}", String::from_utf8_lossy(&nobody.stderr));
    d.wait_metric("qkeyd_connections_refused_total{reason=\"uid\",socket=\"module\"}", WAIT, |v| {
        v >= 1.0
    });
    // One connection is all [module] max_connections allows: the next is refused.
    let _held = std::os::unix::net::UnixStream::connect(&module_socket).unwrap();
    d.wait_metric("qkeyd_module_clients", WAIT, |v| v == 1.0);
    let mut refused = std::os::unix::net::UnixStream::connect(&module_socket).unwrap();
    refused.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(refused.read(&mut [0u8; 16]).unwrap_or(0), 0, "the second connection refused");
    d.wait_metric(
        "qkeyd_connections_refused_total{reason=\"capacity\",socket=\"module\"}",
        WAIT,
        |v| v >= 1.0,
    );

    let after = d.metrics();
    let fired = alerts_firing_on(&[&before, &after]);
    let expected: BTreeSet<String> = [
        "QkeydKeyRequestsDenied",
        "QkeydKeyOperationClientErrors",
        "QkeydKmsDecryptRefused",
        "QkeydModuleBadFrames",
        "QkeydSocketAtCapacity",
        "QkeydSocketPeerRefused",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(fired, expected, "scrape:\n{after}");
}

/// A FIFO source whose writer is there but sends nothing stays in start-up:
/// the start-up alert (10 minutes) fires on the daemon's scrape, with the
/// pool fail-closed beside it.
#[test]
fn a_source_that_never_finishes_start_up_fires_its_alert() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("qrng");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let config = format!(
        "[[source]]\nname = \"silent\"\nkind = \"chardev\"\npath = \"{}\"\nclaimed_h = 7.5\n",
        fifo.display()
    );
    let state = dir.path().join("state");
    // Opened read-write here, so the daemon's reader sees a writer that
    // never writes (and no end of file).
    let _writer = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let d = Daemon::start_with(dir, &config, &state, &[]);
    d.wait_health("the source in start-up", WAIT, |h| all_sources(h, "startup"));
    std::thread::sleep(Duration::from_secs(1));
    let scrape = d.metrics();
    let fired = alerts_firing_on(&[&scrape]);
    let expected: BTreeSet<String> =
        ["QkeydSourceStuckInStartup", "QkeydEntropyFailClosed"].map(str::to_owned).into();
    assert_eq!(fired, expected, "scrape:\n{scrape}");
}

/// A device that goes away and comes back four times: each return passes a
/// fresh start-up test, and the flapping alert fires on the disconnects
/// counted between the two scrapes.
#[test]
fn a_source_that_keeps_vanishing_fires_the_flapping_alert() {
    let vanish = |at: u64| {
        format!("[[source.schedule]]\nafter_samples = {at}\nfault = \"vanish\"\nfor_ms = 100\n")
    };
    let d = Daemon::start(&format!(
        "[[source]]\nname = \"flaky\"\nkind = \"sim\"\nseed = 43\n{}{}{}{}\
         [danger]\nallow_sim_sources = true\n",
        vanish(3000),
        vanish(6000),
        vanish(9000),
        vanish(12000)
    ));
    d.wait_health("start-up", WAIT, |h| all_sources(h, "healthy"));
    let before = d.metrics();
    d.wait_health("four returns", WAIT, |h| {
        all_sources(h, "healthy") && h["pool"]["sources"][0]["disconnects"].as_u64() >= Some(4)
    });
    let fired = alerts_firing_on(&[&before, &d.metrics()]);
    assert!(fired.contains("QkeydSourceFlapping"), "{fired:?}");
}

/// A daemon that stops answering (killed): the scrape fails, and the
/// target-down alert fires with nothing else.
#[test]
fn a_daemon_that_stops_answering_fires_target_down() {
    let d = Daemon::start_default();
    d.wait_health("the sources to be healthy", WAIT, |h| all_sources(h, "healthy"));
    let scrape = d.metrics();
    let url = d.url("/metrics");
    drop(d.kill());
    let failed = ureq::get(&url).call();
    assert!(failed.is_err(), "the killed daemon answered: {failed:?}");
    let fired = alerts_firing_on(&[&scrape, ""]);
    assert_eq!(fired, BTreeSet::from(["QkeydTargetDown".to_owned()]));
}

/// A FIFO source whose writer sends enough for start-up and then stalls
/// without going away: the device is there, healthy, and silent; after a
/// minute the sample-age alert fires (and nothing says unavailable).
#[test]
fn a_silent_device_fires_the_stale_samples_alert() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("qrng");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let config = format!(
        "[[source]]\nname = \"stalls\"\nkind = \"chardev\"\npath = \"{}\"\nclaimed_h = 7.5\n",
        fifo.display()
    );
    let state = dir.path().join("state");
    let mut writer = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let mut bytes = vec![0u8; 4096];
    getrandom::fill(&mut bytes).unwrap();
    writer.write_all(&bytes).unwrap();
    let d = Daemon::start_with(dir, &config, &state, &[]);
    d.wait_health("start-up on the first bytes", WAIT, |h| all_sources(h, "healthy"));
    // The alert's threshold is a minute without samples.
    d.wait_metric(
        "qkeyd_source_sample_age_seconds{source=\"stalls\"}",
        Duration::from_secs(90),
        |a| a > 61.0,
    );
    let h = d.health();
    assert_eq!(h["pool"]["sources"][0]["state"], "healthy", "{h}");
    let fired = alerts_firing_on(&[&d.metrics()]);
    assert!(fired.contains("QkeydSourceSamplesStale"), "{fired:?}");
    drop(writer);
}

/// Alerts no test here puts a daemon in the state of, and why.
const NOT_RAISED_BY_A_DAEMON: &[(&str, &str)] = &[
    ("QkeydTargetMissing", "no target at all is Prometheus's configuration, not a daemon's state"),
    ("QkeydKmsSlow", "needs an HSM slower than the p99 threshold"),
    (
        "QkeydKmsApiserverCallsFailing",
        "needs the plugin gone under a running kube-apiserver until its next Status poll, up to a minute",
    ),
    (
        "QkeydKmsInvalidKeyIdFromStatus",
        "qkeyd never answers Status with an empty or over-long key id",
    ),
    ("QkeydKmsClusterPollsFailing", "needs etcd to answer with damaged cluster state"),
];

/// Every alert in the rules is either checked on a real daemon's scrape by
/// some end-to-end test (its name appears in one, outside the rules' own
/// checks) or listed in [`NOT_RAISED_BY_A_DAEMON`] with the reason.
#[test]
fn every_alert_is_raised_by_a_real_daemon_or_says_why_not() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    let mut text = String::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // The rules' own checks and the converter's made-up scrapes do not count.
        if path.file_name().is_some_and(|n| n != "rules.rs" && n != "scrapes.rs") {
            let body = std::fs::read_to_string(&path).unwrap();
            // The list of alerts no daemon raises names them too; it does not count.
            let body = match body.find("const NOT_RAISED_BY_A_DAEMON") {
                Some(i) => {
                    let end = i + body[i..].find("];").expect("the list ends");
                    format!("{}{}", &body[..i], &body[end..])
                }
                None => body,
            };
            text.push_str(&body);
        }
    }
    let excused: BTreeSet<&str> = NOT_RAISED_BY_A_DAEMON.iter().map(|(a, _)| *a).collect();
    let names = alert_names();
    for alert in &names {
        let raised = text.contains(&format!("\"{alert}\""));
        assert!(
            raised != excused.contains(alert.as_str()),
            "{alert}: raised by a test: {raised}, excused: {}",
            excused.contains(alert.as_str())
        );
    }
    for a in &excused {
        assert!(names.iter().any(|n| n == a), "{a} is not an alert in the rules");
    }
}

/// A device whose bytes count 0, 1, …, 255 over and over: every value as
/// often as any other, so the health tests and the drift score (the most
/// common value's share) see nothing wrong, but the periodic full SP 800-90B
/// assessment finds next to no entropy. The assessment fails, the source is
/// distrusted, and the failed-assessment alert fires.
#[test]
fn a_predictable_device_fails_its_full_assessment_and_fires_the_alert() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("qrng");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let config = format!(
        "[health]\nmonitor_rate = 65536\nassessment_samples = 65536\nassessment_interval_secs = 1\n\
         [[source]]\nname = \"counter\"\nkind = \"chardev\"\npath = \"{}\"\nclaimed_h = 7.5\n",
        fifo.display()
    );
    let state = dir.path().join("state");
    let mut writer = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    // The writer blocks while the pipe is full and ends with the test process.
    std::thread::spawn(move || {
        let block: Vec<u8> = (0..4096u32).map(|i| (i % 256) as u8).collect();
        while writer.write_all(&block).is_ok() {}
    });
    let d = Daemon::start_with(dir, &config, &state, &[]);
    d.wait_health("start-up", WAIT, |h| all_sources(h, "healthy"));
    let before = d.metrics();
    let h = d.wait_health("a failed full assessment", Duration::from_secs(60), |h| {
        h["pool"]["sources"][0]["full_assessments_failed"].as_u64() >= Some(1)
    });
    let src = &h["pool"]["sources"][0];
    eprintln!("{}", src["last_full_assessment"]);
    assert_eq!((src["rct_failures"].as_u64(), src["apt_failures"].as_u64()), (Some(0), Some(0)));
    let fired = alerts_firing_on(&[&before, &d.metrics()]);
    assert!(fired.contains("QkeydFullAssessmentFailed"), "{fired:?}");
}
