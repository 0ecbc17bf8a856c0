//! `qkeyd keys …` and `qkeyd kms …`: a small client of the daemon's `/v1/keys`
//! and `/v1/kms` API, so the vault and the KMS plugin's KEKs are managed the
//! same way (authorised, audited) from a shell as from a program.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use base64::Engine as _;
use qkeyd_pqc::Algorithm;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::{
    cli::{CiphertextArg, ClusterAction, KeysAction, KmsAction, Remote, SignatureArg},
    tls::client,
};

/// What `run` decided: print and exit 0, or (verify) report an invalid signature.
pub(crate) enum Outcome {
    /// Success; the text was printed.
    Done,
    /// `verify` found the signature invalid.
    Invalid,
}

fn read_input(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).context("reading standard input")?;
        return Ok(b);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A binary value given as base64 text or as a file: a file holding base64
/// (what this CLI prints) is decoded, any other file is taken as raw bytes.
/// Returned as base64, for the REST API.
fn text_or_file(what: &str, text: Option<String>, file: Option<PathBuf>) -> anyhow::Result<String> {
    use base64::engine::general_purpose::STANDARD;
    if let Some(t) = text {
        let t = t.trim();
        STANDARD
            .decode(t)
            .with_context(|| format!("--{what} is not base64 (or use --{what}-file)"))?;
        return Ok(t.to_owned());
    }
    let Some(path) = file else { bail!("give --{what} or --{what}-file") };
    let bytes = read_input(&path)?;
    if bytes.is_empty() {
        bail!("{} is empty: no {what} in it", path.display());
    }
    let text = std::str::from_utf8(&bytes).ok().map(str::trim);
    Ok(match text.filter(|t| STANDARD.decode(t).is_ok()) {
        Some(t) => t.to_owned(),
        None => b64(&bytes),
    })
}

fn stdin_once(a: &Path, b: Option<&Path>) -> anyhow::Result<()> {
    if a.as_os_str() == "-" && b.is_some_and(|b| b.as_os_str() == "-") {
        bail!("only one input can be standard input (-)");
    }
    Ok(())
}

/// A call to the daemon's REST API with the bearer token: the JSON answer, or
/// an error carrying the daemon's message. With a client certificate the
/// token is optional: sent when its file can be read.
pub(crate) fn caller(
    remote: &Remote,
) -> anyhow::Result<impl Fn(&str, &str, Option<Value>) -> anyhow::Result<Value>> {
    let opts = client::Options {
        ca_file: remote.ca_file.as_deref(),
        client_cert: remote.client_cert.as_deref(),
        client_key: remote.client_key.as_deref(),
    };
    let agent = client::agent(&remote.url, &opts)?;
    let token_file = remote
        .token_file
        .clone()
        .unwrap_or_else(|| crate::serve::default_state_dir().join("api-token"));
    let token = match std::fs::read_to_string(&token_file) {
        Ok(t) => {
            let t = Zeroizing::new(t);
            Some(Zeroizing::new(t.trim().to_owned()))
        }
        Err(_) if remote.client_cert.is_some() => None,
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot read the API token {} (see --token-file)",
                token_file.display()
            )));
        }
    };
    let url = remote.url.clone();
    Ok(move |method: &str, path: &str, body: Option<Value>| -> anyhow::Result<Value> {
        let uri = format!("{}{path}", url.trim_end_matches('/'));
        let mut req = ureq::http::Request::builder().method(method).uri(&uri);
        if let Some(token) = &token {
            req = req.header("authorization", format!("Bearer {}", token.as_str()));
        }
        let req = req
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default())
            .context("building the request")?;
        let mut resp = agent.run(req).map_err(|e| {
            let hint = client::hint(&e, &url);
            anyhow::Error::new(e).context(format!("cannot reach qkeyd at {url}{hint}"))
        })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            let msg = v["error"]["message"].as_str().map_or_else(|| v.to_string(), str::to_owned);
            bail!("{method} {path}: {status}: {msg}");
        }
        Ok(v)
    })
}

