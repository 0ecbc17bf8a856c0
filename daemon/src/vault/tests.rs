//! The vault in process, on the soft sealer: a key's whole life, its audit
//! trail, and the errors callers get.

use super::*;
use crate::testing;

fn vault() -> (tempfile::TempDir, Vault) {
    let (dir, sealer) = testing::soft_sealer();
    let v = Vault::open(dir.path(), sealer, testing::pool()).unwrap();
    (dir, v)
}

#[test]
fn a_signing_key_lives_rotates_and_dies() {
    let (dir, v) = vault();
    let k = v.create(Algorithm::MlDsa44, "unit").unwrap();
    assert_eq!((k.alg, k.current_version, k.label.as_str()), (Algorithm::MlDsa44, 1, "unit"));
    let (v1, sig1) = v.sign(&k.id, None, b"m", b"").unwrap();
    assert_eq!(v1, 1);
    assert_eq!(v.verify(&k.id, None, b"m", b"", &sig1).unwrap(), (Some(1), true));

    let r = v.rotate(&k.id).unwrap();
    assert_eq!((r.current_version, r.versions.len()), (2, 2));
    // The old version keeps verifying what it signed; the current one does
    // not, and without a version the one that signed is found.
    assert_eq!(v.verify(&k.id, Some(1), b"m", b"", &sig1).unwrap(), (Some(1), true));
    assert_eq!(v.verify(&k.id, Some(2), b"m", b"", &sig1).unwrap(), (Some(2), false));
    assert_eq!(v.verify(&k.id, None, b"m", b"", &sig1).unwrap(), (Some(1), true));
    let (v2, sig2) = v.sign(&k.id, None, b"m", b"").unwrap();
    assert_eq!(v2, 2);
    assert_eq!(v.verify(&k.id, None, b"m", b"", &sig2).unwrap(), (Some(2), true));
    assert_eq!(v.verify(&k.id, None, b"other", b"", &sig2).unwrap(), (None, false));

    assert_eq!(v.list().unwrap().len(), 1);
    v.destroy(&k.id).unwrap();
    assert!(matches!(v.info(&k.id), Err(VaultError::NoSuchKey { .. })));
    assert!(matches!(v.sign(&k.id, None, b"m", b""), Err(VaultError::NoSuchKey { .. })));
    assert!(v.list().unwrap().is_empty());

    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    for op in ["\"create\"", "\"rotate\"", "\"sign\"", "\"destroy\""] {
        assert!(audit.contains(op), "{op} missing from the audit log:\n{audit}");
    }
    assert!(!audit.contains("seed"), "no key material in the audit log");
}

#[test]
fn a_kem_key_encapsulates_decapsulates_and_derives() {
    let (_dir, v) = vault();
    let k = v.create(Algorithm::MlKem768, "").unwrap();
    let e = v.encapsulate(&k.id, None).unwrap();
    assert_eq!(e.ciphertext.len(), Algorithm::MlKem768.output_len());
    let (version, secret) = v.decapsulate(&k.id, None, &e.ciphertext).unwrap();
    assert_eq!((version, &secret[..]), (1, &e.shared_secret[..]));
    let (_, a) = v.derive(&k.id, None, &e.ciphertext, b"salt", b"info", 48).unwrap();
    let (_, b) = v.derive(&k.id, None, &e.ciphertext, b"salt", b"info", 48).unwrap();
    assert_eq!((a.len(), &a[..]), (48, &b[..]));
    assert!(matches!(
        v.derive(&k.id, None, &e.ciphertext, b"", b"", MAX_DERIVE + 1),
        Err(DecapsulateError::Vault(VaultError::DeriveLength(_)))
    ));
    assert!(matches!(
        v.decapsulate(&k.id, None, &e.ciphertext[1..]),
        Err(DecapsulateError::Vault(VaultError::Alg(qkeyd_pqc::Error::Length { .. })))
    ));
    assert!(matches!(
        v.sign(&k.id, None, b"m", b""),
        Err(VaultError::Alg(qkeyd_pqc::Error::WrongKind { .. }))
    ));
}

#[test]
fn the_census_follows_every_change() {
    let (_dir, v) = vault();
    assert_eq!(v.census().unwrap(), vec![]);
    let a = v.create(Algorithm::MlDsa44, "a").unwrap();
    v.create(Algorithm::MlKem768, "b").unwrap();
    let mut c = v.census().unwrap();
    c.sort();
    let pair = |alg: &str| (alg.to_owned(), "soft".to_owned());
    assert_eq!(c, vec![pair("ml-dsa-44"), pair("ml-kem-768")]);
    v.rotate(&a.id).unwrap();
    assert_eq!(v.census().unwrap().len(), 2, "a rotation is no new key");
    v.destroy(&a.id).unwrap();
    assert_eq!(v.census().unwrap(), vec![pair("ml-kem-768")]);
}

