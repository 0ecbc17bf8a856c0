//! The estimators against NIST's reference answers (tests/data/sp800-90b).

use std::{collections::HashMap, path::PathBuf};

use super::{
    Symbols, non_iid,
    report::{Value, lines},
};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/sp800-90b")
}

/// `key = value` lines of an `ea_non_iid -vv` output.
fn expected(name: &str) -> (HashMap<String, String>, f64) {
    let text =
        std::fs::read_to_string(data_dir().join(format!("expected/{name}.non_iid.res"))).unwrap();
    let mut map = HashMap::new();
    let mut assessed = f64::NAN;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Assessed min entropy: ") {
            assessed = v.trim().parse().unwrap();
        } else if let Some((k, v)) = line.rsplit_once(" = ") {
            map.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    (map, assessed)
}

fn check(name: &str) {
    let raw = std::fs::read(data_dir().join(format!("data/{name}.bin"))).unwrap();
    let sym = Symbols::new(&raw, None).unwrap();
    let r = non_iid(&sym);
    let (exp, assessed) = expected(name);
    let ours = lines(&r);
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for (key, v) in &ours {
        let Some(e) = exp.get(key) else {
            failures.push(format!("{key}: we print it, the reference does not"));
            continue;
        };
        match v {
            Value::Int(i) => {
                if e.parse::<u64>().ok() != Some(*i) {
                    failures.push(format!("{key}: {i} vs {e}"));
                }
            }
            Value::Real(x) => {
                let e: f64 = e.parse().unwrap();
                let rel = if e == *x { 0.0 } else { ((x - e) / e).abs() };
                worst = worst.max(rel);
                if rel > 1e-9 {
                    failures.push(format!("{key}: {x:.17e} vs {e:.17e} (rel {rel:.1e})"));
                }
            }
        }
    }
    let printed: std::collections::HashSet<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
    for k in exp.keys() {
        let estimator_line = k.contains(" Estimate: ");
        if estimator_line && !printed.contains(k.as_str()) {
            failures.push(format!("{k}: the reference prints it, we do not"));
        }
    }
    let rel = ((r.h_assessed - assessed) / assessed).abs();
    if rel > 1e-9 {
        failures.push(format!("assessed {:.17e} vs {assessed:.17e}", r.h_assessed));
    }
    eprintln!("{name}: {} values, worst relative difference {worst:.1e}", ours.len());
    assert!(failures.is_empty(), "{name}:\n{}", failures.join("\n"));
}

#[test]
fn rand1_short() {
    check("rand1_short");
}

#[test]
fn rand4_short() {
    check("rand4_short");
}

#[test]
fn rand8_short() {
    check("rand8_short");
}

#[test]
fn biased_random_bits() {
    check("biased-random-bits");
}

#[test]
fn biased_random_bytes() {
    check("biased-random-bytes");
}

#[test]
fn data_pi() {
    check("data.pi");
}

#[test]
fn normal() {
    check("normal");
}

#[test]
fn ring_osc_nist() {
    check("ringOsc-nist");
}

#[test]
fn truerand_1bit() {
    check("truerand_1bit");
}

#[test]
fn truerand_4bit() {
    check("truerand_4bit");
}

#[test]
fn truerand_8bit() {
    check("truerand_8bit");
}

/// 2002 three-bit samples: a bitstring of exactly 1001 six-bit blocks, the
/// shortest the Compression estimate takes (one block after the dictionary's
/// 1000, so its sample variance divides by zero).
#[test]
fn compression_on_its_shortest_input() {
    check("blocks-1001");
}

#[test]
fn progress_reports_every_step_in_order() {
    let raw = std::fs::read(data_dir().join("data/rand4_short.bin")).unwrap();
    let sym = Symbols::new(&raw, None).unwrap();
    let mut steps = Vec::new();
    let r = super::non_iid_with_progress(&sym, &mut |s| steps.push(s.to_owned()));
    assert_eq!(r, non_iid(&sym), "progress does not change the result");
    assert_eq!(steps.first().map(String::as_str), Some("bitstring: Most Common Value"));
    assert_eq!(steps.last().map(String::as_str), Some("literal: LZ78Y"));
    // Bitstring: 8 steps (with the binary-only ones); literal 4-bit data: 6.
    assert_eq!(steps.len(), 8 + 6);
}
