use std::process::Command;

use qkeyd_e2e::qkeyd_bin;

#[test]
fn check_config_accepts_the_example_and_prints_cutoffs() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.example.toml");
    let out = Command::new(qkeyd_bin()).args(["check-config", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("config OK"));
    assert!(text.lines().any(|l| l.contains("os") && l.contains("RCT=4/")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("keys:") && l.contains("soft")), "{text}");

    // A QRNG claiming 7.5 bits: RCT 1 + ⌈20/7.5⌉ = 4, APT 26 at W = 1024.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qrng.toml");
    std::fs::write(
        &path,
        "[[source]]\nname = \"qrng0\"\nkind = \"chardev\"\npath = \"/dev/qrandom0\"\nclaimed_h = 7.5\n",
    )
    .unwrap();
    let out = Command::new(qkeyd_bin()).arg("check-config").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.contains("qrng0") && l.contains("RCT=4/")), "{text}");
}

#[test]
fn bad_configs_exit_3_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[source]]\nname = \"x\"\nkind = \"os\"\nclaimed_h = 12.0\n", "min-entropy"),
        ("[[source]]\nname = \"x\"\nkind = \"quantum\"\n", "unknown variant"),
        ("this is not toml", "invalid config file"),
        ("", "no [[source]]"),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).unwrap();
        for args in [vec!["check-config"], vec!["serve", "--config"]] {
            let out = Command::new(qkeyd_bin()).args(&args).arg(&path).output().unwrap();
            assert_eq!(out.status.code(), Some(3), "{args:?} {text:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
    let out =
        Command::new(qkeyd_bin()).args(["check-config", "/nonexistent/q.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn keys_help_documents_signature_files_and_the_kem_operations() {
    let help = |args: &[&str]| {
        let out = Command::new(qkeyd_bin()).arg("keys").args(args).arg("--help").output().unwrap();
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let verify = help(&["verify"]);
    assert!(verify.contains("--signature-file") && verify.contains("keys sign > FILE"), "{verify}");
    let keys = help(&[]);
    for cmd in ["encapsulate", "decapsulate", "derive"] {
        assert!(keys.contains(cmd), "{keys}");
    }
    let decap = help(&["decapsulate"]);
    assert!(decap.contains("--ciphertext-file") && decap.contains("--version"), "{decap}");
}

#[test]
fn check_config_reports_what_is_missing_on_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    std::fs::write(
        &path,
        "[[source]]\nname = \"qrng0\"\nkind = \"chardev\"\npath = \"/dev/qrandom-absent\"\nclaimed_h = 7.5\n\n\
         [keys]\nsealer = \"hsm\"\n[keys.hsm]\nmodule = \"/nonexistent/libsofthsm2.so\"\n\
         token_label = \"t\"\npin_env = \"QKEYD_TEST_UNSET_PIN\"\n\n\
         [kms]\nsocket = \"/nonexistent-dir/kms.sock\"\n\n[module]\nsocket = \"@qkeyd-check\"\n",
    )
    .unwrap();
    let out = Command::new(qkeyd_bin())
        .arg("check-config")
        .arg(&path)
        .env_remove("QKEYD_TEST_UNSET_PIN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("config OK"), "{text}");
    let problems: Vec<&str> = text.lines().filter(|l| l.starts_with("problem: ")).collect();
    for needle in [
        "source qrng0: /dev/qrandom-absent",
        "keys.hsm.module",
        "QKEYD_TEST_UNSET_PIN is not set",
        "kms.socket: the directory",
    ] {
        assert!(problems.iter().any(|p| p.contains(needle)), "{needle}: {text}");
    }
    assert_eq!(problems.len(), 4, "{text}");
    // The keys, KMS and module lines say what the settings come to.
    assert!(text.lines().any(|l| l.starts_with("kms:") && l.contains("kms.sock")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("module:") && l.contains("64 per uid")), "{text}");
}
