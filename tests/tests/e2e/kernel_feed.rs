use std::{
    fs::OpenOptions,
    io::Write,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use qkeyd_e2e::{Daemon, metric};

const FRACTION: f64 = 0.3;
const WAIT: Duration = Duration::from_secs(30);

/// `entropy_count` and `buf_size` of every RNDADDENTROPY strace saw.
fn ioctls(log: &str) -> Vec<(u32, u32)> {
    log.lines()
        .filter(|l| l.contains("RNDADDENTROPY") && l.contains("= 0"))
        .map(|l| {
            let field = |name: &str| -> u32 {
                let at = l.find(name).unwrap_or_else(|| panic!("no {name} in {l}")) + name.len();
                l[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap()
            };
            (field("entropy_count="), field("buf_size="))
        })
        .collect()
}

struct Strace {
    child: Child,
    log: std::path::PathBuf,
}

impl Strace {
    fn attach(pid: u32, log: std::path::PathBuf) -> Self {
        let child = Command::new("strace")
            .args(["-f", "-qq", "-e", "trace=ioctl", "-e", "signal=none", "-v", "-s", "0", "-o"])
            .arg(&log)
            .arg("-p")
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .spawn()
            .expect("strace (installed by tests/run-all.sh)");
        // strace writes nothing until a traced call; give it time to attach to every thread.
        thread::sleep(Duration::from_millis(500));
        Self { child, log }
    }

    fn seen(&self) -> Vec<(u32, u32)> {
        ioctls(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// As root (RNDADDENTROPY needs CAP_SYS_ADMIN): with `[kernel] feed = true`
/// the daemon writes 48-byte seed blocks to the kernel, and the credit strace
/// sees in every ioctl is the configured fraction of that block's assessed
/// entropy (its samples times the lowest measured min-entropy per sample,
/// capped at 384 bits), as /v1/health logs it. When the source fails and the
/// pool is fail-closed, the ioctls stop.
#[test]
fn kernel_feeding_credits_the_fraction_of_assessed_entropy_and_stops_when_fail_closed() {
    // The effective uid, from /proc.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().nth(1),
        Some("0"),
        "this test needs root (CAP_SYS_ADMIN for RNDADDENTROPY); tests/run-all.sh runs as root in CI"
    );
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("qrandom0");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let trace = dir.path().join("strace.log");
    let config = format!(
        r#"
        [health]
        monitor_rate = 65536
        [kernel]
        feed = true
        credit_fraction = {FRACTION}
        interval_secs = 0.2
        [[source]]
        name = "qrng0"
        kind = "chardev"
        path = "{}"
        claimed_h = 8.0
        "#,
        fifo.display()
    );
    let d = Daemon::start_in(dir, &config);
    let strace = Strace::attach(d.pid(), trace);

    // A writer of healthy bytes, until told to stick.
    let stuck = Arc::new(AtomicBool::new(false));
    let writer = {
        let (fifo, stuck) = (fifo.clone(), stuck.clone());
        thread::spawn(move || {
            let mut f = OpenOptions::new().write(true).open(&fifo).unwrap();
            let mut x = 0x0123_4567_89ab_cdef_u64;
            let mut buf = [0u8; 4096];
            let until = Instant::now() + WAIT;
            while Instant::now() < until {
                for b in &mut buf {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = if stuck.load(Ordering::Relaxed) { 0x55 } else { (x >> 56) as u8 };
                }
                if f.write_all(&buf).is_err() {
                    break;
                }
            }
        })
    };

    let h = d.wait_health("three kernel feeds", WAIT, |h| {
        h["pool"]["kernel_feed"]["feeds"].as_u64() >= Some(3)
    });
    assert_eq!(h["pool"]["kernel_feed"]["credit_fraction"], FRACTION);

    // The source sticks: RCT failures, then permanent; the pool fails closed.
    stuck.store(true, Ordering::Relaxed);
    d.wait_health("the source to fail", WAIT, |h| h["pool"]["sources"][0]["state"] == "failed");
    let before = strace.seen().len();
    let fed = d.health()["pool"]["kernel_feed"]["feeds"].clone();
    thread::sleep(Duration::from_secs(2));
    let h = d.health();
    assert_eq!(h["pool"]["serving"], serde_json::Value::Null, "fail-closed");
    assert_eq!(h["pool"]["kernel_feed"]["feeds"], fed, "no feed while fail-closed");
    assert_eq!(strace.seen().len(), before, "no RNDADDENTROPY while fail-closed");
    let m = d.metrics();
    let skipped = metric(&m, "qkeyd_kernel_feeds_skipped_total{reason=\"unhealthy\"}");
    assert!(skipped.unwrap() >= 5.0, "about 10 intervals skipped in 2 s: {skipped:?}");

    // Every feed: the fraction of its block's assessed entropy, never the claim.
    let k = &h["pool"]["kernel_feed"];
    let log = k["log"].as_array().unwrap();
    assert_eq!(log.len() as u64, k["feeds"].as_u64().unwrap(), "all feeds in the log");
    let mut expected = Vec::new();
    for r in log {
        let (samples, h) = (r["samples"].as_u64().unwrap(), r["assessed_h"].as_f64().unwrap());
        assert!(h < 8.0, "assessed, not the claim of 8: {r}");
        let credit = (FRACTION * (samples as f64 * h).min(384.0)).floor() as u64;
        assert_eq!(r["credited_bits"], credit, "{r}");
        expected.push(credit);
    }
    // What the kernel was told, seen from outside the daemon: the same credits,
    // in the same order (strace may have attached after the first).
    let seen = strace.seen();
    eprintln!("credits in the log: {expected:?}; RNDADDENTROPY seen by strace: {seen:?}");
    assert!(seen.len() >= 3 && seen.len() <= expected.len(), "{seen:?} vs {expected:?}");
    assert!(seen.iter().all(|&(_, size)| size == 48), "one seed block per feed: {seen:?}");
    let counts: Vec<u64> = seen.iter().map(|&(count, _)| u64::from(count)).collect();
    assert_eq!(counts[..], expected[expected.len() - counts.len()..]);
    assert_eq!(
        metric(&m, "qkeyd_kernel_feed_credited_bits_total"),
        Some(expected.iter().sum::<u64>() as f64)
    );
    assert_eq!(metric(&m, "qkeyd_kernel_feed_bytes_total"), Some(48.0 * expected.len() as f64));
    drop(d);
    let _ = writer.join();
}

/// Without CAP_SYS_ADMIN (root with it taken out of the bounding set by
/// setpriv) the kernel refuses RNDADDENTROPY: the daemon keeps serving,
/// counts the refusals, logs the first, and the alert about it fires.
#[test]
fn a_kernel_that_refuses_the_feed_is_counted_and_alerted() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config =
        "[kernel]\nfeed = true\ninterval_secs = 0.2\n[[source]]\nname = \"os\"\nkind = \"os\"\n";
    let d = Daemon::start_opts(
        dir,
        config,
        &state,
        &qkeyd_e2e::Options {
            wrap: &["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"],
            ..qkeyd_e2e::Options::default()
        },
    );
    let before = d.metrics();
    d.wait_metric("qkeyd_kernel_feeds_skipped_total{reason=\"refused\"}", WAIT, |v| v >= 2.0);
    assert!(d.log().contains("the kernel refused entropy"), "{}", d.log());
    assert_eq!(d.get("/v1/random?bytes=32").status, 200, "still serving");
    let fired = super::scrapes::alerts_firing_on(&[&before, &d.metrics()]);
    assert_eq!(fired, std::collections::BTreeSet::from(["QkeydKernelFeedRefused".to_owned()]));
}
