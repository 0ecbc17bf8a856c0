//! The hooks the fuzz targets in `fuzz/` call, one per parser that takes
//! outside input. Each runs the daemon's own code on the fuzzer's bytes and
//! panics only where the daemon would misbehave: a crash of its own, or an
//! answer that breaks a promise (an internal error for a caller's mistake, a
//! REST error that is not JSON, a tampered file that yields a key).
//!
//! The world they run in is the unit tests' one (`testing.rs`): the pool on
//! the OS source and the soft sealer, over a copy of the fixture state
//! directory `fuzz/fixtures/state` (made by [`make_fixture`]), so the seeds
//! can name its real keys and carry real ciphertexts.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
    time::Duration,
};

use axum::{
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use prost::Message as _;
use qkeyd_drivers::seal::worker::SealerWorker;
use qkeyd_pqc::Algorithm;
use serde_json::Value;
use sha3::{Digest as _, Sha3_256};
use tokio::{runtime::Runtime, sync::Semaphore};
use tower::ServiceExt as _;
use zeroize::Zeroizing;

use crate::{
    api::{
        AppState,
        keys::{KeysState, TokenDigest},
        router,
    },
    config::{Config, KeysConfig, SealerConfig},
    incident::Chain,
    kms::{
        Kms,
        grpc::{
            Service,
            proto::{DecryptRequest, key_management_service_server::KeyManagementService as _},
        },
    },
    metrics::Metrics,
    pool::Pool,
    serve, testing,
    vault::Vault,
};

/// The bearer token of the fuzzing world's REST API.
pub const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// Largest `bytes=` of /v1/random here: enough to reach every branch, small
/// enough that one request stays fast.
const MAX_RANDOM: usize = 1 << 16;

/// The DEK the fixture's KEK encrypted (its Decrypt must give exactly this).
pub const FIXTURE_DEK: [u8; 32] = *b"qkeyd fuzz fixture: a 32-byte DE";

/// What [`make_fixture`] made, for the seed files.
#[derive(Debug)]
pub struct Fixture {
    /// The ML-DSA-44 key's id.
    pub dsa_id: String,
    /// The ML-KEM-768 key's id.
    pub kem_id: String,
    /// The write KEK's key id.
    pub kek_id: String,
    /// A real Decrypt request for [`FIXTURE_DEK`], protobuf-encoded.
    pub decrypt_request: Vec<u8>,
    /// A real ML-KEM-768 ciphertext to the KEM key, base64.
    pub kem_ciphertext: String,
    /// A real signature by the DSA key over `hello` (base64 `aGVsbG8=`), base64.
    pub signature: String,
}

/// The fixture state directory in the repository.
fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fixtures/state")
}

/// A fresh temporary directory, in memory where the machine has one (the
/// vault fsyncs every write).
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::Builder::new().prefix("qkeyd-fuzz-").tempdir_in(shm)
    {
        return d;
    }
    tempfile::Builder::new().prefix("qkeyd-fuzz-").tempdir().expect("a temporary directory")
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create a state folder");
    for entry in fs::read_dir(from).expect("read the fixture") {
        let entry = entry.expect("read the fixture");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).expect("copy a fixture file");
            // git keeps no modes; the soft sealer refuses a key file others may read.
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).expect("chmod");
        }
    }
}

/// The soft sealer's settings in `dir`.
fn soft_keys(dir: &Path) -> KeysConfig {
    KeysConfig {
        state_dir: Some(dir.to_owned()),
        token_file: None,
        sealer: SealerConfig::Soft { key_file: None },
        seal_timeout: Duration::from_secs(5),
    }
}

/// What every execution shares: built once per process.
struct Shared {
    rt: Runtime,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// The fixture copied once: its soft sealer key, and the state read-only
    /// targets use.
    base: tempfile::TempDir,
    sealer: SealerWorker,
    /// A KMS over `base`, for Decrypt.
    kms: Arc<Kms>,
    /// The fixture's files, as committed.
    fixture: FixtureFiles,
}

/// The fixture's key and KEK files and what they hold.
struct FixtureFiles {
    /// `keys/<id>/v1.key` of the DSA key, relative to a state directory.
    dsa_file: PathBuf,
    dsa_id: String,
    dsa_public: Vec<u8>,
    kek_id: String,
    kek_ciphertext: Vec<u8>,
}

