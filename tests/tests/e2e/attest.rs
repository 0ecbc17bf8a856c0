//! Evidence about vault keys from a daemon on a software TPM, checked by the
//! verifier crate the gateway embeds and by tpm2-tools.

use std::process::Command;

use base64::Engine as _;
use qkeyd_attest::{Policy, VerifierState, verify};
use qkeyd_e2e::{Daemon, Swtpm};
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A daemon on `t` with the TPM sealer and attestation (PCRs 0-7).
pub(crate) fn daemon(t: &Swtpm) -> Daemon {
    Daemon::start(&format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n[keys]\nsealer = \"tpm\"\n[keys.tpm]\n\
         tcti = \"{}\"\n[attest]\npcrs = [0, 1, 2, 3, 4, 5, 6, 7]\n",
        t.tcti()
    ))
}

/// `POST /v1/keys/{id}/attest` for `nonce`.
pub(crate) fn attest(d: &Daemon, id: &str, nonce: &[u8]) -> (u16, Value) {
    d.keys("POST", &format!("/v1/keys/{id}/attest"), Some(json!({ "nonce": B64.encode(nonce) })))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The gateway's policy after enrollment: this node's AK, and the PCR values
/// of a first quote.
pub(crate) fn policy(identity: &Value, first: &Value) -> Policy {
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
    assert_eq!(d.keys("POST", &format!("/v1/keys/{ident_id}/rotate"), None).0, 409);
    // Nor does it sign anything else: a caller cannot make it vouch for a
    // statement of its own.
    let (status, body) = d.keys(
        "POST",
        &format!("/v1/keys/{ident_id}/sign"),
        Some(json!({ "message": B64.encode(b"{}"), "context": B64.encode(b"qkeyd-statement/1") })),
    );
    assert_eq!(status, 409, "{body}");
}

/// A software TPM whose NV holds an EK certificate from a private
/// swtpm-localca (root and intermediate CA made by swtpm_localca); returns
/// the TPM and the folder with `localca/issuercert.pem` and the root.
fn swtpm_with_ek_certificate() -> (Swtpm, tempfile::TempDir) {
    let mut t = Swtpm::start();
    t.stop();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::create_dir_all(w.join("localca")).unwrap();
    std::fs::create_dir_all(w.join("xdg")).unwrap();
    let ca = w.join("localca");
    std::fs::write(
        w.join("localca.conf"),
        format!(
            "statedir = {0}\nsigningkey = {0}/signkey.pem\nissuercert = {0}/issuercert.pem\n\
             certserial = {0}/certserial\n",
            ca.display()
        ),
    )
    .unwrap();
    std::fs::write(
        w.join("localca.options"),
        "--platform-manufacturer qkeyd-e2e\n--platform-version 2.1\n--platform-model swtpm\n",
    )
    .unwrap();
    let localca = String::from_utf8(
        Command::new("sh").args(["-c", "command -v swtpm_localca"]).output().unwrap().stdout,
    )
    .unwrap();
    std::fs::write(
        w.join("swtpm_setup.conf"),
        format!(
            "create_certs_tool = {}\ncreate_certs_tool_config = {}\n\
             create_certs_tool_options = {}\nactive_pcr_banks = sha256\n",
            localca.trim(),
            w.join("localca.conf").display(),
            w.join("localca.options").display()
        ),
    )
    .unwrap();
    let out = Command::new("swtpm_setup")
        .args(["--tpm2", "--overwrite", "--create-ek-cert"])
        .args(["--lock-nvram", "--pcr-banks", "sha256"])
        .arg("--tpm-state")
        .arg(t.dir.path())
        .arg("--config")
        .arg(w.join("swtpm_setup.conf"))
        .arg("--logfile")
        .arg(w.join("setup.log"))
        .env("TMPDIR", w)
        .env("XDG_CONFIG_HOME", w.join("xdg"))
        .output()
        .expect("swtpm_setup (tests/run-all.sh installs swtpm-tools)");
    assert!(
        out.status.success(),
        "swtpm_setup: {}",
        std::fs::read_to_string(w.join("setup.log")).unwrap_or_default()
    );
    t.restart();
    (t, work)
}

/// A daemon on `t` (made by [`swtpm_with_ek_certificate`]) whose evidence
/// carries the EK certificate and its `issuer`.
fn ek_daemon(t: &Swtpm, issuer: &std::path::Path) -> Daemon {
    Daemon::start(&format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n[keys]\nsealer = \"tpm\"\n[keys.tpm]\n\
         tcti = \"{}\"\n[attest]\nek_ca_files = [\"{}\"]\n",
        t.tcti(),
        issuer.display()
    ))
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    CertificateDer::from_pem_file(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_vec()
}

/// Enrollment as a registrar does it: the EK certificate chain checked
/// against the EK CA, a MakeCredential challenge for the AK's Name made in
/// software, opened by the node's TPM (TPM2_ActivateCredential), and the
/// secret compared. A challenge for another AK, or a changed one, does not
/// open; a chain from another CA is refused before any challenge.
#[test]
fn enrollment_binds_the_ak_to_the_ek_certificate() {
    use qkeyd_attest::enroll;
    let (t, ca) = swtpm_with_ek_certificate();
    let issuer = ca.path().join("localca/issuercert.pem");
    let d = ek_daemon(&t, &issuer);
    let identity = d.keys("GET", "/v1/attest/identity", None).1;
    let chain: Vec<Vec<u8>> = identity["tpm"]["ek_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| B64.decode(c.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(chain.len(), 2, "EK certificate from NV, then the configured issuer");
    let root = pem_der(&ca.path().join("localca/swtpm-localca-rootca-cert.pem"));
    let ek = enroll::ek_public(&chain, std::slice::from_ref(&root)).unwrap();
    // Another CA's root does not lead anywhere.
    assert!(enroll::ek_public(&chain, &[chain[1].clone()]).is_ok(), "the issuer as root");
    assert!(
        enroll::ek_public(&chain[..1], std::slice::from_ref(&root)).is_err(),
        "no intermediate"
    );

    let ak_name = hex::decode(identity["tpm"]["ak_name"].as_str().unwrap()).unwrap();
    let activate = |c: &enroll::Challenge| {
        d.keys(
            "POST",
            "/v1/attest/activate",
            Some(json!({
                "credential_blob": B64.encode(&c.credential_blob),
                "encrypted_secret": B64.encode(&c.encrypted_secret),
            })),
        )
    };
    let (challenge, secret) = enroll::new_challenge(&ek, &ak_name).unwrap();
    let (status, answer) = activate(&challenge);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(B64.decode(answer["secret"].as_str().unwrap()).unwrap(), secret[..]);

    // For another AK name the TPM refuses to open it.
    let mut other = ak_name.clone();
    other[5] ^= 1;
    let (wrong, _) = enroll::new_challenge(&ek, &other).unwrap();
    let (status, body) = activate(&wrong);
    assert!(status >= 400, "{status} {body}");
    // A changed blob neither.
    let mut bent = challenge.clone();
    let last = bent.credential_blob.len() - 1;
    bent.credential_blob[last] ^= 1;
    let (status, body) = activate(&bent);
    assert!(status >= 400, "{status} {body}");
    // The node still answers a good one afterwards.
    let (again, secret) = enroll::new_challenge(&ek, &ak_name).unwrap();
    let (status, answer) = activate(&again);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(B64.decode(answer["secret"].as_str().unwrap()).unwrap(), secret[..]);
    // A policy that also names the EK CA checks the chain inside every
    // document: the node's passes, a changed or missing one fails by name.
    let (status, key) = d.keys("POST", "/v1/keys", Some(json!({ "alg": "ml-kem-1024" })));
    assert_eq!(status, 201, "{key}");
    let nonce = [5u8; 32];
    let (status, ev) = attest(&d, key["id"].as_str().unwrap(), &nonce);
    assert_eq!(status, 200, "{ev}");
    let ek_sha256: [u8; 32] = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&chain[0]).into()
    };
    let policy = Policy {
        trusted_ak_names: vec![ak_name.clone()],
        ek_roots: vec![root.clone()],
        enrolled_eks: [(ak_name.clone(), ek_sha256)].into(),
        ..Policy::default()
    };
    let check = |ev: &Value| {
        verify(
            &serde_json::to_vec(ev).unwrap(),
            &nonce,
            &policy,
            &mut VerifierState::default(),
            now(),
        )
        .map(|_| ())
        .map_err(|f| f.check.name())
    };
    assert_eq!(check(&ev), Ok(()));
    let mut bent = ev.clone();
    let mut der = chain[0].clone();
    let at = der.len() / 2;
    der[at] ^= 1;
    bent["tpm"]["ek_chain"][0] = json!(B64.encode(&der));
    assert_eq!(check(&bent), Err("ek_chain"));
    let mut none = ev.clone();
    none["tpm"]["ek_chain"] = json!([]);
    assert_eq!(check(&none), Err("ek_chain"));
    // A CA certificate in the EK's place (it leads to the roots at once) is not the enrolled EK.
    let mut ca_only = ev.clone();
    ca_only["tpm"]["ek_chain"] = json!([B64.encode(&root)]);
    assert_eq!(check(&ca_only), Err("ek_chain"));
    // The intermediate as the anchor serves as well as the root ...
    let issuer_anchor = Policy { ek_roots: vec![chain[1].clone()], ..policy.clone() };
    let mut only_ek = ev.clone();
    only_ek["tpm"]["ek_chain"] = json!([B64.encode(&chain[0])]);
    let f = verify(
        &serde_json::to_vec(&only_ek).unwrap(),
        &nonce,
        &issuer_anchor,
        &mut VerifierState::default(),
        now(),
    );
    assert!(f.is_ok(), "the issuer as the anchor still leads there");
    // ... and a policy that no longer names the node's EK CA refuses it.
    let gone = Policy { ek_roots: vec![pem_der_of_other()], ..policy.clone() };
    let f = verify(
        &serde_json::to_vec(&ev).unwrap(),
        &nonce,
        &gone,
        &mut VerifierState::default(),
        now(),
    );
    assert_eq!(f.map(|_| ()).map_err(|f| f.check.name()), Err("ek_chain"));

    // Enrollment is an operator's act: the gateway right is not enough.
    assert_eq!(d.key_call("POST", "/v1/attest/activate", Some(json!({})), None).0, 401);
}

