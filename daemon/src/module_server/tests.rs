//! The module server's handlers in process, without a socket: login, the
//! operations a logged-in connection may do, and the answers to bad requests.

use std::sync::Arc;

use qkeyd_p11_proto::{self as proto, ErrorCode, KeyEntry, Request, Response, Secret};

use super::{Conn, Server};
use crate::{
    config::ModuleSettings,
    testing,
    vault::{Algorithm, Vault},
};

const PIN: &str = "1234-unit";

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
        key_cache: std::time::Duration::from_secs(2),
        max_connections: 4,
    };
    let pin = zeroize::Zeroizing::new(PIN.to_owned());
    (dir, Server::new(vault, pool, pin, "00ff".into(), &settings, vec![0]))
}

fn code(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

fn login(s: &Server, conn: &mut Conn, pin: &str) -> Response {
    s.handle(conn, Request::Login { pin: Secret::new(pin.as_bytes().to_vec()) })
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
