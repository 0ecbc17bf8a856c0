//! Hybrid QKD keys end to end against the bare KME round trip, in one run:
//!
//! ```text
//! cargo bench -p qkeyd-e2e --bench qkd
//! ```
//!
//! Two qkeyd nodes (release build, OS source, soft sealer, `[attest]`) at
//! the ends of the simulated link (`tests/qkd/kme_sim.py`, two KMEs on one
//! key stream), as in the end-to-end tests. One key's round trip is:
//!
//! - **bare KME**: `enc_keys` at KME_A with qkeyd-a's SAE certificate, then
//!   `dec_keys` of that key at KME_B with qkeyd-b's: what an SAE pair does
//!   with the KMEs directly, through the same kind of client (ureq, rustls,
//!   one kept-alive connection per KME);
//! - **qkeyd**: `enc_keys` at qkeyd-A as sae-a, then `dec_keys` at qkeyd-B
//!   as sae-b: each node calls its KME as above, and adds the link's health
//!   tests, ML-KEM-1024 encapsulation (A) or decapsulation (B), the HKDF,
//!   and B's fetch of the ciphertext from A over the peer API.
//!
//! One key per request and 128 per request, sequentially (c = 1), the two
//! taking turns in QKEYD_BENCH_ROUNDS (default 5) rounds of
//! QKEYD_BENCH_KEYS (default 200) round trips (single keys) or 8 requests
//! (batches). Printed: keys/s and p50/p99 of a round trip, the median over
//! rounds with its range, and qkeyd's time over the bare one.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use qkeyd_e2e::{
    bench::{cell, p50_p99, spread},
    qkd::{Pair, call, ids},
    tls_agent,
};
use serde_json::{Value, json};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One way of getting `number` keys from A's side to B's.
type RoundTrip<'a> = Box<dyn Fn(u32) + 'a>;

fn main() {
    let p = Pair::start("");
    let certs = p.sim.certs.path();
    let agent = |who: &str| {
        tls_agent(
            &p.sim.ca(),
            Some((&certs.join(format!("{who}.pem")), &certs.join(format!("{who}.key")))),
        )
    };
    let (kme_a, kme_b) = (agent("qkeyd-a"), agent("qkeyd-b"));
    let kme_url = |port: u16, path: &str| format!("https://127.0.0.1:{port}/api/v1/keys/{path}");
    let bare: RoundTrip<'_> = Box::new(|number| {
        let (s, c) = call(
            &kme_a,
            "POST",
            &kme_url(p.sim.kme_a, "qkeyd-b/enc_keys"),
            Some(json!({ "number": number, "size": 256 })),
        );
        assert_eq!(s, 200, "{c}");
        let list: Vec<Value> = ids(&c).into_iter().map(|i| json!({ "key_ID": i })).collect();
        let (s, d) = call(
            &kme_b,
            "POST",
            &kme_url(p.sim.kme_b, "qkeyd-a/dec_keys"),
            Some(json!({ "key_IDs": list })),
        );
        assert_eq!(s, 200, "{d}");
        assert_eq!(c["keys"], d["keys"]);
    });
    let hybrid: RoundTrip<'_> = Box::new(|number| {
        let (s, c) = p.enc(json!({ "number": number, "size": 256 }));
        assert_eq!(s, 200, "{c}");
        let got = ids(&c);
        let refs: Vec<&str> = got.iter().map(String::as_str).collect();
        let (s, d) = p.dec(&refs);
        assert_eq!(s, 200, "{d}");
        assert_eq!(c["keys"], d["keys"]);
    });
    // Both links past their start-up test, connections open.
    for _ in 0..3 {
        bare(8);
        hybrid(8);
    }

    let rounds = env("QKEYD_BENCH_ROUNDS", 5);
    let singles = env("QKEYD_BENCH_KEYS", 200);
    println!("| keys per request | path | keys/s | p50 ms | p99 ms | qkeyd / bare (p50) |");
    println!("|---|---|---|---|---|---|");
    for (number, requests) in [(1u32, singles), (128, 8)] {
        // Per path: keys/s, p50, p99 of each round.
        let mut figures: [Vec<(f64, f64, f64)>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (which, trip) in [&bare, &hybrid].into_iter().enumerate() {
                let started = Instant::now();
                let samples: Vec<f64> = (0..requests)
                    .map(|_| {
                        let t = Instant::now();
                        trip(number);
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .collect();
                let rate = f64::from(number) * requests as f64 / started.elapsed().as_secs_f64();
                let (p50, p99) = p50_p99(samples);
                figures[which].push((rate, p50, p99));
            }
        }
        let ratio: Vec<f64> = figures[1].iter().zip(&figures[0]).map(|(h, b)| h.1 / b.1).collect();
        for (which, name) in ["bare KME", "qkeyd hybrid"].into_iter().enumerate() {
            let f = &figures[which];
            let col = |i: usize| -> Vec<f64> { f.iter().map(|t| [t.0, t.1, t.2][i]).collect() };
            let ms = |x: Vec<f64>| {
                let (m, lo, hi) = spread(x);
                format!("{m:.2} ({lo:.2}–{hi:.2})")
            };
            let over = if which == 1 {
                let (m, lo, hi) = spread(ratio.clone());
                format!("×{m:.2} (×{lo:.2}–×{hi:.2})")
            } else {
                String::new()
            };
            println!(
                "| {number} | {name} | {} | {} | {} | {over} |",
                cell(col(0)),
                ms(col(1)),
                ms(col(2))
            );
        }
    }
    // Where qkeyd's time goes: each node's own time per answered request.
    for (node, endpoint) in [(&p.a, "enc_keys"), (&p.b, "dec_keys")] {
        let m = node.daemon.metrics();
        let series = |s: &str| {
            qkeyd_e2e::metric(
                &m,
                &format!("qkeyd_qkd_request_duration_seconds_{s}{{endpoint=\"{endpoint}\"}}"),
            )
            .unwrap_or(0.0)
        };
        println!(
            "{endpoint}: {:.2} ms per request on average inside qkeyd ({} requests)",
            series("sum") / series("count") * 1e3,
            series("count")
        );
    }
    let m = p.a.daemon.metrics();
    let usable =
        qkeyd_e2e::metric(&m, "qkeyd_qkd_link_keys_total{kme=\"link\",outcome=\"usable\"}");
    println!(
        "\nnode A's link: {usable:?} usable QKD keys; every round trip's keys were equal at both ends"
    );
}
