//! The KMS v2 plugin over its unix socket, with a tonic client and a Python
//! grpcio client: every rule kube-apiserver applies to a plugin's answers,
//! rotation and retirement, bad input, peer credentials, restarts, and
//! backends that vanish and come back (soft, SoftHSM2, swtpm). The real
//! kube-apiserver is in `kube`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub(crate) use qkeyd_e2e::kms::Client;
use qkeyd_e2e::{Daemon, HSM_PIN, SoftHsm};
use tonic::Code;

/// A DNS-1123 subdomain with at least two labels, as kube-apiserver requires
/// of annotation keys.
fn is_lowercase_fqdn(k: &str) -> bool {
    let labels: Vec<&str> = k.split('.').collect();
    k.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Every check kube-apiserver (k8s.io/apiserver, envelope/kmsv2) makes of a
/// Status and an Encrypt answer; returns the Status key id.
pub(crate) fn check_apiserver_rules(c: &mut Client, seed: &[u8]) -> String {
    let s = c.status().expect("Status");
    assert_eq!(s.version, "v2");
    assert_eq!(s.healthz, "ok");
    assert!(!s.key_id.is_empty() && s.key_id.len() <= 1024, "key_id {:?}", s.key_id);
    let e = c.encrypt(seed).expect("Encrypt");
    assert_eq!(e.key_id, s.key_id, "Encrypt key_id equals Status key_id");
    assert!(!e.ciphertext.is_empty() && e.ciphertext.len() <= 1024, "{}", e.ciphertext.len());
    assert_ne!(e.ciphertext, seed);
    assert!(!e.ciphertext.windows(seed.len()).any(|w| w == seed), "the seed is not in clear");
    let mut total = 0;
    for (k, v) in &e.annotations {
        assert!(is_lowercase_fqdn(k), "annotation key {k:?}");
        total += k.len() + v.len();
    }
    assert!(total <= 32 * 1024, "annotations total {total} bytes");
    assert_eq!(c.decrypt_reply(&e).expect("Decrypt"), seed, "the round trip returns the seed");
    s.key_id
}

pub(crate) fn seed(n: u8) -> Vec<u8> {
    (0..32).map(|i| i ^ n.wrapping_mul(31)).collect()
}

/// A daemon with the plugin on `dir/kms.sock` and `keys` as its `[keys]` table.
pub(crate) fn start(dir: tempfile::TempDir, keys: &str, env: &[(&str, &str)]) -> (Daemon, PathBuf) {
    let socket = dir.path().join("kms.sock");
    let state = dir.path().join("state");
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n\n[kms]\nsocket = \"{}\"\n\n{keys}",
        socket.display()
    );
    let d = Daemon::start_with(dir, &config, &state, env);
    wait_for_socket(&socket, &d);
    (d, socket)
}

