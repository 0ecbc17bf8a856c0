//! The KMS v2 plugin under load, next to the raw SoftHSM2 AES-GCM operation
//! and (when given) the upstream Kubernetes KMS v2 mock plugin on the same
//! token, with the same client, in the same run:
//!
//! ```text
//! cargo bench -p qkeyd-e2e --bench kms
//! QKEYD_BENCH_MOCK_KMS=/path/to/mock-kms-plugin cargo bench -p qkeyd-e2e --bench kms
//! ```
//!
//! Status, Encrypt and Decrypt at concurrency 1 and 64 are measured in
//! QKEYD_BENCH_ROUNDS (default 5) rounds, the plugins taking turns within
//! each, and reported as each plugin's median round, with the plugin
//! process's CPU time per call. They are driven by ghz
//! (github.com/bojand/ghz, installed from the Go module proxy into the
//! tests/k8s cache on first use) over one connection, as kube-apiserver
//! connects; the decrypt burst (10,000 distinct seeds, the apiserver-restart
//! case) by the harness's tonic client with 64 requests in flight. The mock
//! plugin (k8s.io/kms internal/plugins/_mock) is not on the module proxy; the
//! bench runs it only if QKEYD_BENCH_MOCK_KMS names a binary of it.
#![allow(clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use qkeyd::kms::grpc::proto::{DecryptRequest, EncryptRequest};
use qkeyd_drivers::seal::{
    Sealer,
    pkcs11::{Pkcs11Config, Pkcs11Sealer},
};
use qkeyd_e2e::{Daemon, HSM_LABEL, HSM_PIN, SoftHsm, kms::Client, softhsm_module};
use serde_json::{Value, json};
use zeroize::Zeroizing;

const GHZ: &str = "github.com/bojand/ghz/cmd/ghz@v0.121.0";
const MOCK_KEY: &str = "kms-test";

fn ghz_bin() -> PathBuf {
    let dir = std::env::var_os("QKEYD_K8S_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
        cache.join("qkeyd-e2e/tools")
    });
    let bin = dir.join("ghz");
    if !bin.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("go")
            .args(["install", "-trimpath", GHZ])
            .env("GOBIN", &dir)
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-buildvcs=false")
            .status()
            .expect("go (to install ghz)")
            .success();
        assert!(ok, "go install {GHZ}");
    }
    bin
}

const CALLS: [&str; 3] = ["Status", "Encrypt", "Decrypt"];
const SOFT: &str = "qkeyd, soft KEK (no HSM)";
const MOCK: &str = "k8s mock plugin";

/// A plugin under test: its socket, and its process for the CPU it uses.
struct Target {
    name: &'static str,
    socket: PathBuf,
    pid: u32,
}

struct Figures {
    p50_us: f64,
    p99_us: f64,
    rps: f64,
    /// The plugin process's CPU time per call, µs.
    cpu_us: f64,
}

/// CPU time (on-CPU ns) of every thread of process `pid`, from schedstat. A
/// thread that ends between two readings is missed; neither plugin starts or
/// ends threads on these calls' paths once warm.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn ghz(
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
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ghz {call}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let codes = &v["statusCodeDistribution"];
    assert_eq!(codes["OK"].as_u64(), Some(u64::from(n - c)), "ghz {call}: {codes}");
    let pct = |p: u64| {
        v["latencyDistribution"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["percentage"].as_u64() == Some(p))
            .and_then(|d| d["latency"].as_f64())
            .unwrap()
            / 1e3
    };
    Figures { p50_us: pct(50), p99_us: pct(99), rps: v["rps"].as_f64().unwrap(), cpu_us: 0.0 }
}

/// p50 and p99 in µs of `n` runs of `f`.
fn percentiles(n: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let mut s: Vec<f64> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    s.sort_by(f64::total_cmp);
    (s[n / 2], s[n * 99 / 100])
}

