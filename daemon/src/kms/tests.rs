//! The plugin in process, on the soft sealer: every call's path and its
//! errors, without a socket.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::*;
use crate::testing;

fn kms(dir: &std::path::Path, sealer: SealerWorker, status_cache_ms: u64) -> Arc<Kms> {
    let settings = testing::kms_settings(Duration::from_millis(status_cache_ms));
    Arc::new(Kms::open(dir, sealer, testing::pool(), &settings, 8).unwrap())
}

fn seed(b: u8) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(vec![b; 32])
}

#[tokio::test]
async fn encrypt_decrypt_rotate_and_retire() {
    let (dir, sealer) = testing::soft_sealer();
    let k = kms(dir.path(), sealer, 1000);
    let first = k.encrypt(seed(1)).await.unwrap();
    assert_eq!(first.ciphertext.len(), 32 + format::OVERHEAD);
    assert_eq!(first.annotations, annotations());
    let back = k.decrypt(&first.key_id, &first.ciphertext, &first.annotations).await.unwrap();
    assert_eq!(&back[..], &[1; 32]);

    // A tampered ciphertext is an error, never other bytes.
    let mut bad = first.ciphertext.clone();
    *bad.last_mut().unwrap() ^= 1;
    let e = k.decrypt(&first.key_id, &bad, &first.annotations).await.unwrap_err();
    assert!(matches!(e, KmsError::NotAuthentic(_)), "{e}");
    let e = k.decrypt("qkeyd-kek-nope", &first.ciphertext, &first.annotations).await.unwrap_err();
    assert!(matches!(e, KmsError::UnknownKey(_)) && e.kind() == Kind::NotFound, "{e}");

    // After a rotation the old KEK still decrypts; the new one writes.
    let second = k.rotate().unwrap();
    assert_ne!(second, first.key_id);
    let again = k.encrypt(seed(2)).await.unwrap();
    assert_eq!(again.key_id, second);
    let back = k.decrypt(&first.key_id, &first.ciphertext, &first.annotations).await.unwrap();
    assert_eq!(&back[..], &[1; 32]);

    // Retire: never the write key; not within the grace period unless forced.
    assert!(matches!(k.retire(&second, true), Err(KmsError::RetireWriteKey(_))));
    let e = k.retire(&first.key_id, false).unwrap_err();
    assert!(matches!(e, KmsError::RecentlyReplaced { .. }) && e.kind() == Kind::Conflict);
    k.retire(&first.key_id, true).unwrap();
    let e = k.decrypt(&first.key_id, &first.ciphertext, &first.annotations).await.unwrap_err();
    assert!(matches!(e, KmsError::Retired { .. }), "{e}");

    let info = k.info();
    assert_eq!(info.write_key_id.as_deref(), Some(second.as_str()));
    assert_eq!(info.keks.len(), 1);
    assert!(info.keks[0].write && !info.keks[0].in_token);
    assert_eq!(info.retired.len(), 1);
    assert_eq!(info.backend, "soft");
}

#[tokio::test]
async fn the_keks_outlive_the_process() {
    let (dir, sealer) = testing::soft_sealer();
    let k = kms(dir.path(), sealer.clone(), 1000);
    let e = k.encrypt(seed(3)).await.unwrap();
    drop(k);
    let k = kms(dir.path(), sealer, 1000);
    assert_eq!(&k.decrypt(&e.key_id, &e.ciphertext, &e.annotations).await.unwrap()[..], &[3; 32]);
}

