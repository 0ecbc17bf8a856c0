use std::process::Command;

use qkeyd_e2e::qkeyd_bin;
use serde_json::Value;

fn reference(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../health-tests/tests/data/sp800-90b")
        .join(name)
}

fn close(a: f64, b: f64) -> bool {
    a == b || ((a - b) / b).abs() <= 1e-9
}

/// `qkeyd assess --json` writes NIST's layout with NIST's numbers.
#[test]
fn assess_json_matches_the_reference_tool() {
    for name in ["rand4_short", "rand1_short"] {
        let out = Command::new(qkeyd_bin())
            .args(["assess", "--json"])
            .arg(reference(&format!("data/{name}.bin")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
        let text =
            std::fs::read_to_string(reference(&format!("expected/{name}.non_iid.json"))).unwrap();
        let theirs: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(ours["sha256"], theirs["sha256"]);
        assert_eq!(ours["IID"], false);
        let (a, b) =
            (ours["testCases"].as_array().unwrap(), theirs["testCases"].as_array().unwrap());
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            let (x, y) = (x.as_object().unwrap(), y.as_object().unwrap());
            let kx: Vec<_> = x.keys().collect();
            let ky: Vec<_> = y.keys().collect();
            assert_eq!(kx, ky, "{name}: keys of {}", y["testCaseDesc"]);
            for (k, v) in y {
                match v.as_f64() {
                    Some(e) => {
                        assert!(close(x[k].as_f64().unwrap(), e), "{name} {k}: {} vs {e}", x[k])
                    }
                    None => assert_eq!(&x[k], v),
                }
            }
        }
    }
}

#[test]
fn assess_text_ends_with_the_assessed_value() {
    let out = Command::new(qkeyd_bin())
        .arg("assess")
        .arg(reference("data/rand8_short.bin"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap();
    let expected = std::fs::read_to_string(reference("expected/rand8_short.non_iid.res")).unwrap();
    let want: f64 = expected.lines().last().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    let got: f64 = last.strip_prefix("Assessed min entropy: ").unwrap().parse().unwrap();
    assert!(close(got, want), "{got} vs {want}");
    assert!(text.contains("Literal LZ78Y Prediction Estimate: C = "));
}

#[test]
fn assess_rejects_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let one = dir.path().join("one.bin");
    std::fs::write(&one, [7u8; 100]).unwrap();
    let wide = dir.path().join("wide.bin");
    std::fs::write(&wide, [0u8, 1, 2, 200]).unwrap();
    let short = dir.path().join("short.bin");
    std::fs::write(&short, [0u8, 1, 0, 1, 1]).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![empty.display().to_string()], "is empty"),
        (vec![one.display().to_string()], "only one distinct symbol"),
        (vec![wide.display().to_string(), "--bits".into(), "4".into()], "wider than --bits 4"),
        (
            vec![wide.display().to_string(), "--bits".into(), "9".into()],
            "bits per sample must be 1..=8",
        ),
        (vec!["/nonexistent/samples.bin".into()], "cannot read"),
    ];
    for (args, needle) in cases {
        let out = Command::new(qkeyd_bin()).arg("assess").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Too short for most estimators: those that cannot run are left out, no panic.
    let out = Command::new(qkeyd_bin()).arg("assess").arg(&short).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Assessed min entropy"));
}

fn assessed(stdout: &[u8]) -> f64 {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .last()
        .and_then(|l| l.strip_prefix("Assessed min entropy: "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no assessed value in {text}"))
}

/// `--source` records from a configured live source and assesses it.
#[test]
fn assess_records_from_a_configured_source() {
    // The embedded config's OS source: close to 8 bits per byte.
    let out = Command::new(qkeyd_bin())
        .args(["assess", "--source", "os", "--samples", "200000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let h = assessed(&out.stdout);
    assert!(h > 6.5 && h <= 8.0, "{h}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Opening file: 'source:os'"));

    // A simulated QRNG with four stuck-at-zero bits: at most 4 bits (the
    // bitstring of 8-bit words, half of them constant, pulls it lower still).
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("q.toml");
    std::fs::write(
        &cfg,
        "[[source]]\nname = \"weak\"\nkind = \"sim\"\nseed = 3\n[[source.schedule]]\n\
         after_samples = 0\nfault = \"bias\"\nkeep_bits = 4\n[danger]\nallow_sim_sources = true\n",
    )
    .unwrap();
    let out = Command::new(qkeyd_bin())
        .args(["assess", "--source", "weak", "--samples", "100000", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let h = assessed(&out.stdout);
    assert!(h > 1.0 && h <= 4.0, "{h}");

    for (args, needle) in [
        (vec!["--source", "nope"], "no source named \"nope\""),
        (vec!["--source", "os", "--samples", "0"], "--samples must be"),
    ] {
        let out = Command::new(qkeyd_bin()).arg("assess").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle), "{args:?}");
    }
}

/// `--iid` gives NIST's verdicts and deterministic values, in text and JSON.
#[test]
fn assess_iid_matches_the_reference_verdicts() {
    let file = reference("data/rand8_short.bin");
    let out = Command::new(qkeyd_bin()).args(["assess", "--iid"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = std::fs::read_to_string(reference("expected/rand8_short.iid.res")).unwrap();
    for verdict in [
        "Chi square tests: ",
        "Length of longest repeated substring test: ",
        "IID permutation tests: ",
    ] {
        let ours = text.lines().find(|l| l.starts_with(verdict)).unwrap();
        let theirs = expected.lines().find(|l| l.starts_with(verdict)).unwrap();
        assert_eq!(ours, theirs);
    }
    // Statistics that do not depend on the shuffles print exactly as NIST's.
    for key in [
        "Chi square independence: df = ",
        "Literal Longest Repeated Substring results: W = ",
        "Permutation testing: Unpermuted result compression = ",
    ] {
        let ours = text.lines().find(|l| l.starts_with(key)).unwrap();
        let theirs = expected.lines().find(|l| l.starts_with(key)).unwrap();
        assert_eq!(ours, theirs);
    }
    let out =
        Command::new(qkeyd_bin()).args(["assess", "--iid", "--json"]).arg(&file).output().unwrap();
    let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
    let theirs: Value = serde_json::from_str(
        &std::fs::read_to_string(reference("expected/rand8_short.iid.json")).unwrap(),
    )
    .unwrap();
    let (a, b) = (&ours["testCases"][0], &theirs["testCases"][0]);
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(a), keys(b));
    for k in
        ["passedChiSquareTests", "passedIidPermutationTests", "passedLongestRepeatedSubstringTest"]
    {
        assert_eq!(a[k], b[k], "{k}");
    }
    for k in ["hAssessed", "mean", "median"] {
        assert!(close(a[k].as_f64().unwrap(), b[k].as_f64().unwrap()), "{k}");
    }
    assert_eq!(keys(&a["permutationTestResults"][0]), keys(&b["permutationTestResults"][0]));
}
