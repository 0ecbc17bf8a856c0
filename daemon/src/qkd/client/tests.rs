//! 014's messages in the specification's field names, and what an error
//! may say.

use super::{KmeError, answer};
use crate::qkd::api::{KeyContainer, KeyRequest, Status};

/// A Status in the shape of GS QKD 014 v1.1.1's example, without the extension.
const STATUS: &str = r#"{
  "source_KME_ID": "AAAABBBBCCCCDDDD",
  "target_KME_ID": "EEEEFFFFGGGGHHHH",
  "master_SAE_ID": "IIIIJJJJKKKKLLLL",
  "slave_SAE_ID": "MMMMNNNNOOOOPPPP",
  "key_size": 352,
  "stored_key_count": 25000,
  "max_key_count": 100000,
  "max_key_per_request": 128,
  "max_key_size": 1024,
  "min_key_size": 64,
  "max_SAE_ID_count": 0
}"#;

/// A Key container with two keys, with and without the extension fields.
const KEYS: &str = r#"{
  "keys": [
    {"key_ID": "bc490419-7d60-487f-adc1-4ddcc177c139", "key": "wHHVxRwDJs3/bXd38GHP3oe4svTuRpZS0yCC7x4Ly+s="},
    {"key_ID": "0a782fb5-3434-48fe-aa4d-14f41d46cf92", "key": "OeGMPxh1+2RpJpNCYixWHFLYRubpOKCw94FcCI7VdJA=",
     "key_ID_extension": {"x": 1}, "key_extension": {"y": 2}}
  ],
  "key_container_extension": {"z": 3}
}"#;

#[test]
fn the_specifications_examples_parse() {
    let s: Status = answer("k", "status", 200, STATUS).unwrap();
    assert_eq!(s.master_sae_id, "IIIIJJJJKKKKLLLL");
    assert_eq!((s.key_size, s.stored_key_count, s.max_sae_id_count), (352, 25000, 0));
    let k: KeyContainer = answer("k", "enc_keys", 200, KEYS).unwrap();
    assert_eq!(k.keys.len(), 2);
    assert_eq!(k.keys[1].key_id, "0a782fb5-3434-48fe-aa4d-14f41d46cf92");
    assert_eq!(k.keys[1].key_extension, Some(serde_json::json!({"y": 2})));
    assert!(k.key_container_extension.is_some());
    // A required field missing is not 014's message.
    let partial = STATUS.replace("\"max_key_size\": 1024,", "");
    let e = answer::<Status>("k", "status", 200, &partial).unwrap_err();
    assert!(matches!(e, KmeError::BadAnswer { .. }), "{e}");
}

#[test]
fn requests_use_014s_field_names_and_leave_out_what_is_unset() {
    let r = KeyRequest {
        number: Some(3),
        size: Some(256),
        additional_slave_sae_ids: Vec::new(),
        extension_mandatory: None,
        extension_optional: None,
    };
    assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"number":3,"size":256}"#);
}

#[test]
fn errors_give_014s_message_and_never_a_keys_bytes() {
    let e = answer::<KeyContainer>(
        "east",
        "enc_keys for b",
        400,
        r#"{"message": "size out of range", "details": [{"size": 12}]}"#,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"KME east answered 400 to enc_keys for b: size out of range (details: [{"size":12}])"#
    );
    let e = answer::<KeyContainer>("east", "status of b", 503, "<html>busy</html>").unwrap_err();
    assert!(e.to_string().ends_with("(no GS QKD 014 error message)"), "{e}");
    // serde would quote the string it did not expect: here, key material.
    let secret = "c2VjcmV0IGtleSBtYXRlcmlhbA==";
    let text = format!(r#"{{"keys": "{secret}"}}"#);
    let e = answer::<KeyContainer>("east", "enc_keys for b", 200, &text).unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("line 1 column"), "{shown}");
    // Nor does a key's Debug.
    let k: KeyContainer = answer("k", "enc_keys", 200, KEYS).unwrap();
    assert!(!format!("{k:?}").contains("wHHVxRwDJs3"), "{k:?}");
}
