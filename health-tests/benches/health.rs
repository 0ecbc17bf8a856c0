//! RCT + APT throughput on 8-bit samples: `cargo bench -p qkeyd-health`.
//!
//! Prints one line per case; BENCHMARKS.md records the figures.
#![allow(missing_docs)]

use std::time::Instant;

use qkeyd_health::{HealthMonitor, HealthParams};

fn main() {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let data: Vec<u8> = (0..(64 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 56) as u8
        })
        .collect();
    for chunk in [4096usize, 65536] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let mut m = HealthMonitor::new(HealthParams::new(8, 7.5)).expect("valid params");
            let t = Instant::now();
            let mut failures = 0u64;
            for c in data.chunks(chunk) {
                let mut pos = 0;
                while pos < c.len() {
                    let f = m.feed(&c[pos..]);
                    pos += f.consumed.max(1);
                    failures += u64::from(f.failure.is_some());
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
            std::hint::black_box(failures);
        }
        let gbs = data.len() as f64 / best / 1e9;
        println!(
            "health rct+apt 8-bit chunk={chunk:<6} {gbs:6.2} GB/s ({} MiB in {best:.3} s)",
            data.len() >> 20
        );
    }
}
