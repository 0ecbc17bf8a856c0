//! Entropy-path throughput, each figure next to getrandom(2) in the same run:
//!
//! ```text
//! cargo bench -p qkeyd-e2e --bench throughput
//! ```
//!
//! RCT+APT on 8-bit samples, CTR_DRBG output, and GET /v1/random on loopback
//! (32-byte and 1 MiB draws) against a release build of the daemon. Results go
//! in BENCHMARKS.md.
#![allow(clippy::unwrap_used)]

use std::{
    hint::black_box,
    thread,
    time::{Duration, Instant},
};

use qkeyd_drbg::{CtrDrbg, MAX_REQUEST, SEED_LEN};
use qkeyd_e2e::Daemon;
use qkeyd_health::{HealthMonitor, HealthParams};

const RUN: Duration = Duration::from_secs(3);

/// Run `f` repeatedly for about RUN; returns calls per second.
fn rate(mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        for _ in 0..16 {
            f();
        }
        n += 16;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn line(what: &str, value: f64, unit: &str, baseline: Option<f64>) {
    match baseline {
        Some(b) => {
            println!("{what:<44} {value:>12.1} {unit:<7} ({:.1}% of getrandom)", 100.0 * value / b)
        }
        None => println!("{what:<44} {value:>12.1} {unit}"),
    }
}

fn main() {
    let mut small = [0u8; 32];
    let mut big = vec![0u8; 1 << 20];
    let gr_small = rate(|| getrandom::fill(&mut small).unwrap());
    let gr_big = rate(|| getrandom::fill(&mut big).unwrap()) * (1 << 20) as f64 / 1e6;
    line("getrandom 32 B", gr_small, "calls/s", None);
    line("getrandom 1 MiB", gr_big, "MB/s", None);

    // Health tests over 64 MiB of 8-bit samples, fed in 4 KiB reads as the daemon does.
    let mut samples = vec![0u8; 64 << 20];
    getrandom::fill(&mut samples).unwrap();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let mut m = HealthMonitor::new(HealthParams::new(8, 7.5)).unwrap();
        let t = Instant::now();
        for c in samples.chunks(4096) {
            let mut pos = 0;
            while pos < c.len() {
                pos += m.feed(&c[pos..]).consumed.max(1);
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let health = samples.len() as f64 / best / 1e6;
    line("RCT+APT, 8-bit samples", health, "MB/s", Some(gr_big));

    let mut drbg = CtrDrbg::new(&[1; SEED_LEN], b"bench", u64::MAX).unwrap();
    let drbg_small = rate(|| drbg.generate(&mut small, &[]).unwrap());
    line("CTR_DRBG generate 32 B", drbg_small, "calls/s", Some(gr_small));
    let drbg_big = rate(|| {
        for c in big.chunks_mut(MAX_REQUEST) {
            drbg.generate(c, &[]).unwrap();
        }
    }) * (1 << 20) as f64
        / 1e6;
    line("CTR_DRBG generate 1 MiB (16 x 64 KiB)", drbg_big, "MB/s", Some(gr_big));
    black_box((&small, &big));

    // The daemon on its default config (OS source), release build.
    let d = Daemon::start_default();
    assert_eq!(d.get("/v1/random?bytes=32").status, 200);
    let http_small = rate(|| assert_eq!(d.get("/v1/random?bytes=32&format=raw").status, 200));
    line("GET /v1/random 32 B, 1 client", http_small, "req/s", Some(gr_small));
    let clients = 16;
    let start = Instant::now();
    let total: u64 = thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while start.elapsed() < RUN {
                        assert_eq!(d.get("/v1/random?bytes=32&format=raw").status, 200);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let http_small_c = total as f64 / start.elapsed().as_secs_f64();
    line(&format!("GET /v1/random 32 B, {clients} clients"), http_small_c, "req/s", Some(gr_small));
    let http_big = rate(|| {
        let r = d.get("/v1/random?bytes=1048576&format=raw");
        assert_eq!(r.body.len(), 1 << 20);
    }) * (1 << 20) as f64
        / 1e6;
    line("GET /v1/random 1 MiB, 1 client", http_big, "MB/s", Some(gr_big));
}
