//! Makes the fixture state directory (`fuzz/fixtures/`) and the seed corpora
//! (`fuzz/seeds/<target>/`) from real inputs: requests and responses the
//! protocol encodes, the repository's configurations, a real vault's key file
//! and KEK file, a real KMS Decrypt request, real PKCS#11 templates and
//! real sample files. Run it again only to replace them all:
//!
//! ```text
//! cd fuzz && RUSTFLAGS="--cfg fuzzing" cargo +nightly run --example make_seeds
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
};

use cryptoki_sys::*;
use qkeyd_p11_proto::{
    Algorithm, ErrorCode, KeyEntry, KeySource, Prf, Request, Response, Secret, write_frame,
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("seeds").join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn requests() -> Vec<(&'static str, Request)> {
    vec![
        ("hello", Request::Hello { version: qkeyd_p11_proto::VERSION }),
        ("seed", Request::Seed { len: 48 }),
        ("login", Request::Login { so: false, pin: Secret::new(b"123456".to_vec()) }),
        ("logout", Request::Logout),
        ("list", Request::List),
        (
            "generate",
            Request::Generate { alg: Algorithm::MlDsa65, token: true, label: "signing".into() },
        ),
        (
            "sign",
            Request::Sign {
                key: "0123456789abcdef0123456789abcdef/1".into(),
                msg: b"message".to_vec(),
                ctx: b"ctx".to_vec(),
                deterministic: false,
            },
        ),
        (
            "verify",
            Request::Verify {
                key: "s/1".into(),
                msg: b"m".to_vec(),
                ctx: vec![],
                sig: vec![7; 2420],
            },
        ),
        ("encapsulate", Request::Encapsulate { key: "s/2".into() }),
        ("decapsulate", Request::Decapsulate { key: "s/2".into(), ct: vec![5; 1088] }),
        ("destroy", Request::Destroy { key: "s/2".into() }),
        ("set_pin", Request::SetPin { old: Secret::new(b"1234".to_vec()), new: Secret::new(b"5678".to_vec()) }),
        (
            "put_object",
            Request::PutObject { id: String::new(), private: false, attrs: vec![(0, vec![0; 8]), (3, b"label".to_vec())] },
        ),
        (
            "derive",
            Request::Derive {
                base: KeySource::Held("k/1".into()),
                prf: Prf::Sha256,
                extract: true,
                expand: true,
                salt: b"salt".to_vec(),
                info: b"info".to_vec(),
                len: 32,
                keep: true,
            },
        ),
        (
            "aes_gcm",
            Request::AesGcm {
                key: KeySource::Value(Secret::new(vec![1; 32])),
                encrypt: true,
                iv: vec![0; 12],
                aad: b"aad".to_vec(),
                data: b"plaintext".to_vec(),
            },
        ),
    ]
}

fn responses() -> Vec<(&'static str, Response)> {
    let k = KeyEntry {
        key: "0123456789abcdef0123456789abcdef/1".into(),
        alg: Algorithm::MlKem768,
        label: "kem".into(),
        token: true,
        public_key: vec![3; 1184],
    };
    vec![
        (
            "hello",
            Response::Hello { version: 1, daemon: "0.1.0".into(), serial: "00ff00ff".into() },
        ),
        ("seed", Response::Seed(Secret::new(vec![1; 48]))),
        ("done", Response::Done),
        ("keys", Response::Keys(vec![k.clone(), KeyEntry { token: false, ..k.clone() }])),
        ("key", Response::Key(k)),
        ("signature", Response::Signature(vec![4; 2420])),
        ("verified", Response::Verified(true)),
        (
            "encapsulated",
            Response::Encapsulated { ct: vec![1; 1088], secret: Secret::new(vec![2; 32]) },
        ),
        ("shared-secret", Response::SharedSecret(Secret::new(vec![7; 32]))),
        ("error", Response::Error { code: ErrorCode::PinIncorrect, message: "wrong PIN".into() }),
    ]
}

fn protocol() {
    let mut stream = vec![0u8]; // requests, one byte per read
    let mut fast = vec![0xfe]; // requests, 128 bytes per read
    for (name, r) in requests() {
        write("p11_request", name, &r.encode());
        write_frame(&mut stream, &r.encode()).unwrap();
        write_frame(&mut fast, &r.encode()).unwrap();
    }
    let mut back = vec![1u8]; // responses
    for (name, r) in responses() {
        write("p11_response", name, &r.encode());
        write_frame(&mut back, &r.encode()).unwrap();
    }
    write("p11_frames", "requests-trickle", &stream);
    write("p11_frames", "requests-fast", &fast);
    write("p11_frames", "responses", &back);
}

fn configs() {
    let repo = root().join("..");
    let example = fs::read_to_string(repo.join("config.example.toml")).unwrap();
    write("config_toml", "example", example.as_bytes());
    // Every commented option turned on, as the config tests do.
    let uncommented: String = example
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write("config_toml", "example-uncommented", uncommented.as_bytes());
    let default = fs::read(repo.join("daemon/src/config/default.toml")).unwrap();
    write("config_toml", "embedded-default", &default);
    write(
        "config_toml",
        "sim-and-sockets",
        b"[danger]\nallow_sim_sources = true\n\n[[source]]\nname = \"sim0\"\nkind = \"sim\"\n\
          bits_per_sample = 8\nclaimed_h = 7.0\nseed = 7\n\n[[source.schedule]]\n\
          after_samples = 5000\nfault = \"bias\"\nkeep_bits = 5\n\n\
          [kms]\nsocket = \"@qkeyd-kms\"\nallowed_uids = [0]\n\n[module]\n\
          socket = \"unix:///run/qkeyd/module.sock\"\nsocket_mode = \"0660\"\n",
    );
}

fn http(method: &str, target: &str, token: bool, body: Option<&str>) -> Vec<u8> {
    let mut r = format!("{method} {target}\n");
    if token {
        r.push_str(&format!("authorization: Bearer {}\n", qkeyd_fuzz::fuzz::TOKEN));
    }
    if body.is_some() {
        r.push_str("content-type: application/json\n");
    }
    r.push('\n');
    r.push_str(body.unwrap_or_default());
    r.into_bytes()
}

fn rest(f: &qkeyd_fuzz::fuzz::Fixture) {
    let (dsa, kem) = (&f.dsa_id, &f.kem_id);
    let sign = r#"{"message":"aGVsbG8=","context":""}"#.to_owned();
    let verify = format!(r#"{{"message":"aGVsbG8=","signature":"{}"}}"#, f.signature);
    let decap = format!(r#"{{"ciphertext":"{}"}}"#, f.kem_ciphertext);
    let derive = format!(
        r#"{{"ciphertext":"{}","salt":"c2FsdA==","info":"aW5mbw==","length":32}}"#,
        f.kem_ciphertext
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random", http("GET", "/v1/random?bytes=16&format=hex", false, None)),
        ("random-base64", http("GET", "/v1/random?bytes=32&format=base64", false, None)),
        ("random-raw", http("GET", "/v1/random?bytes=8&format=raw", false, None)),
        ("health", http("GET", "/v1/health", false, None)),
        ("healthz", http("GET", "/healthz", false, None)),
        ("readyz", http("GET", "/readyz", false, None)),
        ("metrics", http("GET", "/metrics", false, None)),
        ("keys-list", http("GET", "/v1/keys", true, None)),
        (
            "keys-create",
            http("POST", "/v1/keys", true, Some(r#"{"alg":"ml-kem-512","label":"x"}"#)),
        ),
        ("keys-show", http("GET", &format!("/v1/keys/{dsa}"), true, None)),
        ("keys-rotate", http("POST", &format!("/v1/keys/{dsa}/rotate"), true, None)),
        ("keys-sign", http("POST", &format!("/v1/keys/{dsa}/sign"), true, Some(&sign))),
        ("keys-verify", http("POST", &format!("/v1/keys/{dsa}/verify"), true, Some(&verify))),
        (
            "keys-encapsulate",
            http("POST", &format!("/v1/keys/{kem}/encapsulate"), true, Some("{}")),
        ),
        (
            "keys-decapsulate",
            http("POST", &format!("/v1/keys/{kem}/decapsulate"), true, Some(&decap)),
        ),
        ("keys-derive", http("POST", &format!("/v1/keys/{kem}/derive"), true, Some(&derive))),
        ("keys-destroy", http("DELETE", &format!("/v1/keys/{kem}"), true, None)),
        ("keys-no-token", http("GET", "/v1/keys", false, None)),
        ("kms", http("GET", "/v1/kms", true, None)),
        ("kms-rotate", http("POST", "/v1/kms/rotate", true, None)),
        (
            "kms-retire",
            http("DELETE", &format!("/v1/kms/keks/{}?force=true", f.kek_id), true, None),
        ),
    ];
    for (name, bytes) in cases {
        write("rest_api", name, &bytes);
    }
}

fn files(state: &Path, f: &qkeyd_fuzz::fuzz::Fixture) {
    let key = fs::read(state.join("keys").join(&f.dsa_id).join("v1.key")).unwrap();
    write("vault_key_file", "ml-dsa-44-v1", &key);
    let other = fs::read(state.join("keys").join(&f.kem_id).join("v1.key")).unwrap();
    write("vault_key_file", "another-keys-file", &other);
    let keks = fs::read(state.join("kms/keks.json")).unwrap();
    write("kms_kek_file", "one-sealed-kek", &keks);
    // A file with a token KEK and a retired one, as an HSM-backed plugin writes it.
    let body = String::from_utf8(keks.split(|&b| b == b'\n').next().unwrap().to_vec()).unwrap();
    let hsm = body
        .replacen(
            r#""keks":["#,
            &format!(
                r#""keks":[{{"key_id":"qkeyd-kek-00","created_unix":1,"replaced_unix":2,"kek":{{"kind":"token","backend":"pkcs11","label":"qkeyd-kms/qkeyd-kek-00"}}}},"#
            ),
            1,
        )
        .replacen(r#""retired":[]"#, r#""retired":[{"key_id":"qkeyd-kek-ff","retired_unix":3}]"#, 1);
    write("kms_kek_file", "token-and-retired", format!("{hsm}\n").as_bytes());
    write("kms_decrypt", "real-ciphertext", &f.decrypt_request);
}

fn templates() {
    use qkeyd_pkcs11::fuzzing::encode;
    let t = |v: CK_BBOOL| vec![v];
    let ul = |v: CK_ULONG| v.to_ne_bytes().to_vec();
    let dsa_pub = vec![
        (CKA_TOKEN, t(CK_TRUE)),
        (CKA_VERIFY, t(CK_TRUE)),
        (CKA_LABEL, b"signing".to_vec()),
        (CKA_PARAMETER_SET, ul(CKP_ML_DSA_65)),
    ];
    let dsa_priv = vec![
        (CKA_TOKEN, t(CK_TRUE)),
        (CKA_PRIVATE, t(CK_TRUE)),
        (CKA_SIGN, t(CK_TRUE)),
        (CKA_SENSITIVE, t(CK_TRUE)),
        (CKA_EXTRACTABLE, t(CK_FALSE)),
        (CKA_LABEL, b"signing".to_vec()),
    ];
    write("pkcs11_templates", "ml-dsa-pair", &encode(CKM_ML_DSA_KEY_PAIR_GEN, &dsa_pub, &dsa_priv));
    let kem_pub = vec![
        (CKA_CLASS, ul(CKO_PUBLIC_KEY)),
        (CKA_KEY_TYPE, ul(CKK_ML_KEM)),
        (CKA_ENCAPSULATE, t(CK_TRUE)),
        (CKA_PARAMETER_SET, ul(CKP_ML_KEM_768)),
    ];
    let kem_priv = vec![
        (CKA_CLASS, ul(CKO_PRIVATE_KEY)),
        (CKA_KEY_TYPE, ul(CKK_ML_KEM)),
        (CKA_DECAPSULATE, t(CK_TRUE)),
        (CKA_ID, vec![]),
    ];
    write("pkcs11_templates", "ml-kem-pair", &encode(CKM_ML_KEM_KEY_PAIR_GEN, &kem_pub, &kem_priv));
    let secret = vec![
        (CKA_CLASS, ul(CKO_SECRET_KEY)),
        (CKA_KEY_TYPE, ul(CKK_GENERIC_SECRET)),
        (CKA_VALUE_LEN, ul(32)),
        (CKA_TOKEN, t(CK_FALSE)),
        (CKA_EXTRACTABLE, t(CK_TRUE)),
        (CKA_SENSITIVE, t(CK_FALSE)),
    ];
    let find = vec![(CKA_CLASS, ul(CKO_PUBLIC_KEY)), (CKA_LABEL, b"label".to_vec())];
    write("pkcs11_templates", "encapsulate-secret", &encode(CKM_ML_KEM, &find, &secret));
    // CKM_ML_DSA with a CK_SIGN_ADDITIONAL_CONTEXT (hedge 0, a 3-byte context).
    let mut signing = (CKM_ML_DSA as u32).to_le_bytes().to_vec();
    signing.extend_from_slice(&[1, 0, 0, 3, b'c', b't', b'x', 0, 0]);
    write("pkcs11_templates", "ml-dsa-sign-context", &signing);
}

fn samples() {
    let data = root().join("../health-tests/tests/data/sp800-90b/data");
    for (name, mode) in [
        ("rand8_short.bin", 0u8),
        ("rand4_short.bin", 4),
        ("rand1_short.bin", 0x11),
        ("truerand_4bit.bin", 0x10),
        ("biased-random-bytes.bin", 8),
        ("ringOsc-nist.bin", 0),
    ] {
        let raw = fs::read(data.join(name)).unwrap();
        let mut seed = vec![mode];
        seed.extend_from_slice(&raw[..raw.len().min(2048)]);
        write("sp800_90b", name.trim_end_matches(".bin"), &seed);
    }
}

fn main() {
    let fixtures = root().join("fixtures");
    let state = fixtures.join("state");
    let _ = fs::remove_dir_all(&fixtures);
    let _ = fs::remove_dir_all(root().join("seeds"));
    fs::create_dir_all(&state).unwrap();
    let f = qkeyd_fuzz::fuzz::make_fixture(&state);
    fs::write(fixtures.join("decrypt-request.bin"), &f.decrypt_request).unwrap();
    protocol();
    configs();
    rest(&f);
    files(&state, &f);
    templates();
    samples();
    println!("fixture and seeds written under {}", root().display());
}
