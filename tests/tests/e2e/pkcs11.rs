//! `libqkeyd_pkcs11.so` through real consumers, against a real daemon:
//! pkcs11-tool (random, mechanisms, `--test`, `--test-fork`), python-pkcs11,
//! a ctypes suite of bad pointers and handles, a fork test, and the cryptoki
//! crate. cryptoki loads the module into its process, and the module reads
//! `QKEYD_MODULE_SOCKET` from the process environment, so those checks run in a
//! child with the socket in its environment: `src/bin/p11check.rs`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use qkeyd_e2e::{Daemon, HSM_PIN, SoftHsm, pkcs11_module};

/// The token PIN the test daemons use.
pub(super) const PIN: &str = "4321-token";
/// The security officer's PIN the test daemons use.
pub(super) const SO_PIN: &str = "8765-officer";

/// A daemon serving the module's socket; `keys` is its `[keys]` section.
pub(super) struct P11 {
    pub(super) d: Daemon,
    pub(super) socket: PathBuf,
}

/// The source of most tests.
const OS_SOURCE: &str = "[[source]]\nname = \"os\"\nkind = \"os\"\n";

fn start(keys: &str, env: &[(&str, &str)]) -> P11 {
    start_with_sources(OS_SOURCE, keys, env)
}

fn start_with_sources(sources: &str, keys: &str, env: &[(&str, &str)]) -> P11 {
    let dir = tempfile::tempdir().unwrap();
    let config = p11_config(dir.path(), sources, keys);
    let state = dir.path().join("state");
    let d = Daemon::start_with(dir, &config, &state, env);
    assert!(d.log().contains("PKCS#11 module socket listening"), "{}", d.log());
    P11 { socket: d.dir.path().join("p11.sock"), d }
}

/// The configuration of a daemon serving the module's socket in `dir`, with
/// the PINs in files there (written here).
pub(super) fn p11_config(dir: &Path, sources: &str, keys: &str) -> String {
    let (pin, so_pin) = (dir.join("p11-pin"), dir.join("p11-so-pin"));
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();
    std::fs::write(&so_pin, format!("{SO_PIN}\n")).unwrap();
    format!(
        "{sources}\n[module]\nsocket = \"{}\"\npin_file = \"{}\"\nso_pin_file = \"{}\"\n\n{keys}",
        dir.join("p11.sock").display(),
        pin.display(),
        so_pin.display()
    )
}

fn soft() -> P11 {
    start("", &[])
}

/// A directory uid 65534 can read, with a copy of the module and the socket
/// of a daemon serving `allowed_uids`: for tests that run a consumer as nobody
/// (p11-kit ignores per-user module files for root).
fn for_nobody(allowed_uids: &str) -> (tempfile::TempDir, P11, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let module = open.path().join("libqkeyd_pkcs11.so");
    std::fs::copy(pkcs11_module(), &module).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = open.path().join("p11.sock");
    let pin = dir.path().join("p11-pin");
    std::fs::write(&pin, PIN).unwrap();
    let state = dir.path().join("state");
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n\n[module]\nsocket = \"{}\"\nsocket_mode = \"0666\"\n\
         allowed_uids = [{allowed_uids}]\npin_file = \"{}\"\n",
        socket.display(),
        pin.display()
    );
    let d = Daemon::start_with(dir, &config, &state, &[]);
    (open, P11 { d, socket }, module)
}

/// `args` as uid 65534, with `env`.
fn as_nobody(args: &[&str], env: &[(&str, &Path)]) -> (bool, String) {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).args(args);
    c.env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("setpriv (util-linux)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn softhsm(hsm: &SoftHsm) -> P11 {
    let pin = hsm.dir.path().join("hsm-pin");
    std::fs::write(&pin, HSM_PIN).unwrap();
    start(&hsm.keys_config(&pin), &[hsm.env()])
}