static SHARED: LazyLock<Shared> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pool = testing::pool();
    let base = tempdir();
    copy_tree(&fixture_dir(), base.path());
    let (_, sealer) = serve::open_sealer(&soft_keys(base.path())).expect("the soft sealer");
    let settings = testing::kms_settings(Duration::from_secs(1));
    let kms = Kms::open(base.path(), sealer.clone(), pool.clone(), &settings, 8)
        .expect("the fixture's KMS state opens");
    let vault = Vault::open(base.path(), sealer.clone(), pool.clone()).expect("the fixture vault");
    let keys = vault.current().expect("the fixture's keys");
    let dsa = keys.iter().find(|k| !k.alg.is_kem()).expect("an ML-DSA key in the fixture");
    let request = fs::read(fixture_dir().join("../decrypt-request.bin")).expect("the request");
    let request = DecryptRequest::decode(&request[..]).expect("the fixture's Decrypt request");
    let fixture = FixtureFiles {
        dsa_file: Path::new("keys").join(&dsa.id).join("v1.key"),
        dsa_id: dsa.id.clone(),
        dsa_public: dsa.public_key.clone(),
        kek_id: request.key_id,
        kek_ciphertext: request.ciphertext,
    };
    Shared {
        rt,
        pool,
        metrics: Arc::new(Metrics::new().expect("metrics")),
        base,
        sealer,
        kms: Arc::new(kms),
        fixture,
    }
});

/// Make the fixture state directory in `dir` (empty or absent): a soft
/// sealer key, an ML-DSA-44 and an ML-KEM-768 key, and a KMS KEK that has
/// encrypted [`FIXTURE_DEK`]. `fuzz/examples/make_seeds.rs` calls it.
pub fn make_fixture(dir: &Path) -> Fixture {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let pool = testing::pool();
    let (_, sealer) = serve::open_sealer(&soft_keys(dir)).expect("the soft sealer");
    let vault = Vault::open(dir, sealer.clone(), pool.clone()).expect("a vault");
    let dsa = vault.create(Algorithm::MlDsa44, "fuzz-sig").expect("an ML-DSA key");
    let kem = vault.create(Algorithm::MlKem768, "fuzz-kem").expect("an ML-KEM key");
    let (_, sig) = vault.sign(&dsa.id, None, b"hello", b"").expect("a signature");
    let enc = vault.encapsulate(&kem.id, None).expect("an encapsulation");
    let settings = testing::kms_settings(Duration::from_secs(1));
    let kms = Arc::new(Kms::open(dir, sealer, pool, &settings, 8).expect("a KMS"));
    let out =
        rt.block_on(kms.encrypt(Zeroizing::new(FIXTURE_DEK.to_vec()))).expect("a KMS Encrypt");
    let request = DecryptRequest {
        ciphertext: out.ciphertext,
        uid: "fuzz".into(),
        key_id: out.key_id.clone(),
        annotations: out.annotations.into_iter().collect(),
    };
    // The audit log and the lock are not part of the fixture.
    let _ = fs::remove_file(dir.join("audit.log"));
    let _ = fs::remove_file(dir.join("kms/lock"));
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    Fixture {
        dsa_id: dsa.id,
        kem_id: kem.id,
        kek_id: out.key_id,
        decrypt_request: request.encode_to_vec(),
        kem_ciphertext: b64(&enc.ciphertext),
        signature: b64(&sig),
    }
}

/// A file the way `durable.rs` writes it: body, newline, SHA3-256 in hex,
/// newline.
fn durable_file(body: &[u8]) -> Vec<u8> {
    let mut f = body.to_vec();
    f.push(b'\n');
    f.extend_from_slice(hex::encode(Sha3_256::digest(body)).as_bytes());
    f.push(b'\n');
    f
}

/// The contents a file target tries: the bytes as they are (the checksum
/// check), and their first line as the body of a sound file (the parser
/// behind the checksum, which random bytes would never reach).
fn file_variants(data: &[u8]) -> [Vec<u8>; 2] {
    let body = data.split(|&b| b == b'\n').next().unwrap_or_default();
    [data.to_vec(), durable_file(body)]
}

