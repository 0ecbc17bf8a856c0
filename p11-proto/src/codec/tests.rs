//! Every message round-trips, every truncation or extension is refused,
//! and every message fits its tag's limit.

use std::io;

use super::*;
use crate::{Limits, VERSION, read_message};

fn requests() -> Vec<Request> {
    vec![
        Request::Hello { version: VERSION },
        Request::Seed { len: 48 },
        Request::Login { so: false, pin: Secret::new(b"1234".to_vec()) },
        Request::Login { so: true, pin: Secret::new(b"so-pin".to_vec()) },
        Request::InitPin { pin: Secret::new(b"5678".to_vec()) },
        Request::SetPin { old: Secret::new(b"5678".to_vec()), new: Secret::new(b"9012".to_vec()) },
        Request::PinState,
        Request::ListObjects,
        Request::PutObject {
            id: String::new(),
            private: true,
            attrs: vec![(0, vec![0; 8]), (0x8000_0000_0000_0001, vec![])],
        },
        Request::DestroyObject { id: "o/00ff".into() },
        Request::GenerateSecret { len: 32 },
        Request::DecapsulateKept { key: "ab/1".into(), ct: vec![5; 1088] },
        Request::EncapsulateKept { key: "s/3".into() },
        Request::EncapsulateTo { alg: Algorithm::MlKem1024, public_key: vec![1; 1568], keep: true },
        Request::VerifyWith {
            alg: Algorithm::MlDsa44,
            public_key: vec![2; 1312],
            msg: b"m".to_vec(),
            ctx: vec![],
            sig: vec![3; 2420],
        },
        Request::Derive {
            base: KeySource::Held("k/4".into()),
            prf: Prf::Sha384,
            extract: true,
            expand: false,
            salt: vec![1; 5],
            info: vec![],
            len: 48,
            keep: true,
        },
        Request::AesGcm {
            key: KeySource::Value(Secret::new(vec![9; 16])),
            encrypt: false,
            iv: vec![0; 12],
            aad: b"aad".to_vec(),
            data: vec![4; 40],
        },
        Request::Logout,
        Request::List,
        Request::Generate { alg: Algorithm::MlDsa65, token: true, label: "sig".into() },
        Request::Sign {
            key: "ab/1".into(),
            msg: vec![1; 40],
            ctx: vec![2; 3],
            deterministic: true,
        },
        Request::Verify { key: "s/1".into(), msg: vec![], ctx: vec![], sig: vec![9; 3309] },
        Request::Encapsulate { key: "s/2".into() },
        Request::Decapsulate { key: "s/2".into(), ct: vec![5; 1088] },
        Request::Destroy { key: "ab/1".into() },
    ]
}

fn responses() -> Vec<Response> {
    let k = KeyEntry {
        key: "ab/1".into(),
        alg: Algorithm::MlKem768,
        label: "kem".into(),
        token: true,
        public_key: vec![3; 1184],
    };
    vec![
        Response::Hello { version: 1, daemon: "0.1.0".into(), serial: "00ff".into() },
        Response::Seed(Secret::new(vec![1; 48])),
        Response::Done,
        Response::Keys(vec![k.clone(), KeyEntry { token: false, ..k.clone() }]),
        Response::Keys(vec![]),
        Response::Key(k),
        Response::Signature(vec![4; 2420]),
        Response::Verified(false),
        Response::Encapsulated { ct: vec![1; 768], secret: Secret::new(vec![2; 32]) },
        Response::SharedSecret(Secret::new(vec![7; 32])),
        Response::Error { code: ErrorCode::PinIncorrect, message: "wrong PIN".into() },
        Response::Error { code: ErrorCode::TooLarge, message: "too many objects".into() },
        Response::PinState {
            user: PinCount { failures: 4, tries: 5, locked: false },
            so: PinCount { failures: 0, tries: 5, locked: true },
        },
        Response::Objects(vec![
            StoredObject { id: "o/1".into(), private: false, attrs: vec![(3, b"cert".to_vec())] },
            StoredObject { id: "o/2".into(), private: true, attrs: vec![] },
        ]),
        Response::Objects(vec![]),
        Response::ObjectId("o/3".into()),
        Response::Secret { key: "k/7".into(), len: 32 },
        Response::EncapsulatedKept { ct: vec![6; 1088], key: "k/8".into() },
        Response::Output(vec![7; 48]),
        Response::Error { code: ErrorCode::AuthFailed, message: "tag".into() },
    ]
}

#[test]
fn every_message_round_trips() {
    for r in requests() {
        assert_eq!(Request::decode(&r.encode()).as_ref(), Ok(&r));
    }
    for r in responses() {
        assert_eq!(Response::decode(&r.encode()).as_ref(), Ok(&r));
    }
}

#[test]
fn every_truncation_and_extension_is_refused() {
    for r in requests() {
        let p = r.encode();
        for n in 0..p.len() {
            assert!(Request::decode(&p[..n]).is_err(), "{r:?} cut to {n}");
        }
        let mut longer = p.to_vec();
        longer.push(0);
        assert_eq!(Request::decode(&longer), Err(DecodeError("trailing bytes")));
    }
    for r in responses() {
        let p = r.encode();
        for n in 0..p.len() {
            assert!(Response::decode(&p[..n]).is_err(), "{r:?} cut to {n}");
        }
    }
}

#[test]
fn every_message_fits_its_tags_limit() {
    for r in requests() {
        let p = r.encode();
        assert!(p.len() <= Request::max_len(p[0]).unwrap(), "{r:?}");
    }
    for r in responses() {
        let p = r.encode();
        assert!(p.len() <= Response::max_len(p[0]).unwrap(), "{r:?}");
    }
    assert_eq!(Request::max_len(0), None);
    assert_eq!(Request::max_len(25), None);
    assert_eq!(Response::max_len(17), None);
    // Every request needs kilobytes, except the message a Sign or Verify
    // carries and a stored object.
    for tag in [1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 20, 21, 23] {
        assert!(Request::max_len(tag).unwrap() < 8 << 10, "tag {tag}");
    }
}

#[test]
fn the_size_constants_cover_every_parameter_set() {
    for a in Algorithm::ALL {
        assert!(a.output_len() <= MAX_OUTPUT && a.public_key_len() <= MAX_PUBLIC_KEY, "{a}");
    }
    assert!(Algorithm::ALL.iter().any(|a| a.output_len() == MAX_OUTPUT));
    assert!(Algorithm::ALL.iter().any(|a| a.public_key_len() == MAX_PUBLIC_KEY));
}

#[test]
fn hostile_lengths_do_not_allocate() {
    // A Keys response claiming 2^32-1 entries in a 6-byte frame.
    assert!(Response::decode(&[4, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
    // A frame header over the limit is refused before reading the body.
    let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
    assert_eq!(
        read_message(&mut r, Limits::RESPONSES).map_err(|e| e.kind()).err(),
        Some(io::ErrorKind::InvalidData)
    );
    assert_eq!(Request::decode(&[42]), Err(DecodeError("unknown request")));
    // A PutObject claiming 2^32-1 attributes.
    assert_eq!(
        Request::decode(&[16, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        Err(DecodeError("too many attributes"))
    );
    // An Objects response claiming 2^32-1 objects in a 6-byte frame.
    assert!(Response::decode(&[12, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
    assert_eq!(Request::decode(&[6, 9, 0, 0, 0, 0, 0]), Err(DecodeError("unknown parameter set")));
    assert_eq!(
        Request::decode(&[6, 1, 2, 0, 0, 0, 0]),
        Err(DecodeError("a boolean is not 0 or 1"))
    );
}
