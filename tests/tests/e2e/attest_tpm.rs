//! The node's attestation key in a real (software) TPM: made once under the
//! EK, found again, and its quotes accepted by tpm2-tools' `tpm2_checkquote`,
//! a checker we did not write.

use std::process::Command;

use base64::Engine as _;
use qkeyd_drivers::attest::{AttestConfig, DEFAULT_AK_HANDLE, TpmAttester};
use qkeyd_e2e::Swtpm;
use sha2::{Digest as _, Sha256};

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}

/// `tpm2_checkquote` on these bytes: whether it accepts them.
fn checkquote(dir: &std::path::Path, attest: &[u8], sig: &[u8], extra: &[u8]) -> bool {
    std::fs::write(dir.join("attest.bin"), attest).unwrap();
    std::fs::write(dir.join("sig.bin"), sig).unwrap();
    let out = Command::new("tpm2_checkquote")
        .arg("-u")
        .arg(dir.join("ak.pem"))
        .arg("-m")
        .arg(dir.join("attest.bin"))
        .arg("-s")
        .arg(dir.join("sig.bin"))
        .args(["-g", "sha256", "-q", &hex::encode(extra)])
        .output()
        .expect("tpm2_checkquote (tests/run-all.sh installs tpm2-tools)");
    out.status.success()
}

#[test]
fn the_ak_is_made_once_and_its_quotes_pass_tpm2_checkquote() {
    let t = Swtpm::start();
    t.extend_pcr(7);
    let config =
        AttestConfig { tcti: t.tcti(), ak_handle: DEFAULT_AK_HANDLE, pcrs: (0..8).collect() };
    let (attester, ak) = TpmAttester::open(config.clone()).unwrap();
    assert!(ak.created);
    // The Name is nameAlg (SHA-256) ‖ SHA-256 of the TPMT_PUBLIC.
    assert_eq!(ak.name[..2], [0x00, 0x0b]);
    assert_eq!(ak.name[2..], Sha256::digest(&ak.public[2..])[..]);
    assert_eq!(usize::from(u16::from_be_bytes([ak.public[0], ak.public[1]])), ak.public.len() - 2);

    // Found, not made again, after a reconnect and after the TPM restarts.
    let (_, again) = TpmAttester::open(config.clone()).unwrap();
    assert!(!again.created);
    assert_eq!((again.name.clone(), again.public.clone()), (ak.name.clone(), ak.public.clone()));

    let extra: [u8; 32] = Sha256::digest(b"a nonce and a statement").into();
    let q = attester.quote(&extra).unwrap();
    assert_eq!(q.attest[..4], [0xff, 0x54, 0x43, 0x47], "TPM_GENERATED_VALUE");
    assert_eq!(q.attest[4..6], [0x80, 0x18], "TPM_ST_ATTEST_QUOTE");
    assert_eq!(q.signature[..2], [0x00, 0x18], "TPM_ALG_ECDSA");
    assert_eq!(q.pcrs.iter().map(|(i, _)| *i).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    assert_ne!(q.pcrs[7].1, vec![0u8; 32], "PCR 7 was extended");
    // The quoted digest is SHA-256 over the values, in index order; it ends the TPMS_ATTEST.
    let mut h = Sha256::new();
    for (_, v) in &q.pcrs {
        h.update(v);
    }
    assert_eq!(q.attest[q.attest.len() - 32..], h.finalize()[..]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ak.pem"), pem(&ak.spki_der)).unwrap();
    assert!(checkquote(dir.path(), &q.attest, &q.signature, &extra), "a good quote");
    let mut other = extra;
    other[0] ^= 1;
    assert!(!checkquote(dir.path(), &q.attest, &q.signature, &other), "another nonce");
    for at in [10, q.attest.len() / 2, q.attest.len() - 1] {
        let mut bad = q.attest.clone();
        bad[at] ^= 0x40;
        assert!(!checkquote(dir.path(), &bad, &q.signature, &extra), "attest byte {at}");
    }
    let mut bad = q.signature.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(!checkquote(dir.path(), &q.attest, &bad, &extra), "signature byte");

    // A TPM restart (same state) keeps the persistent AK.
    let mut t = t;
    t.restart();
    let (attester, after) = TpmAttester::open(config).unwrap();
    assert!(!after.created);
    assert_eq!(after.name, ak.name);
    let q = attester.quote(&extra).unwrap();
    assert!(checkquote(dir.path(), &q.attest, &q.signature, &extra));
}
