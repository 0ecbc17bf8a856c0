use std::{
    fs::OpenOptions,
    io::{ErrorKind, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use qkeyd_e2e::Daemon;

const WAIT: Duration = Duration::from_secs(30);

/// Writes pseudo-random bytes into a FIFO until stopped, then closes it.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<u64>>,
}

impl Writer {
    fn start(fifo: &Path, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let fifo: PathBuf = fifo.to_owned();
        let thread = thread::spawn(move || {
            // Non-blocking so the writer can stop even when the reader is not reading.
            let deadline = Instant::now() + WAIT;
            let mut f = loop {
                match OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo) {
                    Ok(f) => break f,
                    // ENXIO: no reader yet.
                    Err(_) if Instant::now() < deadline && !flag.load(Ordering::Relaxed) => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("open FIFO for writing: {e}"),
                }
            };
            let mut x = seed | 1;
            let mut buf = [0u8; 4096];
            let mut written = 0u64;
            while !flag.load(Ordering::Relaxed) {
                for b in &mut buf {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = (x >> 56) as u8;
                }
                match f.write(&buf) {
                    Ok(n) => written += n as u64,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(e) => panic!("write FIFO: {e}"),
                }
            }
            written
        });
        Self { stop, thread: Some(thread) }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().map(|t| t.join().unwrap()).unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn fifo_source_serves_and_recovers_when_the_writer_returns() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("qrandom0");
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(ok.success());
    let config = format!(
        r#"
        [pool]
        reseed_interval_requests = 1
        [[source]]
        name = "qrng0"
        kind = "chardev"
        path = "{}"
        claimed_h = 7.0
        "#,
        fifo.display()
    );
    // Start the daemon first: building it on a cold checkout can take longer
    // than the writer waits for a reader. Its source thread then blocks in
    // open(2) until a writer appears, which counts as a reader for the writer.
    let d = Daemon::start_in(dir, &config);
    let writer = Writer::start(&fifo, 0x1234_5678);
    let t0 = Instant::now();
    d.wait_health("the FIFO source to pass start-up", WAIT, |h| {
        h["pool"]["sources"][0]["state"] == "healthy"
    });
    let r = d.get("/v1/random?bytes=64&format=hex");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.entropy.as_deref(), Some("sources"));
    let src = d.source("qrng0");
    assert_eq!(src["identity"], fifo.display().to_string());
    assert!(src["seeds_used"].as_u64().unwrap() >= 1);

    eprintln!("healthy after {:?}", t0.elapsed());
    // The writer goes away: the source sees EOF once it reads on, and is
    // unavailable; fail-closed, the pool refuses.
    let written = writer.stop();
    assert!(written > 0);
    let h = d.wait_health("the source to see the writer gone", WAIT, |h| {
        // What the writer left in the pipe (up to 64 KiB) is read first; 1 MiB
        // draws at reseed interval 1 take 16 seed blocks each to get there.
        let _ = d.get("/v1/random?bytes=1048576&format=raw");
        h["pool"]["sources"][0]["state"] == "unavailable"
    });
    eprintln!("unavailable after {:?}", t0.elapsed());
    assert_eq!(h["pool"]["sources"][0]["disconnects"], 1);
    let r = d.get("/v1/random?bytes=32");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(d.get("/readyz").status, 503);

    // A writer comes back: same process, the source reopens and re-runs start-up.
    let writer = Writer::start(&fifo, 0x9abc_def0);
    let h = d.wait_health("the source to recover", WAIT, |h| {
        h["pool"]["sources"][0]["state"] == "healthy"
    });
    eprintln!("recovered after {:?}", t0.elapsed());
    assert_eq!(h["pool"]["sources"][0]["startups_passed"], 2);
    let r = d.get("/v1/random?bytes=32");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.get("/readyz").status, 200);
    assert!(d.log().contains("entropy source unavailable"));
    writer.stop();
}
