//! KMS fault campaign (`tests/campaigns/kms-faults.sh`): a qkeyd of its own
//! with a SoftHSM2 KEK, driven over its KMS v2 unix socket at concurrency 64
//! (one connection, as kube-apiserver connects) for SECONDS, while the token
//! is taken away (its files moved out of SoftHSM's sight) and put back twice.
//!
//! Every call is a round trip: Encrypt a fresh 32-byte plaintext, Decrypt
//! what it answered, compare. Each answer must be a correct round trip or a
//! gRPC error, never another plaintext. Prints calls, errors by code, wrong
//! answers, and for each removal the time to the first error and, after each
//! restore, the time to the first successful Encrypt; the daemon is never
//! restarted. Exit status 1 if a wrong answer was seen, a restore never
//! recovered or the daemon died.
//!
//! ```text
//! kms_campaign [SECONDS] [--concurrency N] [--outage SECONDS]
//! ```
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::{
    collections::BTreeMap,
    path::Path,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use qkeyd_e2e::{
    Daemon, HSM_PIN, SoftHsm,
    kms::Client,
    kms_proto::{DecryptRequest, EncryptRequest, StatusRequest},
};

/// kube-apiserver's per-call timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a task waits after an error before its next call (a client that
/// spins on a dead backend measures only itself).
const BACKOFF: Duration = Duration::from_millis(10);

/// What the tasks saw, shared between them.
#[derive(Default)]
struct Tally {
    /// Round trips started.
    calls: AtomicU64,
    /// Decrypt(Encrypt(p)) == p.
    ok: AtomicU64,
    /// A Decrypt that answered other bytes than the plaintext encrypted.
    wrong: AtomicU64,
    /// Errors by "Encrypt Unavailable", "Decrypt Internal", … (message of the first).
    errors: Mutex<BTreeMap<String, (u64, String)>>,
    /// Status answers by code (one Status a second, as kube-apiserver polls).
    status: Mutex<BTreeMap<String, u64>>,
    /// Set when the token goes or comes back; cleared by the first task that
    /// then sees an error (gone) or a successful Encrypt (back).
    watch_error: AtomicBool,
    watch_success: AtomicBool,
    /// (what, since the event, Instant of the event).
    events: Mutex<Vec<Event>>,
}

struct Event {
    what: &'static str,
    at: Instant,
    /// Time from the event to the first error (removal) or success (restore).
    first: Option<Duration>,
}

impl Tally {
    fn error(&self, call: &str, s: &tonic::Status) {
        let key = format!("{call} {:?}", s.code());
        let mut e = self.errors.lock().unwrap();
        let entry = e.entry(key).or_insert_with(|| (0, s.message().to_owned()));
        entry.0 += 1;
        drop(e);
        if self.watch_error.swap(false, Ordering::AcqRel) {
            self.mark(|ev| ev.what == "removed");
        }
    }

    fn encrypted(&self) {
        if self.watch_success.swap(false, Ordering::AcqRel) {
            self.mark(|ev| ev.what == "restored");
        }
    }

    /// Record the time since the last event `pick` selects.
    fn mark(&self, pick: impl Fn(&Event) -> bool) {
        let mut ev = self.events.lock().unwrap();
        if let Some(e) = ev.iter_mut().rev().find(|e| pick(e)) {
            e.first.get_or_insert_with(|| e.at.elapsed());
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: kms_campaign [SECONDS] [--concurrency N] [--outage SECONDS]");
    std::process::exit(2);
}

/// The campaign; the daemon, the token and the temporary directories are
/// removed on return, whatever the outcome.
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let secs: u64 = match args.first() {
        Some(a) if !a.starts_with("--") => a.parse().unwrap_or_else(|_| usage()),
        _ => 600,
    };
    let concurrency: usize =
        opt("--concurrency").map_or(64, |c| c.parse().unwrap_or_else(|_| usage()));
    let outage = Duration::from_secs(
        opt("--outage").map_or((secs / 10).clamp(3, 30), |o| o.parse().unwrap_or_else(|_| usage())),
    );
    let run = Duration::from_secs(secs);

    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("hsm-pin");
    std::fs::write(&pin, HSM_PIN).unwrap();
    let socket = dir.path().join("kms.sock");
    let keys = hsm.keys_config(&pin).replacen("[keys]\n", "[keys]\nseal_timeout_ms = 2000\n", 1);
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n\n[kms]\nsocket = \"{}\"\n\n{keys}",
        socket.display()
    );
    let state = dir.path().join("state");
    let mut d = Daemon::start_with(dir, &config, &state, &[hsm.env()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no KMS socket; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = d.pid();
    let mut first = Client::connect(socket.to_str().unwrap());
    let key0 = first.status().expect("Status before the run").key_id;
    let kept_plain = b"encrypted before any fault, decrypted after".to_vec();
    let kept = first.encrypt(&kept_plain).expect("Encrypt before the run");
    // With one client connection, as at the end.
    let (fd0, rss0) = (fd_count(pid), rss_kb(pid));
    drop(first);

    println!(
        "kms campaign: {secs}s, concurrency {concurrency}, SoftHSM2 KEK {key0}, token away {}s \
         at 25% and 60% of the run; qkeyd pid {pid}",
        outage.as_secs()
    );
    let tally = Arc::new(Tally::default());
    let (rt, client) = Client::parts(socket.to_str().unwrap());
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..concurrency as u64 {
            let (mut c, tally, stop) = (client.clone(), tally.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let mut plain = [0u8; 32];
                    plain[..8].copy_from_slice(&task.to_le_bytes());
                    plain[8..16].copy_from_slice(&n.to_le_bytes());
                    getrandom::fill(&mut plain[16..]).unwrap();
                    tally.calls.fetch_add(1, Ordering::Relaxed);
                    let mut req = tonic::Request::new(EncryptRequest {
                        plaintext: plain.to_vec(),
                        uid: format!("campaign-{task}-{n}"),
                    });
                    req.set_timeout(CALL_TIMEOUT);
                    let e = match c.encrypt(req).await {
                        Ok(r) => r.into_inner(),
                        Err(s) => {
                            tally.error("Encrypt", &s);
                            tokio::time::sleep(BACKOFF).await;
                            continue;
                        }
                    };
                    tally.encrypted();
                    let mut req = tonic::Request::new(DecryptRequest {
                        ciphertext: e.ciphertext,
                        uid: format!("campaign-{task}-{n}"),
                        key_id: e.key_id,
                        annotations: e.annotations,
                    });
                    req.set_timeout(CALL_TIMEOUT);
                    match c.decrypt(req).await {
                        Ok(r) if r.get_ref().plaintext == plain => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {
                            tally.wrong.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(s) => {
                            tally.error("Decrypt", &s);
                            tokio::time::sleep(BACKOFF).await;
                        }
                    }
                }
            }));
        }
        // Status once a second, as kube-apiserver polls it.
        {
            let (mut c, tally, stop) = (client.clone(), tally.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut req = tonic::Request::new(StatusRequest {});
                    req.set_timeout(CALL_TIMEOUT);
                    let code = match c.status(req).await {
                        Ok(s) if s.get_ref().healthz == "ok" => "Ok".to_owned(),
                        Ok(s) => format!("healthz {:?}", s.get_ref().healthz),
                        Err(s) => format!("{:?}", s.code()),
                    };
                    *tally.status.lock().unwrap().entry(code).or_default() += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
        }
        // The faults: the token away at 25% and at 60% of the run.
        let tokens = hsm.tokens();
        let aside = hsm.dir.path().join("tokens-aside");
        for at in [run / 4, run * 3 / 5] {
            tokio::time::sleep_until((start + at).into()).await;
            move_away(&tokens, &aside);
            tally.events.lock().unwrap().push(Event {
                what: "removed",
                at: Instant::now(),
                first: None,
            });
            tally.watch_error.store(true, Ordering::Release);
            tokio::time::sleep(outage).await;
            move_back(&tokens, &aside);
            tally.events.lock().unwrap().push(Event {
                what: "restored",
                at: Instant::now(),
                first: None,
            });
            tally.watch_success.store(true, Ordering::Release);
        }
        tokio::time::sleep_until((start + run).into()).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = start.elapsed();
    drop(client);
    drop(rt);

    // After the run: the same daemon, the same write key, old data decrypts.
    let alive = d.alive();
    let mut c = Client::connect(socket.to_str().unwrap());
    let after = c.status();
    let kept_back = c.decrypt_reply(&kept);
    let (fd1, rss1) = (fd_count(pid), rss_kb(pid));

    let calls = tally.calls.load(Ordering::Relaxed);
    let ok = tally.ok.load(Ordering::Relaxed);
    let wrong = tally.wrong.load(Ordering::Relaxed);
    let errors = tally.errors.lock().unwrap();
    let nerr: u64 = errors.values().map(|(n, _)| n).sum();
    println!("\n== kms campaign summary ==");
    println!("run: {:.1}s, concurrency {concurrency}, one connection", elapsed.as_secs_f64());
    println!(
        "round trips: {calls} started, {ok} correct ({:.0}/s), {nerr} gRPC errors, {wrong} wrong plaintexts",
        ok as f64 / elapsed.as_secs_f64()
    );
    for (k, (n, msg)) in errors.iter() {
        println!("  error {k}: {n}  (first: {msg:?})");
        if msg.contains("incident ") {
            println!("    its log line: {}", d.incident(msg));
        }
    }
    println!("Status (1/s): {:?}", tally.status.lock().unwrap());
    let events = tally.events.lock().unwrap();
    let mut recovered = true;
    for e in events.iter() {
        let t = e.at.duration_since(start).as_secs_f64();
        match (e.what, e.first) {
            ("removed", Some(f)) => {
                println!("token removed at {t:.1}s: first error {:.0} ms later", ms(f))
            }
            ("removed", None) => println!("token removed at {t:.1}s: no call failed"),
            (_, Some(f)) => println!(
                "token restored at {t:.1}s: first successful Encrypt {:.0} ms later (recovery)",
                ms(f)
            ),
            (_, None) => {
                recovered = false;
                println!("token restored at {t:.1}s: NO successful Encrypt afterwards");
            }
        }
    }
    let same_key = after.as_ref().is_ok_and(|s| s.key_id == key0);
    let kept_ok = kept_back.as_ref().is_ok_and(|p| *p == kept_plain);
    println!(
        "after the run: daemon pid {pid} alive: {alive}; Status {}; write key unchanged: {}; \
         a ciphertext from before the faults decrypts: {}",
        after.as_ref().map_or_else(|e| format!("{:?}", e.code()), |s| s.healthz.clone()),
        same_key,
        kept_ok,
    );
    println!("daemon fds {fd0} → {fd1}, RSS {rss0} kB → {rss1} kB");
    let unexpected: u64 = errors
        .iter()
        .filter(|(k, _)| !k.ends_with("Unavailable") && !k.ends_with("DeadlineExceeded"))
        .map(|(_, (n, _))| n)
        .sum();
    if unexpected > 0 {
        println!("note: {unexpected} errors with a code other than Unavailable/DeadlineExceeded");
    }
    let pass = wrong == 0 && recovered && alive && same_key && kept_ok;
    if pass {
        println!("PASS");
        return ExitCode::SUCCESS;
    }
    println!("FAIL\nlast log lines:");
    let log = d.log();
    for l in log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev() {
        println!("  {l}");
    }
    ExitCode::FAILURE
}

fn move_away(tokens: &Path, aside: &Path) {
    std::fs::rename(tokens, aside).unwrap();
    std::fs::create_dir(tokens).unwrap();
}

fn move_back(tokens: &Path, aside: &Path) {
    std::fs::remove_dir(tokens).unwrap();
    std::fs::rename(aside, tokens).unwrap();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
