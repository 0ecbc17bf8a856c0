//! `qkeyd qkd probe`: take keys shared with a peer and judge the link by
//! them, as qkeyd judges a link's keys before using them.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use base64::Engine as _;
use serde_json::json;
use zeroize::Zeroizing;

use super::{
    Outcome,
    api::KeyRequest,
    client::Kme,
    link::{LinkHealth, Refusal},
};
use crate::{config::KmeSettings, incident::Chain};

/// What to probe.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    /// The KME's name.
    pub(crate) kme: String,
    /// The peer SAE (default: the KME's first).
    pub(crate) peer: Option<String>,
    /// Keys to take.
    pub(crate) keys: u32,
    /// Bits per key (default: the KME's).
    pub(crate) size: Option<u32>,
}

/// What a probe found.
#[derive(Debug, Default)]
struct Findings {
    keys: u64,
    requests: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
    refused: BTreeMap<&'static str, u64>,
    out_since: Option<(u64, &'static str)>,
    error: Option<String>,
}

/// Run `p` against the KME it names in `kmes`; print the findings.
pub(crate) fn probe(kmes: &[KmeSettings], p: &Probe, as_json: bool) -> anyhow::Result<Outcome> {
    let settings = super::chosen(kmes, Some(&p.kme))?[0];
    let peer = p.peer.clone().unwrap_or_else(|| settings.peers[0].clone());
    if !settings.peers.contains(&peer) {
        anyhow::bail!("[qkd.kme.{}] does not list peer {peer}", settings.name);
    }
    if p.keys == 0 {
        anyhow::bail!("--keys must be at least 1");
    }
    let mut link = LinkHealth::new(settings.claimed_h, settings.min_trust)
        .map_err(|e| anyhow::anyhow!("[qkd.kme.{}] claimed_h: {e}", settings.name))?;
    let mut f = Findings::default();
    let kme = Kme::new(settings).map_err(|e| anyhow::anyhow!("{}", Chain(&e)))?;
    let started = Instant::now();
    if let Err(e) = run(&kme, &peer, p, &mut link, &mut f) {
        f.error = Some(e);
    }
    f.elapsed = started.elapsed();
    report(settings, &peer, &link, &f, as_json)?;
    Ok(if f.error.is_some() {
        Outcome::RequestFailed
    } else if link.out_of_use() {
        Outcome::OutOfUse
    } else {
        Outcome::Done
    })
}

fn run(
    kme: &Kme,
    peer: &str,
    p: &Probe,
    link: &mut LinkHealth,
    f: &mut Findings,
) -> Result<(), String> {
    let status = kme.status(peer).map_err(|e| Chain(&e).to_string())?;
    let per_request = status.max_key_per_request.max(1);
    let bits = p.size.unwrap_or(status.key_size);
    let mut left = p.keys;
    while left > 0 {
        let number = left.min(per_request);
        let request = KeyRequest {
            number: Some(number),
            size: p.size,
            additional_slave_sae_ids: Vec::new(),
            extension_mandatory: None,
            extension_optional: None,
        };
        let t = Instant::now();
        let container = kme.enc_keys(peer, &request).map_err(|e| Chain(&e).to_string())?;
        f.latencies.push(t.elapsed());
        f.requests += 1;
        if container.keys.len() != number as usize {
            return Err(format!(
                "enc_keys for {number} keys answered {} keys",
                container.keys.len()
            ));
        }
        for k in &container.keys {
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(k.key.as_bytes())
                    .map_err(|_| format!("the key of key_ID {} is not base64", k.key_id))?,
            );
            if bytes.len() * 8 != bits as usize {
                return Err(format!(
                    "the key of key_ID {} has {} bits, not {bits}",
                    k.key_id,
                    bytes.len() * 8
                ));
            }
            f.keys += 1;
            if let Err(r) = link.check(&k.key_id, &bytes) {
                *f.refused.entry(r.as_str()).or_default() += 1;
                if link.out_of_use() && f.out_since.is_none() {
                    f.out_since = Some((f.keys, r.as_str()));
                }
                if matches!(r, Refusal::RepeatedKey | Refusal::RepeatedKeyId) {
                    tracing::warn!(key_id = %k.key_id, refusal = r.as_str(), "qkd: key refused");
                }
            }
        }
        left -= number;
    }
    Ok(())
}

/// The `q`-quantile of `d` (nearest rank), in ms.
fn quantile_ms(d: &[Duration], q: f64) -> f64 {
    let mut v: Vec<f64> = d.iter().map(|x| x.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn report(
    s: &KmeSettings,
    peer: &str,
    link: &LinkHealth,
    f: &Findings,
    as_json: bool,
) -> anyhow::Result<()> {
    let usable = link.usable();
    let (rct, apt) = link.test_failures();
    let rate = if f.elapsed.is_zero() { 0.0 } else { f.keys as f64 / f.elapsed.as_secs_f64() };
    let (p50, p99) = (quantile_ms(&f.latencies, 0.5), quantile_ms(&f.latencies, 0.99));
    if as_json {
        let doc = json!({
            "kme": s.name, "sae_id": s.sae_id, "peer": peer,
            "keys": f.keys, "requests": f.requests, "keys_per_second": rate,
            "enc_keys_ms": {"p50": p50, "p99": p99},
            "usable": usable, "refused": f.refused,
            "trust": link.trust(), "min_trust": s.min_trust,
            "out_of_use": link.out_of_use(),
            "out_of_use_since": f.out_since.map(|(k, why)| json!({"key": k, "reason": why})),
            "rct_failures": rct, "apt_failures": apt,
            "error": f.error,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "KME {}, {} -> {peer}: {} keys in {} requests, {rate:.0} keys/s; enc_keys p50 {p50:.2} ms, p99 {p99:.2} ms",
        s.name, s.sae_id, f.keys, f.requests
    );
    let refused: Vec<String> = f.refused.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "usable {usable}, refused: {}",
        if refused.is_empty() { "none".to_owned() } else { refused.join(", ") }
    );
    let state = match f.out_since {
        Some((k, why)) => format!("OUT OF USE since key {k} ({why})"),
        None if link.out_of_use() => "OUT OF USE".to_owned(),
        None => "in use".to_owned(),
    };
    println!(
        "trust {:.3} (min {}), {state}; RCT failures {rct}, APT failures {apt}",
        link.trust(),
        s.min_trust
    );
    if let Some(e) = &f.error {
        println!("stopped: {e}");
    }
    Ok(())
}