/// Run one `qkeyd kms` action against the daemon at `remote`.
pub(crate) fn run_kms(remote: &Remote, action: KmsAction) -> anyhow::Result<()> {
    let call = caller(remote)?;
    match action {
        KmsAction::List => {
            let v = call("GET", "/v1/kms", None)?;
            for k in v["keks"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<12} {:<6} created {}",
                    k["key_id"].as_str().unwrap_or(""),
                    k["state"].as_str().unwrap_or(""),
                    k["location"].as_str().unwrap_or(""),
                    k["created_unix"]
                );
            }
            for r in v["retired"].as_array().into_iter().flatten() {
                println!(
                    "{}  retired      at {}",
                    r["key_id"].as_str().unwrap_or(""),
                    r["retired_unix"]
                );
            }
        }
        KmsAction::Rotate => {
            let v = call("POST", "/v1/kms/rotate", None)?;
            println!("{}", v["key_id"].as_str().unwrap_or_default());
        }
        KmsAction::Retire { key_id, force } => {
            if key_id.is_empty()
                || !key_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                bail!("{key_id:?} is not a key id (qkeyd-kek-… as `qkeyd kms list` shows)");
            }
            call("DELETE", &format!("/v1/kms/keks/{key_id}?force={force}"), None)?;
            println!("retired {key_id}");
        }
        KmsAction::Cluster { action: ClusterAction::Status { json } } => {
            let v = call("GET", "/v1/kms/cluster", None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print_cluster(&v);
            }
        }
        KmsAction::Cluster { action: ClusterAction::Remove { node } } => {
            if !crate::config::valid_node_name(&node) {
                bail!("{node:?} is not a node name (1-63 of [A-Za-z0-9._-])");
            }
            let v = call("DELETE", &format!("/v1/kms/cluster/nodes/{node}"), None)?;
            println!(
                "removed {node}: {} envelope(s) deleted; it will not be admitted again",
                v["envelopes_deleted"]
            );
            let held: Vec<&str> =
                v["held"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if !held.is_empty() {
                println!("it held: {}", held.join(" "));
            }
            println!(
                "rotate now, so that new data is under a KEK {node} never had: qkeyd kms rotate"
            );
        }
    }
    Ok(())
}

