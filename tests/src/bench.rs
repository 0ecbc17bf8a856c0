//! What the KMS benchmarks share: ghz runs over a plugin's unix socket, the
//! call-by-call interleaving of several plugins from one tonic client, the
//! plugin process's CPU time, and the percentile and spread arithmetic.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::kms::Client;

/// The ghz release the benchmarks run.
const GHZ: &str = "github.com/bojand/ghz/cmd/ghz@v0.121.0";

/// ghz (github.com/bojand/ghz), installed from the Go module proxy on first
/// use (see [`crate::go_tool`]).
pub fn ghz_bin() -> PathBuf {
    crate::go_tool("ghz", GHZ)
}

/// The daemon's KMS v2 `.proto`, which ghz reads.
pub fn kms_proto() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/proto/kms_v2.proto")
}

/// A plugin under test: its socket, and its process for the CPU it uses.
#[derive(Clone, Debug)]
pub struct Target {
    /// How the tables name it.
    pub name: &'static str,
    /// Its KMS socket.
    pub socket: PathBuf,
    /// Its process id.
    pub pid: u32,
}

/// One ghz run's figures.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Calls per second.
    pub rps: f64,
    /// The plugin process's CPU time per call, µs (0 unless the caller
    /// measures it around the run).
    pub cpu_us: f64,
}

/// CPU time (on-CPU ns) of every thread of process `pid`, from schedstat. A
/// thread that ends between two readings is missed; the plugins start or
/// end no threads on these calls' paths once warm.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// ghz: `n` calls of `call` (`Status`, `Encrypt`, `Decrypt`) with body
/// `data`, `c` in flight over one connection to `socket`, the first `c`
/// left out as warm-up. Panics unless every counted call answered OK.
pub fn ghz(
    bin: &Path,
    proto: &Path,
    socket: &Path,
    call: &str,
    c: u32,
    n: u32,
    data: &Value,
) -> Figures {
    let out = Command::new(bin)
        .args(["--insecure", "--proto"])
        .arg(proto)
        .args(["--call", &format!("v2.KeyManagementService/{call}")])
        .args(["-c", &c.to_string(), "-n", &n.to_string(), "--connections", "1"])
        .args(["-d", &data.to_string(), "-O", "json", "--skipFirst", &c.to_string()])
        .arg(format!("unix://{}", socket.display()))
        .output()
        .expect("run ghz");
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ghz {call}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let codes = &v["statusCodeDistribution"];
    assert_eq!(codes["OK"].as_u64(), Some(u64::from(n - c)), "ghz {call}: {codes}");
    let pct = |p: u64| {
        v["latencyDistribution"]
            .as_array()
            .and_then(|a| a.iter().find(|d| d["percentage"].as_u64() == Some(p)))
            .and_then(|d| d["latency"].as_f64())
            .unwrap_or_else(|| panic!("ghz {call}: no p{p} in {v}"))
            / 1e3
    };
    let rps = v["rps"].as_f64().unwrap_or_else(|| panic!("ghz {call}: no rps in {v}"));
    Figures { p50_us: pct(50), p99_us: pct(99), rps, cpu_us: 0.0 }
}

/// The ghz request bodies of Status, Encrypt and Decrypt for the plugin at
/// `socket` (Decrypt needs that plugin's own ciphertext of the same seed).
pub fn ghz_bodies(socket: &Path) -> [Value; 3] {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut c = Client::connect(socket.to_str().expect("a UTF-8 socket path"));
    let e = c.encrypt(&[7u8; 32]).expect("Encrypt of the ghz seed");
    let annotations: serde_json::Map<String, Value> =
        e.annotations.iter().map(|(k, v)| (k.clone(), json!(b64.encode(v)))).collect();
    let decrypt = json!({
        "ciphertext": b64.encode(&e.ciphertext),
        "uid": "bench",
        "key_id": e.key_id,
        "annotations": annotations,
    });
    [json!({}), json!({ "plaintext": b64.encode([7u8; 32]), "uid": "bench" }), decrypt]
}

