//! The kill -9 campaign (`tests/campaigns/kill9.sh`): N rounds (default 1000) of starting
//! `qkeyd serve` on one state directory, firing key create/rotate/destroy,
//! KMS KEK rotate/retire and KMS Encrypt requests at it, SIGKILL after a
//! random delay, restart, and checking that everything acknowledged survived,
//! works and has its audit line (the checks are listed in
//! `qkeyd_e2e::kill9`). The e2e suite runs the same check for 25 rounds.
//!
//! ```text
//! kill9_campaign [ROUNDS] [--seed N] [--max-delay-ms N] [--verbose]
//! ```
//!
//! Prints rounds, failures (each with the state directory kept for a look)
//! and restart times (spawn to "listening"); exits 1 if any check failed.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{process::ExitCode, time::Duration};

use qkeyd_e2e::kill9::{Settings, run};

fn main() -> ExitCode {
    let mut s = Settings { rounds: 1000, ..Settings::default() };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> u64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("{name} needs a number");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--seed" => s.seed = number("--seed"),
            "--max-delay-ms" => s.max_delay = Duration::from_millis(number("--max-delay-ms")),
            "--verbose" | "-v" => s.verbose = true,
            "--help" | "-h" => {
                println!("kill9_campaign [ROUNDS] [--seed N] [--max-delay-ms N] [--verbose]");
                return ExitCode::SUCCESS;
            }
            n => match n.parse() {
                Ok(n) => s.rounds = n,
                Err(_) => {
                    eprintln!("unknown argument {n:?} (see --help)");
                    return ExitCode::from(2);
                }
            },
        }
    }
    let started = std::time::Instant::now();
    let report = run(&s);
    println!("{}", report.summary());
    println!("seed: {}, max delay: {:?}, took {:.1?}", s.seed, s.max_delay, started.elapsed());
    for f in &report.failures {
        println!("round {}: {}", f.round, f.what.lines().next().unwrap_or_default());
    }
    for k in &report.kept {
        println!("kept for a look: {}", k.display());
    }
    if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
