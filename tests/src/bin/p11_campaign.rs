//! PKCS#11 fault campaign (`tests/campaigns/pkcs11-restarts.sh`): a qkeyd of
//! its own serving the module socket, PROCS processes × THREADS threads using
//! `libqkeyd_pkcs11.so` through the cryptoki crate for SECONDS, each thread
//! drawing random bytes (C_GenerateRandom, 32 and 256 bytes) and signing with
//! an ML-DSA-65 token key (logged in with the PIN) and verifying the
//! signature, while the daemon is restarted twice (SIGTERM at 1/3 of the run,
//! SIGKILL at 2/3, on the same state).
//!
//! Checks: no 32-byte output block repeats across all processes (each block's
//! SHA3-256, first 128 bits, gathered and sorted); every return code is one
//! the README documents for a daemon that goes away (CKR_OK, CKR_DEVICE_ERROR);
//! every signature made verifies; the daemon's and each client's open file
//! descriptors are as many after as before. Exit status 1 if a check fails.
//!
//! ```text
//! p11_campaign [SECONDS] [--procs N] [--threads N] [--rate ITERATIONS_PER_S]
//! p11_campaign worker ...   (run by the campaign itself)
//! ```
//!
//! A thread's iteration is one 32-byte and one 256-byte draw, and every fifth
//! iteration a sign and a verify; `--rate` (default 50 per thread) bounds the
//! iterations so that the digests of a 10-minute run fit in memory.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::print_stderr)]

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::Error,
    mechanism::{
        Mechanism,
        dsa::{HedgeType, SignAdditionalContext},
    },
    object::{Attribute, MlDsaParameterSetType},
    session::UserType,
    types::AuthPin,
};
use qkeyd_e2e::{Daemon, pkcs11_module};
use serde_json::{Value, json};
use sha3::{Digest as _, Sha3_256};

const PIN: &str = "campaign-pin-8642";
/// Return codes the README gives for a daemon that is down or restarting
/// ("With the daemon down … it returns CKR_DEVICE_ERROR"), besides CKR_OK.
const DOCUMENTED: [&str; 3] = ["CKR_OK", "CKR_DEVICE_ERROR", "CKR_TOKEN_NOT_PRESENT"];

fn usage() -> ! {
    eprintln!("usage: p11_campaign [SECONDS] [--procs N] [--threads N] [--rate ITERATIONS_PER_S]");
    std::process::exit(2);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str, default: u64| -> u64 {
        args.windows(2)
            .find(|w| w[0] == name)
            .map_or(default, |w| w[1].parse().unwrap_or_else(|_| usage()))
    };
    if args.first().map(String::as_str) == Some("worker") {
        worker(opt("--seconds", 60), opt("--threads", 4) as usize, opt("--rate", 50), &args);
        return ExitCode::SUCCESS;
    }
    let secs = match args.first() {
        Some(a) if !a.starts_with("--") => a.parse().unwrap_or_else(|_| usage()),
        _ => 600,
    };
    campaign(secs, opt("--procs", 8) as usize, opt("--threads", 4), opt("--rate", 50))
}

