//! A stand-in for the quantum edge gateway: it gets keys from a qkeyd node
//! and takes them only as the real gateway would, through the verifier
//! crate (`qkeyd_attest::gateway::open`) and its own ML-KEM key pair.
//!
//! It makes an ML-KEM-768 key pair, then asks for COUNT keys, each with a
//! fresh 32-byte nonce, over plain HTTP with the bearer token, and opens
//! each answer against the policy (the verifier state is the policy's
//! `state_file`, loaded at start and saved after every accepted key). It
//! prints a JSON summary and exits 0 only if every key was accepted:
//!
//! ```text
//! gateway_standin --url http://ADDR --token-file F --policy FILE [--count N]
//!                 [--length N] [--purpose LABEL] [--print-keys]
//! {"ok":N,"failed":M,"first_error":null|"check: detail","key_ids":[…],
//!  "fingerprints":["<hex SHA3-256 of each key>",…],"elapsed_ms":…}
//! ```
//!
//! `--print-keys` adds `"keys"` (each key in hex), for a test that looks
//! for them where they must not be; a gateway never prints its keys.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{path::PathBuf, process::ExitCode, time::Instant};

use base64::Engine as _;
use qkeyd_attest::gateway::{self, RecipientKey, ml_kem::DecapsulationKey768};
use qkeyd_attest::{Policy, VerifierState};
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Args {
    url: String,
    token_file: PathBuf,
    policy: PathBuf,
    count: usize,
    length: usize,
    purpose: String,
    print_keys: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        token_file: PathBuf::new(),
        policy: PathBuf::new(),
        count: 100,
        length: 32,
        purpose: "gateway-standin".into(),
        print_keys: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--token-file" => a.token_file = value()?.into(),
            "--policy" => a.policy = value()?.into(),
            "--count" => a.count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--length" => a.length = value()?.parse().map_err(|e| format!("--length: {e}"))?,
            "--purpose" => a.purpose = value()?,
            "--print-keys" => a.print_keys = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.url.is_empty() || a.token_file.as_os_str().is_empty() || a.policy.as_os_str().is_empty() {
        return Err("--url, --token-file and --policy are required".into());
    }
    Ok(a)
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| format!("getrandom: {e}"))?;
    Ok(b)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("gateway_standin: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let a = args()?;
    let token = std::fs::read_to_string(&a.token_file)
        .map_err(|e| format!("{}: {e}", a.token_file.display()))?;
    let policy = Policy::load(&a.policy).map_err(|e| e.to_string())?;
    let mut state = VerifierState::load(&policy.state_file).map_err(|e| e.to_string())?;
    let dk = DecapsulationKey768::from_seed(random::<64>()?.into());
    let recipient = RecipientKey::from(&dk);
    let recipient_b64 = B64.encode(recipient.encapsulation_key());
    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("{}/v1/gateway/keys", a.url.trim_end_matches('/'));

    let (mut ok, mut failed, mut first_error) = (0usize, 0usize, None::<String>);
    let (mut ids, mut fingerprints, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for _ in 0..a.count {
        let nonce = random::<32>()?;
        let body = json!({
            "recipient": recipient_b64,
            "nonce": B64.encode(nonce),
            "length": a.length,
            "purpose": a.purpose,
        });
        let mut resp = agent
            .post(&url)
            .header("authorization", format!("Bearer {}", token.trim()))
            .content_type("application/json")
            .send(body.to_string())
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| format!("reading: {e}"))?;
        let outcome = if status == 200 {
            gateway::open(text.as_bytes(), recipient, &nonce, &policy, &mut state, now_unix())
                .map_err(|f| format!("{}: {}", f.check, f.detail))
                .and_then(|k| {
                    if k.purpose == a.purpose && k.key.len() == a.length {
                        Ok(k)
                    } else {
                        Err(format!("the key is for {:?}, {} bytes", k.purpose, k.key.len()))
                    }
                })
        } else {
            Err(format!("HTTP {status}: {text}"))
        };
        match outcome {
            Ok(k) => {
                state.save(&policy.state_file).map_err(|e| e.to_string())?;
                ok += 1;
                ids.push(k.key_id.clone());
                fingerprints.push(gateway::sha3_hex(&k.key));
                if a.print_keys {
                    keys.push(hex_of(&k.key));
                }
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let elapsed = started.elapsed();
    let mut summary = json!({
        "ok": ok,
        "failed": failed,
        "first_error": first_error,
        "key_ids": ids,
        "fingerprints": fingerprints,
        "elapsed_ms": elapsed.as_millis() as u64,
    });
    if a.print_keys {
        summary["keys"] = Value::from(keys);
    }
    println!("{summary}");
    Ok(failed == 0)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
