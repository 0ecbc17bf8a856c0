//! The state directory on a small tmpfs that fills up or turns read-only
//! under a running daemon: key creation, key rotation and KEK rotation are
//! refused with an error that says why (REST 5xx, 507 preferred, JSON whose
//! message names the full or read-only disk), nothing half-written stays
//! behind, the vault loads again after a restart, every listed key works,
//! and once the space or write access is back everything works again
//! without a restart. Root only (mount); skipped with the reason otherwise.
//!
//! A running qkeyd keeps `audit.log` and `kms/lock` open for writing, so the
//! kernel refuses `mount -o remount,ro` of its state directory (EBUSY). The
//! live read-only case therefore lays a read-only bind mount of the same
//! tmpfs over the state directory: every path qkeyd opens from then on is on
//! a read-only mount, as after a remount, while the files it already holds
//! open stay writable. The plain `remount,ro` is then done with the daemon
//! stopped, and the daemon started on it.
//!
//! The daemon's behaviour is collected as findings (each says what was sent,
//! what came back and which files were left), reported together at the end,
//! so that one run shows every deviation.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use base64::Engine as _;
use qkeyd_e2e::{Daemon, kms::Client};
use serde_json::{Value, json};

/// Words of a message that says the disk is full.
const FULL: &[&str] = &["no space", "disk is full", "disk full", "storage is full"];
/// Words of a message that says the disk is read-only.
const READ_ONLY: &[&str] = &["read-only", "read only"];

/// Mounts made by the test, undone (lazily, in reverse) on drop.
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn run(args: &[&str]) -> Result<(), String> {
        let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
        }
    }

    fn mount(&mut self, args: &[&str], target: &Path) -> Result<(), String> {
        let mut all = vec!["mount"];
        all.extend_from_slice(args);
        let t = target.to_str().unwrap();
        all.push(t);
        Self::run(&all)?;
        self.0.push(target.to_owned());
        Ok(())
    }

    fn umount_last(&mut self) {
        let t = self.0.pop().expect("a mount to undo");
        Self::run(&["umount", t.to_str().unwrap()]).unwrap();
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        while let Some(t) = self.0.pop() {
            let _ = Self::run(&["umount", "-l", t.to_str().unwrap()]);
        }
    }
}

/// Deviations from the behaviour the test expects of the daemon.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let w = what();
            eprintln!("FINDING: {w}");
            self.0.push(w);
        }
    }

    /// `answer` must be a 5xx JSON error whose message says one of `words`.
    fn clear_error(&mut self, request: &str, answer: &(u16, Value), words: &[&str]) {
        let (status, body) = answer;
        let msg = body["error"]["message"].as_str().unwrap_or_default().to_lowercase();
        self.check((500..600).contains(status) && words.iter().any(|w| msg.contains(w)), || {
            format!("{request}: answered {status} {body}; expected 5xx (507) JSON whose message says {words:?}")
        });
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn create(d: &Daemon, alg: &str) -> (u16, Value) {
    d.keys("POST", "/v1/keys", Some(json!({ "alg": alg, "label": format!("state-dir {alg}") })))
}

/// (id, alg, versions) of every listed key.
fn listed(d: &Daemon) -> Vec<(String, String, Vec<u64>)> {
    let (s, v) = d.keys("GET", "/v1/keys", None);
    assert_eq!(s, 200, "GET /v1/keys: {v}");
    let mut keys: Vec<_> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let versions = k["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["version"].as_u64().unwrap())
                .collect();
            (k["id"].as_str().unwrap().to_owned(), k["alg"].as_str().unwrap().to_owned(), versions)
        })
        .collect();
    keys.sort();
    keys
}