/// p50 and p99 in µs of `n` runs of `f`.
pub fn percentiles(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    p50_p99(
        (0..n)
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect(),
    )
}

/// The p50 and p99 of `samples` (not empty).
pub fn p50_p99(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    (samples[n / 2], samples[n * 99 / 100])
}

/// The median of `x` (not empty), with its lowest and highest values.
pub fn spread(mut x: Vec<f64>) -> (f64, f64, f64) {
    x.sort_by(f64::total_cmp);
    (x[x.len() / 2], x[0], x[x.len() - 1])
}

/// A table cell: the median of `x` and its range.
pub fn cell(x: Vec<f64>) -> String {
    let (m, lo, hi) = spread(x);
    format!("{m:.0} ({lo:.0}–{hi:.0})")
}

/// A plugin's figures from one [`interleaved`] run.
#[derive(Clone, Copy, Debug)]
pub struct Turns {
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Calls per second at concurrency 1: calls over the time they took.
    pub ops: f64,
    /// The plugin process's CPU time per call, µs.
    pub cpu_us: f64,
}

/// One request-interleaved run at concurrency 1: a single tonic client sends
/// `call` to each target in turn, and `raw` takes its turn in this process
/// (which goes first rotating), `n` times each, so every stretch of the
/// shared machine, slow or quick, falls on all of them alike, calls apart
/// rather than rounds apart. Per target: its [`Turns`]; and `raw`'s p50 and
/// p99 in µs.
pub fn interleaved(
    targets: &[Target],
    call: &str,
    n: usize,
    mut raw: impl FnMut(),
) -> (Vec<Turns>, (f64, f64)) {
    let mut clients: Vec<Client> = targets
        .iter()
        .map(|t| Client::connect(t.socket.to_str().expect("a UTF-8 socket path")))
        .collect();
    // Each plugin decrypts its own ciphertext.
    let replies: Vec<_> =
        clients.iter_mut().map(|c| c.encrypt(&[7u8; 32]).expect("Encrypt")).collect();
    let cpu: Vec<u64> = targets.iter().map(|t| cpu_ns(t.pid)).collect();
    // The last slot is the raw operation, in this process, taking its turn.
    let slots = targets.len() + 1;
    let mut took = vec![Vec::with_capacity(n); slots];
    for i in 0..n {
        for k in 0..slots {
            let j = (k + i) % slots;
            let t = Instant::now();
            match (clients.get_mut(j), call) {
                (None, _) => raw(),
                (Some(c), "Status") => assert_eq!(c.status().expect("Status").healthz, "ok"),
                (Some(c), "Encrypt") => {
                    assert!(!c.encrypt(&[7u8; 32]).expect("Encrypt").ciphertext.is_empty());
                }
                (Some(c), _) => {
                    assert_eq!(c.decrypt_reply(&replies[j]).expect("Decrypt"), [7u8; 32]);
                }
            }
            took[j].push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    let raw = p50_p99(took.pop().expect("the raw slot"));
    let plugins = took
        .into_iter()
        .zip(targets.iter().zip(cpu))
        .map(|(s, (t, c0))| {
            let ops = s.len() as f64 / (s.iter().sum::<f64>() / 1e6);
            let (p50_us, p99_us) = p50_p99(s);
            let cpu_us = cpu_ns(t.pid).saturating_sub(c0) as f64 / 1e3 / n as f64;
            Turns { p50_us, p99_us, ops, cpu_us }
        })
        .collect();
    (plugins, raw)
}

/// This guest's halt polling, which sets how much a c=1 round trip pays for
/// each wake-up: with it off, an idle vCPU halts at once and waking it is a
/// trip through the hypervisor.
pub fn halt_polling() -> String {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned());
    match (
        read("/sys/devices/system/cpu/cpuidle/current_driver"),
        read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
    ) {
        (Ok(d), Ok(ns)) if d == "haltpoll" => format!("cpuidle haltpoll, guest_halt_poll_ns {ns}"),
        (Ok(d), _) => format!("cpuidle {d}"),
        _ => "cpuidle unknown".into(),
    }
}