/// (c) One REST request through the real router, the bearer token being
/// [`TOKEN`]. The input is an HTTP/1-like request: `METHOD TARGET`, header
/// lines `name: value`, an empty line, the body. Every request runs on a
/// fresh copy of the fixture state.
///
/// Panics if the answer is a 500, or an error whose body is not the JSON
/// `{"error": {"status", "code", "message"}}` with the same status (but
/// for HEAD, whose answers have no body).
pub fn rest_api(data: &[u8]) {
    let Some(req) = http_request(data) else { return };
    // A HEAD answer has its headers and no body (RFC 9110 §9.3.2).
    let head = req.method() == axum::http::Method::HEAD;
    let s = &*SHARED;
    let dir = tempdir();
    copy_tree(&s.base.path().join("keys"), &dir.path().join("keys"));
    copy_tree(&s.base.path().join("kms"), &dir.path().join("kms"));
    let _ = fs::remove_file(dir.path().join("kms/lock"));
    let vault =
        Arc::new(Vault::open(dir.path(), s.sealer.clone(), s.pool.clone()).expect("vault opens"));
    let settings = testing::kms_settings(Duration::from_secs(1));
    let kms =
        Kms::open(dir.path(), s.sealer.clone(), s.pool.clone(), &settings, 8).expect("KMS opens");
    let state = AppState {
        access: crate::config::Access::default(),
        attest: None,
        cluster: None,
        pool: s.pool.clone(),
        metrics: s.metrics.clone(),
        max_request_bytes: MAX_RANDOM,
        generate_permits: Arc::new(Semaphore::new(4)),
        keys: Some(KeysState {
            objects: Arc::new(
                crate::objects::TokenObjects::open(dir.path(), vault.clone()).unwrap(),
            ),
            vault,
            token: TokenDigest::of(TOKEN),
        }),
        kms: Some(Arc::new(kms)),
        tls_on: false,
    };
    let (status, body) = s.rt.block_on(async {
        let resp = router(state).oneshot(req).await.expect("the router is infallible");
        let status = resp.status();
        let body = to_bytes(resp.into_body(), 16 << 20).await.expect("a body");
        (status, body)
    });
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{}", String::from_utf8_lossy(&body));
    if (status.is_client_error() || status.is_server_error()) && !head {
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("a {status} answer is not JSON ({e}): {:?}", String::from_utf8_lossy(&body))
        });
        let e = &v["error"];
        assert_eq!(e["status"].as_u64(), Some(u64::from(status.as_u16())), "{v}");
        assert!(e["code"].is_string() && e["message"].is_string(), "{v}");
    }
}

/// Parse the REST target's input; `None` for what hyper would refuse before
/// the router sees it (a bad method, target or header).
fn http_request(data: &[u8]) -> Option<Request<Body>> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n');
    let (method, target) = lines.next()?.split_once(' ')?;
    let mut req = Request::builder().method(method).uri(target);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        req = req.header(name.trim(), value.trim());
    }
    req.body(Body::from(body.to_vec())).ok()
}

/// (b) One KMS Decrypt: the bytes are a protobuf `DecryptRequest` (key id,
/// ciphertext, annotations), served by the gRPC service over the fixture's
/// KEKs.
///
/// Panics if a request is answered Internal or Unknown (a caller's mistake
/// must say what is wrong), or a Decrypt succeeds with other bytes than the
/// fixture's DEK.
pub fn kms_decrypt(data: &[u8]) {
    let Ok(req) = DecryptRequest::decode(data) else { return };
    let s = &*SHARED;
    let svc = Service::new(s.kms.clone(), s.metrics.kms.clone());
    let ciphertext = req.ciphertext.clone();
    match s.rt.block_on(svc.decrypt(tonic::Request::new(req))) {
        Ok(resp) => {
            // Only the fixture's ciphertext authenticates under its KEK.
            assert_eq!(ciphertext, s.fixture.kek_ciphertext, "another ciphertext decrypted");
            assert_eq!(resp.into_inner().plaintext, FIXTURE_DEK);
        }
        Err(status) => assert!(
            !matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown),
            "a Decrypt request answered {:?}: {}",
            status.code(),
            status.message()
        ),
    }
}

/// (d) The configuration: TOML text parsed and checked as `qkeyd serve`
/// and `qkeyd check-config` do.
///
/// Panics if a configuration loads whose source cutoffs do not compute (the
/// checks promise they do).
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::from_toml(text) {
        Ok(c) => {
            for s in &c.sources {
                assert!(s.params.cutoffs().is_ok(), "source {} loaded without cutoffs", s.name);
            }
            for socket in [c.kms.socket.as_ref(), c.module.socket.as_ref()].into_iter().flatten() {
                let _ = socket.endpoint();
            }
        }
        Err(e) => {
            let _ = Chain(&e).to_string();
        }
    }
}

/// (e) A vault key version file: the fixture's ML-DSA key's `v1.key`
/// replaced by the bytes (see [`file_variants`]), then every vault read of
/// it: info, list, verify, encapsulate, sign.
///
/// Panics if a changed file still signs with another key than the
/// fixture's: the checksum, the sealer's AEAD and the re-derived public key
/// must let only the real key through.
pub fn vault_key_file(data: &[u8]) {
    let s = &*SHARED;
    let f = &s.fixture;
    let dir = tempdir();
    copy_tree(&s.base.path().join("keys"), &dir.path().join("keys"));
    let vault = Vault::open(dir.path(), s.sealer.clone(), s.pool.clone()).expect("vault opens");
    let path = dir.path().join(&f.dsa_file);
    for content in file_variants(data) {
        fs::write(&path, &content).expect("write the key file");
        let _ = vault.info(&f.dsa_id);
        let _ = vault.list();
        let _ = vault.current();
        let _ = vault.verify(&f.dsa_id, None, b"hello", b"", &[0; 2420]);
        let _ = vault.encapsulate(&f.dsa_id, None);
        let _ = vault.decapsulate(&f.dsa_id, None, &[0; 1088]);
        if let Ok((_, sig)) = vault.sign(&f.dsa_id, None, b"m", b"") {
            let ok = qkeyd_pqc::verify(Algorithm::MlDsa44, &f.dsa_public, b"m", b"", &sig);
            assert!(matches!(ok, Ok(true)), "a changed key file signed with another key");
        }
    }
}

