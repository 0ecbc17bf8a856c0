//! RCT + APT throughput on 8-bit samples: `cargo bench -p qkeyd-health`.
//!
//! Prints one line per case; BENCHMARKS.md records the figures.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Instant;

use qkeyd_health::{Apt, HealthMonitor, HealthParams, Rct};

fn best_of(data: &[u8], mut f: impl FnMut(&[u8])) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        f(data);
        best = best.min(t.elapsed().as_secs_f64());
    }
    data.len() as f64 / best / 1e9
}

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
    let rct = best_of(&data, |d| {
        let mut r = Rct::new(4, 9, 0xff);
        for c in d.chunks(4096) {
            let mut pos = 0;
            while let Some(t) = r.scan(&c[pos..]) {
                pos += t.index + 1;
            }
        }
    });
    println!("rct alone                     {rct:6.2} GB/s");
    let apt = best_of(&data, |d| {
        let mut a = Apt::new(18, 33, 1024, 0xff);
        for c in d.chunks(4096) {
            let mut pos = 0;
            while let Some(t) = a.scan(&c[pos..]) {
                pos += t.index + 1;
            }
        }
    });
    println!("apt alone                     {apt:6.2} GB/s");
    for chunk in [4096usize, 65536] {
        let gbs = best_of(&data, |d| {
            let mut m = HealthMonitor::new(HealthParams::new(8, 7.5)).unwrap();
            for c in d.chunks(chunk) {
                let mut pos = 0;
                while pos < c.len() {
                    pos += m.feed(&c[pos..]).consumed.max(1);
                }
            }
        });
        println!("health rct+apt chunk={chunk:<6}   {gbs:6.2} GB/s");
    }
}