fn wait_for_socket(socket: &Path, d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no KMS socket; log:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Malformed requests: each a clear error with the right code, and the
/// plugin keeps serving.
fn bad_input_is_refused(c: &mut Client) {
    let good = c.encrypt(&seed(9)).unwrap();
    let expect = |r: Result<Vec<u8>, tonic::Status>, code: Code, words: &str| {
        let e = r.expect_err("a bad request must fail");
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(words), "{:?} should say {words:?}", e.message());
    };
    let ann = &good.annotations;
    expect(c.decrypt("qkeyd-kek-00", &good.ciphertext, ann), Code::NotFound, "unknown key_id");
    expect(c.decrypt("", &good.ciphertext, ann), Code::InvalidArgument, "empty");
    expect(c.decrypt(&"k".repeat(2000), &good.ciphertext, ann), Code::InvalidArgument, "key_id");
    expect(c.decrypt(&good.key_id, &good.ciphertext[..20], ann), Code::InvalidArgument, "bytes");
    expect(c.decrypt(&good.key_id, &[1u8; 2000], ann), Code::InvalidArgument, "bytes");
    expect(c.decrypt(&good.key_id, &[], ann), Code::InvalidArgument, "bytes");
    for i in [0usize, 5, 20, good.ciphertext.len() - 1] {
        let mut flipped = good.ciphertext.clone();
        flipped[i] ^= 0x10;
        let r = c.decrypt(&good.key_id, &flipped, ann);
        let e = r.expect_err("a changed ciphertext must not decrypt");
        assert_eq!(e.code(), Code::InvalidArgument, "byte {i}: {e:?}");
    }
    expect(
        c.decrypt(&good.key_id, &good.ciphertext, &HashMap::new()),
        Code::InvalidArgument,
        "missing",
    );
    let mut wrong = ann.clone();
    for v in wrong.values_mut() {
        *v = b"2".to_vec();
    }
    expect(c.decrypt(&good.key_id, &good.ciphertext, &wrong), Code::InvalidArgument, "format");
    let mut extra = ann.clone();
    extra.insert("other.example.com".into(), b"x".to_vec());
    expect(c.decrypt(&good.key_id, &good.ciphertext, &extra), Code::InvalidArgument, "unexpected");
    let e = c.encrypt(&[]).expect_err("empty plaintext");
    assert_eq!(e.code(), Code::InvalidArgument);
    // The largest plaintext whose ciphertext kube-apiserver still accepts (1 KiB).
    // kube-apiserver refuses ciphertexts over 1 KiB; qkeyd's format adds 29
    // bytes (format, IV, tag), so 995 bytes is the largest plaintext.
    let max = 1024 - 29;
    let big = c.encrypt(&vec![7u8; max]).expect("the largest plaintext");
    assert_eq!(big.ciphertext.len(), 1024);
    assert_eq!(c.decrypt_reply(&big).unwrap(), vec![7u8; max]);
    let e = c.encrypt(&vec![7u8; max + 1]).expect_err("plaintext too long for a 1 KiB ciphertext");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(c.decrypt_reply(&good).unwrap(), seed(9), "still serving");
}

/// Encrypt under key 1, rotate, Status reports key 2, new Encrypts use it,
/// key 1's data still decrypts; after retiring key 1 it fails clearly.
fn rotation_scenario(d: &Daemon, c: &mut Client) {
    let k1 = check_apiserver_rules(c, &seed(1));
    let under_k1 = c.encrypt(&seed(11)).unwrap();
    let (s, v) = d.keys("POST", "/v1/kms/rotate", None);
    assert_eq!(s, 201, "{v}");
    let k2 = v["key_id"].as_str().unwrap().to_owned();
    assert_ne!(k1, k2);
    // Status answers are cached for at most a second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.status().unwrap().key_id != k2 {
        assert!(Instant::now() < deadline, "Status never reported the new key");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(check_apiserver_rules(c, &seed(2)), k2);
    let under_k2 = c.encrypt(&seed(12)).unwrap();
    assert_eq!(under_k2.key_id, k2);
    assert_eq!(c.decrypt_reply(&under_k1).unwrap(), seed(11), "key 1 still decrypts");
    // A ciphertext presented under the other key id does not authenticate.
    let e = c.decrypt(&k2, &under_k1.ciphertext, &under_k1.annotations).expect_err("cross-key");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c.decrypt(&k1, &under_k2.ciphertext, &under_k2.annotations).expect_err("cross-key");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let (s, v) = d.keys("DELETE", &format!("/v1/kms/keks/{k2}"), None);
    assert_eq!(s, 409, "the write key cannot be retired: {v}");
    let (s, v) = d.keys("GET", "/v1/kms", None);
    assert_eq!(s, 200);
    assert_eq!(v["write_key_id"], k2.as_str());
    assert_eq!(v["keks"].as_array().unwrap().len(), 2, "{v}");
    // Just replaced, and just used: kube-apiserver may still write under it.
    let (s, v) = d.keys("DELETE", &format!("/v1/kms/keks/{k1}"), None);
    assert_eq!(s, 409, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("was the write key"), "{v}");
    let (s, v) = d.keys("DELETE", &format!("/v1/kms/keks/{k1}?force=maybe"), None);
    assert_eq!(s, 400, "{v}");
    let (s, v) = d.keys("DELETE", &format!("/v1/kms/keks/{k1}?force=true"), None);
    assert_eq!(s, 204, "{v}");
    let e = c.decrypt_reply(&under_k1).expect_err("retired");
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("retired"), "{}", e.message());
    // Unauthenticated management is refused and changes nothing.
    let (s, _) = d.key_call("POST", "/v1/kms/rotate", None, None);
    assert_eq!(s, 401);
    assert_eq!(c.status().unwrap().key_id, k2);
}