/// Run a command with `socket` as the module's socket in its environment.
fn run_at(socket: &Path, cmd: &mut Command) -> (bool, String) {
    let out =
        cmd.env("QKEYD_MODULE_SOCKET", socket).env("QKEYD_MODULE_DEBUG", "1").output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn run(p: &P11, cmd: &mut Command) -> (bool, String) {
    run_at(&p.socket, cmd)
}

fn tool_at(socket: &Path, args: &[&str]) -> (bool, String) {
    let mut c = Command::new("pkcs11-tool");
    c.arg("--module").arg(pkcs11_module()).args(args);
    run_at(socket, &mut c)
}

fn pkcs11_tool(p: &P11, args: &[&str]) -> (bool, String) {
    tool_at(&p.socket, args)
}

pub(super) fn python(p: &P11, script: &str, extra: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut c = Command::new("python3");
    c.arg(root.join("tests/pkcs11").join(script))
        .arg("--module")
        .arg(pkcs11_module())
        .args(["--pin", PIN])
        .args(extra);
    let (ok, text) = run(p, &mut c);
    assert!(ok, "{script} failed:\n{text}\ndaemon log:\n{}", p.d.log());
    assert!(text.contains("ok: "), "{script} checked nothing:\n{text}");
    text
}

#[test]
fn pkcs11_tool_generates_random_and_lists_the_mechanisms() {
    let p = soft();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for f in [&a, &b] {
        let (ok, text) = pkcs11_tool(
            &p,
            &["--generate-random", "1048576", "--output-file", f.to_str().unwrap()],
        );
        assert!(ok, "{text}");
    }
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!((a.len(), b.len()), (1 << 20, 1 << 20));
    assert_ne!(a, b, "two processes must not share a stream");
    // A 1 MiB stream from a DRBG has every byte value, near 4096 times each.
    let mut counts = [0u32; 256];
    a.iter().for_each(|&x| counts[x as usize] += 1);
    assert!(counts.iter().all(|&c| (3500..4700).contains(&c)), "{counts:?}");

    let (ok, text) = pkcs11_tool(&p, &["--list-mechanisms"]);
    assert!(ok, "{text}");
    for line in [
        "mechtype-0xF, keySize={800,1568}, generate_key_pair",
        "mechtype-0x17, keySize={800,1568}, other flags=0x30000000",
        "mechtype-0x1C, keySize={1312,2592}, generate_key_pair",
        "mechtype-0x1D, keySize={1312,2592}, sign, verify",
        "SHA256, digest",
        "SHA3-512, digest",
        "AES-KEY-GEN, keySize={16,32}, generate",
        "AES-GCM, keySize={16,32}, encrypt, decrypt",
        "mechtype-0x402A, keySize={1,64}, derive",
        "mechtype-0x402B, keySize={1,64}, derive",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // The four post-quantum ones and HKDF are unnamed to pkcs11-tool 0.23.
    assert_eq!(text.matches("mechtype-").count(), 6, "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("  ")).count(), 14, "{text}");

    let (ok, text) = pkcs11_tool(&p, &["--list-token-slots"]);
    assert!(ok && text.contains("token label        : qkeyd"), "{text}");
}

#[test]
fn pkcs11_tool_test_and_test_fork_pass() {
    let p = soft();
    for args in [&["--test"][..], &["--test", "--login", "--pin", PIN]] {
        let (ok, text) = pkcs11_tool(&p, args);
        assert!(ok, "{args:?}: {text}");
        assert!(text.contains("seeding (C_SeedRandom) not supported"), "{text}");
        assert!(text.contains("seems to be OK"), "{text}");
        assert!(text.contains("No errors"), "{args:?}: {text}");
    }
    let (ok, text) = pkcs11_tool(&p, &["--test-fork"]);
    assert!(ok, "{text}");
    assert!(text.contains("Calling C_Initialize in forked child process"), "{text}");
    // A wrong PIN is refused, and the module says why.
    let (ok, text) = pkcs11_tool(&p, &["--login", "--pin", "0000-wrong", "--list-objects"]);
    assert!(!ok && text.contains("CKR_PIN_INCORRECT"), "{text}");
}

#[test]
fn pkcs11_tool_sees_vault_keys_and_their_private_halves_only_after_login() {
    let hsm = SoftHsm::new();
    let p = softhsm(&hsm);
    let (status, key) = p.d.keys(
        "POST",
        "/v1/keys",
        Some(serde_json::json!({"alg": "ml-dsa-65", "label": "made-over-rest"})),
    );
    assert_eq!(status, 201, "{key}");
    let (ok, text) = pkcs11_tool(&p, &["--list-objects"]);
    assert!(ok, "{text}");
    assert!(text.contains("made-over-rest") && text.contains("Public Key Object"), "{text}");
    assert!(!text.contains("Private Key Object"), "private objects need a login:\n{text}");
    let (ok, text) = pkcs11_tool(&p, &["--list-objects", "--login", "--pin", PIN]);
    assert!(ok && text.contains("Private Key Object"), "{text}");
}

/// deploy/p11-kit/qkeyd.module, with only the library path changed, makes
/// p11-kit list the token; and a user the daemon does not allow sees none.
#[test]
fn p11_kit_lists_the_token_through_the_deploy_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let (open, p, module) = for_nobody("65534");
    let home = open.path().join("home");
    let modules = home.join(".config/pkcs11/modules");
    std::fs::create_dir_all(&modules).unwrap();
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/p11-kit/qkeyd.module"),
    )
    .unwrap();
    let default = "/usr/lib/x86_64-linux-gnu/pkcs11/libqkeyd_pkcs11.so";
    assert!(shipped.contains(default), "{shipped}");
    std::fs::write(
        modules.join("qkeyd.module"),
        shipped.replace(default, module.to_str().unwrap()),
    )
    .unwrap();
    for d in [home.clone(), home.join(".config"), home.join(".config/pkcs11"), modules] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let env = [("HOME", home.as_path()), ("QKEYD_MODULE_SOCKET", p.socket.as_path())];
    let (ok, text) = as_nobody(&["p11-kit", "list-modules"], &env);
    assert!(ok, "{text}");
    let ours = text.split("\n").skip_while(|l| !l.starts_with("qkeyd:")).collect::<Vec<_>>();
    assert!(!ours.is_empty(), "p11-kit did not load the module:\n{text}");
    let ours = ours.join("\n");
    for want in
        ["library-description: qkeyd PKCS#11 module", "token: qkeyd", "rng", "login-required"]
    {
        assert!(ours.contains(want), "missing {want:?}:\n{ours}");
    }
    // The same user, against a daemon that does not allow it: no token.
    let (_open2, refused, module2) = for_nobody("");
    let env = [("QKEYD_MODULE_SOCKET", refused.socket.as_path())];
    let (ok, text) = as_nobody(
        &["pkcs11-tool", "--module", module2.to_str().unwrap(), "--generate-random", "16"],
        &env,
    );
    assert!(!ok && text.contains("No slot with a token was found"), "{text}");
    assert!(refused.d.log().contains("PKCS#11 connection refused"), "{}", refused.d.log());
}

#[test]
fn python_pkcs11_client_with_the_soft_sealer() {
    python(&soft(), "python_pkcs11_client.py", &[]);
}

#[test]
fn python_pkcs11_client_with_softhsm_sealed_token_keys() {
    let hsm = SoftHsm::new();
    let p = softhsm(&hsm);
    python(&p, "python_pkcs11_client.py", &[]);
    assert!(p.d.log().contains("PKCS#11 token key created"), "{}", p.d.log());
}

#[test]
fn bad_pointers_short_buffers_and_invalid_handles_are_refused() {
    let p = soft();
    let text = python(&p, "robustness.py", &[]);
    assert!(text.matches("ok: ").count() > 100, "{text}");
    // The daemon saw one wrong PIN and kept serving.
    assert!(p.d.log().contains("PKCS#11 login with a wrong PIN"), "{}", p.d.log());
    let (ok, text) = pkcs11_tool(&p, &["--generate-random", "16"]);
    assert!(ok, "{text}");
}

#[test]
fn a_forked_child_never_repeats_its_parent() {
    let p = soft();
    python(&p, "fork.py", &[]);
}

/// The daemon goes away: the slot shows no token, random bytes stop with a
/// clear error (never bytes from an unvouched seed), and nothing crashes.
#[test]
fn without_the_daemon_every_call_fails_cleanly() {
    let P11 { d, socket } = soft();
    let (ok, text) = tool_at(&socket, &["--generate-random", "16"]);
    assert!(ok, "{text}");
    drop(d.kill());
    let (ok, text) = tool_at(&socket, &["--generate-random", "16"]);
    assert!(!ok && text.contains("No slot with a token was found"), "{text}");
    assert!(text.contains("cannot reach qkeyd"), "the module says why: {text}");
}

/// The cryptoki crate in a child process (see the module docs): `p11check`,
/// a binary of this crate, runs one named check against the module.
fn cryptoki_child(p: &P11, check: &str, env: &[(&str, String)]) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_p11check"));
    c.arg(check)
        .env("QKEYD_P11_CHILD_MODULE", pkcs11_module())
        .env("QKEYD_P11_CHILD_PIN", PIN)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let (ok, text) = run(p, &mut c);
    assert!(ok, "p11check {check} failed:\n{text}\ndaemon log:\n{}", p.d.log());
    assert!(text.contains(&format!("ok: {check}")), "p11check {check} did not finish:\n{text}");
}