#[test]
fn bad_input_is_refused_and_nothing_is_made() {
    let (_dir, v) = vault();
    assert!(matches!(
        v.create(Algorithm::MlDsa65, &"x".repeat(MAX_LABEL + 1)),
        Err(VaultError::Label)
    ));
    assert!(matches!(v.create(Algorithm::MlDsa65, "tab\there"), Err(VaultError::Label)));
    assert!(v.list().unwrap().is_empty());
    let id = "0".repeat(32);
    assert!(matches!(v.rotate(&id), Err(VaultError::NoSuchKey { .. })));
    assert!(matches!(v.destroy(&id), Err(VaultError::NoSuchKey { .. })));
}

#[test]
fn keys_survive_a_reopen() {
    let (dir, sealer) = testing::soft_sealer();
    let pool = testing::pool();
    let id = {
        let v = Vault::open(dir.path(), sealer.clone(), pool.clone()).unwrap();
        v.create(Algorithm::MlDsa87, "kept").unwrap().id
    };
    let v = Vault::open(dir.path(), sealer, pool).unwrap();
    let (_, sig) = v.sign(&id, None, b"m", b"c").unwrap();
    assert!(v.verify(&id, None, b"m", b"c", &sig).unwrap().1);
    assert_eq!(v.info(&id).unwrap().label, "kept");
}

/// After a rotation a ciphertext no longer says which version it is for, and
/// the wrong one answers a wrong secret without an error: so the vault asks.
#[test]
fn decapsulating_a_rotated_key_needs_the_version_encapsulate_answered() {
    let (_dir, v) = vault();
    let k = v.create(Algorithm::MlKem512, "").unwrap();
    let e = v.encapsulate(&k.id, None).unwrap();
    assert_eq!(e.version, 1);
    v.rotate(&k.id).unwrap();
    for r in [
        v.decapsulate(&k.id, None, &e.ciphertext).map(|_| ()),
        v.derive(&k.id, None, &e.ciphertext, b"", b"", 32).map(|_| ()),
    ] {
        let err = r.unwrap_err();
        let DecapsulateError::VersionRequired { versions, .. } = &err else { panic!("{err:?}") };
        assert_eq!(versions, &[1, 2]);
        let msg = err.to_string();
        assert!(msg.contains("versions 1, 2") && msg.contains("\"version\""), "{msg}");
    }
    let (version, secret) = v.decapsulate(&k.id, Some(e.version), &e.ciphertext).unwrap();
    assert_eq!((version, &secret[..]), (1, &e.shared_secret[..]));
    // What guessing would have answered: no error, another secret.
    let (_, wrong) = v.decapsulate(&k.id, Some(2), &e.ciphertext).unwrap();
    assert_ne!(&wrong[..], &e.shared_secret[..]);
    let e2 = v.encapsulate(&k.id, None).unwrap();
    assert_eq!(e2.version, 2, "encapsulate answers the version it used");
    // A signing key is not asked for a version it could not use anyway.
    let d = v.create(Algorithm::MlDsa44, "").unwrap();
    v.rotate(&d.id).unwrap();
    assert!(matches!(
        v.decapsulate(&d.id, None, &e.ciphertext),
        Err(DecapsulateError::Vault(VaultError::Alg(qkeyd_pqc::Error::WrongKind { .. })))
    ));
}

