//! The cryptoki-crate checks of the PKCS#11 e2e tests (`tests/e2e/pkcs11.rs`),
//! one per run: `p11check CHECK`, with `QKEYD_MODULE_SOCKET`, `QKEYD_P11_CHILD_MODULE`
//! and `QKEYD_P11_CHILD_PIN` set by the test. cryptoki loads the module into
//! this process, and the module reads `QKEYD_MODULE_SOCKET` from the process
//! environment, so each check gets a process of its own. A failed assertion
//! panics (exit 101); a passed check prints `ok: CHECK`.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, missing_docs)]

use std::{
    collections::HashSet,
    process::Command,
    time::{Duration, Instant},
};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    error::{Error, RvError},
    mechanism::{
        Mechanism, MechanismType,
        aead::GcmParams,
        dsa::{HedgeType, SignAdditionalContext},
        hkdf::{HkdfParams, HkdfSalt},
    },
    object::{
        Attribute, AttributeType, KeyType, MlDsaParameterSetType, MlKemParameterSetType,
        ObjectClass, ObjectHandle,
    },
    session::{Session, UserType},
    types::AuthPin,
};

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

fn dsa_pair(s: &Session, set: MlDsaParameterSetType, token: bool) -> (ObjectHandle, ObjectHandle) {
    s.generate_key_pair(
        &Mechanism::MlDsaKeyPairGen,
        &[Attribute::Token(token), Attribute::ParameterSet(set.into()), Attribute::Verify(true)],
        &[
            Attribute::Token(token),
            Attribute::Sign(true),
            Attribute::Label(b"cryptoki-dsa".to_vec()),
        ],
    )
    .unwrap()
}

fn kem_pair(s: &Session, set: MlKemParameterSetType, token: bool) -> (ObjectHandle, ObjectHandle) {
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

fn check_dsa(s: &Session, set: MlDsaParameterSetType, pk_len: usize, sig_len: usize, token: bool) {
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

fn check_kem(s: &Session, set: MlKemParameterSetType, pk_len: usize, ct_len: usize, token: bool) {
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
    let e =
        s.decapsulate_key(&Mechanism::MlKem, private, &secret_template(), &ct[1..]).unwrap_err();
    assert_eq!(rv(e), RvError::WrappedKeyLenRange);
    for o in [ss1, ss2, ss3, private, public] {
        s.destroy_object(o).unwrap();
    }
}

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
                    &[AttributeType::Sensitive, AttributeType::Extractable, AttributeType::Token],
                )
                .unwrap();
            assert_eq!(
                attrs,
                [Attribute::Sensitive(true), Attribute::Extractable(false), Attribute::Token(true)]
            );
            // Either half destroys the pair; the other half then goes quietly.
            s.destroy_object(private[0]).unwrap();
            s.destroy_object(public[0]).unwrap();
            assert!(find().is_empty());
        }
    }
}

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

/// A decapsulated secret kept by the daemon (sensitive), HKDF to an AES-256
/// key (sensitive too), AES-GCM with it; the keys' values never read; a key
/// without CKA_DECRYPT does not decrypt.
fn secret_keys_stay_in_the_daemon() {
    let (_p, s) = open();
    let (public, private) = kem_pair(&s, MlKemParameterSetType::ML_KEM_768, false);
    let held = |derive: bool| {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Sensitive(true),
            Attribute::Derive(derive),
            Attribute::Token(false),
        ]
    };
    let (ct, _mine) = s.encapsulate_key(&Mechanism::MlKem, public, &held(false)).unwrap();
    let secret = s.decapsulate_key(&Mechanism::MlKem, private, &held(true), &ct).unwrap();
    let e = s.get_attributes(secret, &[AttributeType::Value]).map(|a| a.len());
    assert!(matches!(e, Ok(0)), "a held secret's CKA_VALUE is not there: {e:?}");
    let salt = HkdfSalt::Data(b"salt");
    let params = HkdfParams::new(MechanismType::SHA256, Some(salt), Some(b"aes key"));
    let aes = |encrypt: bool, decrypt: bool| {
        vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Sensitive(true),
            Attribute::Encrypt(encrypt),
            Attribute::Decrypt(decrypt),
            Attribute::Token(false),
        ]
    };
    let key = s.derive_key(&Mechanism::HkdfDerive(params), secret, &aes(true, true)).unwrap();
    let encrypt_only =
        s.derive_key(&Mechanism::HkdfDerive(params), secret, &aes(true, false)).unwrap();
    let mut iv = [9u8; 12];
    let msg = b"cryptoki through qkeyd's AES-GCM".repeat(10);
    let ct = s
        .encrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, b"hdr", 128.into()).unwrap()),
            key,
            &msg,
        )
        .unwrap();
    assert_eq!(ct.len(), msg.len() + 16);
    let pt = s
        .decrypt(&Mechanism::AesGcm(GcmParams::new(&mut iv, b"hdr", 128.into()).unwrap()), key, &ct)
        .unwrap();
    assert_eq!(pt, msg);
    // The same derivation gives the same key: the other one encrypts alike.
    let ct2 = s
        .encrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, b"hdr", 128.into()).unwrap()),
            encrypt_only,
            &msg,
        )
        .unwrap();
    assert_eq!(ct2, ct, "HKDF is deterministic");
    let e = s
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, b"hdr", 128.into()).unwrap()),
            encrypt_only,
            &ct,
        )
        .unwrap_err();
    assert_eq!(rv(e), RvError::KeyFunctionNotPermitted);
    let mut wrong = ct.clone();
    wrong[3] ^= 1;
    let e = s
        .decrypt(
            &Mechanism::AesGcm(GcmParams::new(&mut iv, b"hdr", 128.into()).unwrap()),
            key,
            &wrong,
        )
        .unwrap_err();
    assert_eq!(rv(e), RvError::EncryptedDataInvalid);
    let e = s.digest(&Mechanism::Sha256, &msg).unwrap();
    assert_eq!(e.len(), 32);
    s.digest_init(&Mechanism::Sha256).unwrap();
    assert_eq!(rv(s.digest_key(key).unwrap_err()), RvError::KeyIndigestible);
}

fn main() {
    let check = std::env::args().nth(1).unwrap_or_default();
    match check.as_str() {
        "all_six_parameter_sets" => all_six_parameter_sets(),
        "token_keys_survive_a_new_process" => token_keys_survive_a_new_process(),
        "threads_hammer_random" => threads_hammer_random(),
        "pool_fails_closed" => pool_fails_closed(),
        "daemon_dies_mid_session" => daemon_dies_mid_session(),
        "secret_keys_stay_in_the_daemon" => secret_keys_stay_in_the_daemon(),
        other => {
            eprintln!("p11check: unknown check {other:?}");
            std::process::exit(2);
        }
    }
    println!("ok: {check}");
}
