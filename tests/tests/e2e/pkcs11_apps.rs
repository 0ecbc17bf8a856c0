//! The token as applications use it beside their keys: python-pkcs11 makes,
//! changes, copies and destroys data objects under the attribute rules, keeps
//! token objects across sessions and restarts, digests, and reads the PIN
//! flags while the security officer sets and changes PINs
//! (`tests/pkcs11/objects.py`). A certificate issued over REST for an ML-DSA
//! vault key is found by CKA_ID and subject beside its key; OpenSSL parses
//! it, and Go's crypto/x509 with circl's ML-DSA (`tests/pkcs11/certcheck`)
//! verifies its signature.

use std::process::Command;

use base64::Engine as _;
use qkeyd_e2e::{Daemon, certcheck};
use serde_json::{Value, json};

use super::pkcs11::{P11, SO_PIN, p11_config, python};

const OS_SOURCE: &str = "[[source]]\nname = \"os\"\nkind = \"os\"\n";

fn daemon() -> P11 {
    let dir = tempfile::tempdir().unwrap();
    let config = p11_config(dir.path(), OS_SOURCE, "");
    let state = dir.path().join("state");
    let d = Daemon::start_with(dir, &config, &state, &[]);
    P11 { socket: d.dir.path().join("p11.sock"), d }
}

