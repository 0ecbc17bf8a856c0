//! QKD links: Key Management Entities reached through ETSI GS QKD 014
//! (`[qkd.kme.NAME]`), and the 014 server this node runs for its local SAEs
//! (`[qkd.serve]`). `api` holds 014's messages, `client` one KME's client
//! over mutual TLS, `link` the health of a link's key stream, `probe` the
//! `qkeyd qkd probe` command; `hybrid` how a delivered key is made from a
//! QKD key and an ML-KEM secret, `peer` the node at a link's other end,
//! `node` the server's work and `server` its HTTP routes.

pub(crate) mod api;
pub(crate) mod client;
pub(crate) mod hybrid;
pub(crate) mod link;
pub(crate) mod node;
pub(crate) mod peer;
pub(crate) mod probe;
pub(crate) mod server;

/// How a `qkeyd qkd` command ended.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Outcome {
    /// Every KME answered (and a probed link is in use).
    Done,
    /// A probed link is out of use.
    OutOfUse,
    /// A KME did not answer or refused.
    RequestFailed,
}
use serde_json::{Value, json};

use self::client::Kme;
use crate::{config::KmeSettings, incident::Chain};

/// The KMEs named `only` (all if `None`); an error if there is none.
fn chosen<'a>(kmes: &'a [KmeSettings], only: Option<&str>) -> anyhow::Result<Vec<&'a KmeSettings>> {
    let chosen: Vec<&KmeSettings> =
        kmes.iter().filter(|k| only.is_none_or(|n| n == k.name)).collect();
    match (chosen.is_empty(), only) {
        (false, _) => Ok(chosen),
        (true, Some(n)) => anyhow::bail!("the config has no [qkd.kme.{n}]"),
        (true, None) => anyhow::bail!("the config has no [qkd.kme.NAME] table"),
    }
}

/// Print the status of every link of `kmes` (or of the KME named `only`),
/// as lines or one JSON document. `Err` if `only` names no KME or there is
/// none.
pub(crate) fn status_report(
    kmes: &[KmeSettings],
    only: Option<&str>,
    as_json: bool,
) -> anyhow::Result<Outcome> {
    let chosen = chosen(kmes, only)?;
    let mut all_ok = true;
    let mut links = Vec::new();
    for s in chosen {
        let kme = Kme::new(s);
        for peer in &s.peers {
            let answer = kme
                .as_ref()
                .map_err(|e| Chain(e).to_string())
                .and_then(|k| k.status(peer).map_err(|e| Chain(&e).to_string()))
                .and_then(|st| {
                    if st.master_sae_id != s.sae_id || st.slave_sae_id != *peer {
                        Err(format!(
                            "the KME answered for {} -> {}, not sae_id {} -> {peer}: is cert_file \
                             this SAE's certificate?",
                            st.master_sae_id, st.slave_sae_id, s.sae_id
                        ))
                    } else {
                        Ok(st)
                    }
                });
            all_ok &= answer.is_ok();
            if as_json {
                let mut link =
                    json!({"kme": s.name, "url": s.url, "sae_id": s.sae_id, "peer": peer});
                match &answer {
                    Ok(st) => link["status"] = serde_json::to_value(st).unwrap_or(Value::Null),
                    Err(e) => link["error"] = Value::from(e.as_str()),
                }
                links.push(link);
            } else {
                match &answer {
                    Ok(st) => println!(
                        "{} {}: {} -> {} via {} -> {}: {} of {} keys stored, {} bits ({}-{}), at most {} per request",
                        s.name,
                        s.url,
                        st.master_sae_id,
                        st.slave_sae_id,
                        st.source_kme_id,
                        st.target_kme_id,
                        st.stored_key_count,
                        st.max_key_count,
                        st.key_size,
                        st.min_key_size,
                        st.max_key_size,
                        st.max_key_per_request
                    ),
                    Err(e) => println!("{} {}: {} -> {}: {e}", s.name, s.url, s.sae_id, peer),
                }
            }
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!({ "links": links }))?);
    }
    Ok(if all_ok { Outcome::Done } else { Outcome::RequestFailed })
}