/// `qkeyd kms cluster status` as text: the cluster's write key, then one
/// line per node.
fn print_cluster(v: &Value) {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    println!("node {}  prefix {}  etcd {}", text(&v["node"]), text(&v["prefix"]), text(&v["etcd"]));
    println!(
        "write key {} (epoch {}); this node writes under {}",
        text(&v["write_key_id"]),
        v["epoch"].as_u64().map_or("-".into(), |e| e.to_string()),
        text(&v["local_write_key_id"])
    );
    for n in v["nodes"].as_array().into_iter().flatten() {
        let holds: Vec<&str> =
            n["holds"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        println!(
            "{:<20} {:<9} admitted {} by {}  holds [{}]{}",
            text(&n["node"]),
            text(&n["state"]),
            n["admitted_unix"],
            text(&n["admitted_by"]),
            holds.join(" "),
            n["refusal"].as_str().map(|r| format!("  refused: {r}")).unwrap_or_default()
        );
    }
}

/// Run one action against the daemon at `remote`.
pub(crate) fn run(remote: &Remote, action: KeysAction) -> anyhow::Result<Outcome> {
    let call = caller(remote)?;
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    match action {
        KeysAction::Create { alg, label } => {
            println!(
                "{}",
                pretty(&call(
                    "POST",
                    "/v1/keys",
                    Some(json!({ "alg": Algorithm::from(alg).name(), "label": label }))
                )?)
            );
        }
        KeysAction::List => {
            let v = call("GET", "/v1/keys", None)?;
            for k in v["keys"].as_array().into_iter().flatten() {
                let fp = k["versions"]
                    .as_array()
                    .and_then(|vs| vs.last())
                    .and_then(|v| v["fingerprint"].as_str())
                    .unwrap_or("");
                println!(
                    "{}  {:<12} v{:<3} {}  {}",
                    k["id"].as_str().unwrap_or(""),
                    k["alg"].as_str().unwrap_or(""),
                    k["current_version"],
                    &fp[..fp.len().min(16)],
                    k["label"].as_str().unwrap_or("")
                );
            }
        }
        KeysAction::Show { id } => {
            println!("{}", pretty(&call("GET", &format!("/v1/keys/{id}"), None)?))
        }
        KeysAction::Rotate { id } => {
            println!("{}", pretty(&call("POST", &format!("/v1/keys/{id}/rotate"), None)?));
        }
        KeysAction::Destroy { id } => {
            call("DELETE", &format!("/v1/keys/{id}"), None)?;
            println!("destroyed {id}");
        }
        KeysAction::Sign { id, message, context, version } => {
            let body = json!({ "message": b64(&read_input(&message)?), "context": b64(context.as_bytes()), "version": version });
            let v = call("POST", &format!("/v1/keys/{id}/sign"), Some(body))?;
            println!("{}", v["signature"].as_str().unwrap_or_default());
            eprintln!("signed with version {} of {id}", v["version"]);
        }
        KeysAction::Verify {
            id,
            message,
            signature: SignatureArg { signature, signature_file },
            context,
            version,
        } => {
            stdin_once(&message, signature_file.as_deref())?;
            let body = json!({
                "message": b64(&read_input(&message)?),
                "context": b64(context.as_bytes()),
                "signature": text_or_file("signature", signature, signature_file)?,
                "version": version,
            });
            let v = call("POST", &format!("/v1/keys/{id}/verify"), Some(body))?;
            if v["valid"].as_bool() != Some(true) {
                println!("invalid");
                return Ok(Outcome::Invalid);
            }
            println!("valid");
            eprintln!("verified by version {} of {id}", v["version"]);
        }
        KeysAction::Encapsulate { id, version, print_secret } => {
            let v = call(
                "POST",
                &format!("/v1/keys/{id}/encapsulate"),
                Some(json!({ "version": version })),
            )?;
            println!("{}", v["ciphertext"].as_str().unwrap_or_default());
            if print_secret {
                println!("{}", v["shared_secret"].as_str().unwrap_or_default());
            }
            let n = &v["version"];
            eprintln!("encapsulated to version {n} of {id}: decapsulate with --version {n}");
        }
        KeysAction::Decapsulate {
            id,
            ciphertext: CiphertextArg { ciphertext, ciphertext_file },
            version,
        } => {
            let body = json!({
                "ciphertext": text_or_file("ciphertext", ciphertext, ciphertext_file)?,
                "version": version,
            });
            let v = call("POST", &format!("/v1/keys/{id}/decapsulate"), Some(body))?;
            println!("{}", v["shared_secret"].as_str().unwrap_or_default());
            eprintln!("decapsulated with version {} of {id}", v["version"]);
        }
        KeysAction::Derive {
            id,
            ciphertext: CiphertextArg { ciphertext, ciphertext_file },
            length,
            salt,
            info,
            version,
        } => {
            let body = json!({
                "ciphertext": text_or_file("ciphertext", ciphertext, ciphertext_file)?,
                "salt": b64(salt.as_bytes()),
                "info": b64(info.as_bytes()),
                "length": length,
                "version": version,
            });
            let v = call("POST", &format!("/v1/keys/{id}/derive"), Some(body))?;
            println!("{}", v["key"].as_str().unwrap_or_default());
            eprintln!("derived with version {} of {id}", v["version"]);
        }
    }
    Ok(Outcome::Done)
}