/// The DER inside a PEM text.
fn der_of(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

/// `openssl ARGS -in FILE -noout -text`: its exit and output.
fn openssl_text(kind: &str, file: &std::path::Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args([kind, "-noout", "-text", "-in"])
        .arg(file)
        .output()
        .expect("openssl");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// certcheck's report on a PEM file, and whether it passed.
fn certcheck_report(file: &std::path::Path) -> (bool, Value) {
    let out = Command::new(certcheck()).arg(file).output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(report.is_object(), "certcheck: {}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), report)
}

#[test]
fn a_certificate_issued_over_rest_is_found_beside_its_key_and_verifies_elsewhere() {
    let p = daemon();
    let d = &p.d;
    let (st, key) =
        d.keys("POST", "/v1/keys", Some(json!({"alg": "ML-DSA-65", "label": "tls-server"})));
    assert_eq!(st, 201, "{key}");
    let id = key["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/keys/{id}/certificate");
    let (st, cert) =
        d.keys("POST", &path, Some(json!({"subject": "CN=node-1.example,O=qkeyd", "days": 30})));
    assert_eq!(st, 201, "{cert}");
    assert_eq!(cert["cka_id"], json!(id));
    let pem = cert["certificate"].as_str().unwrap();
    let files = tempfile::tempdir().unwrap();
    let pem_file = files.path().join("cert.pem");
    std::fs::write(&pem_file, pem).unwrap();
    let der = der_of(pem);
    let der_file = files.path().join("cert.der");
    std::fs::write(&der_file, &der).unwrap();

    // OpenSSL 3.0 parses the structure; it does not know ML-DSA, so it names the OID.
    let (ok, text) = openssl_text("x509", &pem_file);
    assert!(ok, "{text}");
    for want in [
        "Version: 3 (0x2)",
        "Signature Algorithm: 2.16.840.1.101.3.4.3.18",
        "Issuer: CN = node-1.example, O = qkeyd",
        "Subject: CN = node-1.example, O = qkeyd",
        "X509v3 Key Usage: critical",
        "Digital Signature",
        "CA:FALSE",
        "X509v3 Subject Key Identifier",
    ] {
        assert!(text.contains(want), "openssl misses {want:?}:\n{text}");
    }
    // Go's x509 parses it and circl verifies the ML-DSA-65 signature.
    let (ok, report) = certcheck_report(&pem_file);
    assert!(ok, "{report}");
    assert_eq!(report["algorithm"], "ML-DSA-65");
    assert_eq!(report["signature_ok"], true);
    assert_eq!(report["parameters_absent"], true);
    assert_eq!(report["public_key_bytes"], 1952);
    assert_eq!(report["is_ca"], false);
    assert_eq!(report["subject"], "CN=node-1.example,O=qkeyd");
    assert_eq!(report["serial"], json!(cert["serial"].as_str().unwrap().trim_start_matches('0')));
    // A certificate with one changed signature byte does not verify.
    let mut bad = der.clone();
    let n = bad.len();
    bad[n - 10] ^= 1;
    let bad_pem = files.path().join("bad.pem");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bad);
    std::fs::write(
        &bad_pem,
        format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n"),
    )
    .unwrap();
    let (ok, report) = certcheck_report(&bad_pem);
    assert!(!ok && report["signature_ok"] == false, "{report}");

    // A request (PKCS#10) for the same key: parsed and verified the same way.
    let (st, csr) =
        d.keys("POST", &path, Some(json!({"subject": "CN=node-1.example", "csr": true})));
    assert_eq!(st, 200, "{csr}");
    let csr_file = files.path().join("req.pem");
    std::fs::write(&csr_file, csr["csr"].as_str().unwrap()).unwrap();
    let (ok, text) = openssl_text("req", &csr_file);
    assert!(ok && text.contains("Subject: CN = node-1.example"), "{text}");
    let (ok, report) = certcheck_report(&csr_file);
    assert!(ok && report["kind"] == "request", "{report}");

    // Bad requests are clear errors, and the daemon goes on.
    let (st, kem) = d.keys("POST", "/v1/keys", Some(json!({"alg": "ML-KEM-768"})));
    assert_eq!(st, 201);
    let kem_path = format!("/v1/keys/{}/certificate", kem["id"].as_str().unwrap());
    for (path, body, want_status, want) in [
        (kem_path.as_str(), json!({"subject": "CN=x"}), 400, "certificates are for ML-DSA keys"),
        (path.as_str(), json!({"subject": "CN=a+b"}), 400, "subject value of CN"),
        (path.as_str(), json!({"subject": "CN=x", "days": 0}), 400, "days must be 1..=3650"),
        (path.as_str(), json!({"subject": "XX=1"}), 400, "is not KEY=VALUE"),
        (
            "/v1/keys/00000000000000000000000000000000/certificate",
            json!({"subject": "CN=x"}),
            404,
            "no such key",
        ),
    ] {
        let (st, e) = d.keys("POST", path, Some(body));
        assert_eq!(st, want_status, "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(want), "{e}");
    }

    // The application finds it by CKA_ID and by subject, beside its key;
    // then the rest of the token's application objects and PINs.
    let text = python(
        &p,
        "objects.py",
        &["--so-pin", SO_PIN, "--cert-id", &id, "--cert-der", der_file.to_str().unwrap()],
    );
    assert!(text.contains("ok: the issued certificate is found by CKA_ID"), "{text}");
    assert!(text.contains("ok: the user and SO PINs are back as they were"), "{text}");

    // REST lists the token objects: the certificate, with its subject.
    let (st, listed) = d.keys("GET", "/v1/objects", None);
    assert_eq!(st, 200, "{listed}");
    let objects = listed["objects"].as_array().unwrap();
    let ours: Vec<&Value> = objects.iter().filter(|o| o["class"] == "certificate").collect();
    assert_eq!(ours.len(), 1, "{listed}");
    assert_eq!(ours[0]["subject"], "CN=node-1.example, O=qkeyd");
    assert_eq!(ours[0]["cka_id"], json!(id));
    // Every change to a token object is in the audit log, by interface.
    let audit = std::fs::read_to_string(d.state.join("audit.log")).unwrap();
    assert!(
        audit.contains(r#""op":"object-create""#) && audit.contains(r#""by":"rest""#),
        "{audit}"
    );
    assert!(
        audit.contains(r#""op":"object-destroy""#) && audit.contains(r#""by":"pkcs11""#),
        "{audit}"
    );

    // Kept across a restart; then destroyed over REST.
    let object = ours[0]["id"].as_str().unwrap().to_owned();
    let P11 { d, .. } = p;
    let state = d.state.clone();
    let dir = d.kill();
    let config = std::fs::read_to_string(dir.path().join("qkeyd.toml")).unwrap();
    let d = Daemon::start_with(dir, &config, &state, &[]);
    let (_, listed) = d.keys("GET", "/v1/objects", None);
    assert!(
        listed["objects"].as_array().unwrap().iter().any(|o| o["id"] == json!(object)),
        "{listed}"
    );
    let (st, _) = d.keys("DELETE", &format!("/v1/objects/{object}"), None);
    assert_eq!(st, 204);
    let (st, e) = d.keys("DELETE", &format!("/v1/objects/{object}"), None);
    assert_eq!(st, 404, "{e}");
}