/// Use one version of a key; `Err` with the request and the answer if it
/// does not work.
fn use_version(d: &Daemon, id: &str, alg: &str, version: u64) -> Result<(), String> {
    let call = |path: &str, body: Value| {
        let (s, v) = d.keys("POST", &format!("/v1/keys/{id}/{path}"), Some(body));
        if s == 200 { Ok(v) } else { Err(format!("POST /v1/keys/{id}/{path} v{version}: {s} {v}")) }
    };
    if alg.starts_with("ml-kem") {
        let e = call("encapsulate", json!({ "version": version }))?;
        let k = call("decapsulate", json!({ "ciphertext": e["ciphertext"], "version": version }))?;
        if k["shared_secret"] != e["shared_secret"] {
            return Err(format!("{id} v{version}: decapsulation gave another secret"));
        }
    } else {
        let msg = b64(b"a key on a state directory that filled up");
        let s = call("sign", json!({ "message": msg, "version": version }))?;
        let v = call(
            "verify",
            json!({ "message": msg, "signature": s["signature"], "version": version }),
        )?;
        if v["valid"] != true {
            return Err(format!("{id} v{version}: its own signature does not verify: {v}"));
        }
    }
    Ok(())
}

/// Every version of every listed key works.
fn every_key_works(d: &Daemon, f: &mut Findings, when: &str) {
    for (id, alg, versions) in listed(d) {
        for v in versions {
            let r = use_version(d, &id, &alg, v);
            f.check(r.is_ok(), || {
                format!("{when}: a listed key does not work: {}", r.unwrap_err())
            });
        }
    }
}

/// Signs while the disk cannot take more, until the audit log's last page is
/// full too (or 64 signatures): each a valid signature, or a clear error.
fn sign_or_clear_error(d: &Daemon, f: &mut Findings, id: &str, words: &[&str], when: &str) {
    let msg = b64(b"signed while the disk cannot take more");
    for _ in 0..64 {
        let (s, v) =
            d.keys("POST", &format!("/v1/keys/{id}/sign"), Some(json!({ "message": msg })));
        if s != 200 {
            f.clear_error(&format!("{when}: POST /v1/keys/{id}/sign"), &(s, v), words);
            return;
        }
        let (vs, vv) = d.keys(
            "POST",
            &format!("/v1/keys/{id}/verify"),
            Some(json!({ "message": msg, "signature": v["signature"] })),
        );
        f.check(vs == 200 && vv["valid"] == true, || {
            format!("{when}: sign answered a signature that does not verify: {vs} {vv}")
        });
    }
}

/// A KMS round trip: correct, or a gRPC error that names the disk.
fn kms_round_trip(c: &mut Client, f: &mut Findings, words: &[&str], when: &str) {
    let plain = b"a seed encrypted while the state directory is in trouble".to_vec();
    match c.encrypt(&plain).and_then(|e| c.decrypt_reply(&e)) {
        Ok(p) => f.check(p == plain, || format!("{when}: KMS round trip gave other bytes")),
        Err(e) => {
            let m = e.message().to_lowercase();
            f.check(words.iter().any(|w| m.contains(w)), || {
                format!(
                    "{when}: KMS Encrypt/Decrypt failed without saying why: {:?} {:?}",
                    e.code(),
                    e.message()
                )
            });
        }
    }
}

/// Files in `state` that a refused write left behind: temp files, and key
/// folders without a version file.
fn half_written(state: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![state.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut has_version = false;
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if name.ends_with(".key") {
                has_version = true;
            }
            if name.contains(".tmp") || name.starts_with('.') {
                let len = p.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(format!("{} ({len} bytes)", p.display()));
            }
        }
        if dir.parent().is_some_and(|p| p.ends_with("keys")) && !has_version {
            out.push(format!("{} (a key folder with no version file)", dir.display()));
        }
    }
    out.sort();
    out
}

