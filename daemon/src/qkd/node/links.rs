//! The node's side of its QKD links: QKD keys drawn (`enc_keys`) or taken
//! (`dec_keys`) from a KME, each through the link's health, and what a
//! failing KME or peer becomes in a 014 answer.

use base64::Engine as _;
use serde_json::json;
use zeroize::Zeroizing;

use super::{Link, QkdKey, QkdNode, ServeError, lock};
use crate::{
    incident::Chain,
    qkd::{
        api::{Key, KeyRequest},
        client::{Kme, KmeError},
        hybrid::QKD_KEY_LEN,
        peer::PeerError,
    },
};

impl QkdNode {
    /// New QKD keys for `slave_at_kme` from `link`, each checked.
    pub(super) fn draw(
        &self,
        link: &Link,
        slave_at_kme: &str,
        number: u32,
    ) -> Result<Vec<QkdKey>, ServeError> {
        self.warm_up(link, slave_at_kme)?;
        let req = KeyRequest {
            number: Some(number),
            size: Some(QKD_KEY_LEN as u32 * 8),
            additional_slave_sae_ids: Vec::new(),
            extension_mandatory: None,
            extension_optional: None,
        };
        let got =
            link.kme.enc_keys(slave_at_kme, &req).map_err(|e| self.kme_error(&link.kme, &e))?;
        if got.keys.len() != number as usize {
            return Err(
                self.bad_kme(&link.kme, format!("{} keys for {number} asked", got.keys.len()))
            );
        }
        self.checked(link, &got.keys)
    }

    /// The QKD keys `key_ids` that `master_at_kme` took, each checked.
    pub(super) fn fetch(
        &self,
        link: &Link,
        master_at_kme: &str,
        key_ids: &[&str],
    ) -> Result<Vec<QkdKey>, ServeError> {
        self.warm_up(link, master_at_kme)?;
        let got =
            link.kme.dec_keys(master_at_kme, key_ids).map_err(|e| self.kme_error(&link.kme, &e))?;
        let same = got.keys.len() == key_ids.len()
            && got.keys.iter().zip(key_ids).all(|(k, id)| k.key_id == *id);
        if !same {
            return Err(self.bad_kme(&link.kme, "keys other than the key_IDs asked for".into()));
        }
        self.checked(link, &got.keys)
    }

    /// A link in its start-up test is given the keys the test needs first
    /// (drawn towards `other`, scored, and never used), so that an SAE's
    /// request is not refused for the start-up alone.
    pub(super) fn warm_up(&self, link: &Link, other: &str) -> Result<(), ServeError> {
        for _ in 0..4 {
            if !lock(&link.health).in_startup() {
                return Ok(());
            }
            let per = (qkeyd_health::STARTUP_SAMPLES / QKD_KEY_LEN) as u32;
            let max = link.kme.status(other).map(|s| s.max_key_per_request.max(1)).unwrap_or(per);
            let req = KeyRequest {
                number: Some(per.min(max)),
                size: Some(QKD_KEY_LEN as u32 * 8),
                additional_slave_sae_ids: Vec::new(),
                extension_mandatory: None,
                extension_optional: None,
            };
            let got = link.kme.enc_keys(other, &req).map_err(|e| self.kme_error(&link.kme, &e))?;
            // Refusals while warming up are counted and logged by `checked`.
            let _ = self.checked(link, &got.keys);
        }
        Ok(())
    }

    /// Run every key through the link's health; all usable or a 503.
    pub(super) fn checked(&self, link: &Link, keys: &[Key]) -> Result<Vec<QkdKey>, ServeError> {
        let name = link.kme.name();
        let mut out = Vec::with_capacity(keys.len());
        let mut refusals = Vec::new();
        let mut health = lock(&link.health);
        for k in keys {
            let bytes =
                Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(&k.key).map_err(
                    |_| self.bad_kme(&link.kme, format!("key {} is not base64", k.key_id)),
                )?);
            let Ok(fixed) = <[u8; QKD_KEY_LEN]>::try_from(&bytes[..]) else {
                return Err(self.bad_kme(
                    &link.kme,
                    format!("key {} is {} bytes, not {QKD_KEY_LEN}", k.key_id, bytes.len()),
                ));
            };
            match health.check(&k.key_id, &fixed) {
                Ok(()) => {
                    self.metrics.link_keys.with_label_values(&[name, "usable"]).inc();
                    out.push((k.key_id.clone(), Zeroizing::new(fixed)));
                }
                Err(r) => {
                    self.metrics.link_keys.with_label_values(&[name, r.as_str()]).inc();
                    refusals.push(json!({ "key_ID": k.key_id, "refusal": r.as_str() }));
                }
            }
        }
        let (trust, out_of_use) = (health.trust(), health.out_of_use());
        drop(health);
        self.metrics.link_trust.with_label_values(&[name]).set(trust);
        self.metrics.link_out_of_use.with_label_values(&[name]).set(i64::from(out_of_use));
        if refusals.is_empty() {
            return Ok(out);
        }
        tracing::warn!(
            kme = name,
            refused = refusals.len(),
            trust,
            out_of_use,
            "QKD link refused keys"
        );
        let message = if out_of_use {
            format!("the QKD link of KME {name} is out of use (trust {trust:.3})")
        } else {
            format!("the QKD link of KME {name} refused keys")
        };
        let mut details = vec![json!({ "kme": name, "trust": trust, "out_of_use": out_of_use })];
        details.extend(refusals);
        Err(ServeError::unavailable(message, details))
    }

    pub(super) fn kme_error(&self, kme: &Kme, e: &KmeError) -> ServeError {
        let kind = match e {
            KmeError::Unreachable { .. } | KmeError::Files { .. } | KmeError::BadUrl { .. } => {
                "unreachable"
            }
            KmeError::Refused { .. } => "refused",
            KmeError::BadAnswer { .. } => "bad_answer",
        };
        self.metrics.kme_errors.with_label_values(&[kme.name(), kind]).inc();
        tracing::warn!(kme = kme.name(), error = %Chain(e), "KME call failed");
        let message = match e {
            KmeError::Refused { .. } => format!("KME {} refused the request", kme.name()),
            KmeError::BadAnswer { .. } => {
                format!("KME {} answered with something else than keys", kme.name())
            }
            _ => format!("KME {} is unreachable", kme.name()),
        };
        let mut detail = json!({ "kme": kme.name(), "reason": Chain(e).to_string() });
        if let KmeError::Refused { status, .. } = e {
            detail["kme_status"] = json!(status);
        }
        ServeError::unavailable(message, vec![detail])
    }

    pub(super) fn bad_kme(&self, kme: &Kme, why: String) -> ServeError {
        self.metrics.kme_errors.with_label_values(&[kme.name(), "bad_answer"]).inc();
        ServeError::unavailable(
            format!("KME {} answered with something else than keys", kme.name()),
            vec![json!({ "kme": kme.name(), "reason": why })],
        )
    }

    pub(super) fn peer_error(&self, e: &PeerError) -> ServeError {
        tracing::warn!(error = %Chain(e), "QKD peer node failed");
        let message = match e {
            PeerError::Untrusted { peer, .. } => {
                format!("peer node {peer}'s transport key is not trusted")
            }
            PeerError::Unreachable { peer, .. } | PeerError::Files { peer, .. } => {
                format!("peer node {peer} is unreachable")
            }
            PeerError::Answer { peer, .. } => format!("peer node {peer} refused the request"),
        };
        ServeError::unavailable(message, vec![json!({ "reason": Chain(e).to_string() })])
    }
}
