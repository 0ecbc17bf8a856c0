//! `libqkeyd_pkcs11.so` through real consumers, against a real daemon:
//! pkcs11-tool (random, mechanisms, `--test`, `--test-fork`), python-pkcs11,
//! a ctypes suite of bad pointers and handles, a fork test, and the cryptoki
//! crate. cryptoki loads the module into this process, and the module reads
//! `QKEYD_SOCKET` from the process environment, so those checks run in a
//! child: this test binary again, running one `#[ignore]`d test with the
//! socket in its environment.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use qkeyd_e2e::{Daemon, HSM_PIN, SoftHsm, pkcs11_module};

/// The token PIN the test daemons use.
const PIN: &str = "4321-token";

/// A daemon serving the module's socket; `keys` is its `[keys]` section.
struct P11 {
    d: Daemon,
    socket: PathBuf,
}

/// The source of most tests.
const OS_SOURCE: &str = "[[source]]\nname = \"os\"\nkind = \"os\"\n";

fn start(keys: &str, env: &[(&str, &str)]) -> P11 {
    start_with_sources(OS_SOURCE, keys, env)
}

fn start_with_sources(sources: &str, keys: &str, env: &[(&str, &str)]) -> P11 {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("p11.sock");
    let pin = dir.path().join("p11-pin");
    std::fs::write(&pin, format!("{PIN}\n")).unwrap();
    let state = dir.path().join("state");
    let config = format!(
        "{sources}\n[pkcs11]\nsocket = \"{}\"\npin_file = \"{}\"\n\n{keys}",
        socket.display(),
        pin.display()
    );
    let d = Daemon::start_with(dir, &config, &state, env);
    assert!(d.log().contains("PKCS#11 module socket listening"), "{}", d.log());
    P11 { d, socket }
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
        "[[source]]\nname = \"os\"\nkind = \"os\"\n\n[pkcs11]\nsocket = \"{}\"\nsocket_mode = \"0666\"\n\
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
    let out = cmd.env("QKEYD_SOCKET", socket).env("QKEYD_PKCS11_DEBUG", "1").output().unwrap();
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

fn python(p: &P11, script: &str, extra: &[&str]) -> String {
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
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert_eq!(text.matches("mechtype-").count(), 4, "{text}");

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
    let env = [("HOME", home.as_path()), ("QKEYD_SOCKET", p.socket.as_path())];
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
    let env = [("QKEYD_SOCKET", refused.socket.as_path())];
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

/// The cryptoki crate in a child process (see the module docs).
fn cryptoki_child(p: &P11, test: &str, env: &[(&str, String)]) {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", &format!("pkcs11::child::{test}"), "--ignored", "--nocapture"])
        .env("QKEYD_P11_CHILD_MODULE", pkcs11_module())
        .env("QKEYD_P11_CHILD_PIN", PIN)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let (ok, text) = run(p, &mut c);
    assert!(ok, "child {test} failed:\n{text}\ndaemon log:\n{}", p.d.log());
    assert!(text.contains("1 passed"), "child {test} did not run:\n{text}");
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

/// The cryptoki checks, run by the tests above in a child process.
mod child {
    use std::collections::HashSet;

    use cryptoki::{
        context::{CInitializeArgs, CInitializeFlags, Pkcs11},
        error::{Error, RvError},
        mechanism::{
            Mechanism,
            dsa::{HedgeType, SignAdditionalContext},
        },
        object::{
            Attribute, AttributeType, KeyType, MlDsaParameterSetType, MlKemParameterSetType,
            ObjectClass, ObjectHandle,
        },
        session::{Session, UserType},
        types::AuthPin,
    };

    use super::*;

    fn open() -> (Pkcs11, Session) {
        let module = std::env::var("QKEYD_P11_CHILD_MODULE").expect("run by the parent test");
        let p = Pkcs11::new(module).unwrap();
        p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
        let slot = p.get_slots_with_token().unwrap()[0];
        let s = p.open_rw_session(slot).unwrap();
        let pin = std::env::var("QKEYD_P11_CHILD_PIN").unwrap();
        s.login(UserType::User, Some(&AuthPin::new(pin.into()))).unwrap();
        (p, s)
    }

    fn rv(e: Error) -> RvError {
        match e {
            Error::Pkcs11(rv, _) => rv,
            other => panic!("not a PKCS#11 error: {other:?}"),
        }
    }

    fn dsa_pair(
        s: &Session,
        set: MlDsaParameterSetType,
        token: bool,
    ) -> (ObjectHandle, ObjectHandle) {
        s.generate_key_pair(
            &Mechanism::MlDsaKeyPairGen,
            &[
                Attribute::Token(token),
                Attribute::ParameterSet(set.into()),
                Attribute::Verify(true),
            ],
            &[
                Attribute::Token(token),
                Attribute::Sign(true),
                Attribute::Label(b"cryptoki-dsa".to_vec()),
            ],
        )
        .unwrap()
    }

    fn kem_pair(
        s: &Session,
        set: MlKemParameterSetType,
        token: bool,
    ) -> (ObjectHandle, ObjectHandle) {
        s.generate_key_pair(
            &Mechanism::MlKemKeyPairGen,
            &[
                Attribute::Token(token),
                Attribute::ParameterSet(set.into()),
                Attribute::Encapsulate(true),
            ],
            &[Attribute::Token(token), Attribute::Decapsulate(true)],
        )
        .unwrap()
    }

    fn secret_template() -> Vec<Attribute> {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Token(false),
        ]
    }

    fn value(s: &Session, o: ObjectHandle) -> Vec<u8> {
        match s.get_attributes(o, &[AttributeType::Value]).unwrap().pop() {
            Some(Attribute::Value(v)) => v,
            other => panic!("no CKA_VALUE: {other:?}"),
        }
    }

    fn check_dsa(
        s: &Session,
        set: MlDsaParameterSetType,
        pk_len: usize,
        sig_len: usize,
        token: bool,
    ) {
        let (public, private) = dsa_pair(s, set, token);
        assert_eq!(value(s, public).len(), pk_len);
        let err = s.get_attributes(private, &[AttributeType::Value]);
        // cryptoki reports a sensitive attribute as absent.
        assert!(matches!(err.as_deref(), Ok([]) | Err(_)), "{err:?}");
        let msg = b"signed through cryptoki";
        let plain = SignAdditionalContext::new(HedgeType::Preferred, None);
        let sig = s.sign(&Mechanism::MlDsa(plain), private, msg).unwrap();
        assert_eq!(sig.len(), sig_len);
        s.verify(&Mechanism::MlDsa(plain), public, msg, &sig).unwrap();
        let e = s.verify(&Mechanism::MlDsa(plain), public, b"another message", &sig).unwrap_err();
        assert_eq!(rv(e), RvError::SignatureInvalid);
        // With a context: the same context verifies, another does not.
        let ctx = SignAdditionalContext::new(HedgeType::Required, Some(b"qkeyd-ctx"));
        let sig = s.sign(&Mechanism::MlDsa(ctx), private, msg).unwrap();
        s.verify(&Mechanism::MlDsa(ctx), public, msg, &sig).unwrap();
        let other = SignAdditionalContext::new(HedgeType::Preferred, Some(b"other-ctx"));
        let e = s.verify(&Mechanism::MlDsa(other), public, msg, &sig).unwrap_err();
        assert_eq!(rv(e), RvError::SignatureInvalid);
        // Deterministic signing repeats itself.
        let det = SignAdditionalContext::new(HedgeType::DeterministicRequired, None);
        let a = s.sign(&Mechanism::MlDsa(det), private, msg).unwrap();
        let b = s.sign(&Mechanism::MlDsa(det), private, msg).unwrap();
        assert_eq!(a, b);
        // PKCS#11 3.2's C_VerifySignature* with the signature up front.
        s.verify_signature_init(&Mechanism::MlDsa(plain), public, &a).unwrap();
        s.verify_signature(msg).unwrap();
        // Multi-part signing gives a signature of the whole message.
        s.sign_init(&Mechanism::MlDsa(plain), private).unwrap();
        s.sign_update(b"signed through ").unwrap();
        s.sign_update(b"cryptoki").unwrap();
        let c = s.sign_final().unwrap();
        s.verify(&Mechanism::MlDsa(plain), public, msg, &c).unwrap();
        s.destroy_object(private).unwrap();
        s.destroy_object(public).unwrap();
    }

    fn check_kem(
        s: &Session,
        set: MlKemParameterSetType,
        pk_len: usize,
        ct_len: usize,
        token: bool,
    ) {
        let (public, private) = kem_pair(s, set, token);
        assert_eq!(value(s, public).len(), pk_len);
        let (ct, ss1) = s.encapsulate_key(&Mechanism::MlKem, public, &secret_template()).unwrap();
        assert_eq!(ct.len(), ct_len);
        let ss2 = s.decapsulate_key(&Mechanism::MlKem, private, &secret_template(), &ct).unwrap();
        let (v1, v2) = (value(s, ss1), value(s, ss2));
        assert_eq!(v1.len(), 32);
        assert_eq!(v1, v2, "decapsulation recovers the shared secret");
        let mut bad = ct.clone();
        bad[0] ^= 1;
        let ss3 = s.decapsulate_key(&Mechanism::MlKem, private, &secret_template(), &bad).unwrap();
        assert_ne!(value(s, ss3), v1, "implicit rejection");
        let e = s
            .decapsulate_key(&Mechanism::MlKem, private, &secret_template(), &ct[1..])
            .unwrap_err();
        assert_eq!(rv(e), RvError::WrappedKeyLenRange);
        for o in [ss1, ss2, ss3, private, public] {
            s.destroy_object(o).unwrap();
        }
    }

    #[test]
    #[ignore = "run by the pkcs11 e2e tests, in a child with QKEYD_SOCKET set"]
    fn all_six_parameter_sets() {
        let (p, s) = open();
        let info = p.get_library_info().unwrap();
        assert_eq!((info.cryptoki_version().major(), info.cryptoki_version().minor()), (3, 2));
        for (set, pk, sig) in [
            (MlDsaParameterSetType::ML_DSA_44, 1312, 2420),
            (MlDsaParameterSetType::ML_DSA_65, 1952, 3309),
            (MlDsaParameterSetType::ML_DSA_87, 2592, 4627),
        ] {
            check_dsa(&s, set, pk, sig, false);
        }
        check_dsa(&s, MlDsaParameterSetType::ML_DSA_65, 1952, 3309, true);
        for (set, pk, ct) in [
            (MlKemParameterSetType::ML_KEM_512, 800, 768),
            (MlKemParameterSetType::ML_KEM_768, 1184, 1088),
            (MlKemParameterSetType::ML_KEM_1024, 1568, 1568),
        ] {
            check_kem(&s, set, pk, ct, false);
        }
        check_kem(&s, MlKemParameterSetType::ML_KEM_768, 1184, 1088, true);
        let a = s.generate_random_vec(32).unwrap();
        let b = s.generate_random_vec(32).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        let big = s.generate_random_vec(3 << 20).unwrap();
        assert_eq!(big.len(), 3 << 20);
        assert!(big.windows(16).step_by(4096).collect::<HashSet<_>>().len() > 760);
        let e = s.seed_random(b"more entropy").unwrap_err();
        assert_eq!(rv(e), RvError::RandomSeedNotSupported);
        // Logging out destroys private session objects; public ones stay.
        let (public, private) = dsa_pair(&s, MlDsaParameterSetType::ML_DSA_44, false);
        s.logout().unwrap();
        assert_eq!(value(&s, public).len(), 1312);
        let e = s.get_attributes(private, &[AttributeType::Class]).unwrap_err();
        assert_eq!(rv(e), RvError::ObjectHandleInvalid);
        let e = s
            .generate_key_pair(
                &Mechanism::MlDsaKeyPairGen,
                &[Attribute::ParameterSet(MlDsaParameterSetType::ML_DSA_44.into())],
                &[],
            )
            .unwrap_err();
        assert_eq!(rv(e), RvError::UserNotLoggedIn);
        drop(s);
        p.finalize().unwrap();
    }

    #[test]
    #[ignore = "run by the pkcs11 e2e tests, in a child with QKEYD_SOCKET set"]
    fn token_keys_survive_a_new_process() {
        let (_p, s) = open();
        let label = b"cryptoki-token-key".to_vec();
        let find = || {
            s.find_objects(&[
                Attribute::Label(label.clone()),
                Attribute::Class(ObjectClass::PRIVATE_KEY),
            ])
            .unwrap()
        };
        match std::env::var("QKEYD_P11_PHASE").unwrap().as_str() {
            "make" => {
                assert!(find().is_empty());
                s.generate_key_pair(
                    &Mechanism::MlDsaKeyPairGen,
                    &[
                        Attribute::Token(true),
                        Attribute::ParameterSet(MlDsaParameterSetType::ML_DSA_87.into()),
                    ],
                    &[Attribute::Token(true), Attribute::Label(label.clone())],
                )
                .unwrap();
                assert_eq!(find().len(), 1);
            }
            _ => {
                // A new process, a new connection: the vault still has it.
                let private = find();
                assert_eq!(private.len(), 1, "the token key is still there");
                let public = s
                    .find_objects(&[
                        Attribute::Label(label.clone()),
                        Attribute::Class(ObjectClass::PUBLIC_KEY),
                    ])
                    .unwrap();
                let plain = SignAdditionalContext::new(HedgeType::Preferred, None);
                let sig = s.sign(&Mechanism::MlDsa(plain), private[0], b"m").unwrap();
                s.verify(&Mechanism::MlDsa(plain), public[0], b"m", &sig).unwrap();
                let attrs = s
                    .get_attributes(
                        private[0],
                        &[
                            AttributeType::Sensitive,
                            AttributeType::Extractable,
                            AttributeType::Token,
                        ],
                    )
                    .unwrap();
                assert_eq!(
                    attrs,
                    [
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Token(true)
                    ]
                );
                // Either half destroys the pair; the other half then goes quietly.
                s.destroy_object(private[0]).unwrap();
                s.destroy_object(public[0]).unwrap();
                assert!(find().is_empty());
            }
        }
    }

    #[test]
    #[ignore = "run by the pkcs11 e2e tests, in a child with QKEYD_SOCKET set"]
    fn threads_hammer_random() {
        let (p, _s) = open();
        let slot = p.get_slots_with_token().unwrap()[0];
        let blocks: Vec<Vec<Vec<u8>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let s = p.open_ro_session(slot).unwrap();
                        (0..2000).map(|_| s.generate_random_vec(32).unwrap()).collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let all: HashSet<&Vec<u8>> = blocks.iter().flatten().collect();
        assert_eq!(all.len(), 8000, "no 32-byte block repeats across threads");
        assert!(all.iter().all(|b| b.len() == 32));
    }

    #[test]
    #[ignore = "run by the pkcs11 e2e tests, in a child with QKEYD_SOCKET set"]
    fn pool_fails_closed() {
        let (_p, s) = open();
        assert_eq!(s.generate_random_vec(32).unwrap().len(), 32);
        // Each REST request reseeds the pool (reseed_interval_requests = 1),
        // which drains the source towards its fault.
        let url = std::env::var("QKEYD_P11_RANDOM_URL").unwrap();
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let deadline = Instant::now() + Duration::from_secs(60);
        let e = loop {
            let _ = agent.get(&url).call();
            match s.generate_random_vec(32) {
                Err(e) => break e,
                Ok(b) => assert_eq!(b.len(), 32),
            }
            assert!(Instant::now() < deadline, "random bytes kept coming from a failed pool");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(rv(e), RvError::DeviceError);
        // It stays refused while the pool does.
        assert_eq!(rv(s.generate_random_vec(32).unwrap_err()), RvError::DeviceError);
    }

    #[test]
    #[ignore = "run by the pkcs11 e2e tests, in a child with QKEYD_SOCKET set"]
    fn daemon_dies_mid_session() {
        let (p, s) = open();
        let (public, private) = dsa_pair(&s, MlDsaParameterSetType::ML_DSA_44, false);
        assert_eq!(s.generate_random_vec(64).unwrap().len(), 64);
        let pid = std::env::var("QKEYD_P11_DAEMON_PID").unwrap();
        assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
        std::thread::sleep(Duration::from_millis(300));
        let deadline = Instant::now() + Duration::from_secs(5);
        let e = loop {
            match s.generate_random_vec(64) {
                Err(e) => break e,
                Ok(_) => assert!(Instant::now() < deadline, "random bytes kept coming"),
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let code = rv(e);
        assert!(matches!(code, RvError::DeviceError | RvError::TokenNotPresent), "{code:?}");
        let plain = SignAdditionalContext::new(HedgeType::Preferred, None);
        let e = s.sign(&Mechanism::MlDsa(plain), private, b"m").unwrap_err();
        let code = rv(e);
        assert!(matches!(code, RvError::TokenNotPresent | RvError::DeviceError), "{code:?}");
        let slot = p.get_all_slots().unwrap()[0];
        assert!(!p.get_slot_info(slot).unwrap().token_present());
        let _ = public;
    }
}
