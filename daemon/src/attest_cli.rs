//! `qkeyd attest …`: enrollment from a shell. On the node, `enroll` fetches
//! what a registrar needs and `activate` opens its challenge with the TPM;
//! on the registrar's machine, `challenge` checks the EK chain and makes the
//! MakeCredential challenge, and `admit` compares the node's answer and adds
//! the AK's Name to the verifier policy.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::cli::{AttestAction, Remote};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Write `body` to `path` (0600, created new unless it is stdout `-`).
fn write_out(path: Option<&Path>, body: &[u8]) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    match path {
        None => {
            std::io::stdout().write_all(body)?;
            println!();
            Ok(())
        }
        Some(p) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
                .with_context(|| format!("cannot create {} (it must not exist)", p.display()))?;
            f.write_all(body)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing {}", p.display()))
        }
    }
}

fn b64_field(v: &Value, field: &str, file: &Path) -> anyhow::Result<Vec<u8>> {
    let s = v[field].as_str().with_context(|| format!("{}: no {field}", file.display()))?;
    B64.decode(s).with_context(|| format!("{}: {field} is not base64", file.display()))
}

/// Certificates (PEM, several per file, or DER) from files.
fn certificates(files: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        if bytes.starts_with(b"-----BEGIN") {
            for c in CertificateDer::pem_slice_iter(&bytes) {
                out.push(
                    c.with_context(|| format!("{}: not PEM certificates", f.display()))?.to_vec(),
                );
            }
        } else {
            out.push(bytes);
        }
    }
    Ok(out)
}

/// Run one `qkeyd attest` action.
pub(crate) fn run(remote: &Remote, action: AttestAction) -> anyhow::Result<()> {
    match action {
        AttestAction::Enroll { out } => {
            let call = crate::keys_cli::caller(remote)?;
            let identity = call("GET", "/v1/attest/identity", None)?;
            if identity["tpm"].is_null() {
                bail!(
                    "this node has no TPM attestation key ([attest] without a TPM): nothing to enroll"
                );
            }
            write_out(out.as_deref(), serde_json::to_string_pretty(&identity)?.as_bytes())
        }
        AttestAction::Challenge { request, ek_root, out, pending } => {
            use qkeyd_attest::enroll;
            let req = read_json(&request)?;
            let chain = req["tpm"]["ek_chain"]
                .as_array()
                .with_context(|| format!("{}: no tpm.ek_chain", request.display()))?
                .iter()
                .map(|c| c.as_str().and_then(|s| B64.decode(s).ok()))
                .collect::<Option<Vec<_>>>()
                .with_context(|| format!("{}: tpm.ek_chain is not base64", request.display()))?;
            let roots = certificates(&ek_root)?;
            if roots.is_empty() {
                bail!("give the EK CA certificates to trust with --ek-root");
            }
            let ek =
                enroll::ek_public(&chain, &roots).context("the node's EK certificate chain")?;
            let ak_name = hex::decode(req["tpm"]["ak_name"].as_str().unwrap_or_default())
                .with_context(|| format!("{}: tpm.ak_name is not hex", request.display()))?;
            let (challenge, secret) = enroll::new_challenge(&ek, &ak_name)?;
            let ek_sha256 = {
                use sha2::Digest as _;
                hex::encode(sha2::Sha256::digest(&chain[0]))
            };
            let pending_body = json!({
                "ak_name": hex::encode(&ak_name),
                "ek_sha256": ek_sha256,
                "secret_sha256": hex::encode(enroll::secret_digest(&secret[..])),
                "identity_fingerprint": req["identity"]["fingerprint"],
            });
            write_out(Some(&pending), serde_json::to_string_pretty(&pending_body)?.as_bytes())?;
            let challenge_body = json!({
                "credential_blob": B64.encode(&challenge.credential_blob),
                "encrypted_secret": B64.encode(&challenge.encrypted_secret),
            });
            write_out(out.as_deref(), serde_json::to_string_pretty(&challenge_body)?.as_bytes())
        }
        AttestAction::Activate { challenge, out } => {
            let c = read_json(&challenge)?;
            for field in ["credential_blob", "encrypted_secret"] {
                b64_field(&c, field, &challenge)?;
            }
            let call = crate::keys_cli::caller(remote)?;
            let answer = call(
                "POST",
                "/v1/attest/activate",
                Some(json!({
                    "credential_blob": c["credential_blob"],
                    "encrypted_secret": c["encrypted_secret"],
                })),
            )?;
            write_out(out.as_deref(), serde_json::to_string_pretty(&answer)?.as_bytes())
        }
        AttestAction::Admit { pending, answer, policy } => {
            use subtle::ConstantTimeEq as _;
            let p = read_json(&pending)?;
            let a = read_json(&answer)?;
            let secret = zeroize::Zeroizing::new(b64_field(&a, "secret", &answer)?);
            let want = hex::decode(p["secret_sha256"].as_str().unwrap_or_default())
                .with_context(|| format!("{}: secret_sha256 is not hex", pending.display()))?;
            let got = qkeyd_attest::enroll::secret_digest(&secret);
            if !bool::from(got.ct_eq(&want[..])) {
                bail!(
                    "the answer does not match the challenge: this AK did not prove it shares a TPM with the EK"
                );
            }
            let name = p["ak_name"].as_str().context("the pending file has no ak_name")?.to_owned();
            let ek =
                p["ek_sha256"].as_str().context("the pending file has no ek_sha256")?.to_owned();
            admit(&policy, &name, &ek)?;
            println!("admitted AK {name} into {}", policy.display());
            Ok(())
        }
    }
}

/// Add `ak_name` to the policy file's `trusted_ak_names`, and the EK it was
/// enrolled with to `enrolled_eks` (the file is made if missing).
fn admit(policy: &Path, ak_name: &str, ek_sha256: &str) -> anyhow::Result<()> {
    let mut table: toml::Table = match std::fs::read_to_string(policy) {
        Ok(text) => text.parse().with_context(|| format!("{} is not TOML", policy.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", policy.display())),
    };
    let names = table
        .entry("trusted_ak_names")
        .or_insert_with(|| toml::Value::Array(Vec::new()))
        .as_array_mut()
        .with_context(|| format!("{}: trusted_ak_names is not a list", policy.display()))?;
    if !names.iter().any(|n| n.as_str() == Some(ak_name)) {
        names.push(toml::Value::String(ak_name.to_owned()));
    }
    table
        .entry("enrolled_eks")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .with_context(|| format!("{}: enrolled_eks is not a table", policy.display()))?
        .insert(ak_name.to_owned(), toml::Value::String(ek_sha256.to_owned()));
    let text = toml::to_string(&table)?;
    // The policy must still load as the verifier reads it.
    qkeyd_attest::Policy::from_toml(&text).context("the admitted policy does not load")?;
    let tmp = policy.with_extension("tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, policy).with_context(|| format!("replacing {}", policy.display()))
}
