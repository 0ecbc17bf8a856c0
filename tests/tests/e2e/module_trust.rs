//! Whom `libqkeyd_pkcs11.so` sends a PIN to. A squatter of another uid
//! (65534) takes the module's socket, as any local user can while qkeyd is
//! down: on an abstract name, in a shared sticky directory, or in its own
//! directory. pkcs11-tool logs in and draws random bytes through the module;
//! the squatter, which speaks enough of the protocol to be sent the PIN,
//! reports every byte it received. With the server's uid set explicitly to
//! the squatter's, the PIN does reach it: the uid check, not a broken
//! connection, is what keeps it out otherwise. The real daemon is trusted by
//! its socket directory's owner or by its uid.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use qkeyd_e2e::{Daemon, pkcs11_module};

/// The PIN the module is given: it must never reach a squatter it refuses.
const PIN: &str = "squat-pin-4711";
/// The uid of the squatter.
const NOBODY: u32 = 65534;

/// A process of uid 65534 listening on the module's socket.
struct Squatter {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    /// Where it listens: a path or `@name`.
    socket: String,
}

/// What a squatter saw since its last report.
#[derive(Debug)]
struct Seen {
    connections: u64,
    received: Vec<u8>,
}

impl Seen {
    fn has_pin(&self) -> bool {
        self.received.windows(PIN.len()).any(|w| w == PIN.as_bytes())
    }
}

impl Squatter {
    fn start(socket: &str) -> Self {
        let script = include_str!("../../pkcs11/squatter.py");
        let mut child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["/usr/bin/python3", "-c", script, socket])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv (util-linux) and python3");
        let input = child.stdin.take().unwrap();
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "listening", "the squatter did not start on {socket}");
        Self { child, input, output, socket: socket.to_owned() }
    }

    /// What it saw since the last report.
    fn report(&mut self) -> Seen {
        writeln!(self.input, "report").unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        Seen {
            connections: v["connections"].as_u64().unwrap(),
            received: hex::decode(v["received"].as_str().unwrap()).unwrap(),
        }
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// pkcs11-tool logs in and draws 16 random bytes through the module pointed
/// at `socket`, with `server_uid` as `QKEYD_MODULE_SERVER_UID` if given.
fn login_and_random(socket: &str, server_uid: Option<&str>) -> (bool, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut c = Command::new("pkcs11-tool");
    c.arg("--module").arg(pkcs11_module());
    c.args(["--login", "--pin", PIN, "--generate-random", "16", "--output-file"]).arg(out.path());
    c.env("QKEYD_MODULE_SOCKET", socket).env("QKEYD_MODULE_DEBUG", "1");
    c.env_remove("QKEYD_MODULE_SERVER_UID");
    if let Some(uid) = server_uid {
        c.env("QKEYD_MODULE_SERVER_UID", uid);
    }
    let o = c.output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let ok = o.status.success() && std::fs::read(out.path()).unwrap().len() == 16;
    (ok, text)
}

/// The module refused: pkcs11-tool found no token, and `why` is on stderr.
fn assert_refused(ok: bool, text: &str, why: &str) {
    assert!(!ok && text.contains("No slot with a token was found"), "{text}");
    assert!(text.contains(why), "missing {why:?} in\n{text}");
}

/// The squatter was connected to, then closed on, with not one byte sent.
fn assert_nothing_sent(seen: &Seen) {
    assert!(seen.connections >= 1, "the module never connected: {seen:?}");
    assert!(seen.received.is_empty(), "the module sent {seen:?}");
}

/// The module trusted the squatter: it sent the Hello and then the PIN.
fn assert_pin_sent(seen: &Seen) {
    assert!(seen.has_pin(), "the squatter did not get the PIN: {seen:?}");
}

/// A temporary directory with `mode` and owner `uid`.
fn dir(mode: u32, uid: u32) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(d.path(), Some(uid), Some(uid)).unwrap();
    d
}

fn abstract_name(tag: &str) -> String {
    format!("@qkeyd-squat-{}-{tag}", std::process::id())
}

fn path_of(d: &tempfile::TempDir) -> PathBuf {
    d.path().join("module.sock")
}

