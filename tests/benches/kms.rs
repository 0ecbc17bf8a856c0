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
//! case) by the harness's tonic client with 64 requests in flight. Then
//! concurrency 1 again with the calls interleaved one by one, the plugins
//! taking turns call by call (the harness's tonic client): the HSM's share of
//! a call, as qkeyd against a qkeyd with a soft KEK, and the p99 goal are
//! judged there, as a drift between rounds would swamp them. The mock
//! plugin (k8s.io/kms internal/plugins/_mock) is not on the module proxy; the
//! bench runs it only if QKEYD_BENCH_MOCK_KMS names a binary of it.
#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use qkeyd_drivers::seal::{
    Sealer,
    pkcs11::{Pkcs11Config, Pkcs11Sealer},
};
use qkeyd_e2e::bench::{
    Figures, Target, Turns, cell, cpu_ns, ghz, ghz_bin, ghz_bodies, halt_polling, interleaved,
    kms_proto, percentiles, spread,
};
use qkeyd_e2e::kms_proto::{DecryptRequest, EncryptRequest};
use qkeyd_e2e::{Daemon, HSM_LABEL, HSM_PIN, SoftHsm, kms::Client, softhsm_module};
use serde_json::{Value, json};
use zeroize::Zeroizing;

const MOCK_KEY: &str = "kms-test";