/// `CKR_DEVICE_ERROR` for cryptoki's `DeviceError`.
fn ckr(e: &Error) -> String {
    let name = match e {
        Error::Pkcs11(rv, _) => format!("{rv:?}"),
        other => return format!("not a PKCS#11 error: {other}"),
    };
    let mut out = String::from("CKR");
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// One worker process: THREADS threads of draws and signatures for SECONDS.
/// Writes the digests of its blocks to `--out` and one JSON line to stdout.
fn worker(secs: u64, threads: usize, rate: u64, args: &[String]) {
    let out = args.windows(2).find(|w| w[0] == "--out").map(|w| PathBuf::from(&w[1])).unwrap();
    let module = std::env::var("QKEYD_P11_CHILD_MODULE").unwrap();
    let p = Pkcs11::new(module).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
    let slot = p.get_slots_with_token().unwrap()[0];
    let main = p.open_rw_session(slot).unwrap();
    main.login(UserType::User, Some(&AuthPin::new(PIN.into()))).unwrap();
    // A token key: it lives in the vault, so it outlives a daemon restart
    // (session keys end with the connection that made them).
    let (public, private) = main
        .generate_key_pair(
            &Mechanism::MlDsaKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::ParameterSet(MlDsaParameterSetType::ML_DSA_65.into()),
                Attribute::Verify(true),
            ],
            &[
                Attribute::Token(true),
                Attribute::Sign(true),
                Attribute::Label(b"p11-campaign".to_vec()),
            ],
        )
        .unwrap();
    // One session per thread (a cryptoki Session is Send, not Sync).
    let sessions: Vec<_> = (0..threads).map(|_| p.open_rw_session(slot).unwrap()).collect();
    let fds_before = fd_count(std::process::id());
    let codes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let results: Vec<(Vec<u128>, u64, u64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .into_iter()
            .enumerate()
            .map(|(t, s)| {
                let codes = codes.clone();
                scope.spawn(move || {
                    let tally = |op: &str, r: Result<(), &Error>| {
                        let code = r.map_or_else(ckr, |()| "CKR_OK".to_owned());
                        *codes.lock().unwrap().entry(format!("{op} {code}")).or_default() += 1;
                    };
                    let ctx = SignAdditionalContext::new(HedgeType::Preferred, None);
                    let mut digests = Vec::new();
                    let (mut signed, mut bad_sig) = (0u64, 0u64);
                    let mut buf = [0u8; 256];
                    let mut next = Instant::now();
                    let mut i = 0u64;
                    while Instant::now() < deadline {
                        for len in [32, 256] {
                            let r = s.generate_random_slice(&mut buf[..len]);
                            tally("C_GenerateRandom", r.as_ref().map(|_| ()));
                            if r.is_ok() {
                                for block in buf[..len].chunks(32) {
                                    let d = Sha3_256::digest(block);
                                    digests.push(u128::from_le_bytes(d[..16].try_into().unwrap()));
                                }
                            }
                        }
                        if i % 5 == t as u64 % 5 {
                            let msg = format!("campaign process {} thread {t} message {i}", std::process::id());
                            match s.sign(&Mechanism::MlDsa(ctx), private, msg.as_bytes()) {
                                Ok(sig) => {
                                    tally("C_Sign", Ok(()));
                                    signed += 1;
                                    let v = s.verify(&Mechanism::MlDsa(ctx), public, msg.as_bytes(), &sig);
                                    tally("C_Verify", v.as_ref().map(|_| ()));
                                    if matches!(&v, Err(Error::Pkcs11(rv, _)) if format!("{rv:?}") == "SignatureInvalid") {
                                        bad_sig += 1;
                                    }
                                }
                                Err(e) => tally("C_Sign", Err(&e)),
                            }
                        }
                        i += 1;
                        next += period;
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                    (digests, signed, bad_sig)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let fds_after = fd_count(std::process::id());
    let mut all: Vec<u128> = Vec::new();
    let (mut signed, mut bad_sig) = (0, 0);
    for (d, s, b) in results {
        all.extend(d);
        signed += s;
        bad_sig += b;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(&out).unwrap());
    for d in &all {
        f.write_all(&d.to_le_bytes()).unwrap();
    }
    f.flush().unwrap();
    // Clean up the token key (the daemon may be between restarts: best effort).
    let cleanup = main.destroy_object(private).map_err(|e| ckr(&e));
    drop(main);
    let _ = p.finalize();
    let codes = codes.lock().unwrap().clone();
    println!(
        "{}",
        json!({
            "pid": std::process::id(),
            "blocks": all.len(),
            "signed": signed,
            "bad_signatures": bad_sig,
            "fds_before": fds_before,
            "fds_after": fds_after,
            "codes": codes,
            "cleanup": cleanup.err(),
        })
    );
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Whether process `pid` (a child of ours) has exited (a zombie, or gone).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
}

/// The daemon's fd count once it has settled (connection threads of clients
/// that left close their sockets shortly after).
fn settled_fds(pid: u32) -> usize {
    let mut last = fd_count(pid);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now = fd_count(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

fn start_daemon(dir: tempfile::TempDir, config: &str, state: &Path) -> Daemon {
    let d = Daemon::start_with(dir, config, state, &[]);
    assert!(d.log().contains("PKCS#11 module socket listening"), "{}", d.log());
    d
}

/// Stop the daemon with `signal` and start it again on the same state;
/// returns the new daemon and the time it was away.
fn restart(d: Daemon, signal: &str, config: &str, state: &Path) -> (Daemon, Duration) {
    let t = Instant::now();
    let pid = d.pid();
    let ok = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
    assert!(ok.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !exited(pid) {
        assert!(Instant::now() < deadline, "qkeyd {pid} did not stop on SIG{signal}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let dir = d.kill(); // reaps it
    let d = start_daemon(dir, config, state);
    (d, t.elapsed())
}

/// The campaign; the daemon and the temporary directories are removed on
/// return, whatever the outcome.
fn campaign(secs: u64, procs: usize, threads: u64, rate: u64) -> ExitCode {
    let module = pkcs11_module();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("p11.sock");
    let pin = dir.path().join("p11-pin");
    std::fs::write(&pin, PIN).unwrap();
    let state = dir.path().join("state");
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n\n[module]\nsocket = \"{}\"\npin_file = \"{}\"\n",
        socket.display(),
        pin.display()
    );
    let work = tempfile::tempdir().unwrap();
    let mut d = start_daemon(dir, &config, &state);
    let first_pid = d.pid();
    let fds_daemon_before = settled_fds(first_pid);
    println!(
        "pkcs11 campaign: {secs}s, {procs} processes × {threads} threads, {rate} iterations/s \
         per thread; qkeyd pid {first_pid}, {fds_daemon_before} fds; restarts at 1/3 (SIGTERM) \
         and 2/3 (SIGKILL)"
    );
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let children: Vec<(Child, PathBuf)> = (0..procs)
        .map(|i| {
            let out = work.path().join(format!("digests-{i}"));
            let child = Command::new(&exe)
                .args(["worker", "--seconds", &secs.to_string()])
                .args(["--threads", &threads.to_string(), "--rate", &rate.to_string()])
                .arg("--out")
                .arg(&out)
                .env("QKEYD_MODULE_SOCKET", &socket)
                .env("QKEYD_P11_CHILD_MODULE", module)
                .env("QKEYD_MODULE_SERVER_UID", "0")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (child, out)
        })
        .collect();
    let mut downtimes = Vec::new();
    let mut peak_fds = 0;
    for (frac, signal) in [(1.0 / 3.0, "TERM"), (2.0 / 3.0, "KILL")] {
        let at = start + Duration::from_secs_f64(secs as f64 * frac);
        while Instant::now() < at {
            peak_fds = peak_fds.max(fd_count(d.pid()));
            std::thread::sleep(Duration::from_millis(200));
        }
        let (nd, down) = restart(d, signal, &config, &state);
        d = nd;
        println!(
            "restart (SIG{signal}) at {:.1}s: away {:.0} ms, new pid {}",
            start.elapsed().as_secs_f64(),
            down.as_secs_f64() * 1e3,
            d.pid()
        );
        downtimes.push((signal, down));
    }
    let mut reports = Vec::new();
    let mut failed_workers = Vec::new();
    for (child, out) in children {
        let o = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        match stdout.lines().last().and_then(|l| serde_json::from_str::<Value>(l).ok()) {
            Some(v) if o.status.success() => reports.push((v, out)),
            _ => failed_workers.push(format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
        }
    }
    let elapsed = start.elapsed();
    let alive = d.alive();
    let fds_daemon_after = settled_fds(d.pid());

    // Every digest of every process, sorted: a repeat is two equal neighbours.
    let mut all: Vec<u128> = Vec::new();
    for (_, out) in &reports {
        let bytes = std::fs::read(out).unwrap();
        all.extend(bytes.chunks_exact(16).map(|c| u128::from_le_bytes(c.try_into().unwrap())));
    }
    all.sort_unstable();
    let repeats = all.windows(2).filter(|w| w[0] == w[1]).count();

    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut signed, mut bad_sig) = (0, 0);
    let mut client_fds = Vec::new();
    let mut cleanups = Vec::new();
    for (v, _) in &reports {
        for (k, n) in v["codes"].as_object().unwrap() {
            *codes.entry(k.clone()).or_default() += n.as_u64().unwrap();
        }
        signed += v["signed"].as_u64().unwrap();
        bad_sig += v["bad_signatures"].as_u64().unwrap();
        client_fds.push((v["fds_before"].as_u64().unwrap(), v["fds_after"].as_u64().unwrap()));
        if let Some(e) = v["cleanup"].as_str() {
            cleanups.push(e.to_owned());
        }
    }
    let undocumented: Vec<_> = codes
        .iter()
        .filter(|(k, _)| !DOCUMENTED.iter().any(|c| k.ends_with(&format!(" {c}"))))
        .collect();
    let leaked_clients = client_fds.iter().filter(|(a, b)| a != b).count();

    println!("\n== pkcs11 campaign summary ==");
    println!(
        "run: {:.1}s, {} of {procs} worker processes reported",
        elapsed.as_secs_f64(),
        reports.len()
    );
    for w in &failed_workers {
        println!("  worker failed: {w}");
    }
    for (signal, down) in &downtimes {
        println!("restart SIG{signal}: daemon away {:.0} ms", down.as_secs_f64() * 1e3);
    }
    println!("32-byte blocks checked: {} (SHA3-256/128 digests), repeated: {repeats}", all.len());
    println!("signatures: {signed} made, {bad_sig} failed to verify");
    println!("return codes (call, CKR, count):");
    for (k, n) in &codes {
        println!("  {k}: {n}");
    }
    println!(
        "documented for a daemon restart: {}; others seen: {}",
        DOCUMENTED.join(", "),
        if undocumented.is_empty() {
            "none".to_owned()
        } else {
            undocumented.iter().map(|(k, n)| format!("{k} ×{n}")).collect::<Vec<_>>().join(", ")
        }
    );
    println!(
        "daemon fds: {fds_daemon_before} before the load (pid {first_pid}), peak {peak_fds} \
         under load, {fds_daemon_after} after the clients left (pid {}, alive: {alive})",
        d.pid()
    );
    println!("client fds (before → after the load, per process): {client_fds:?}");
    if !cleanups.is_empty() {
        println!("token keys not destroyed at the end: {cleanups:?}");
    }
    let pass = failed_workers.is_empty()
        && repeats == 0
        && bad_sig == 0
        && undocumented.is_empty()
        && leaked_clients == 0
        && fds_daemon_after <= fds_daemon_before
        && alive
        && !all.is_empty();
    if pass {
        println!("PASS");
        return ExitCode::SUCCESS;
    }
    println!("FAIL\nlast log lines of the daemon:");
    let log = d.log();
    for l in log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev() {
        println!("  {l}");
    }
    ExitCode::FAILURE
}