#[test]
fn a_squatter_on_an_abstract_socket_is_never_sent_the_pin() {
    let mut s = Squatter::start(&abstract_name("abstract"));
    // No uid given: an abstract socket is not even connected to.
    let (ok, text) = login_and_random(&s.socket, None);
    assert_refused(ok, &text, "set QKEYD_MODULE_SERVER_UID");
    let seen = s.report();
    assert_eq!((seen.connections, seen.received.len()), (0, 0), "{seen:?}");
    // Root expected: connected, checked, closed.
    let (ok, text) = login_and_random(&s.socket, Some("0"));
    let why = format!(
        "refusing the server at {}: it runs as uid {NOBODY}, expected uid 0 (QKEYD_MODULE_SERVER_UID)",
        s.socket
    );
    assert_refused(ok, &text, &why);
    assert_nothing_sent(&s.report());
    // Told to trust uid 65534, the module does: the same connection carries the PIN.
    let (_, text) = login_and_random(&s.socket, Some(&NOBODY.to_string()));
    let seen = s.report();
    assert_pin_sent(&seen);
    assert!(!text.contains("refusing"), "{text}");
}

#[test]
fn a_squatter_in_a_shared_sticky_directory_is_never_sent_the_pin() {
    // Root's, world-writable and sticky, like /tmp.
    let shared = dir(0o1777, 0);
    let socket = path_of(&shared);
    let mut s = Squatter::start(socket.to_str().unwrap());
    let (ok, text) = login_and_random(&s.socket, None);
    let why = format!(
        "refusing the server at {}: it runs as uid {NOBODY}, expected uid 0 (the owner of {})",
        socket.display(),
        shared.path().display()
    );
    assert_refused(ok, &text, &why);
    assert_nothing_sent(&s.report());
    let _ = login_and_random(&s.socket, Some(&NOBODY.to_string()));
    assert_pin_sent(&s.report());
}

/// A socket in a directory uid 65534 owns is 65534's to serve: the module
/// trusts it unless told to expect another uid, and a bad setting is an
/// error, not a fall-back to the directory's owner.
#[test]
fn the_owner_of_the_socket_directory_is_trusted_unless_another_uid_is_set() {
    let own = dir(0o755, NOBODY);
    let socket = path_of(&own);
    let mut s = Squatter::start(socket.to_str().unwrap());
    let (_, text) = login_and_random(&s.socket, None);
    assert_pin_sent(&s.report());
    assert!(!text.contains("refusing"), "{text}");
    let (ok, text) = login_and_random(&s.socket, Some("0"));
    assert_refused(ok, &text, &format!("it runs as uid {NOBODY}, expected uid 0"));
    assert_nothing_sent(&s.report());
    for bad in ["nobody", "-1", "", "4294967295", "0x0"] {
        let (ok, text) = login_and_random(&s.socket, Some(bad));
        assert_refused(ok, &text, &format!("QKEYD_MODULE_SERVER_UID={bad:?} is not a uid"));
        let seen = s.report();
        assert_eq!((seen.connections, seen.received.len()), (0, 0), "{bad:?}: {seen:?}");
    }
}

/// qkeyd itself, as root: trusted by its socket directory's owner (root) or
/// by an explicit uid 0, refused when another uid is expected; on an
/// abstract socket only with its uid given.
#[test]
fn the_real_daemon_is_trusted_by_its_directory_or_its_uid() {
    let d = tempfile::tempdir().unwrap();
    let socket = d.path().join("p11.sock");
    let abs = abstract_name("qkeyd");
    let pin = d.path().join("p11-pin");
    std::fs::write(&pin, PIN).unwrap();
    let state = d.path().join("state");
    let config = |socket: &str| {
        format!(
            "[[source]]\nname = \"os\"\nkind = \"os\"\n[module]\nsocket = \"{socket}\"\npin_file = \"{}\"\n",
            pin.display()
        )
    };
    let by_path = Daemon::start_with(
        tempfile::tempdir().unwrap(),
        &config(socket.to_str().unwrap()),
        &state,
        &[],
    );
    let path = socket.to_str().unwrap();
    for uid in [None, Some("0")] {
        let (ok, text) = login_and_random(path, uid);
        assert!(ok, "{uid:?}: {text}\n{}", by_path.log());
    }
    let (ok, text) = login_and_random(path, Some(&NOBODY.to_string()));
    assert_refused(ok, &text, &format!("it runs as uid 0, expected uid {NOBODY}"));
    drop(by_path);

    let state = tempfile::tempdir().unwrap();
    let by_name = Daemon::start_with(
        tempfile::tempdir().unwrap(),
        &config(&abs),
        &state.path().join("s"),
        &[],
    );
    assert!(by_name.log().contains("PKCS#11 module socket listening"), "{}", by_name.log());
    let (ok, text) = login_and_random(&abs, None);
    assert_refused(ok, &text, "set QKEYD_MODULE_SERVER_UID");
    let (ok, text) = login_and_random(&abs, Some("0"));
    assert!(ok, "{text}\n{}", by_name.log());
}