#[test]
fn cryptoki_all_six_parameter_sets_and_random() {
    cryptoki_child(&soft(), "all_six_parameter_sets", &[]);
}

#[test]
fn cryptoki_token_keys_sealed_in_softhsm() {
    let hsm = SoftHsm::new();
    let p = softhsm(&hsm);
    cryptoki_child(&p, "token_keys_survive_a_new_process", &[("QKEYD_P11_PHASE", "make".into())]);
    cryptoki_child(&p, "token_keys_survive_a_new_process", &[("QKEYD_P11_PHASE", "use".into())]);
}

#[test]
fn cryptoki_threads_hammer_random_on_separate_sessions() {
    cryptoki_child(&soft(), "threads_hammer_random", &[]);
}

/// A sensitive decapsulated secret, HKDF and AES-GCM through the cryptoki
/// crate: the keys stay in the daemon, and their uses are checked.
#[test]
fn cryptoki_kem_hkdf_and_aes_gcm_with_keys_the_daemon_holds() {
    cryptoki_child(&soft(), "secret_keys_stay_in_the_daemon", &[]);
}

#[test]
fn cryptoki_sees_the_daemon_die_and_fails_cleanly() {
    let p = soft();
    let pid = p.d.pid().to_string();
    cryptoki_child(&p, "daemon_dies_mid_session", &[("QKEYD_P11_DAEMON_PID", pid)]);
}