/// Fill the file system holding `dir` to the last byte.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a_u8; 1 << 16];
    for size in [1 << 16, 4096, 1] {
        loop {
            match file.write(&chunk[..size]) {
                Ok(n) if n > 0 => {}
                Ok(_) => break,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    path
}

fn wait_for_socket(socket: &Path, d: &Daemon) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "no KMS socket; log:\n{}", d.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Start a daemon on `state`; `Err` with the harness's report (the log) if
/// it does not come up.
fn try_start(config: &str, state: &Path, socket: &Path) -> Result<Daemon, String> {
    let _ = std::fs::remove_file(socket);
    let config = config.to_owned();
    let state = state.to_owned();
    std::panic::catch_unwind(move || {
        Daemon::start_with(tempfile::tempdir().unwrap(), &config, &state, &[])
    })
    .inspect(|d| wait_for_socket(socket, d))
    .map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

#[test]
fn a_full_or_read_only_state_dir_fails_clearly_and_recovers() {
    let base = tempfile::tempdir().unwrap();
    let state = base.path().join("state");
    let ro = base.path().join("ro");
    std::fs::create_dir(&state).unwrap();
    std::fs::create_dir(&ro).unwrap();
    let mut mounts = Mounts(Vec::new());
    if let Err(reason) = mounts.mount(&["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"], &state)
    {
        eprintln!("skipping: cannot mount a tmpfs (root only): {reason}");
        return;
    }
    let socket = base.path().join("kms.sock");
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n\n[kms]\nsocket = \"{}\"\n",
        socket.display()
    );
    let mut f = Findings::default();

    let d = try_start(&config, &state, &socket).unwrap();
    let (s, dsa) = create(&d, "ml-dsa-44");
    assert_eq!(s, 201, "{dsa}");
    let dsa = dsa["id"].as_str().unwrap().to_owned();
    let (s, kem) = create(&d, "ml-kem-512");
    assert_eq!(s, 201, "{kem}");
    let mut c = Client::connect(socket.to_str().unwrap());
    let kek1 = c.status().unwrap().key_id;
    let under_kek1 = c.encrypt(b"under the first KEK").unwrap();
    let keys_before = listed(&d);
    let kms_before = d.keys("GET", "/v1/kms", None).1["keks"].clone();

    // 1. The disk fills up under the running daemon.
    let filler = fill(&state);
    let when = "disk full";
    f.clear_error(&format!("{when}: POST /v1/keys"), &create(&d, "ml-dsa-65"), FULL);
    f.clear_error(
        &format!("{when}: POST /v1/kms/rotate"),
        &d.keys("POST", "/v1/kms/rotate", None),
        FULL,
    );
    f.clear_error(
        &format!("{when}: POST /v1/keys/{dsa}/rotate"),
        &d.keys("POST", &format!("/v1/keys/{dsa}/rotate"), None),
        FULL,
    );
    sign_or_clear_error(&d, &mut f, &dsa, FULL, when);
    kms_round_trip(&mut c, &mut f, FULL, when);
    let left = half_written(&state);
    f.check(left.is_empty(), || format!("{when}: left behind by the refused writes: {left:?}"));
    f.check(listed(&d) == keys_before, || {
        format!("{when}: the key list changed: {:?}", listed(&d))
    });
    let kms_now = d.keys("GET", "/v1/kms", None).1["keks"].clone();
    f.check(kms_now == kms_before, || format!("{when}: the KEK list changed: {kms_now}"));
    assert_eq!(c.status().unwrap().key_id, kek1, "the write key is unchanged");

    // 2. A restart while the disk is still full: the vault loads, or qkeyd
    // refuses to start with a message that says the disk is full.
    drop(c);
    drop(d.kill());
    let d = match try_start(&config, &state, &socket) {
        Ok(d) => {
            f.check(listed(&d) == keys_before, || {
                format!("restart on a full disk: the vault lists {:?}", listed(&d))
            });
            let left = half_written(&state);
            f.check(left.is_empty(), || {
                format!("restart on a full disk: still left behind: {left:?}")
            });
            Some(d)
        }
        Err(log) => {
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
            eprintln!("restart on a full disk: qkeyd refused to start: {last}");
            let l = log.to_lowercase();
            f.check(FULL.iter().any(|w| l.contains(w)), || {
                format!(
                    "restart on a full disk: qkeyd stopped without saying the disk is full: {log}"
                )
            });
            None
        }
    };

    // 3. Space is back: the vault loads, and everything works again.
    std::fs::remove_file(&filler).unwrap();
    let d = d.unwrap_or_else(|| {
        let d = try_start(&config, &state, &socket).unwrap();
        f.check(listed(&d) == keys_before, || {
            format!("start with space back: the vault lists {:?}", listed(&d))
        });
        d
    });
    let mut c = Client::connect(socket.to_str().unwrap());
    let when = "space back";
    let (s, v) = create(&d, "ml-dsa-65");
    f.check(s == 201, || format!("{when}: POST /v1/keys: {s} {v}"));
    let (s, v) = d.keys("POST", &format!("/v1/keys/{dsa}/rotate"), None);
    f.check(s == 201 || s == 200, || format!("{when}: POST /v1/keys/{dsa}/rotate: {s} {v}"));
    let (s, v) = d.keys("POST", "/v1/kms/rotate", None);
    f.check(s == 201, || format!("{when}: POST /v1/kms/rotate: {s} {v}"));
    every_key_works(&d, &mut f, when);
    kms_round_trip(&mut c, &mut f, &[], when);
    f.check(c.decrypt_reply(&under_kek1).is_ok(), || {
        format!("{when}: the first KEK no longer decrypts")
    });

    // 4. The state directory turns read-only under the running daemon (a
    // read-only bind mount of the same tmpfs laid over it; see the top).
    let busy = Mounts::run(&["mount", "-o", "remount,ro", state.to_str().unwrap()]);
    eprintln!("remount,ro with qkeyd running: {busy:?}");
    mounts.mount(&["--bind", state.to_str().unwrap()], &ro).unwrap();
    Mounts::run(&["mount", "-o", "remount,ro,bind", ro.to_str().unwrap()]).unwrap();
    mounts.mount(&["--bind", ro.to_str().unwrap()], &state).unwrap();
    let keys_before = listed(&d);
    let when = "read-only";
    f.clear_error(&format!("{when}: POST /v1/keys"), &create(&d, "ml-kem-768"), READ_ONLY);
    f.clear_error(
        &format!("{when}: POST /v1/kms/rotate"),
        &d.keys("POST", "/v1/kms/rotate", None),
        READ_ONLY,
    );
    f.clear_error(
        &format!("{when}: POST /v1/keys/{dsa}/rotate"),
        &d.keys("POST", &format!("/v1/keys/{dsa}/rotate"), None),
        READ_ONLY,
    );
    sign_or_clear_error(&d, &mut f, &dsa, READ_ONLY, when);
    kms_round_trip(&mut c, &mut f, READ_ONLY, when);
    f.check(listed(&d) == keys_before, || {
        format!("{when}: the key list changed: {:?}", listed(&d))
    });
    mounts.umount_last();
    mounts.umount_last();
    let when = "writable again";
    let (s, v) = create(&d, "ml-kem-768");
    f.check(s == 201, || format!("{when}: POST /v1/keys: {s} {v}"));
    let (s, v) = d.keys("POST", "/v1/kms/rotate", None);
    f.check(s == 201, || format!("{when}: POST /v1/kms/rotate: {s} {v}"));
    every_key_works(&d, &mut f, when);
    let left = half_written(&state);
    f.check(left.is_empty(), || format!("{when}: left behind by the refused writes: {left:?}"));

    // 5. Started on a read-only state directory (remounted with qkeyd
    // stopped): it refuses with a message that says so, or starts and lists
    // its keys. Then writable again: everything loads and works.
    let keys_before = listed(&d);
    drop(c);
    drop(d.kill());
    Mounts::run(&["mount", "-o", "remount,ro", state.to_str().unwrap()]).unwrap();
    match try_start(&config, &state, &socket) {
        Ok(d) => {
            f.check(listed(&d) == keys_before, || {
                format!("started read-only: the vault lists {:?}", listed(&d))
            });
            drop(d.kill());
        }
        Err(log) => {
            let l = log.to_lowercase();
            f.check(READ_ONLY.iter().any(|w| l.contains(w)), || {
                format!("started read-only: qkeyd stopped without saying the state dir is read-only: {log}")
            });
        }
    }
    Mounts::run(&["mount", "-o", "remount,rw", state.to_str().unwrap()]).unwrap();
    let d = try_start(&config, &state, &socket).unwrap();
    let mut c = Client::connect(socket.to_str().unwrap());
    f.check(listed(&d) == keys_before, || {
        format!("after the restart: the vault lists {:?}", listed(&d))
    });
    every_key_works(&d, &mut f, "after the restart");
    f.check(c.decrypt_reply(&under_kek1).is_ok(), || {
        "after the restart: the first KEK no longer decrypts".into()
    });
    kms_round_trip(&mut c, &mut f, &[], "after the restart");
    let left = half_written(&state);
    f.check(left.is_empty(), || format!("after the restart: left behind: {left:?}"));
    drop(c);
    drop(d);
    assert!(f.0.is_empty(), "the daemon's behaviour deviates:\n- {}", f.0.join("\n- "));
}