/// Time to decrypt `n` distinct seeds with 64 requests in flight.
fn burst(socket: &Path, n: usize) -> Duration {
    let (rt, client) = Client::parts(socket.to_str().unwrap());
    let mut encrypted = Vec::with_capacity(n);
    rt.block_on(async {
        let mut c = client.clone();
        for i in 0..n {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let e = c
                .encrypt(EncryptRequest { plaintext: seed.to_vec(), uid: String::new() })
                .await
                .unwrap()
                .into_inner();
            encrypted.push((seed, e));
        }
    });
    let encrypted = Arc::new(encrypted);
    let t = Instant::now();
    rt.block_on(async {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (mut c, e, next) = (client.clone(), encrypted.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((seed, e)) = e.get(i) else { break };
                        let pt = c
                            .decrypt(DecryptRequest {
                                ciphertext: e.ciphertext.clone(),
                                uid: String::new(),
                                key_id: e.key_id.clone(),
                                annotations: e.annotations.clone(),
                            })
                            .await
                            .unwrap()
                            .into_inner()
                            .plaintext;
                        assert_eq!(&pt, seed);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    t.elapsed()
}

fn main() {
    // SoftHSM2 reads SOFTHSM2_CONF when the module is initialised, and setting
    // the environment of a running process is unsafe: initialise a token, then
    // run the measurements in a child that inherits the variable.
    if std::env::var_os("SOFTHSM2_CONF").is_none() {
        let hsm = SoftHsm::new();
        let status = Command::new(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("SOFTHSM2_CONF", &hsm.conf)
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    let conf = std::env::var("SOFTHSM2_CONF").unwrap();
    let ghz_bin = ghz_bin();
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/proto/kms_v2.proto");
    let seed = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);

    // The raw HSM operation: AES-256-GCM of a 32-byte seed in the token,
    // in process, no gRPC. The same key serves the mock plugin.
    let mut hsm = Pkcs11Sealer::open(Pkcs11Config {
        module: softhsm_module(),
        token_label: HSM_LABEL.into(),
        pin: Zeroizing::new(HSM_PIN.into()),
    })
    .unwrap();
    let mut value = [0u8; 32];
    getrandom::fill(&mut value).unwrap();
    hsm.key_create(MOCK_KEY, &value).unwrap();
    let iv = [9u8; 12];
    let ct = hsm.key_encrypt(MOCK_KEY, &iv, b"aad", &[7u8; 32]).unwrap();
    let raw_enc = percentiles(5000, |_| {
        hsm.key_encrypt(MOCK_KEY, &iv, b"aad", &[7u8; 32]).unwrap();
    });
    let raw_dec = percentiles(5000, |_| {
        hsm.key_decrypt(MOCK_KEY, &iv, b"aad", &ct).unwrap();
    });
    drop(hsm);

    // qkeyd with a SoftHSM KEK.
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, HSM_PIN).unwrap();
    let socket = dir.path().join("kms.sock");
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n\n[kms]\nsocket = \"{}\"\n\n[keys]\nsealer = \"pkcs11\"\n[keys.pkcs11]\nmodule = \"{}\"\ntoken_label = \"{HSM_LABEL}\"\npin_file = \"{}\"\n",
        socket.display(),
        softhsm_module().display(),
        pin.display()
    );
    let state = dir.path().join("state");
    let qkeyd = Daemon::start_with(dir, &config, &state, &[("SOFTHSM2_CONF", conf.as_str())]);
    // qkeyd with the soft sealer: the same calls with no HSM behind them, so
    // its Encrypt and Decrypt are one gRPC round trip of that call's shape
    // (plus a software AES-GCM of about a microsecond).
    let soft_dir = tempfile::tempdir().unwrap();
    let soft_socket = soft_dir.path().join("kms.sock");
    let soft_config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n\n[kms]\nsocket = \"{}\"\n",
        soft_socket.display()
    );
    let soft_state = soft_dir.path().join("state");
    let soft = Daemon::start_with(soft_dir, &soft_config, &soft_state, &[]);
    let mut targets: Vec<Target> = vec![
        Target { name: "qkeyd", socket, pid: qkeyd.pid() },
        Target { name: SOFT, socket: soft_socket, pid: soft.pid() },
    ];

    // The upstream mock plugin, if built.
    let mock_dir = tempfile::tempdir().unwrap();
    let mut mock: Option<Child> = None;
    if let Some(bin) = std::env::var_os("QKEYD_BENCH_MOCK_KMS") {
        let cfg = mock_dir.path().join("softhsm-config.json");
        let cfg_json = json!({ "Path": softhsm_module(), "TokenLabel": HSM_LABEL, "Pin": HSM_PIN });
        std::fs::write(&cfg, cfg_json.to_string()).unwrap();
        let sock = mock_dir.path().join("mock.sock");
        mock = Some(
            Command::new(bin)
                .arg(format!("-listen-addr=unix://{}", sock.display()))
                .arg(format!("-config-file-path={}", cfg.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "the mock plugin did not open its socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = mock.as_ref().unwrap().id();
        targets.push(Target { name: MOCK, socket: sock, pid });
    }

    println!(
        "raw SoftHSM AES-GCM (in process): encrypt p50 {:.0} µs p99 {:.0} µs; decrypt p50 {:.0} µs p99 {:.0} µs",
        raw_enc.0, raw_enc.1, raw_dec.0, raw_dec.1
    );
    // Each call's data, per plugin: Decrypt needs that plugin's own ciphertext.
    let b64 = base64::engine::general_purpose::STANDARD;
    let calls: Vec<[Value; 3]> = targets
        .iter()
        .map(|t| {
            let mut c = Client::connect(t.socket.to_str().unwrap());
            let e = c.encrypt(&[7u8; 32]).unwrap();
            let annotations: serde_json::Map<String, Value> =
                e.annotations.iter().map(|(k, v)| (k.clone(), json!(b64.encode(v)))).collect();
            let decrypt = json!({
                "ciphertext": b64.encode(&e.ciphertext),
                "uid": "bench",
                "key_id": e.key_id,
                "annotations": annotations,
            });
            [json!({}), json!({ "plaintext": seed, "uid": "bench" }), decrypt]
        })
        .collect();
    // Interleaved rounds: every figure is measured ROUNDS times, the plugins
    // taking turns, so a slower stretch of the shared machine lands on all of
    // them; the table gives each plugin's median round.
    let rounds: usize =
        std::env::var("QKEYD_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let mut runs: std::collections::HashMap<(&str, &str, u32), Vec<Figures>> =
        std::collections::HashMap::new();
    for (ci, call) in CALLS.into_iter().enumerate() {
        for (conc, n) in [(1u32, 10_000u32), (64, 20_000)] {
            for round in 0..rounds {
                // Alternate who goes first, too.
                for k in 0..targets.len() {
                    let i = (k + round) % targets.len();
                    let t = &targets[i];
                    let data = &calls[i][ci];
                    let cpu = cpu_ns(t.pid);
                    let mut f = ghz(&ghz_bin, &proto, &t.socket, call, conc, n, data);
                    f.cpu_us = (cpu_ns(t.pid) - cpu) as f64 / 1e3 / f64::from(n);
                    runs.entry((t.name, call, conc)).or_default().push(f);
                }
            }
        }
    }
    println!(
        "{rounds} interleaved rounds; each cell is the median round (and the range of the rounds)"
    );
    println!("| plugin | call | c | p50 µs | p99 µs | ops/s | plugin CPU µs/call |");
    println!("|---|---|---|---|---|---|---|");
    let median = |v: &[Figures], f: fn(&Figures) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        (x[x.len() / 2], x[0], x[x.len() - 1])
    };
    let mut med = std::collections::HashMap::new();
    for t in &targets {
        for call in CALLS {
            for conc in [1u32, 64] {
                let v = &runs[&(t.name, call, conc)];
                let cell = |f: fn(&Figures) -> f64| {
                    let (m, lo, hi) = median(v, f);
                    format!("{m:.0} ({lo:.0}–{hi:.0})")
                };
                println!(
                    "| {} | {call} | {conc} | {} | {} | {} | {} |",
                    t.name,
                    cell(|f| f.p50_us),
                    cell(|f| f.p99_us),
                    cell(|f| f.rps),
                    cell(|f| f.cpu_us),
                );
                let m = |f: fn(&Figures) -> f64| median(v, f).0;
                med.insert(
                    (t.name, call, conc),
                    [m(|f| f.p50_us), m(|f| f.p99_us), m(|f| f.rps), m(|f| f.cpu_us)],
                );
            }
        }
    }
    // The goals, on the medians.
    if targets.iter().any(|t| t.name == MOCK) {
        let mut ahead = 0;
        let mut behind = Vec::new();
        for call in CALLS {
            for conc in [1u32, 64] {
                let (q, m) = (med[&("qkeyd", call, conc)], med[&(MOCK, call, conc)]);
                for (i, what) in ["p50", "p99", "ops/s"].iter().enumerate() {
                    // Lower is better for latencies, higher for ops/s.
                    let better = if i == 2 { q[i] > m[i] } else { q[i] < m[i] };
                    if better {
                        ahead += 1;
                    } else {
                        behind.push(format!("{call} {what} at {conc}: {:.0} vs {:.0}", q[i], m[i]));
                    }
                }
            }
        }
        println!(
            "qkeyd ahead of the mock on {ahead} of 18 figures (medians){}",
            if behind.is_empty() {
                String::new()
            } else {
                format!("; behind: {}", behind.join(", "))
            }
        );
    }
    // p99 at concurrency 1 within 2× the raw HSM operation plus one gRPC
    // round trip, the round trip taken two ways.
    for (call, raw) in [("Encrypt", raw_enc.1), ("Decrypt", raw_dec.1)] {
        let got = med[&("qkeyd", call, 1)][1];
        let status = med[&("qkeyd", "Status", 1)][1];
        let shaped = med[&(SOFT, call, 1)][1];
        println!(
            "{call} p99 c=1: {got:.0} µs; 2×raw + RTT = {:.0} µs with the same call on a soft KEK as the RTT, \
             {:.0} µs with the cached Status as the RTT",
            2.0 * raw + shaped,
            2.0 * raw + status
        );
        // The same, paired by round: the HSM call and its no-HSM twin ran in
        // the same round, seconds apart, so a slow stretch of the machine
        // falls on both; the median of the rounds' differences. (Status is
        // measured in other rounds, minutes away, so it cannot be paired.)
        let (hsm, soft) = (&runs[&("qkeyd", call, 1)], &runs[&(SOFT, call, 1)]);
        let mut d: Vec<f64> = hsm.iter().zip(soft).map(|(h, s)| h.p99_us - s.p99_us).collect();
        d.sort_by(f64::total_cmp);
        println!(
            "{call} p99 c=1, paired by round: the HSM adds {:.0} µs (rounds {:.0} to {:.0}) over the same call on a soft KEK; 2×raw = {:.0} µs",
            d[d.len() / 2],
            d[0],
            d[d.len() - 1],
            2.0 * raw
        );
    }
    for t in &targets {
        let took = burst(&t.socket, 10_000);
        println!(
            "decrypt burst, 10,000 distinct seeds, 64 in flight, {}: {:.2} s",
            t.name,
            took.as_secs_f64()
        );
    }
    if let Some(mut m) = mock {
        let _ = m.kill();
        let _ = m.wait();
    }
    drop(qkeyd);
    drop(soft);
}