fn audit_lines(dir: &tempfile::TempDir) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.path().join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn ops(lines: &[serde_json::Value]) -> Vec<String> {
    lines.iter().map(|l| l["op"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn every_key_operation_is_audited_under_its_own_name_without_secrets() {
    use base64::Engine as _;
    let (dir, v) = vault();
    let kem = v.create(Algorithm::MlKem768, "").unwrap();
    let dsa = v.create(Algorithm::MlDsa65, "").unwrap();
    let e = v.encapsulate(&kem.id, None).unwrap();
    let (_, ss) = v.decapsulate(&kem.id, Some(1), &e.ciphertext).unwrap();
    let (_, okm) = v.derive(&kem.id, Some(1), &e.ciphertext, b"s", b"i", 64).unwrap();
    let (_, sig) = v.sign(&dsa.id, None, b"m", b"").unwrap();
    v.verify(&dsa.id, None, b"m", b"", &sig).unwrap();
    v.verify(&dsa.id, Some(1), b"not m", b"", &sig).unwrap();
    let lines = audit_lines(&dir);
    assert_eq!(
        ops(&lines),
        ["create", "create", "encapsulate", "decapsulate", "derive", "sign", "verify", "verify"]
    );
    let outcomes: Vec<_> = lines.iter().map(|l| l["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes[6..], ["valid", "invalid"]);
    for l in &lines {
        assert_eq!(l["version"], 1, "{l}");
        assert_eq!(l["fingerprint"].as_str().unwrap().len(), 64, "{l}");
        assert!(l.get("recovered").is_none(), "{l}");
    }
    let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for secret in [&e.shared_secret[..], &ss[..], &okm[..], &sig[..]] {
        for needle in [hex::encode(secret), b64(secret), hex::encode(&secret[..12])] {
            assert!(!text.contains(&needle), "a secret or an output is in the audit log");
        }
    }
}

#[test]
fn an_audit_log_that_cannot_be_written_stops_every_operation() {
    let (dir, v) = vault();
    let dsa = v.create(Algorithm::MlDsa44, "").unwrap();
    let kem = v.create(Algorithm::MlKem512, "").unwrap();
    let e = v.encapsulate(&kem.id, None).unwrap();
    let before = audit_lines(&dir).len();
    v.audit.break_for_test();
    let refused = |r: Result<(), VaultError>, what: &str| {
        assert!(matches!(r, Err(VaultError::AuditLog(_))), "{what}: {r:?}");
    };
    refused(v.create(Algorithm::MlDsa44, "").map(|_| ()), "create");
    refused(v.rotate(&dsa.id).map(|_| ()), "rotate");
    refused(v.destroy(&dsa.id), "destroy");
    refused(v.sign(&dsa.id, None, b"m", b"").map(|_| ()), "sign");
    refused(v.verify(&dsa.id, None, b"m", b"", &[0; 2420]).map(|_| ()), "verify");
    refused(v.encapsulate(&kem.id, None).map(|_| ()), "encapsulate");
    let decap = v.decapsulate(&kem.id, None, &e.ciphertext);
    assert!(matches!(decap, Err(DecapsulateError::Vault(VaultError::AuditLog(_)))));
    let derive = v.derive(&kem.id, None, &e.ciphertext, b"", b"", 32);
    assert!(matches!(derive, Err(DecapsulateError::Vault(VaultError::AuditLog(_)))));
    // Nothing changed: the same two keys, one version each, no temp files.
    let keys = v.list().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.versions.len() == 1));
    for id in [&dsa.id, &kem.id] {
        let files: Vec<_> = std::fs::read_dir(dir.path().join("keys").join(id))
            .unwrap()
            .map(|f| f.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, ["v1.key"], "{id}");
    }
    assert_eq!(audit_lines(&dir).len(), before);
}

/// A state directory and what opens a vault on it, again and again.
struct State {
    dir: tempfile::TempDir,
    sealer: qkeyd_drivers::seal::worker::SealerWorker,
    pool: Arc<Pool>,
}

impl State {
    fn new() -> (Self, Vault) {
        let (dir, sealer) = testing::soft_sealer();
        let s = Self { dir, sealer, pool: testing::pool() };
        let v = s.open();
        (s, v)
    }

    fn open(&self) -> Vault {
        Vault::open(self.dir.path(), self.sealer.clone(), self.pool.clone()).unwrap()
    }
}

#[test]
fn versions_the_log_lacks_get_recovered_lines_once() {
    let (st, v) = State::new();
    let dir = &st.dir;
    let k = v.create(Algorithm::MlDsa44, "").unwrap();
    v.rotate(&k.id).unwrap();
    drop(v);
    // A keystore whose log lost its lines (or predates them).
    std::fs::write(dir.path().join("audit.log"), b"").unwrap();
    let v = st.open();
    let lines = audit_lines(dir);
    assert_eq!(ops(&lines), ["create", "rotate"]);
    for (l, version) in lines.iter().zip([1, 2]) {
        assert_eq!(
            (l["key"].as_str(), l["version"].as_u64()),
            (Some(k.id.as_str()), Some(version))
        );
        assert_eq!((l["outcome"].as_str(), l["recovered"].as_bool()), (Some("ok"), Some(true)));
    }
    assert_eq!(lines[0]["fingerprint"], k.versions[0].fingerprint);
    drop(v);
    st.open();
    assert_eq!(audit_lines(dir).len(), 2, "nothing more to recover");
}

/// The daemon stopped between a rotation's audit line and its rename.
#[test]
fn a_logged_version_that_never_landed_is_closed_as_aborted() {
    let (st, v) = State::new();
    let dir = &st.dir;
    let k = v.create(Algorithm::MlKem512, "").unwrap();
    let r = v.new_version(&k.id, 2, Algorithm::MlKem512, "").unwrap();
    let staged = v.store.stage(&r).unwrap();
    let ev = audit::Event {
        op: audit::Op::Rotate,
        id: &k.id,
        version: Some(2),
        alg: Some(r.alg),
        fingerprint: &r.fingerprint,
    };
    v.audit.lifecycle(&[(ev, "ok")], false).unwrap();
    drop(staged);
    drop(v);
    let v = st.open();
    assert_eq!(v.info(&k.id).unwrap().versions.len(), 1);
    let lines = audit_lines(dir);
    let last = lines.last().unwrap();
    assert_eq!((last["op"].as_str(), last["version"].as_u64()), (Some("rotate"), Some(2)));
    assert!(last["outcome"].as_str().unwrap().starts_with("aborted"), "{last}");
    assert_eq!(last["recovered"], true);
    assert!(!dir.path().join("keys").join(&k.id).join("v2.key.tmp").exists());
    // Rotating again takes version 2, audited as usual.
    assert_eq!(v.rotate(&k.id).unwrap().current_version, 2);
    assert_eq!(audit_lines(dir).last().unwrap()["outcome"], "ok");
}

#[test]
fn destructions_interrupted_either_side_of_the_rename_are_finished_and_logged() {
    let (st, v) = State::new();
    let dir = &st.dir;
    let logged = v.create(Algorithm::MlDsa44, "").unwrap();
    let moved = v.create(Algorithm::MlKem768, "").unwrap();
    let kept = v.create(Algorithm::MlDsa44, "").unwrap();
    // Stopped after the destroy line, before the rename.
    let ev = audit::Event {
        op: audit::Op::Destroy,
        id: &logged.id,
        version: Some(1),
        alg: Some(logged.alg),
        fingerprint: &logged.versions[0].fingerprint,
    };
    v.audit.lifecycle(&[(ev, "ok")], false).unwrap();
    // Moved out of sight with no line (as a daemon before audit-first did).
    v.store.begin_destroy(&moved.id).unwrap();
    drop(v);

    let v = st.open();
    let ids: Vec<_> = v.list().unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(ids, [kept.id.as_str()]);
    let lines = audit_lines(dir);
    let destroys: Vec<_> = lines.iter().filter(|l| l["op"] == "destroy").collect();
    assert_eq!(destroys.len(), 2, "{destroys:?}");
    assert_eq!(destroys[0]["key"], logged.id.as_str());
    assert!(destroys[0].get("recovered").is_none());
    assert_eq!(destroys[1]["key"], moved.id.as_str());
    assert_eq!(destroys[1]["recovered"], true);
    assert_eq!(destroys[1]["fingerprint"], moved.versions[0].fingerprint);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(leftovers, [kept.id]);
}

#[test]
fn a_key_removed_behind_the_vaults_back_is_logged_missing() {
    let (st, v) = State::new();
    let dir = &st.dir;
    let k = v.create(Algorithm::MlDsa87, "").unwrap();
    drop(v);
    std::fs::remove_dir_all(dir.path().join("keys").join(&k.id)).unwrap();
    st.open();
    let last = audit_lines(dir).pop().unwrap();
    assert_eq!((last["op"].as_str(), last["key"].as_str()), (Some("create"), Some(k.id.as_str())));
    assert!(last["outcome"].as_str().unwrap().starts_with("missing"), "{last}");
    assert_eq!(last["recovered"], true);
}

/// Stopped while removing a destroyed key's folder: nothing left in it, and
/// nothing else to finish.
#[test]
fn an_emptied_destroy_folder_is_removed_at_start() {
    let (st, v) = State::new();
    v.create(Algorithm::MlDsa44, "").unwrap();
    drop(v);
    let left = st.dir.path().join("keys").join(format!(".destroy-{}", "e".repeat(32)));
    std::fs::create_dir(&left).unwrap();
    let v = st.open();
    assert!(!left.exists());
    assert_eq!(v.list().unwrap().len(), 1);
}

/// A reserved key (the node identity key) signs only for its owner: sign,
/// open, rotate and destroy refuse it, whatever the context asked for;
/// other keys are untouched, and the public key still verifies.
#[test]
fn a_reserved_key_signs_only_for_its_owner() {
    let (_dir, v) = vault();
    let id = v.create(Algorithm::MlDsa87, "identity").unwrap().id;
    let other = v.create(Algorithm::MlDsa44, "other").unwrap().id;
    v.reserve(&id);
    for e in [
        v.sign(&id, None, b"{}", b"qkeyd-statement/1").map(|_| ()).unwrap_err(),
        v.open_key(&id, None).map(|_| ()).unwrap_err(),
        v.rotate(&id).map(|_| ()).unwrap_err(),
        v.destroy(&id).unwrap_err(),
    ] {
        assert!(matches!(e, VaultError::Reserved(ref r) if *r == id), "{e}");
    }
    let k = v.open_reserved(&id).unwrap();
    let sig = v.sign_open(&k, b"m", b"ctx", false).unwrap();
    assert_eq!(v.verify(&id, None, b"m", b"ctx", &sig).unwrap(), (Some(1), true));
    v.sign(&other, None, b"m", b"").unwrap();
    v.destroy(&other).unwrap();
}
