//! The module socket under a flood from one uid: idle connections time out,
//! one uid holds at most its share, another uid's client is still served,
//! frames over their message's limit are refused without being read, and
//! the refusals are counted but logged once.

use std::{
    io::{Read as _, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use qkeyd_e2e::{Daemon, metric, pkcs11_module};

/// A daemon whose module socket uid 65534 may use, in a directory it can
/// reach, with a copy of the module it can load.
struct Served {
    d: Daemon,
    socket: PathBuf,
    module: PathBuf,
    _open: tempfile::TempDir,
}

fn serve(module_settings: &str) -> Served {
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let module = open.path().join("libqkeyd_pkcs11.so");
    std::fs::copy(pkcs11_module(), &module).unwrap();
    let socket = open.path().join("module.sock");
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "5678-flood").unwrap();
    let state = dir.path().join("state");
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n\n[module]\nsocket = \"{}\"\nsocket_mode = \"0666\"\n\
         allowed_uids = [65534]\npin_file = \"{}\"\n{module_settings}\n",
        socket.display(),
        pin.display()
    );
    let d = Daemon::start_with(dir, &config, &state, &[]);
    Served { d, socket, module, _open: open }
}

/// `pkcs11-tool --generate-random 16` as uid 65534.
fn random_as_nobody(s: &Served) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "pkcs11-tool", "--module"])
        .arg(&s.module)
        .args(["--generate-random", "16"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("QKEYD_MODULE_SOCKET", &s.socket)
        .env("QKEYD_MODULE_DEBUG", "1")
        .output()
        .expect("setpriv (util-linux) and pkcs11-tool (opensc)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success() && out.stdout.len() == 16, text)
}

/// Whether the daemon closed `c` within `wait`: end of stream, or a reset
/// when it closed with bytes of ours unread.
fn closed_within(c: &UnixStream, wait: Duration) -> bool {
    c.set_read_timeout(Some(wait)).unwrap();
    match (&*c).read(&mut [0u8; 1]) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

fn refused_lines(d: &Daemon) -> usize {
    d.log().lines().filter(|l| l.contains("PKCS#11 connection refused")).count()
}

#[test]
fn one_uid_flooding_with_idle_connections_leaves_room_for_another() {
    let s = serve("");
    // 300 connections that say nothing, from root: its share is 64 of 256.
    let flood: Vec<UnixStream> =
        (0..300).map(|_| UnixStream::connect(&s.socket).unwrap()).collect();
    let (ok, text) = random_as_nobody(&s);
    assert!(ok, "uid 65534 was not served during the flood:\n{text}\n{}", s.d.log());
    // Refused connections are closed at once; look without waiting on each.
    let refused = flood
        .iter()
        .filter(|c| {
            c.set_nonblocking(true).unwrap();
            let r = (&**c).read(&mut [0u8; 1]);
            c.set_nonblocking(false).unwrap();
            matches!(r, Ok(0)) || r.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
        })
        .count();
    assert_eq!(refused, 300 - 64, "root holds exactly its share");
    let m = s.d.metrics();
    assert_eq!(
        metric(&m, r#"qkeyd_connections_refused_total{reason="uid_share",socket="module"}"#),
        Some(236.0)
    );
    assert_eq!(refused_lines(&s.d), 1, "one log line for the whole flood:\n{}", s.d.log());
    // The accepted 64 never sent a request: closed once the first-request time is up.
    let deadline = Instant::now() + Duration::from_secs(30);
    for c in &flood {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        assert!(closed_within(c, left), "an idle connection was never closed");
    }
    let m = s.d.metrics();
    assert_eq!(metric(&m, r#"qkeyd_module_connections_closed_total{reason="idle"}"#), Some(64.0));
    // Root is served again once its connections are gone.
    let mut c = UnixStream::connect(&s.socket).unwrap();
    c.write_all(&[0, 0, 0, 5, 1, 0, 0, 0, 1]).unwrap();
    let mut len = [0u8; 4];
    c.read_exact(&mut len).unwrap();
    assert!(u32::from_be_bytes(len) > 0);
}

#[test]
fn frames_over_their_limit_are_refused_unread() {
    // Every connection gets a place, to show that none of them costs memory.
    let s = serve("max_connections = 512\nmax_connections_per_uid = 512\n");
    let flood: Vec<UnixStream> = (0..300)
        .map(|i| {
            let mut c = UnixStream::connect(&s.socket).unwrap();
            // A length of 16 MiB + 1000, then a Sign, a Login or an unknown tag.
            let mut wire = ((16u32 << 20) + 1000).to_be_bytes().to_vec();
            wire.extend_from_slice(&[[7, 3, 200][i % 3], 1, 2, 3]);
            c.write_all(&wire).unwrap();
            c
        })
        .collect();
    for c in &flood {
        assert!(closed_within(c, Duration::from_secs(10)), "an oversized frame was not refused");
    }
    let m = s.d.metrics();
    assert_eq!(
        metric(&m, r#"qkeyd_module_connections_closed_total{reason="bad_frame"}"#),
        Some(300.0)
    );
    let (ok, text) = random_as_nobody(&s);
    assert!(ok, "{text}");
}