/// The only source sticks; once the pool refuses (fail-closed), the module's
/// next reseed fails and C_GenerateRandom stops within a second.
#[test]
fn cryptoki_random_stops_when_the_pool_fails_closed() {
    let sources = "[pool]\nreseed_interval_requests = 1\n[[source]]\nname = \"stuck\"\nkind = \"sim\"\n\
                   seed = 5\n[[source.schedule]]\nafter_samples = 4000\nfault = \"stuck\"\nvalue = 9\n\
                   [danger]\nallow_sim_sources = true\n";
    let p = start_with_sources(sources, "", &[]);
    let url = format!("http://{}/v1/random?bytes=32", p.d.addr);
    cryptoki_child(&p, "pool_fails_closed", &[("QKEYD_P11_RANDOM_URL", url)]);
    assert_eq!(p.d.get("/v1/random?bytes=32").status, 503);
}

#[cfg(feature = "tpm")]
#[test]
fn python_pkcs11_client_with_swtpm_sealed_token_keys() {
    let tpm = qkeyd_e2e::Swtpm::start();
    let keys = format!(
        "[keys]\nsealer = \"tpm\"\nseal_timeout_ms = 5000\n[keys.tpm]\ntcti = \"{}\"\n",
        tpm.tcti()
    );
    let p = start(&keys, &[]);
    python(&p, "python_pkcs11_client.py", &[]);
    assert!(p.d.log().contains("PKCS#11 token key created"), "{}", p.d.log());
}

/// A fault of qkeyd's own (a damaged key file) reaches the application as
/// CKR_GENERAL_ERROR with an incident id only; the daemon's log line with
/// that id has the detail, and the daemon serves on once the file is whole.
#[test]
fn a_damaged_vault_key_is_a_general_error_with_an_incident_id() {
    let p = soft();
    let (status, key) =
        p.d.keys("POST", "/v1/keys", Some(serde_json::json!({"alg": "ml-dsa-44", "label": "dmg"})));
    assert_eq!(status, 201, "{key}");
    let path = p.d.state.join("keys").join(key["id"].as_str().unwrap()).join("v1.key");
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    bad[5] ^= 0x04;
    std::fs::write(&path, &bad).unwrap();
    let (ok, text) = pkcs11_tool(&p, &["--list-objects"]);
    assert!(!ok && text.contains("CKR_GENERAL_ERROR"), "{text}");
    let logged = p.d.incident(&text);
    assert!(logged.contains("corrupted"), "{logged}");
    assert!(!text.contains("corrupted"), "the detail stays in the daemon's log: {text}");
    std::fs::write(&path, &good).unwrap();
    let (ok, text) = pkcs11_tool(&p, &["--list-objects"]);
    assert!(ok && text.contains("dmg"), "{text}");
}