#[tokio::test]
async fn malformed_requests_never_reach_a_kek() {
    let (dir, sealer) = testing::soft_sealer();
    let k = kms(dir.path(), sealer, 1000);
    let e = k.encrypt(Zeroizing::new(vec![])).await.unwrap_err();
    assert!(matches!(e, KmsError::PlaintextLength(0)));
    let e = k.encrypt(Zeroizing::new(vec![0; format::MAX_PLAINTEXT + 1])).await.unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument);
    let ok = k.encrypt(seed(4)).await.unwrap();
    let e = k.decrypt("", &ok.ciphertext, &ok.annotations).await.unwrap_err();
    assert!(matches!(e, KmsError::EmptyKeyId));
    let e = k.decrypt(&ok.key_id, &ok.ciphertext, &BTreeMap::new()).await.unwrap_err();
    assert!(matches!(e, KmsError::MissingFormat));
    // Nothing was used but the one Encrypt: one unseal at most.
    assert_eq!(k.info().keks.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_is_a_real_check_made_once_for_a_crowd() {
    let (dir, sealer) = testing::soft_sealer();
    let k = kms(dir.path(), sealer, 60_000);
    let key_id = k.status().await.unwrap();
    assert_eq!(k.info().status_checks, 1);
    assert_eq!(k.info().write_key_id.as_deref(), Some(key_id.as_str()));
    // Fresh: answered from the cache.
    for _ in 0..10 {
        assert_eq!(k.status().await.unwrap(), key_id);
    }
    assert_eq!(k.info().status_checks, 1);
    // A rotation makes the answer stale; a crowd then makes one check.
    let new = k.rotate().unwrap();
    let crowd: Vec<_> = (0..64)
        .map(|_| {
            let k = k.clone();
            tokio::spawn(async move { k.status().await })
        })
        .collect();
    for c in crowd {
        assert_eq!(c.await.unwrap().unwrap(), new);
    }
    assert_eq!(k.info().status_checks, 2);
}

#[tokio::test]
async fn a_failed_check_is_the_answer_until_the_next() {
    let (dir, sealer) = testing::soft_sealer();
    let k = kms(dir.path(), sealer, 60_000);
    let key_id = k.status().await.unwrap();
    // The write KEK's sealed value damaged in memory: its next real check
    // (a fresh unseal, never the cached value) fails.
    {
        let mut file = lock(&k.file);
        let record = file.keks.iter_mut().find(|r| r.key_id == key_id).unwrap();
        let KekLocation::Sealed { sealed } = &mut record.kek else {
            panic!("soft KEKs are sealed")
        };
        sealed.blob[0] ^= 1;
    }
    k.status.clear();
    let first = k.status().await.unwrap_err();
    assert!(matches!(first, KmsError::LastCheck(_)), "{first}");
    assert_eq!(first.kind(), Kind::Internal);
    let again = k.status().await.unwrap_err();
    assert!(matches!(again, KmsError::LastCheck(_)));
    assert_eq!(k.info().status_checks, 2, "the failure is reused, not re-checked");
}

/// The audit log's KEK lines, as (op, key, outcome, recovered).
fn kek_lines(dir: &std::path::Path) -> Vec<(String, String, String, bool)> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["op"].as_str().is_some_and(|op| op.starts_with("kek-")))
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("op"), s("key"), s("outcome"), v["recovered"].as_bool().unwrap_or(false))
        })
        .collect()
}

#[tokio::test]
async fn every_kek_change_is_audited_first_and_a_lost_line_is_recovered() {
    let (dir, sealer) = testing::soft_sealer();
    let k = kms(dir.path(), sealer.clone(), 1000);
    let first = k.ensure_key().unwrap();
    let second = k.rotate().unwrap();
    k.retire(&first, true).unwrap();
    let ok = |op: &str, key: &str| (op.to_owned(), key.to_owned(), "ok".to_owned(), false);
    assert_eq!(
        kek_lines(dir.path()),
        [ok("kek-create", &first), ok("kek-create", &second), ok("kek-retire", &first)]
    );
    drop(k);
    // A log that lost its lines: the next open puts them back, marked.
    std::fs::remove_file(dir.path().join("audit.log")).unwrap();
    let _k = kms(dir.path(), sealer, 1000);
    let lines = kek_lines(dir.path());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.2 == "ok" && l.3), "{lines:?}");
    assert!(lines.iter().any(|l| l.0 == "kek-create" && l.1 == second));
    assert!(lines.iter().any(|l| l.0 == "kek-retire" && l.1 == first));
}
