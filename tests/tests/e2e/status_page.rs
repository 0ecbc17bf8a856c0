//! The status page in a real browser: Debian's Chromium driven by
//! playwright-core (tests/ui/status-page.mjs), against a running daemon.
//! Screenshots go to `CARGO_TARGET_TMPDIR/status-page/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use qkeyd_e2e::{Daemon, kms::Client};
use serde_json::{Value, json};
use sha2::Digest as _;

/// playwright-core from the npm registry, as tests/ui/package-lock.json pins
/// it, installed once into the tests' cache (no browser download: the tests
/// drive /usr/bin/chromium).
fn playwright_dir() -> PathBuf {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let lock = std::fs::read(ui.join("package-lock.json")).unwrap();
    let tag = hex::encode(&sha2::Sha256::digest(&lock)[..6]);
    let cache = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME or XDG_CACHE_HOME")).join(".cache")
    });
    let dir = cache.join(format!("qkeyd-e2e/ui-{tag}"));
    if !dir.join("node_modules/playwright-core/package.json").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["package.json", "package-lock.json"] {
            std::fs::copy(ui.join(f), dir.join(f)).unwrap();
        }
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .status()
            .expect("npm (to install playwright-core)")
            .success();
        assert!(ok, "npm ci in {}", dir.display());
    }
    dir
}

/// Run the browser script's `scenario` against `d`; its findings as JSON.
fn browse(d: &Daemon, scenario: &str, source: Option<&str>) -> (Value, PathBuf) {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is needed (tests/run-all.sh installs it)"
    );
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&out).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui/status-page.mjs");
    let run = Command::new("node")
        .arg(&script)
        .args([scenario, &d.url(""), out.to_str().unwrap()])
        .args(source)
        .env("PLAYWRIGHT_DIR", playwright_dir())
        .output()
        .expect("node");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{scenario}: {stderr}\n{}", d.log());
    let found: Value = serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&run.stdout)));
    eprintln!("{scenario}: {found}");
    // Nothing but the daemon's own origin, and nothing went wrong in the page.
    let origin = d.url("");
    for r in found["requests"].as_array().unwrap() {
        assert!(r.as_str().unwrap().starts_with(&origin), "a request left the daemon: {r}");
    }
    assert_eq!(found["refused"], json!([]), "requests beyond loopback");
    assert_eq!(found["console_errors"], json!([]), "console errors");
    assert_eq!(found["page_errors"], json!([]), "page errors");
    (found, out)
}

fn png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 20_000, "{}", path.display());
    eprintln!("screenshot: {} ({} bytes)", path.display(), bytes.len());
}

/// A healthy node with two sources, keys, the KMS plugin and the module
/// socket: the page shows them, works from the keyboard, and has a dark mode.
#[test]
fn the_status_page_shows_a_healthy_node_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let kms_socket = dir.path().join("kms.sock");
    let module_socket = dir.path().join("module.sock");
    let state = dir.path().join("state");
    let config = format!(
        r#"
        [[source]]
        name = "qrng-a"
        kind = "sim"
        seed = 5
        [[source]]
        name = "qrng-b"
        kind = "sim"
        seed = 6
        [kms]
        socket = "{}"
        [module]
        socket = "{}"
        [danger]
        allow_sim_sources = true
        "#,
        kms_socket.display(),
        module_socket.display()
    );
    let d = Daemon::start_with(dir, &config, &state, &[]);
    d.wait_health("both sources healthy", Duration::from_secs(20), |h| {
        h["pool"]["sources"].as_array().unwrap().iter().all(|s| s["state"] == "healthy")
    });
    for alg in ["ml-dsa-65", "ml-kem-768", "ml-kem-768"] {
        let (status, _) = d.keys("POST", "/v1/keys", Some(json!({ "alg": alg })));
        assert_eq!(status, 201, "{alg}");
    }
    let mut kms = Client::connect(kms_socket.to_str().unwrap());
    let key_id = kms.status().unwrap().key_id;
    kms.encrypt(b"a DEK seed of 32 bytes, or so...").unwrap();
    let hash = format!("sha256:{}", hex::encode(sha2::Sha256::digest(key_id.as_bytes())));
    // A client of the module socket (connected, no request yet).
    let _client = std::os::unix::net::UnixStream::connect(&module_socket).unwrap();

    let (found, out) = browse(&d, "healthy", None);
    assert_eq!(found["mode"], "sources");
    assert_eq!(
        found["sources"],
        json!([{ "name": "qrng-a", "state": "healthy" }, { "name": "qrng-b", "state": "healthy" }])
    );
    assert_eq!(found["chart_lines"], json!(["drift", "trust"]), "a chart with both lines");
    assert!(found["limit_label"].as_str().unwrap().contains("0.89"), "{}", found["limit_label"]);
    let kms_text = found["kms_text"].as_str().unwrap();
    assert!(kms_text.contains(&hash), "the write key id's hash: {kms_text}");
    assert!(!kms_text.contains(&key_id), "the key id itself is not shown: {kms_text}");
    assert!(kms_text.contains("Statusok"), "{kms_text}");
    let keys_text = found["keys_text"].as_str().unwrap();
    assert!(
        keys_text.contains("ml-kem-768soft2") && keys_text.contains("ml-dsa-65soft1"),
        "{keys_text}"
    );
    assert_eq!(found["clients_text"], "1");
    // Keyboard: skip link first, then into the sources, then a source's button.
    assert_eq!(found["first_focus"], "skip");
    assert_eq!(found["after_skip"], "sources");
    assert_eq!(found["focused_button"], "qrng-b");
    assert_ne!(found["focus_outline"], "none", "a visible focus ring");
    assert_eq!(found["charted"], "qrng-b");
    assert_eq!(found["current_row"], "qrng-b");
    assert_eq!((&found["theme"], &found["theme_pressed"]), (&json!("dark"), &json!("true")));
    assert_ne!(found["dark_background"], "rgb(247, 248, 250)", "dark mode changes the page");
    png(&out.join("status-healthy.png"));
    png(&out.join("status-healthy-dark.png"));
    // No secret on the page's data either.
    let status = d.get("/v1/status").text();
    assert!(!status.contains(&key_id) && !status.contains(&d.token()), "{status}");
}

/// A simulated QRNG that starts to drift after 10 s of idle sampling: the
/// page, loaded while the source is healthy, shows it distrusted within 10 s
/// of the daemon deciding so (it polls every 2 s).
#[test]
fn the_status_page_shows_a_drifting_source_distrusted_within_seconds() {
    let d = Daemon::start(&super::live::drifting_sim());
    d.wait_health("the source to pass start-up", Duration::from_secs(10), |h| {
        h["pool"]["sources"][0]["state"] == "healthy"
    });
    let (found, out) = browse(&d, "drift", Some("drifty"));
    assert_eq!(found["state_at_load"], "healthy", "loaded before the drift");
    let decided = found["daemon_decided_ms"].as_f64().expect("the daemon distrusted it");
    let shown = found["page_showed_ms"].as_f64().expect("the page showed it");
    eprintln!(
        "daemon decided at {decided} ms, the page showed it at {shown} ms: {} ms later",
        shown - decided
    );
    assert!(shown - decided <= 10_000.0, "shown {} ms after the daemon decided", shown - decided);
    assert!(found["trust_class"].as_str().unwrap().contains("err"), "trust shown below the line");
    assert!(found["chart_desc"].as_str().unwrap().contains("below the minimum"));
    png(&out.join("status-drifting.png"));
}