const CALLS: [&str; 3] = ["Status", "Encrypt", "Decrypt"];
const SOFT: &str = "qkeyd, soft KEK (no HSM)";
const MOCK: &str = "k8s mock plugin";

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
    let proto = kms_proto();

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

    // qkeyd with a SoftHSM KEK.
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, HSM_PIN).unwrap();
    let socket = dir.path().join("kms.sock");
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n\n[kms]\nsocket = \"{}\"\n\n[keys]\nsealer = \"hsm\"\n[keys.hsm]\nmodule = \"{}\"\ntoken_label = \"{HSM_LABEL}\"\npin_file = \"{}\"\n",
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
    let calls: Vec<[Value; 3]> = targets.iter().map(|t| ghz_bodies(&t.socket)).collect();
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
        "ghz, {rounds} interleaved rounds; each cell is the median round (and the range of the rounds)"
    );
    println!("| plugin | call | c | p50 µs | p99 µs | ops/s | plugin CPU µs/call |");
    println!("|---|---|---|---|---|---|---|");
    let median = |v: &[Figures], f: fn(&Figures) -> f64| spread(v.iter().map(f).collect());
    let mut med = std::collections::HashMap::new();
    for t in &targets {
        for call in CALLS {
            for conc in [1u32, 64] {
                let v = &runs[&(t.name, call, conc)];
                let col = |f: fn(&Figures) -> f64| cell(v.iter().map(f).collect());
                println!(
                    "| {} | {call} | {conc} | {} | {} | {} | {} |",
                    t.name,
                    col(|f| f.p50_us),
                    col(|f| f.p99_us),
                    col(|f| f.rps),
                    col(|f| f.cpu_us),
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
    // Concurrency 1 again, the calls interleaved one by one, for the figures
    // a round-to-round drift would swamp: the HSM's share of a call (qkeyd
    // against its no-HSM twin) and the p99 goal. ghz's p99s above move
    // 100–300 µs between rounds; the share judged here is about 40.
    println!(
        "concurrency 1, calls interleaved one by one (the harness's tonic client), \
         {rounds} runs of 10,000 calls per plugin; this machine: {}",
        halt_polling()
    );
    println!("| plugin | call | p50 µs | p99 µs | plugin CPU µs/call |");
    println!("|---|---|---|---|---|");
    let mut inter: std::collections::HashMap<(&str, &str), Vec<Turns>> =
        std::collections::HashMap::new();
    // The raw operation, per run: in a tight loop just before it, and taking
    // its turn between the calls (as a plugin meets it).
    let mut raw_runs: std::collections::HashMap<&str, Vec<[(f64, f64); 2]>> =
        std::collections::HashMap::new();
    for call in CALLS {
        let mut op = || match call {
            "Encrypt" => drop(hsm.key_encrypt(MOCK_KEY, &iv, b"aad", &[7u8; 32]).unwrap()),
            "Decrypt" => drop(hsm.key_decrypt(MOCK_KEY, &iv, b"aad", &ct).unwrap()),
            _ => {}
        };
        for _ in 0..rounds {
            let tight = percentiles(5000, |_| op());
            let (plugins, between) = interleaved(&targets, call, 10_000, &mut op);
            for (t, f) in targets.iter().zip(plugins) {
                inter.entry((t.name, call)).or_default().push(f);
            }
            raw_runs.entry(call).or_default().push([tight, between]);
        }
        if call != "Status" {
            let v = &raw_runs[call];
            for (i, how) in ["in a tight loop", "between the calls"].iter().enumerate() {
                println!(
                    "| raw SoftHSM AES-GCM, {how} | {call} | {} | {} | n/a |",
                    cell(v.iter().map(|r| r[i].0).collect()),
                    cell(v.iter().map(|r| r[i].1).collect())
                );
            }
        }
        for t in &targets {
            let v = &inter[&(t.name, call)];
            let col = |f: fn(&Turns) -> f64| cell(v.iter().map(f).collect());
            println!(
                "| {} | {call} | {} | {} | {} |",
                t.name,
                col(|f| f.p50_us),
                col(|f| f.p99_us),
                col(|f| f.cpu_us)
            );
        }
    }
    // p99 within 2× the raw HSM operation (its tight loop's p99, run by run)
    // plus one gRPC round trip: the same call on a soft KEK in the same run.
    // And whether the HSM's share of the p99 is within one raw operation's
    // p99 as taken between the calls: what qkeyd adds at the tail beyond the
    // operation itself.
    for call in ["Encrypt", "Decrypt"] {
        let (hsm, soft, raw) = (&inter[&("qkeyd", call)], &inter[&(SOFT, call)], &raw_runs[call]);
        let runs = || hsm.iter().zip(soft).zip(raw);
        let met = runs().filter(|((h, s), r)| h.p99_us <= 2.0 * r[0].1 + s.p99_us).count();
        let within = runs().filter(|((h, s), r)| h.p99_us - s.p99_us <= r[1].1).count();
        let (p50, p50_lo, p50_hi) = spread(runs().map(|((h, s), _)| h.p50_us - s.p50_us).collect());
        let (p99, p99_lo, p99_hi) = spread(runs().map(|((h, s), _)| h.p99_us - s.p99_us).collect());
        let raw_p99 = |i: usize| spread(raw.iter().map(|r| r[i].1).collect()).0;
        println!(
            "{call} p99 ≤ 2×raw + RTT: met in {met} of {rounds} runs; the HSM adds {p99:.0} µs \
             ({p99_lo:.0} to {p99_hi:.0}) at p99 and {p50:.0} µs ({p50_lo:.0} to {p50_hi:.0}) \
             at p50 over the same call on a soft KEK, against 2×raw = {:.0} µs (tight loop); \
             that share within one raw operation's p99 taken between the calls ({:.0} µs) in \
             {within} of {rounds} runs",
            2.0 * raw_p99(0),
            raw_p99(1),
        );
    }
    if targets.iter().any(|t| t.name == MOCK) {
        let mut ahead = 0;
        for call in CALLS {
            let (q, m) = (&inter[&("qkeyd", call)], &inter[&(MOCK, call)]);
            let p50 = |v: &[Turns]| spread(v.iter().map(|f| f.p50_us).collect()).0;
            let p99 = |v: &[Turns]| spread(v.iter().map(|f| f.p99_us).collect()).0;
            ahead += usize::from(p50(q) < p50(m)) + usize::from(p99(q) < p99(m));
        }
        println!(
            "interleaved: qkeyd ahead of the mock on {ahead} of 6 figures (p50, p99; medians)"
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
    drop(hsm);
    if let Some(mut m) = mock {
        let _ = m.kill();
        let _ = m.wait();
    }
    drop(qkeyd);
    drop(soft);
}