#[test]
fn soft_sealer_meets_the_apiserver_rules_rotates_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (d, socket) = start(dir, "", &[]);
    let mut c = Client::connect(socket.to_str().unwrap());
    let mode = std::fs::metadata(&socket).map(|m| {
        use std::os::unix::fs::PermissionsExt as _;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.unwrap(), 0o600, "the socket is 0600 by default");
    bad_input_is_refused(&mut c);
    rotation_scenario(&d, &mut c);
    let key = c.status().unwrap().key_id;
    let kept = c.encrypt(&seed(20)).unwrap();
    // Restart on the same state: the same write key, old data decrypts, and
    // the socket the dead daemon left behind is taken over.
    let state = d.state.clone();
    drop(c);
    let first_log = d.log();
    let dir = d.kill();
    let socket2 = dir.path().join("kms.sock");
    assert!(socket2.exists(), "a killed daemon leaves its socket file");
    let config = std::fs::read_to_string(dir.path().join("qkeyd.toml")).unwrap();
    let d = Daemon::start_with(dir, &config, &state, &[]);
    wait_for_socket(&socket2, &d);
    let mut c = Client::connect(socket2.to_str().unwrap());
    assert_eq!(c.status().unwrap().key_id, key);
    assert_eq!(c.decrypt_reply(&kept).unwrap(), seed(20));
    for log in [first_log, d.log()] {
        assert!(log.contains("KMS v2 plugin listening"), "{log}");
        for seed in [seed(9), seed(11), seed(20)] {
            for text in [hex::encode(&seed), format!("{seed:?}"), base64_of(&seed)] {
                assert!(!log.contains(&text), "a plaintext seed in the log");
            }
        }
    }
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A daemon with the plugin turned on by `--kms-socket @name` alone.
fn start_abstract(name: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let d = Daemon::start_with_args(
        dir,
        "[[source]]\nname = \"os\"\nkind = \"os\"\n",
        &state,
        &["--kms-socket", &format!("@{name}")],
    );
    // Logged before "listening on http://", which start_with_args waits for.
    assert!(d.log().contains("KMS v2 plugin listening"), "{}", d.log());
    d
}

#[test]
fn abstract_socket_and_cli_flag() {
    let name = format!("qkeyd-e2e-{}", std::process::id());
    let d = start_abstract(&name);
    let mut c = Client::connect(&format!("@{name}"));
    check_apiserver_rules(&mut c, &seed(3));
    // The CLI manages the same KEKs.
    let token = d.state.join("api-token");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(qkeyd_e2e::qkeyd_bin())
            .args(["kms", "--url", &format!("http://{}", d.addr), "--token-file"])
            .arg(&token)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let before = c.status().unwrap().key_id;
    let (code, out, err) = run(&["rotate"]);
    assert_eq!(code, Some(0), "{err}");
    let new = out.trim().to_owned();
    assert!(new.starts_with("qkeyd-kek-") && new != before, "{out}");
    let (code, out, _) = run(&["list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&new) && out.contains(&before), "{out}");
    let (code, _, err) = run(&["retire", &new]);
    assert_eq!(code, Some(2), "retiring the write key is refused");
    assert!(err.contains("rotate first"), "{err}");
    let (code, _, err) = run(&["retire", &before]);
    assert_eq!(code, Some(2), "retiring right after a rotation is refused");
    assert!(err.contains("was the write key"), "{err}");
    let (code, _, err) = run(&["retire", "--force", &before]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&["retire", "../../v1/keys"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not a key id"), "{err}");
}

/// A peer whose uid is not allowed gets its connection closed before any
/// gRPC: the abstract socket has no file permissions to stop it.
#[test]
fn a_peer_of_another_uid_is_refused() {
    let name = format!("qkeyd-e2e-uid-{}", std::process::id());
    let d = start_abstract(&name);
    // Send the HTTP/2 preface; a served peer gets the server's SETTINGS back.
    let probe = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect('\\0{name}')\n\
         s.settimeout(5)\ntry:\n    s.sendall(b'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n'+bytes(9))\n    \
         d=s.recv(64)\nexcept OSError:\n    d=b''\nprint(len(d))"
    );
    let run = |as_nobody: bool| {
        let mut cmd = if as_nobody {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3"]);
            c
        } else {
            std::process::Command::new("/usr/bin/python3")
        };
        let out = cmd.args(["-c", &probe]).output().expect("setpriv and python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse::<usize>().unwrap()
    };
    assert!(run(false) > 0, "root is served");
    assert_eq!(run(true), 0, "uid 65534 is not");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.log().contains("uid not allowed") {
        assert!(Instant::now() < deadline, "{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.log().contains("uid=65534"), "{}", d.log());
}

fn softhsm_daemon(hsm: &SoftHsm) -> (Daemon, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, HSM_PIN).unwrap();
    let keys = hsm.keys_config(&pin).replacen("[keys]\n", "[keys]\nseal_timeout_ms = 2000\n", 1);
    start(dir, &keys, &[hsm.env()])
}

/// The KEK objects in the token, as `pkcs11-tool` lists them.
fn token_objects(hsm: &SoftHsm) -> String {
    let out = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &hsm.conf)
        .arg("--module")
        .arg(&hsm.module)
        .args([
            "--token-label",
            qkeyd_e2e::HSM_LABEL,
            "--login",
            "--pin",
            HSM_PIN,
            "--list-objects",
            "--type",
            "secrkey",
        ])
        .output()
        .expect("pkcs11-tool");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn softhsm_kek_meets_the_apiserver_rules_and_stays_in_the_token() {
    let hsm = SoftHsm::new();
    let (d, socket) = softhsm_daemon(&hsm);
    let mut c = Client::connect(socket.to_str().unwrap());
    let key = check_apiserver_rules(&mut c, &seed(4));
    let objects = token_objects(&hsm);
    let entry = objects
        .split("Secret Key Object")
        .find(|o| o.contains(&format!("qkeyd-kms/{key}")))
        .unwrap_or_else(|| panic!("the KEK is a token object:\n{objects}"));
    assert!(entry.contains("AES length 32"), "{entry}");
    let access = entry
        .lines()
        .find_map(|l| l.trim().strip_prefix("Access:"))
        .unwrap_or_else(|| panic!("no Access line: {entry}"));
    let flags: Vec<&str> = access.split(',').map(str::trim).collect();
    assert!(flags.contains(&"sensitive"), "{access}");
    assert!(!flags.contains(&"extractable"), "the KEK is not extractable: {access}");
    // One caller at a time: each call's AES-GCM ran on the gRPC thread,
    // through the token's inline session, not through the sealer's queue.
    let ops = |d: &Daemon| d.keys("GET", "/v1/kms", None).1["token_ops"].clone();
    let before = ops(&d);
    for i in 0..20 {
        let e = c.encrypt(&seed(40 + i)).unwrap();
        assert_eq!(c.decrypt_reply(&e).unwrap(), seed(40 + i));
    }
    let after = ops(&d);
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert_eq!(n(&after, "inline") - n(&before, "inline"), 40, "{before} → {after}");
    assert_eq!(n(&after, "queued"), n(&before, "queued"), "{before} → {after}");
    // On the session copy, but for one operation a second on the token object.
    let on_copy = n(&after, "inline_on_copy") - n(&before, "inline_on_copy");
    assert!((35..=40).contains(&on_copy), "{before} → {after}");
    bad_input_is_refused(&mut c);
    rotation_scenario(&d, &mut c);
    // The retired KEK's token key is destroyed.
    let objects = token_objects(&hsm);
    assert!(!objects.contains(&format!("qkeyd-kms/{key}")), "{objects}");
    // kill -9 and restart: every KEK is kept, in the file and in the token.
    let write = c.status().unwrap().key_id;
    let kept = c.encrypt(&seed(21)).unwrap();
    let (s, before) = d.keys("GET", "/v1/kms", None);
    assert_eq!(s, 200);
    drop(c);
    let state = d.state.clone();
    let dir = d.kill();
    let config = std::fs::read_to_string(dir.path().join("qkeyd.toml")).unwrap();
    let d = Daemon::start_with(dir, &config, &state, &[hsm.env()]);
    wait_for_socket(&socket, &d);
    let mut c = Client::connect(socket.to_str().unwrap());
    assert_eq!(c.status().unwrap().key_id, write);
    assert_eq!(c.decrypt_reply(&kept).unwrap(), seed(21));
    let (s, after) = d.keys("GET", "/v1/kms", None);
    assert_eq!(s, 200);
    // The operation counts start again with the process.
    let keks = |v: &serde_json::Value| {
        (v["write_key_id"].clone(), v["keks"].clone(), v["retired"].clone())
    };
    assert_eq!(keks(&after), keks(&before), "the same KEKs and tombstones after the restart");
}

/// The inline session works through a session copy of the KEK (SoftHSM2
/// re-reads its files on every use of a token object); a KEK deleted from
/// the token behind qkeyd's back must still stop being used within about a
/// second, not serve on from the copy.
#[test]
fn softhsm_kek_deleted_behind_our_back_stops_within_a_second() {
    let hsm = SoftHsm::new();
    let (mut d, socket) = softhsm_daemon(&hsm);
    let mut c = Client::connect(socket.to_str().unwrap());
    let key = check_apiserver_rules(&mut c, &seed(7));
    let on_copy = |d: &Daemon| {
        d.keys("GET", "/v1/kms", None).1["token_ops"]["inline_on_copy"].as_u64().unwrap()
    };
    let before = on_copy(&d);
    for i in 0..10 {
        c.encrypt(&seed(60 + i)).unwrap();
    }
    assert!(on_copy(&d) - before >= 8, "served from the session copy");
    let deleted = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &hsm.conf)
        .arg("--module")
        .arg(&hsm.module)
        .args(["--token-label", qkeyd_e2e::HSM_LABEL, "--login", "--pin", HSM_PIN])
        .args(["--delete-object", "--type", "secrkey", "--label", &format!("qkeyd-kms/{key}")])
        .output()
        .expect("pkcs11-tool");
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    assert!(!token_objects(&hsm).contains(&format!("qkeyd-kms/{key}")));
    // Whether a call still lands inside the copy's second depends on how
    // long pkcs11-tool took; what must hold is that none does after it.
    let t = Instant::now();
    let e = loop {
        match c.encrypt(&seed(70)) {
            Ok(_) => {
                assert!(
                    t.elapsed() < Duration::from_millis(1500),
                    "still encrypting after {:?}",
                    t.elapsed()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => break e,
        }
    };
    assert!(t.elapsed() < Duration::from_millis(1500), "{:?}", t.elapsed());
    // The token lost the key: qkeyd's fault to the client, with the detail
    // in the log line of the incident the answer names.
    assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    let logged = d.incident(e.message());
    assert!(logged.contains(&format!("qkeyd-kms/{key}")), "{logged}");
    // And it stays refused, through either path.
    for _ in 0..5 {
        assert!(c.encrypt(&seed(71)).is_err());
    }
    assert!(d.alive());
}

/// A crowd of Status calls at the moment the cached answer goes stale makes
/// one real check of the backend between them, not one each (the check goes
/// through the token, so each would cost a round trip to the HSM and a
/// thread).
#[test]
fn a_crowd_of_status_calls_makes_one_backend_check() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, HSM_PIN).unwrap();
    // The line before the [keys] table lands in [kms].
    let keys = format!("status_cache_ms = 1000\n\n{}", hsm.keys_config(&pin));
    let (d, socket) = start(dir, &keys, &[hsm.env()]);
    let checks = |d: &Daemon| d.keys("GET", "/v1/kms", None).1["status_checks"].as_u64().unwrap();
    let (rt, client) = Client::parts(socket.to_str().unwrap());
    let crowd = |n: usize| -> Vec<String> {
        rt.block_on(async {
            let calls: Vec<_> = (0..n)
                .map(|_| {
                    let mut c = client.clone();
                    tokio::spawn(
                        async move { c.status(qkeyd_e2e::kms_proto::StatusRequest {}).await },
                    )
                })
                .collect();
            let mut ids = Vec::new();
            for call in calls {
                let s = call.await.unwrap().expect("Status").into_inner();
                assert_eq!(s.healthz, "ok");
                ids.push(s.key_id);
            }
            ids
        })
    };
    let key_id = crowd(1).pop().unwrap();
    assert_eq!(checks(&d), 1, "the first Status checks the backend");
    std::thread::sleep(Duration::from_millis(1200));
    let ids = crowd(64);
    assert!(ids.iter().all(|id| *id == key_id), "{ids:?}");
    assert_eq!(checks(&d), 2, "64 Status calls on a stale answer: one check between them");
    // And once fresh, no check at all.
    crowd(64);
    assert_eq!(checks(&d), 2);
}

#[test]
fn softhsm_token_removed_and_back_without_a_restart() {
    let hsm = SoftHsm::new();
    let (d, socket) = softhsm_daemon(&hsm);
    let mut c = Client::connect(socket.to_str().unwrap());
    let key = check_apiserver_rules(&mut c, &seed(5));
    let before = c.encrypt(&seed(15)).unwrap();
    // The token goes away: its files move out of SoftHSM's sight.
    let aside = hsm.dir.path().join("tokens-aside");
    std::fs::rename(hsm.tokens(), &aside).unwrap();
    std::fs::create_dir(hsm.tokens()).unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // past the Status cache
    let t = Instant::now();
    let e = c.status().expect_err("Status must fail with the token gone");
    assert!(t.elapsed() < Duration::from_secs(3), "Status answered in {:?}", t.elapsed());
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("no token labelled"), "{}", e.message());
    assert_eq!(c.encrypt(&seed(16)).unwrap_err().code(), Code::Unavailable);
    assert_eq!(c.decrypt_reply(&before).unwrap_err().code(), Code::Unavailable);
    // Back: Status is ok again, same key, old data decrypts, no restart.
    std::fs::remove_dir(hsm.tokens()).unwrap();
    std::fs::rename(&aside, hsm.tokens()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        match c.status() {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "Status never recovered: {e:?}\n{}", d.log())
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(s.key_id, key);
    assert_eq!(c.decrypt_reply(&before).unwrap(), seed(15));
    check_apiserver_rules(&mut c, &seed(6));
    // The sealer reconnected and opened a new inline session: calls run on
    // the gRPC thread again, not only through the sealer's queue.
    let inline = |d: &Daemon| d.keys("GET", "/v1/kms", None).1["token_ops"]["inline"].as_u64();
    let was = inline(&d).unwrap();
    for i in 0..10 {
        c.encrypt(&seed(80 + i)).unwrap();
    }
    assert!(inline(&d).unwrap() >= was + 8, "inline after the reconnect: {was} → {:?}", inline(&d));
}

#[test]
fn softhsm_kek_with_the_inline_session_turned_off() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, HSM_PIN).unwrap();
    // `start` writes `[kms]` and then this: the first line lands in `[kms]`.
    let keys = format!("inline_token_session = false\n{}", hsm.keys_config(&pin));
    let (d, socket) = start(dir, &keys, &[hsm.env()]);
    let mut c = Client::connect(socket.to_str().unwrap());
    check_apiserver_rules(&mut c, &seed(90));
    for i in 0..10 {
        let e = c.encrypt(&seed(91 + i)).unwrap();
        assert_eq!(c.decrypt_reply(&e).unwrap(), seed(91 + i));
    }
    let ops = d.keys("GET", "/v1/kms", None).1["token_ops"].clone();
    assert_eq!(ops["inline"], 0, "{ops}");
    assert!(ops["queued"].as_u64().unwrap() >= 20, "every operation on the sealer's thread: {ops}");
}

/// Run the Python grpcio client (tests/kms/grpcio_client.py) against `socket`.
fn python_client_passes(socket: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("python3")
        .arg(root.join("tests/kms/grpcio_client.py"))
        .args(["--socket", socket, "--proto"])
        .arg(root.join("daemon/proto/kms_v2.proto"))
        .output()
        .expect("python3 (tests/run-all.sh installs grpcio and grpcio-tools)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the grpcio client failed:\n{text}");
    assert!(text.starts_with("ok: key_id qkeyd-kek-"), "{text}");
}

#[test]
fn python_grpcio_client_against_softhsm() {
    let hsm = SoftHsm::new();
    let (_d, socket) = softhsm_daemon(&hsm);
    python_client_passes(socket.to_str().unwrap());
}

#[cfg(feature = "tpm")]
mod tpm {
    use super::*;
    use qkeyd_e2e::Swtpm;

    fn tpm_daemon(tpm: &Swtpm) -> (Daemon, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let keys = format!(
            "[keys]\nsealer = \"tpm\"\nseal_timeout_ms = 2000\n[keys.tpm]\ntcti = \"{}\"\n",
            tpm.tcti()
        );
        start(dir, &keys, &[])
    }

    #[test]
    fn swtpm_kek_meets_the_apiserver_rules_and_rotates() {
        let tpm = Swtpm::start();
        let (d, socket) = tpm_daemon(&tpm);
        let mut c = Client::connect(socket.to_str().unwrap());
        check_apiserver_rules(&mut c, &seed(7));
        bad_input_is_refused(&mut c);
        rotation_scenario(&d, &mut c);
    }

    #[test]
    fn python_grpcio_client_against_swtpm() {
        let tpm = Swtpm::start();
        let (_d, socket) = tpm_daemon(&tpm);
        python_client_passes(socket.to_str().unwrap());
    }

    #[test]
    fn swtpm_stopped_and_back_without_a_restart() {
        let mut tpm = Swtpm::start();
        let (_d, socket) = tpm_daemon(&tpm);
        let mut c = Client::connect(socket.to_str().unwrap());
        let key = check_apiserver_rules(&mut c, &seed(8));
        let before = c.encrypt(&seed(18)).unwrap();
        tpm.stop();
        // Past both the Status cache (1 s) and the unsealed-KEK cache (2 s):
        // Encrypt and Decrypt fail on their own, before any Status.
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(c.encrypt(&seed(19)).unwrap_err().code(), Code::Unavailable);
        assert_eq!(c.decrypt_reply(&before).unwrap_err().code(), Code::Unavailable);
        let t = Instant::now();
        let e = c.status().expect_err("Status must fail with the TPM gone");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        tpm.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            if let Ok(s) = c.status() {
                break s;
            }
            assert!(Instant::now() < deadline, "Status never recovered");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(s.key_id, key);
        assert_eq!(c.decrypt_reply(&before).unwrap(), seed(18));
    }
}
