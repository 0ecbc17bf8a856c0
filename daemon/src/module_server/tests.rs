//! The module server's handlers in process, without a socket: login, the
//! operations a logged-in connection may do, and the answers to bad requests.

use std::sync::Arc;

use qkeyd_p11_proto::{self as proto, ErrorCode, KeyEntry, Request, Response, Secret};

use super::{Conn, Server, TokenPin, pin::PinStore};
use crate::{
    api::keys::{KeysState, TokenDigest},
    config::ModuleSettings,
    objects::TokenObjects,
    testing,
    vault::{Algorithm, Vault},
};

const PIN: &str = "1234-unit";
const SO_PIN: &str = "so-1234-unit";

fn server() -> (tempfile::TempDir, Server) {
    let (dir, sealer) = testing::soft_sealer();
    let pool = testing::pool();
    let vault = Arc::new(Vault::open(dir.path(), sealer, pool.clone()).unwrap());
    let settings = ModuleSettings {
        socket: None,
        mode: 0o660,
        allowed_uids: vec![],
        allowed_gids: vec![],
        pin: None,
        so_pin: None,
        key_cache: std::time::Duration::from_secs(2),
        max_connections: 4,
        max_connections_per_uid: 2,
        idle_timeout: std::time::Duration::from_secs(300),
    };
    let pin = |value: &str, file: &str| TokenPin {
        value: zeroize::Zeroizing::new(value.to_owned()),
        store: PinStore::File(dir.path().join(file)),
    };
    let pins = [pin(PIN, "module-pin"), pin(SO_PIN, "module-so-pin")];
    let objects = Arc::new(TokenObjects::open(dir.path(), vault.clone()).unwrap());
    let keys = KeysState { vault, objects, token: TokenDigest::of("unit-test-token") };
    let metrics = crate::metrics::Metrics::new().unwrap();
    let s = Server::new(&keys, pool, pins, "00ff".into(), &settings, vec![0], &metrics);
    (dir, s)
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

fn login(s: &Server, conn: &mut Conn, pin: &str) -> Response {
    s.handle(conn, Request::Login { so: false, pin: Secret::new(pin.as_bytes().to_vec()) })
}

#[test]
fn hello_and_seed_need_no_login_and_check_their_limits() {
    let (_dir, s) = server();
    let mut conn = Conn::default();
    let r = s.handle(&mut conn, Request::Hello { version: proto::VERSION });
    assert!(matches!(r, Response::Hello { ref serial, .. } if serial == "00ff"), "{r:?}");
    let r = s.handle(&mut conn, Request::Hello { version: proto::VERSION + 1 });
    assert_eq!(code(&r), Some(ErrorCode::BadRequest));
    match s.handle(&mut conn, Request::Seed { len: 48 }) {
        Response::Seed(seed) => assert_eq!(seed.expose().len(), 48),
        other => panic!("{other:?}"),
    }
    for len in [0, proto::MAX_SEED + 1] {
        assert_eq!(code(&s.handle(&mut conn, Request::Seed { len })), Some(ErrorCode::BadRequest));
    }
}

#[test]
fn private_operations_wait_for_the_right_pin() {
    let (_dir, s) = server();
    let mut conn = Conn::default();
    let generate =
        || Request::Generate { alg: Algorithm::MlDsa44, token: false, label: "l".into() };
    assert_eq!(code(&s.handle(&mut conn, generate())), Some(ErrorCode::NotLoggedIn));
    assert_eq!(code(&login(&s, &mut conn, "wrong")), Some(ErrorCode::PinIncorrect));
    assert_eq!(code(&s.handle(&mut conn, generate())), Some(ErrorCode::NotLoggedIn));
    assert!(matches!(login(&s, &mut conn, PIN), Response::Done));
    assert!(matches!(s.handle(&mut conn, generate()), Response::Key(_)));
    assert!(matches!(s.handle(&mut conn, Request::Logout), Response::Done));
    assert_eq!(code(&s.handle(&mut conn, generate())), Some(ErrorCode::NotLoggedIn));
}

fn secret(s: &str) -> Secret {
    Secret::new(s.as_bytes().to_vec())
}

fn pin_state(s: &Server, conn: &mut Conn) -> (proto::PinCount, proto::PinCount) {
    match s.handle(conn, Request::PinState) {
        Response::PinState { user, so } => (user, so),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_security_officer_sets_the_user_pin_and_each_role_changes_its_own() {
    let (dir, s) = server();
    let mut conn = Conn::default();
    let generate =
        || Request::Generate { alg: Algorithm::MlDsa44, token: false, label: "l".into() };
    // The user PIN is not the SO's, and the SO is not the user.
    assert_eq!(
        code(&s.handle(&mut conn, Request::Login { so: true, pin: secret(PIN) })),
        Some(ErrorCode::PinIncorrect)
    );
    let (user, so) = pin_state(&s, &mut conn);
    assert_eq!((user.failures, so.failures, so.tries, so.locked), (0, 1, 5, false));
    assert_eq!(
        code(&s.handle(&mut conn, Request::InitPin { pin: secret("5678") })),
        Some(ErrorCode::NotSoLoggedIn)
    );
    assert!(matches!(
        s.handle(&mut conn, Request::Login { so: true, pin: secret(SO_PIN) }),
        Response::Done
    ));
    assert_eq!(pin_state(&s, &mut conn).1.failures, 0);
    assert_eq!(code(&s.handle(&mut conn, generate())), Some(ErrorCode::NotLoggedIn));
    assert_eq!(
        code(&s.handle(&mut conn, Request::InitPin { pin: secret("123") })),
        Some(ErrorCode::PinLength)
    );
    assert!(matches!(
        s.handle(&mut conn, Request::InitPin { pin: secret("new-user-pin") }),
        Response::Done
    ));
    // The SO changes the SO PIN: the old one is checked and counted.
    let set = |old: &str, new: &str| Request::SetPin { old: secret(old), new: secret(new) };
    assert_eq!(code(&s.handle(&mut conn, set("nope", "so-2"))), Some(ErrorCode::PinIncorrect));
    assert!(matches!(s.handle(&mut conn, set(SO_PIN, "so-pin-2")), Response::Done));
    assert!(matches!(s.handle(&mut conn, Request::Logout), Response::Done));
    // The old user PIN is gone; the new one works, and both files hold the new PINs.
    assert_eq!(code(&login(&s, &mut conn, PIN)), Some(ErrorCode::PinIncorrect));
    assert!(matches!(login(&s, &mut conn, "new-user-pin"), Response::Done));
    assert!(matches!(s.handle(&mut conn, generate()), Response::Key(_)));
    assert!(matches!(s.handle(&mut conn, set("new-user-pin", "user-3")), Response::Done));
    let file = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    assert_eq!(
        (file("module-pin"), file("module-so-pin")),
        ("user-3\n".into(), "so-pin-2\n".into())
    );
}

#[test]
fn a_pin_from_the_environment_cannot_change_and_lockouts_show() {
    let (_dir, s) = server();
    {
        let mut pins = s.pins.lock().unwrap();
        *pins = super::pin::Pins::new(
            TokenPin {
                value: zeroize::Zeroizing::new(PIN.into()),
                store: PinStore::Env("QKEYD_TEST_PIN".into()),
            },
            TokenPin {
                value: zeroize::Zeroizing::new(SO_PIN.into()),
                store: PinStore::Env("QKEYD_TEST_SO_PIN".into()),
            },
        );
    }
    let mut conn = Conn::default();
    let r = s.handle(&mut conn, Request::SetPin { old: secret(PIN), new: secret("another") });
    assert_eq!(code(&r), Some(ErrorCode::PinFixed));
    assert!(format!("{r:?}").contains("$QKEYD_TEST_PIN"), "{r:?}");
    for n in 1..=4 {
        assert_eq!(code(&login(&s, &mut conn, "wrong")), Some(ErrorCode::PinIncorrect));
        assert_eq!(pin_state(&s, &mut conn).0.failures, n);
    }
    assert_eq!(code(&login(&s, &mut conn, "wrong")), Some(ErrorCode::PinIncorrect));
    let (user, so) = pin_state(&s, &mut conn);
    assert!(user.locked && !so.locked, "{user:?} {so:?}");
    assert_eq!(code(&login(&s, &mut conn, PIN)), Some(ErrorCode::PinLocked));
}

#[test]
fn token_objects_need_a_login_and_private_ones_the_user() {
    let (_dir, s) = server();
    let mut conn = Conn::default();
    // A data object (CKA_CLASS 0) with CKA_PRIVATE as given, and a label.
    let object = |class: u64, private: bool, more: &[(u64, Vec<u8>)]| Request::PutObject {
        id: String::new(),
        private,
        attrs: [
            vec![
                (0, class.to_ne_bytes().to_vec()),
                (2, vec![u8::from(private)]),
                (3, b"l".to_vec()),
            ],
            more.to_vec(),
        ]
        .concat(),
    };
    let put = |private: bool| object(0, private, &[]);
    assert_eq!(code(&s.handle(&mut conn, put(false))), Some(ErrorCode::NotLoggedIn));
    assert!(matches!(login(&s, &mut conn, PIN), Response::Done));
    // Whoever speaks on the socket, only what a token object may be is kept.
    let bad = |r: Request| code(&s.handle(&mut Conn { role: conn.role, ..Conn::default() }, r));
    assert_eq!(bad(object(3, false, &[])), Some(ErrorCode::BadRequest), "a private key");
    assert_eq!(bad(object(4, false, &[])), Some(ErrorCode::BadRequest), "a secret key");
    let mismatch = Request::PutObject {
        id: String::new(),
        private: false,
        attrs: vec![(0, 0u64.to_ne_bytes().to_vec()), (2, vec![1])],
    };
    assert_eq!(bad(mismatch), Some(ErrorCode::BadRequest), "CKA_PRIVATE disagrees");
    assert_eq!(
        bad(object(1, false, &[(0x86, vec![1])])),
        Some(ErrorCode::BadRequest),
        "trusted by the user"
    );
    assert!(matches!(s.handle(&mut conn, Request::Logout), Response::Done));
    assert!(matches!(
        s.handle(&mut conn, Request::Login { so: true, pin: secret(SO_PIN) }),
        Response::Done
    ));
    assert_eq!(code(&s.handle(&mut conn, put(true))), Some(ErrorCode::NotLoggedIn));
    let Response::ObjectId(public) = s.handle(&mut conn, put(false)) else { panic!() };
    assert!(matches!(s.handle(&mut conn, Request::Logout), Response::Done));
    assert!(matches!(login(&s, &mut conn, PIN), Response::Done));
    let Response::ObjectId(private) = s.handle(&mut conn, put(true)) else { panic!() };
    let listed = |s: &Server, conn: &mut Conn| match s.handle(conn, Request::ListObjects) {
        Response::Objects(o) => o.into_iter().map(|o| o.id).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(listed(&s, &mut conn).len(), 2);
    assert!(matches!(s.handle(&mut conn, Request::Logout), Response::Done));
    // Logged out: the private object is not listed, and cannot be destroyed.
    assert_eq!(listed(&s, &mut conn), vec![public.clone()]);
    assert_eq!(
        code(&s.handle(&mut conn, Request::DestroyObject { id: public.clone() })),
        Some(ErrorCode::NotLoggedIn)
    );
    assert!(matches!(login(&s, &mut conn, PIN), Response::Done));
    assert!(matches!(s.handle(&mut conn, Request::DestroyObject { id: private }), Response::Done));
    assert_eq!(
        code(&s.handle(&mut conn, Request::DestroyObject { id: "o0000000000000000".into() })),
        Some(ErrorCode::NotFound)
    );
    assert_eq!(listed(&s, &mut conn), vec![public]);
}

#[test]
fn session_and_token_keys_sign_verify_and_encapsulate() {
    let (_dir, s) = server();
    let mut conn = Conn::default();
    assert!(matches!(login(&s, &mut conn, PIN), Response::Done));
    for token in [false, true] {
        let sig_key = match s.handle(
            &mut conn,
            Request::Generate { alg: Algorithm::MlDsa65, token, label: "sig".into() },
        ) {
            Response::Key(KeyEntry { key, token: t, .. }) => {
                assert_eq!(t, token);
                key
            }
            other => panic!("{other:?}"),
        };
        let sign = Request::Sign {
            key: sig_key.clone(),
            msg: b"m".to_vec(),
            ctx: vec![],
            deterministic: false,
        };
        let Response::Signature(sig) = s.handle(&mut conn, sign) else { panic!("no signature") };
        let verify = |msg: &[u8]| Request::Verify {
            key: sig_key.clone(),
            msg: msg.to_vec(),
            ctx: vec![],
            sig: sig.clone(),
        };
        assert!(matches!(s.handle(&mut conn, verify(b"m")), Response::Verified(true)));
        assert!(matches!(s.handle(&mut conn, verify(b"x")), Response::Verified(false)));

        let kem = Request::Generate { alg: Algorithm::MlKem512, token, label: "kem".into() };
        let Response::Key(KeyEntry { key: kem_key, .. }) = s.handle(&mut conn, kem) else {
            panic!("no KEM key")
        };
        let Response::Encapsulated { ct, secret } =
            s.handle(&mut conn, Request::Encapsulate { key: kem_key.clone() })
        else {
            panic!("no encapsulation")
        };
        let r = s.handle(&mut conn, Request::Decapsulate { key: kem_key.clone(), ct });
        assert!(matches!(r, Response::SharedSecret(ref k) if *k == secret), "{r:?}");
        // A signing operation on a KEM key is the caller's mistake.
        let wrong = Request::Sign { key: kem_key, msg: vec![], ctx: vec![], deterministic: true };
        assert_eq!(code(&s.handle(&mut conn, wrong)), Some(ErrorCode::KeyMismatch));
        assert!(matches!(s.handle(&mut conn, Request::Destroy { key: sig_key }), Response::Done));
    }
    let Response::Keys(listed) = s.handle(&mut conn, Request::List) else { panic!("no list") };
    assert_eq!(listed.len(), 1, "the token KEM key; the signing key was destroyed");
}

#[test]
fn unknown_keys_and_long_labels_are_clear_errors() {
    let (_dir, s) = server();
    let mut conn = Conn::default();
    assert!(matches!(login(&s, &mut conn, PIN), Response::Done));
    for key in ["s/999999", "00ff/1", "../../etc/1", ""] {
        let r = s.handle(&mut conn, Request::Encapsulate { key: key.into() });
        assert_eq!(code(&r), Some(ErrorCode::NotFound), "{key:?}: {r:?}");
    }
    let long = "x".repeat(crate::vault::MAX_LABEL + 1);
    let r = s.handle(
        &mut conn,
        Request::Generate { alg: Algorithm::MlDsa44, token: false, label: long },
    );
    assert_eq!(code(&r), Some(ErrorCode::BadRequest));
}

/// The server on a real socket in `dir`, with short timeouts; returns the
/// socket's path, the runtime serving it and the metrics it counts in.
fn serving(
    timeouts: std::time::Duration,
) -> (tempfile::TempDir, std::path::PathBuf, tokio::runtime::Runtime, Arc<Server>) {
    let (dir, mut s) = server();
    s.first_request_timeout = timeouts;
    s.frame_timeout = timeouts;
    s.idle_timeout = timeouts;
    let s = Arc::new(s);
    let path = dir.path().join("m.sock");
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(async { tokio::net::UnixListener::bind(&path) }).unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    rt.spawn(s.clone().serve(listener, stop));
    std::mem::forget(stop_tx);
    (dir, path, rt, s)
}

/// Whether the daemon closed `c` within a few seconds: end of stream, or a
/// reset when it closed with bytes of ours unread.
fn closed(c: &std::os::unix::net::UnixStream) -> bool {
    use std::io::Read as _;
    c.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    match (&*c).read(&mut [0u8; 1]) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

fn hello(c: &std::os::unix::net::UnixStream) -> Response {
    proto::write_frame(&mut &*c, &Request::Hello { version: proto::VERSION }.encode()).unwrap();
    let f = proto::read_message(&mut &*c, proto::Limits::RESPONSES).unwrap().unwrap();
    Response::decode(&f).unwrap()
}

fn closed_for(s: &Server, reason: &str) -> u64 {
    s.closed.with_label_values(&[reason]).get()
}

#[test]
fn one_uid_holds_at_most_its_share_and_a_freed_place_is_reused() {
    use std::os::unix::net::UnixStream;
    let (_dir, path, _rt, s) = serving(std::time::Duration::from_secs(30));
    // max_connections_per_uid = 2 in these tests: the third is refused.
    let a = UnixStream::connect(&path).unwrap();
    let b = UnixStream::connect(&path).unwrap();
    assert!(matches!(hello(&a), Response::Hello { .. }));
    assert!(matches!(hello(&b), Response::Hello { .. }));
    let c = UnixStream::connect(&path).unwrap();
    assert!(closed(&c), "a third connection of the same uid is refused");
    assert_eq!(s.refusals_counted("uid_share"), 1);
    drop(a);
    // The freed place goes to the next connection (the thread lets it go
    // once it sees the end of stream).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let d = UnixStream::connect(&path).unwrap();
        d.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let sent =
            proto::write_frame(&mut &d, &Request::Hello { version: proto::VERSION }.encode());
        if sent.is_ok()
            && proto::read_message(&mut &d, proto::Limits::RESPONSES).is_ok_and(|f| f.is_some())
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the freed place was never reused");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn silent_slow_and_oversized_connections_are_closed() {
    use std::{io::Write as _, os::unix::net::UnixStream};
    let (_dir, path, _rt, s) = serving(std::time::Duration::from_millis(300));
    // Says nothing at all.
    let silent = UnixStream::connect(&path).unwrap();
    assert!(closed(&silent));
    assert_eq!(closed_for(&s, "idle"), 1);
    // Starts a Sign request of 1000 bytes and never finishes it.
    let slow = UnixStream::connect(&path).unwrap();
    (&slow).write_all(&[0, 0, 3, 232, 7, 0, 0]).unwrap();
    assert!(closed(&slow));
    assert_eq!(closed_for(&s, "slow"), 1);
    // Claims 16 MiB + 1000 for a Login: refused on the tag, nothing read or allocated.
    let big = UnixStream::connect(&path).unwrap();
    let mut wire = ((16u32 << 20) + 1000).to_be_bytes().to_vec();
    wire.extend_from_slice(&[3, 1, 2, 3]);
    (&big).write_all(&wire).unwrap();
    assert!(closed(&big));
    assert_eq!(closed_for(&s, "bad_frame"), 1);
    // An answered connection that goes quiet is closed after the idle time too.
    let quiet = UnixStream::connect(&path).unwrap();
    assert!(matches!(hello(&quiet), Response::Hello { .. }));
    assert!(closed(&quiet));
    assert_eq!(closed_for(&s, "idle"), 2);
}
