//! The IID track against NIST's reference answers (tests/data/sp800-90b).

use std::{collections::HashMap, path::PathBuf};

use super::{NAMES, deterministic, iid};
use crate::estimate::Symbols;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/sp800-90b")
}

fn expected(name: &str) -> HashMap<String, String> {
    let text =
        std::fs::read_to_string(data_dir().join(format!("expected/{name}.iid.res"))).unwrap();
    let mut map = HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.rsplit_once(" = ").or_else(|| line.rsplit_once(": ")) {
            map.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    map
}

fn close(ours: f64, theirs: &str, what: &str, failures: &mut Vec<String>) {
    let e: f64 = theirs.parse().unwrap_or(f64::NAN);
    let ok = ours == e || ((ours - e) / e).abs() <= 1e-9;
    if !ok {
        failures.push(format!("{what}: {ours:.17e} vs {theirs}"));
    }
}

fn check(name: &str, shuffle: bool) {
    let raw = std::fs::read(data_dir().join(format!("data/{name}.bin"))).unwrap();
    let sym = Symbols::new(&raw, None).unwrap();
    let r = if shuffle { iid(&sym, [7; 32]) } else { deterministic(&sym) };
    let e = expected(name);
    let mut f = Vec::new();
    close(r.raw_mean, &e["Raw Mean"], "raw mean", &mut f);
    close(r.median, &e["Median"], "median", &mut f);
    assert_eq!(e["Binary"], r.binary.to_string());
    close(r.mcv_literal.p_u, &e["Literal Most Common Value Estimate: p_u"], "MCV p_u", &mut f);
    if let Some(b) = r.mcv_bitstring {
        close(b.p_u, &e["Bitstring Most Common Value Estimate: p_u"], "bitstring p_u", &mut f);
    }
    close(r.h_assessed, &e["Assessed min entropy"], "assessed", &mut f);
    for (label, c) in
        [("Chi square independence", r.chi_independence), ("Chi square goodness of fit", r.chi_fit)]
    {
        close(c.t, &e[&format!("{label}: T")], &format!("{label} T"), &mut f);
        assert_eq!(e[&format!("{label}: df")], c.df.to_string(), "{name} {label} df");
        close(c.p, &e[&format!("{label}: P-value")], &format!("{label} p"), &mut f);
    }
    let chi_pass = r.chi_independence.passed() && r.chi_fit.passed();
    assert_eq!(e["Chi square tests"], if chi_pass { "Passed" } else { "Failed" }, "{name}");
    let lrs = "Literal Longest Repeated Substring results";
    assert_eq!(e[&format!("{lrs}: W")], r.lrs.w.to_string(), "{name} W");
    close(r.lrs.p_col, &e[&format!("{lrs}: P_col")], "P_col", &mut f);
    close(r.lrs.pr, &e[&format!("{lrs}: Pr(X >= 1)")], "Pr(X>=1)", &mut f);
    assert_eq!(
        e["Length of longest repeated substring test"],
        if r.lrs.passed { "Passed" } else { "Failed" },
        "{name}"
    );
    for (j, n) in NAMES.iter().enumerate() {
        let key = format!("Permutation testing: Unpermuted result {n}");
        close(r.permutation.unpermuted[j], &e[&key], n, &mut f);
    }
    if shuffle {
        let verdict = if r.permutation.passed() { "Passed" } else { "Failed" };
        assert_eq!(e["IID permutation tests"], verdict, "{name}: {:?}", r.permutation.counts);
    }
    assert!(f.is_empty(), "{name}:\n{}", f.join("\n"));
}

#[test]
fn rand1_short() {
    check("rand1_short", true);
}

#[test]
fn rand4_short() {
    check("rand4_short", true);
}

#[test]
fn rand8_short() {
    check("rand8_short", true);
}

// The 1M-sample files: every deterministic value; the shuffles (thousands of
// rounds on a million samples) are left to `qkeyd assess --iid`.
#[test]
fn truerand_1bit() {
    check("truerand_1bit", false);
}

#[test]
fn truerand_4bit() {
    check("truerand_4bit", false);
}

#[test]
fn truerand_8bit() {
    check("truerand_8bit", false);
}

#[test]
fn normal() {
    check("normal", false);
}

#[test]
fn biased_random_bits() {
    check("biased-random-bits", false);
}

#[test]
fn biased_random_bytes() {
    check("biased-random-bytes", false);
}