/// (e) The KMS plugin's KEK file `kms/keks.json`, replaced by the bytes
/// (see [`file_variants`]); then the plugin opens it, lists it, and decrypts
/// the fixture's ciphertext.
///
/// Panics if a changed file opens and decrypts the fixture's ciphertext to
/// other bytes.
pub fn kms_kek_file(data: &[u8]) {
    let s = &*SHARED;
    let f = &s.fixture;
    let annotations: BTreeMap<String, Vec<u8>> =
        BTreeMap::from([("format.kms.qkeyd.io".to_owned(), b"1".to_vec())]);
    for content in file_variants(data) {
        let dir = tempdir();
        fs::create_dir(dir.path().join("kms")).expect("a kms folder");
        fs::write(dir.path().join("kms/keks.json"), &content).expect("write the KEK file");
        let settings = testing::kms_settings(Duration::from_secs(1));
        let Ok(kms) = Kms::open(dir.path(), s.sealer.clone(), s.pool.clone(), &settings, 8) else {
            continue;
        };
        let kms = Arc::new(kms);
        let info = kms.info();
        for k in info.keks.iter().map(|k| k.key_id.as_str()).chain([f.kek_id.as_str()]) {
            // A damaged file may fail in any way; it must never give other bytes.
            if let Ok(dek) = s.rt.block_on(kms.decrypt(k, &f.kek_ciphertext, &annotations)) {
                assert_eq!(&dek[..], FIXTURE_DEK, "KEK {k} decrypted to other bytes");
            }
        }
    }
}

/// (f) GS QKD 014 messages from outside: the first byte picks the parser,
/// the rest is its input. 0-1: a KME's answer (status, then keys) with
/// HTTP status 200 or 400 from the second byte; 2-3: a body of `enc_keys`
/// or `dec_keys` at the QKD server; 4: its query string; 5: a peer node's
/// held-record answer.
///
/// Panics if an error names anything of the input but a JSON position (a
/// KME's answer may hold keys), or a held-record answer yields a record
/// without its ciphertext.
pub fn qkd_messages(data: &[u8]) {
    use crate::qkd::{
        api::{KeyContainer, KeyIds, KeyRequest, Status},
        client::answer,
        peer::HeldAnswer,
        server::{body, query},
    };
    let Some((&which, rest)) = data.split_first() else { return };
    let quotes = |message: String| {
        // A 014 `message` of an error answer is the KME's words, shown;
        // the body's other bytes never are.
        for window in rest.windows(12) {
            if let Ok(w) = std::str::from_utf8(window)
                && w.chars().all(|c| c.is_ascii_alphanumeric())
                && message.contains(w)
            {
                return Some(w.to_owned());
            }
        }
        None
    };
    match which % 6 {
        k @ (0 | 1) => {
            let Some((&code, text)) = rest.split_first() else { return };
            let status = if code % 2 == 0 { 200 } else { 400 };
            let Ok(text) = std::str::from_utf8(text) else { return };
            let e = if k == 0 {
                answer::<Status>("k", "status", status, text).err()
            } else {
                answer::<KeyContainer>("k", "enc_keys", status, text).err()
            };
            if let Some(e @ crate::qkd::client::KmeError::BadAnswer { .. }) = e {
                let m = Chain(&e).to_string();
                assert!(quotes(m.clone()).is_none(), "a KME error quotes its answer: {m}");
            }
        }
        2 => {
            let _ = body::<KeyRequest>(rest, "a GS QKD 014 key request");
        }
        3 => {
            let _ = body::<KeyIds>(rest, "a GS QKD 014 key ID list");
        }
        4 => {
            if let Ok(q) = std::str::from_utf8(rest) {
                let _ = query(Some(q), &["number", "size", "key_ID"]);
            }
        }
        _ => {
            if let Ok(a) = serde_json::from_slice::<HeldAnswer>(rest)
                && let Some(records) = a.records()
            {
                // Every record came back with a ciphertext of the answer.
                assert!(records.iter().all(|r| r.ciphertext.len() < rest.len()));
            }
        }
    }
}
