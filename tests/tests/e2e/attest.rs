//! Evidence about vault keys from a daemon on a software TPM, checked by the
//! verifier crate the gateway embeds and by tpm2-tools.

use std::process::Command;

use base64::Engine as _;
use qkeyd_attest::{Policy, VerifierState, verify};
use qkeyd_e2e::{Daemon, Swtpm};
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn daemon(t: &Swtpm) -> Daemon {
    Daemon::start(&format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n[keys]\nsealer = \"tpm\"\n[keys.tpm]\n\
         tcti = \"{}\"\n[attest]\npcrs = [0, 1, 2, 3, 4, 5, 6, 7]\n",
        t.tcti()
    ))
}

fn attest(d: &Daemon, id: &str, nonce: &[u8]) -> (u16, Value) {
    d.keys("POST", &format!("/v1/keys/{id}/attest"), Some(json!({ "nonce": B64.encode(nonce) })))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The gateway's policy after enrollment: this node's AK, and the PCR values
/// of a first quote.
fn policy(identity: &Value, first: &Value) -> Policy {
    let mut p = Policy {
        trusted_ak_names: vec![hex::decode(identity["tpm"]["ak_name"].as_str().unwrap()).unwrap()],
        ..Policy::default()
    };
    for (i, v) in first["tpm"]["pcrs"].as_object().unwrap() {
        let v: [u8; 32] = hex::decode(v.as_str().unwrap()).unwrap().try_into().unwrap();
        p.pcrs.insert(i.parse().unwrap(), v);
    }
    p
}

#[test]
fn evidence_from_swtpm_verifies_and_fails_by_name_when_the_node_changes() {
    let t = Swtpm::start();
    let d = daemon(&t);
    let (status, key) = d.keys("POST", "/v1/keys", Some(json!({ "alg": "ml-kem-768" })));
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().unwrap().to_owned();

    let identity = d.keys("GET", "/v1/attest/identity", None).1;
    assert_eq!(identity["identity"]["algorithm"], "ml-dsa-87", "{identity}");
    let ak_name = identity["tpm"]["ak_name"].as_str().unwrap().to_owned();
    assert!(ak_name.starts_with("000b") && ak_name.len() == 68, "{ak_name}");

    let nonce = [7u8; 32];
    let (status, ev) = attest(&d, &id, &nonce);
    assert_eq!(status, 200, "{ev}");
    let bytes = serde_json::to_vec(&ev).unwrap();
    let policy = policy(&identity, &ev);
    let mut state = VerifierState::default();
    let ok = verify(&bytes, &nonce, &policy, &mut state, now()).unwrap_or_else(|f| {
        panic!("{}: {}", f.check.name(), f.detail);
    });
    assert_eq!(ok.statement.key.id, id);
    assert_eq!(ok.statement.key.alg, "ml-kem-768");
    assert_eq!(ok.statement.sealer.kind.name(), "tpm");
    assert_eq!(ok.statement.provenance.sources[0].name, "os");

    // The same evidence again: the nonce was used.
    let again = verify(&bytes, &nonce, &policy, &mut state, now()).unwrap_err();
    assert_eq!(again.check.name(), "nonce", "{}", again.detail);
    // Another nonce than the one the evidence answers.
    let other = verify(&bytes, &[8u8; 32], &policy, &mut VerifierState::default(), now());
    assert_eq!(other.unwrap_err().check.name(), "nonce");
    // An AK the gateway never enrolled.
    let mut stranger = policy.clone();
    stranger.trusted_ak_names = vec![vec![0, 0x0b, 1, 2, 3]];
    let f = verify(&bytes, &nonce, &stranger, &mut VerifierState::default(), now()).unwrap_err();
    assert_eq!(f.check.name(), "ak_trusted", "{}", f.detail);

    // tpm2-tools accepts the quote inside the evidence.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, b: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let attest_bin =
        file("attest.bin", &B64.decode(ev["tpm"]["attest"].as_str().unwrap()).unwrap());
    let sig_bin = file("sig.bin", &B64.decode(ev["tpm"]["signature"].as_str().unwrap()).unwrap());
    let ak_pem = file("ak.pem", ev["tpm"]["ak_pem"].as_str().unwrap().as_bytes());
    let statement = B64.decode(ev["statement"].as_str().unwrap()).unwrap();
    let extra = qkeyd_attest::extra_data(&nonce, &statement);
    let out = Command::new("tpm2_checkquote")
        .arg("-u")
        .arg(&ak_pem)
        .arg("-m")
        .arg(&attest_bin)
        .arg("-s")
        .arg(&sig_bin)
        .args(["-g", "sha256", "-q", &hex::encode(extra)])
        .output()
        .expect("tpm2_checkquote (tests/run-all.sh installs tpm2-tools)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Another TPM client extends PCR 7 (a changed boot): fresh evidence now
    // fails the PCR policy the gateway enrolled.
    t.extend_pcr(7);
    let nonce2 = [9u8; 32];
    let (status, ev2) = attest(&d, &id, &nonce2);
    assert_eq!(status, 200, "{ev2}");
    let f = verify(&serde_json::to_vec(&ev2).unwrap(), &nonce2, &policy, &mut state, now())
        .unwrap_err();
    assert_eq!(f.check.name(), "pcr_policy", "{}", f.detail);

    // Bad requests are answered, not crashed on.
    assert_eq!(attest(&d, &id, &[1u8; 8]).0, 400);
    assert_eq!(attest(&d, "00000000000000000000000000000000", &nonce2).0, 404);
    assert_eq!(d.key_call("GET", "/v1/attest/identity", None, None).0, 401);
    // The identity key signs the evidence; it cannot be destroyed under it.
    let ident_id = identity["identity"]["key_id"].as_str().unwrap();
    assert_eq!(d.keys("DELETE", &format!("/v1/keys/{ident_id}"), None).0, 409);
}
