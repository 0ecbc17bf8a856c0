//! The KME simulator the QKD tests run against (`tests/qkd/kme_sim.py`):
//! its own self-test, which checks the GS QKD 014 answers, the mutual TLS
//! and every fault mode against the simulator as a subprocess.

use std::{path::Path, process::Command};

#[test]
fn the_kme_simulator_answers_as_gs_qkd_014_says() {
    let qkd = Path::new(env!("CARGO_MANIFEST_DIR")).join("qkd");
    let out = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s"])
        .arg(&qkd)
        .args(["-p", "test_*.py", "-v"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the simulator's self-test failed:\n{report}");
    let ran = report.lines().find_map(|l| l.strip_prefix("Ran ")).unwrap_or_default();
    let count: usize = ran.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(count >= 20, "the self-test ran {count} tests:\n{report}");
}
