use std::{
    fs::OpenOptions,
    io::{ErrorKind, Write},
    os::unix::net::UnixDatagram,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use qkeyd_e2e::{Daemon, qkeyd_bin};

/// The messages qkeyd sent to the notify socket, one `KEY=VALUE` list each.
struct Manager {
    socket: UnixDatagram,
    got: Vec<(Instant, String)>,
}

impl Manager {
    fn bind(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Self { socket, got: Vec::new() }
    }

    /// Collect messages for `d`; returns the new ones.
    fn collect(&mut self, d: Duration) -> Vec<String> {
        let until = Instant::now() + d;
        let mut new = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < until {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let m = String::from_utf8(buf[..n].to_vec()).unwrap();
                    self.got.push((Instant::now(), m.clone()));
                    new.push(m);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
        new
    }

    /// Wait for a message with this line; returns it.
    fn wait_for(&mut self, line: &str, timeout: Duration) -> String {
        let until = Instant::now() + timeout;
        loop {
            if let Some(m) =
                self.collect(Duration::from_millis(50)).into_iter().find(|m| has(m, line))
            {
                return m;
            }
            assert!(Instant::now() < until, "no {line} in {:#?}", self.got);
        }
    }
}

fn has(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line || (line.ends_with('=') && l.starts_with(line)))
}

fn status(message: &str) -> Option<&str> {
    message.lines().find_map(|l| l.strip_prefix("STATUS="))
}

/// Under `Type=notify`, READY=1 comes only once the DRBG has been seeded from a
/// healthy source. The source is a FIFO with no writer: the daemon is up, its
/// listeners bound, but it stays not-ready, says why in STATUS and keeps the
/// watchdog fed. Once a writer feeds the FIFO, READY arrives, and /v1/health
/// asked at that moment already shows a seed from the source. When the writer
/// goes, STATUS says fail-closed; SIGTERM brings STOPPING=1.
#[test]
fn ready_arrives_only_after_the_first_healthy_seed() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("qrandom0");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let notify = dir.path().join("notify.sock");
    let mut manager = Manager::bind(&notify);
    // At 64 KiB/s the daemon drains what the writer leaves in the pipe in a second.
    let config = format!(
        "[health]\nmonitor_rate = 65536\n[[source]]\nname = \"qrng0\"\nkind = \"chardev\"\n\
         path = \"{}\"\nclaimed_h = 7.0\n",
        fifo.display()
    );
    let state = dir.path().join("state");
    let notify_env = notify.display().to_string();
    let d = Daemon::start_with(
        dir,
        &config,
        &state,
        &[("NOTIFY_SOCKET", &notify_env), ("WATCHDOG_USEC", "400000")],
    );

    // No writer: no READY, a status that says why, watchdog keep-alives.
    let early = manager.collect(Duration::from_secs(2));
    assert!(!early.iter().any(|m| has(m, "READY=1")), "READY before any seed: {early:#?}");
    let said = early.iter().find_map(|m| status(m)).expect("a STATUS while not ready");
    assert!(said.starts_with("starting"), "{said}");
    assert!(said.contains("qrng0 in start-up"), "{said}");
    let feeds = early.iter().filter(|m| has(m, "WATCHDOG=1")).count();
    assert!(feeds >= 5, "watchdog every ≤ 200 ms: {feeds} in 2 s: {early:#?}");
    let h = d.health();
    assert_eq!(h["pool"]["drbg"]["seeds"], 0, "{h}");
    assert_eq!(d.get("/readyz").status, 503);

    // A writer: READY once the first seed is in.
    let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
    let feeding = std::thread::spawn(move || {
        let mut x = 0x1234_5678_9abc_def1_u64;
        let mut buf = [0u8; 4096];
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            for b in &mut buf {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = (x >> 56) as u8;
            }
            if writer.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let ready = manager.wait_for("READY=1", Duration::from_secs(20));
    let h = d.health();
    let drbg = &h["pool"]["drbg"];
    assert!(drbg["seeds"].as_u64().unwrap() >= 1, "READY before the seed: {h}");
    assert_eq!(drbg["seeded_by"], "sources");
    assert_eq!(drbg["seed_log"][0]["source"], "qrng0");
    let said = status(&ready).expect("READY carries the status");
    assert!(said.starts_with("serving from 1 of 1 sources"), "{said}");

    // The writer goes: the source is unavailable and the status says so loudly.
    feeding.join().unwrap();
    let m = manager.wait_for("STATUS=", Duration::from_secs(20));
    let mut said = status(&m).unwrap().to_owned();
    let until = Instant::now() + Duration::from_secs(20);
    while !said.starts_with("FAIL-CLOSED") {
        assert!(Instant::now() < until, "never said fail-closed: {said}");
        let new = manager.collect(Duration::from_millis(100));
        if let Some(s) = new.iter().rev().find_map(|m| status(m)) {
            said = s.to_owned();
        }
    }
    assert!(said.contains("qrng0 unavailable"), "{said}");

    // SIGTERM: STOPPING=1.
    assert!(Command::new("kill").arg(d.pid().to_string()).status().unwrap().success());
    manager.wait_for("STOPPING=1", Duration::from_secs(10));
}

/// The shipped unit passes `systemd-analyze verify` (with ExecStart pointed at
/// the built binary), and its `systemd-analyze security` exposure stays at the
/// level deploy/README.md reports.
#[test]
fn the_unit_verifies_and_keeps_its_exposure() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/qkeyd.service"),
    )
    .unwrap();
    assert!(unit.contains("Type=notify"), "{unit}");
    let unit = unit.replace("/usr/local/bin/qkeyd", &qkeyd_bin().display().to_string());
    let path = dir.path().join("qkeyd.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(!text.contains(path.file_name().unwrap().to_str().unwrap()), "warnings: {text}");

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for qkeyd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {text}"));
    eprintln!("systemd-analyze security: exposure {level}");
    assert!(level <= 1.4, "exposure {level} (deploy/README.md reports 1.4):\n{text}");
}
