//! The PKCS#11 module next to SoftHSM2, measured in the same run by the same
//! harness (`p11bench`, which loads any module through cryptoki): random
//! bytes (and qkeyd's raw CTR_DRBG in the harness's process), digests,
//! AES-GCM; and ML-DSA-65 signing next to the raw ml-dsa crate:
//!
//! ```text
//! cargo bench -p qkeyd-e2e --bench pkcs11
//! ```
//!
//! Each module is measured in its own process, three rounds, alternating.
//! qkeyd runs with the soft sealer (token keys in the vault) and the OS source.
#![allow(clippy::unwrap_used)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use ml_dsa::MlDsa65;
use qkeyd_e2e::{Daemon, HSM_LABEL, HSM_PIN, SoftHsm, pkcs11_module, softhsm_module};
use serde_json::Value;

const PIN: &str = "bench-pin-1234";
const ROUNDS: usize = 3;

fn p11bench(module: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_p11bench"))
        .arg(module)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "p11bench: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The raw crate: ML-DSA-65 signatures per second with an expanded key and
/// fresh randomness per signature (hedged, as the module signs by default).
fn raw_mldsa65(secs: f64) -> f64 {
    let seed = [7u8; 32];
    let sk = ml_dsa::SigningKey::<MlDsa65>::from_seed(&seed.into());
    let msg = [0x5a_u8; 64];
    let mut rnd = [0u8; 32];
    let mut sign = || {
        getrandom::fill(&mut rnd).unwrap();
        std::hint::black_box(sk.expanded_key().sign_internal(&[&[0, 0], &msg], &rnd.into()));
    };
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        sign();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        sign();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v[k].as_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("p11.sock");
    let pin = dir.path().join("pin");
    std::fs::write(&pin, PIN).unwrap();
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n[module]\nsocket = \"{}\"\npin_file = \"{}\"\n",
        socket.display(),
        pin.display()
    );
    let state = dir.path().join("state");
    let _d = Daemon::start_with(tempfile::tempdir().unwrap(), &config, &state, &[]);
    let hsm = SoftHsm::new();
    let qkeyd_env = [("QKEYD_MODULE_SOCKET", socket.to_str().unwrap())];
    let hsm_env = [hsm.env()];
    let secs = "2";
    let mut rows: Vec<(Value, Value, f64)> = Vec::new();
    for round in 1..=ROUNDS {
        let q = p11bench(pkcs11_module(), &qkeyd_env, &["--pin", PIN, "--seconds", secs]);
        let h = p11bench(
            &softhsm_module(),
            &hsm_env,
            &["--pin", HSM_PIN, "--label", HSM_LABEL, "--seconds", secs],
        );
        let raw = raw_mldsa65(2.0);
        println!(
            "round {round}: qkeyd {q}\n         softhsm2 {h}\n         raw ml-dsa-65 sign {raw:.1}/s"
        );
        rows.push((q, h, raw));
    }
    println!("\n| round | figure | qkeyd | SoftHSM2 2.6.1 | ratio |\n|---|---|---|---|---|");
    for (i, (q, h, raw)) in rows.iter().enumerate() {
        let r = i + 1;
        for (name, key, unit) in [
            ("C_GenerateRandom 32 B", "random32_calls_per_s", "calls/s"),
            ("C_GenerateRandom 1 MiB", "random_1mib_mb_per_s", "MB/s"),
            ("SHA-256 of 1 KiB", "sha256_1kib_per_s", "calls/s"),
            ("SHA-512 of 1 KiB", "sha512_1kib_per_s", "calls/s"),
            ("SHA-256 of 1 MiB", "sha256_1mib_mb_per_s", "MB/s"),
            ("SHA-512 of 1 MiB", "sha512_1mib_mb_per_s", "MB/s"),
            ("AES-256-GCM encrypt 1 KiB", "aes256_gcm_1kib_per_s", "calls/s"),
            ("AES-256-GCM encrypt 1 MiB", "aes256_gcm_1mib_mb_per_s", "MB/s"),
        ] {
            let (a, b) = (f(q, key).unwrap(), f(h, key).unwrap());
            println!("| {r} | {name} | {a:.0} {unit} | {b:.0} {unit} | {:.2}× |", a / b);
        }
        let (a, drbg) =
            (f(q, "random32_calls_per_s").unwrap(), f(q, "raw_drbg32_calls_per_s").unwrap());
        println!(
            "| {r} | C_GenerateRandom 32 B vs raw CTR_DRBG (same process) | {a:.0} calls/s | raw {drbg:.0} calls/s | {:.0}% of raw |",
            100.0 * a / drbg
        );
        for (name, key) in [
            ("ML-DSA-65 sign, session key", "mldsa65_sign_session_per_s"),
            ("ML-DSA-65 sign, token key", "mldsa65_sign_token_per_s"),
        ] {
            let a = f(q, key).unwrap();
            println!(
                "| {r} | {name} | {a:.1}/s | n/a (no ML-DSA) | {:.0}% of raw ml-dsa ({raw:.1}/s) |",
                100.0 * a / raw
            );
        }
    }
}