/// The same enrollment from a shell: `qkeyd attest enroll` and `activate` on
/// the node, `challenge` and `admit` on the registrar's side, then `qkeyd
/// verify` accepts the node's evidence under the policy admit wrote, and a
/// forged answer admits nothing.
#[test]
fn the_attest_cli_enrolls_a_node_that_verify_then_accepts() {
    let (t, ca) = swtpm_with_ek_certificate();
    let issuer = ca.path().join("localca/issuercert.pem");
    let root = ca.path().join("localca/swtpm-localca-rootca-cert.pem");
    let d = ek_daemon(&t, &issuer);
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let url = format!("http://{}", d.addr);
    let token = d.state.join("api-token");
    let qkeyd = |args: &[&str]| {
        let out = Command::new(qkeyd_e2e::qkeyd_bin())
            .args(args)
            .args(["--url", &url, "--token-file", token.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let (code, _, err) = qkeyd(&["attest", "enroll", "--out", &s(&p("request.json"))]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = qkeyd(&[
        "attest",
        "challenge",
        "--request",
        &s(&p("request.json")),
        "--ek-root",
        &s(&root),
        "--out",
        &s(&p("challenge.json")),
        "--pending",
        &s(&p("pending.json")),
    ]);
    assert_eq!(code, Some(0), "{err}");
    // A challenge checked against another CA is refused before it is made.
    let (code, _, err) = qkeyd(&[
        "attest",
        "challenge",
        "--request",
        &s(&p("request.json")),
        "--ek-root",
        &s(&t_cert(&dir)),
        "--pending",
        &s(&p("pending2.json")),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("EK certificate chain"), "{err}");

    let policy = p("policy.toml");
    std::fs::write(&policy, format!("state_file = \"{}\"\n", s(&p("state.json")))).unwrap();
    // A made-up answer admits nothing.
    std::fs::write(p("forged.json"), format!("{{\"secret\": \"{}\"}}", B64.encode([0u8; 32])))
        .unwrap();
    let (code, _, err) = qkeyd(&[
        "attest",
        "admit",
        "--pending",
        &s(&p("pending.json")),
        "--answer",
        &s(&p("forged.json")),
        "--policy",
        &s(&policy),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(!std::fs::read_to_string(&policy).unwrap().contains("trusted_ak_names"));

    let (code, _, err) = qkeyd(&[
        "attest",
        "activate",
        "--challenge",
        &s(&p("challenge.json")),
        "--out",
        &s(&p("answer.json")),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = qkeyd(&[
        "attest",
        "admit",
        "--pending",
        &s(&p("pending.json")),
        "--answer",
        &s(&p("answer.json")),
        "--policy",
        &s(&policy),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let ak_name = read(&p("request.json"))["tpm"]["ak_name"].as_str().unwrap().to_owned();
    assert!(out.contains(&ak_name), "{out}");
    let written = std::fs::read_to_string(&policy).unwrap();
    assert!(written.contains(&ak_name), "{written}");
    assert!(written.contains("[enrolled_eks]"), "the EK it was enrolled with: {written}");

    // The admitted policy accepts the node's evidence.
    let (status, key) = d.keys("POST", "/v1/keys", Some(json!({ "alg": "ml-dsa-65" })));
    assert_eq!(status, 201, "{key}");
    let nonce = [3u8; 24];
    let (status, ev) = attest(&d, key["id"].as_str().unwrap(), &nonce);
    assert_eq!(status, 200, "{ev}");
    std::fs::write(p("evidence.json"), serde_json::to_vec(&ev).unwrap()).unwrap();
    let out = Command::new(qkeyd_e2e::qkeyd_bin())
        .args([
            "verify",
            &s(&p("evidence.json")),
            "--nonce",
            &B64.encode(nonce),
            "--policy",
            &s(&policy),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// The DER of a self-signed certificate of no EK CA.
fn pem_der_of_other() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    pem_der(&t_cert(&dir))
}

fn read(p: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// A self-signed certificate of no EK CA, as a wrong root.
fn t_cert(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, "not an EK CA");
    let cert = params.self_signed(&key).unwrap();
    let path = dir.path().join("other-root.pem");
    std::fs::write(&path, cert.pem()).unwrap();
    path
}

/// A node without a TPM, keys in SoftHSM2: the evidence names the token
/// (label and serial) and carries no quote; the default policy refuses it
/// (`tpm_missing`), one that accepts HSM keys without a TPM takes it.
#[test]
fn evidence_without_a_tpm_names_the_hsm_token_and_the_default_policy_refuses_it() {
    use qkeyd_e2e::{HSM_LABEL, HSM_PIN, SoftHsm};
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{HSM_PIN}\n")).unwrap();
    let state = dir.path().join("state");
    let config = format!(
        "[[source]]\nname = \"os\"\nkind = \"os\"\n{}[attest]\ntpm = false\n",
        hsm.keys_config(&pin_file)
    );
    let d = Daemon::start_with(dir, &config, &state, &[hsm.env()]);
    let (status, key) = d.keys("POST", "/v1/keys", Some(json!({ "alg": "ml-dsa-44" })));
    assert_eq!(status, 201, "{key}");
    let identity = d.keys("GET", "/v1/attest/identity", None).1;
    assert_eq!(identity["tpm"], Value::Null, "{identity}");
    let nonce = [4u8; 16];
    let (status, ev) = attest(&d, key["id"].as_str().unwrap(), &nonce);
    assert_eq!(status, 200, "{ev}");
    assert_eq!(ev["tpm"], Value::Null);
    let bytes = serde_json::to_vec(&ev).unwrap();
    let f = verify(&bytes, &nonce, &Policy::default(), &mut VerifierState::default(), now())
        .unwrap_err();
    assert_eq!(f.check.name(), "tpm_missing", "{}", f.detail);
    let lenient = Policy { require_tpm: false, ..Policy::default() };
    let ok = verify(&bytes, &nonce, &lenient, &mut VerifierState::default(), now())
        .unwrap_or_else(|f| panic!("{}: {}", f.check.name(), f.detail));
    let sealer = &ok.statement.sealer;
    assert_eq!(sealer.kind.name(), "hsm");
    assert_eq!(sealer.token_label.as_deref(), Some(HSM_LABEL));
    let serial = sealer.token_serial.as_deref().unwrap_or_default();
    assert!(!serial.is_empty(), "the token's serial is named");
    assert!(!sealer.tpm);
}
