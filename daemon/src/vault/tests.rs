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
    assert_eq!(v.verify(&k.id, None, b"m", b"", &sig1).unwrap(), (1, true));

    let r = v.rotate(&k.id).unwrap();
    assert_eq!((r.current_version, r.versions.len()), (2, 2));
    // The old version keeps verifying what it signed; the current one does not.
    assert_eq!(v.verify(&k.id, Some(1), b"m", b"", &sig1).unwrap(), (1, true));
    assert_eq!(v.verify(&k.id, None, b"m", b"", &sig1).unwrap(), (2, false));
    let (v2, _) = v.sign(&k.id, None, b"m", b"").unwrap();
    assert_eq!(v2, 2);

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
        Err(VaultError::DeriveLength(_))
    ));
    assert!(matches!(
        v.decapsulate(&k.id, None, &e.ciphertext[1..]),
        Err(VaultError::Alg(qkeyd_pqc::Error::Length { .. }))
    ));
    assert!(matches!(
        v.sign(&k.id, None, b"m", b""),
        Err(VaultError::Alg(qkeyd_pqc::Error::WrongKind { .. }))
    ));
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
