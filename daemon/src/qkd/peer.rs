//! The qkeyd node at the other end of a QKD link, as this node reaches it:
//! its transport key (taken only from fresh evidence that passes the
//! `[qkd.peer.NAME] policy`) and the ciphertexts of keys its SAEs asked for.
//! Blocking (ureq over rustls: the hybrid group first, this node's
//! `[qkd.serve]` certificate as the client certificate).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    config::{PeerSettings, ServeSettings},
    tls::client::{self, ClientTlsError},
};

/// The ML-KEM-1024 encapsulation key's length.
const TRANSPORT_KEY_LEN: usize = 1568;

/// A verified transport key is used for at most this long, and at most half
/// the policy's `max_age_secs`, before fresh evidence is asked for.
const TRANSPORT_KEY_TTL: Duration = Duration::from_secs(300);

/// What a node holds for its peer about one delivered key: everything the
/// peer needs, with its own transport key, to make the same key. The keys
/// of one `enc_keys` share one ML-KEM ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// The delivered key's id.
    pub(crate) key_id: String,
    /// The QKD key's id at the KMEs.
    pub(crate) qkd_key_id: String,
    /// The SAE that asked for it.
    pub(crate) master: String,
    /// The SAE it is for.
    pub(crate) slave: String,
    /// Bits.
    pub(crate) size: u32,
    /// The combiner's name.
    pub(crate) combiner: String,
    /// The ML-KEM-1024 ciphertext to the peer's transport key (empty
    /// without ML-KEM).
    pub(crate) ciphertext: Arc<Vec<u8>>,
    /// The key confirmation of the ML-KEM secret
    /// ([`hybrid::confirmation`](super::hybrid::confirmation)); `None`
    /// without ML-KEM.
    pub(crate) confirm: Option<[u8; 16]>,
}

/// A [`Record`] on the wire: its ciphertext is an index into the answer's
/// `ciphertexts`, so a ciphertext shared by many keys crosses once.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Held {
    #[serde(rename = "key_ID")]
    key_id: String,
    #[serde(rename = "qkd_key_ID")]
    qkd_key_id: String,
    #[serde(rename = "master_SAE_ID")]
    master: String,
    #[serde(rename = "slave_SAE_ID")]
    slave: String,
    size: u32,
    combiner: String,
    ciphertext: usize,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    confirm: String,
}

/// The body of a held-record fetch.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldRequest {
    /// Delivered key ids.
    #[serde(rename = "key_IDs")]
    pub(crate) key_ids: Vec<String>,
}

/// The answer to a held-record fetch: the records found, their
/// ciphertexts, and the ids not held (never issued, expired, or fetched
/// already).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldAnswer {
    held: Vec<Held>,
    ciphertexts: Vec<Ciphertext>,
    /// The ids not held.
    pub(crate) missing: Vec<String>,
}

/// One ciphertext, base64 on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
struct Ciphertext(#[serde(with = "qkeyd_attest::evidence::b64")] Vec<u8>);

impl HeldAnswer {
    /// Add `r`, its ciphertext once however many records share it.
    pub(crate) fn push(&mut self, r: Record, shared: &mut Vec<Arc<Vec<u8>>>) {
        let index = match shared.iter().position(|c| Arc::ptr_eq(c, &r.ciphertext)) {
            Some(i) => i,
            None => {
                shared.push(r.ciphertext.clone());
                self.ciphertexts.push(Ciphertext(r.ciphertext.to_vec()));
                shared.len() - 1
            }
        };
        self.held.push(Held {
            key_id: r.key_id,
            qkd_key_id: r.qkd_key_id,
            master: r.master,
            slave: r.slave,
            size: r.size,
            combiner: r.combiner,
            ciphertext: index,
            confirm: r.confirm.map(hex::encode).unwrap_or_default(),
        });
    }

    /// The records, each with its ciphertext; `None` if an index is out of
    /// range or a confirmation is not 16 bytes of hex.
    pub(crate) fn records(self) -> Option<Vec<Record>> {
        let cts: Vec<Arc<Vec<u8>>> = self.ciphertexts.into_iter().map(|c| Arc::new(c.0)).collect();
        self.held
            .into_iter()
            .map(|h| {
                let confirm = match h.confirm.as_str() {
                    "" => None,
                    c => Some(<[u8; 16]>::try_from(hex::decode(c).ok()?).ok()?),
                };
                Some(Record {
                    ciphertext: cts.get(h.ciphertext)?.clone(),
                    confirm,
                    key_id: h.key_id,
                    qkd_key_id: h.qkd_key_id,
                    master: h.master,
                    slave: h.slave,
                    size: h.size,
                    combiner: h.combiner,
                })
            })
            .collect()
    }
}

/// Why a peer could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    /// Its TLS files cannot be used.
    #[error("peer {peer}: {source}")]
    Files {
        /// The peer's name.
        peer: String,
        /// Which file and why.
        #[source]
        source: ClientTlsError,
    },
    /// No answer.
    #[error("peer {peer} is unreachable at {url}{hint}")]
    Unreachable {
        /// The peer's name.
        peer: String,
        /// Its URL.
        url: String,
        /// What a TLS failure most likely means.
        hint: &'static str,
        /// The transport's error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// It answered with an error, or with something else than asked.
    #[error("peer {peer} answered {what}: {why}")]
    Answer {
        /// The peer's name.
        peer: String,
        /// The call.
        what: &'static str,
        /// What was wrong.
        why: String,
    },
    /// Its evidence does not pass the policy.
    #[error("peer {peer}'s transport key is not trusted: {why}")]
    Untrusted {
        /// The peer's name.
        peer: String,
        /// The failed check.
        why: String,
    },
}

/// One peer node.
pub(crate) struct Peer {
    settings: PeerSettings,
    agent: ureq::Agent,
    /// The verified transport key and when it was verified.
    transport: Mutex<Option<(Vec<u8>, Instant, Duration)>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("name", &self.settings.name).finish_non_exhaustive()
    }
}

impl Peer {
    /// A client of the peer; the TLS files are read and checked now.
    pub(crate) fn new(settings: &PeerSettings, serve: &ServeSettings) -> Result<Self, PeerError> {
        let agent = client::mutual_tls_agent(
            &settings.url,
            &settings.ca_file,
            &serve.cert_file,
            &serve.key_file,
            settings.timeout,
        )
        .map_err(|source| PeerError::Files { peer: settings.name.clone(), source })?;
        Ok(Self { settings: settings.clone(), agent, transport: Mutex::new(None) })
    }

    /// Its settings.
    pub(crate) fn settings(&self) -> &PeerSettings {
        &self.settings
    }

    /// Its transport key: the cached one while fresh, else from new
    /// evidence answering `nonce` that passes the policy.
    pub(crate) fn transport_key(&self, nonce: &[u8; 32]) -> Result<Vec<u8>, PeerError> {
        if let Some((key, at, ttl)) = &*self.lock()
            && at.elapsed() < *ttl
        {
            return Ok(key.clone());
        }
        let untrusted =
            |why: String| PeerError::Untrusted { peer: self.settings.name.clone(), why };
        let policy = qkeyd_attest::Policy::load(&self.settings.policy).map_err(|e| {
            untrusted(format!("its policy {}: {e}", self.settings.policy.display()))
        })?;
        let pinned = self.settings.node_fingerprint.as_deref();
        let ak_trusted = policy.require_tpm && !policy.trusted_ak_names.is_empty();
        if pinned.is_none() && !ak_trusted {
            return Err(untrusted(
                "its policy does not require a TPM quote from a trusted AK, so set \
                 node_fingerprint to the peer's identity"
                    .into(),
            ));
        }
        let url =
            format!("{}/qkeyd/v1/peer/transport?nonce={}", self.settings.url, hex::encode(nonce));
        let body = self.get_or_post("GET", &url, None, "its transport key's evidence")?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let verified = qkeyd_attest::verify(
            &body,
            nonce,
            &policy,
            &mut qkeyd_attest::VerifierState::default(),
            now,
        )
        .map_err(|f| untrusted(f.to_string()))?;
        if let Some(f) = pinned
            && !f.eq_ignore_ascii_case(&verified.node)
        {
            return Err(untrusted(format!(
                "its evidence is signed by node {}, not node_fingerprint {f}",
                verified.node
            )));
        }
        let key = &verified.statement.key;
        if key.alg != qkeyd_pqc::Algorithm::MlKem1024.name()
            || key.public_key.len() != TRANSPORT_KEY_LEN
        {
            return Err(untrusted(format!(
                "the attested key is {}, not an ML-KEM-1024 transport key",
                key.alg
            )));
        }
        let ttl = TRANSPORT_KEY_TTL.min(Duration::from_secs(policy.max_age_secs / 2));
        *self.lock() = Some((key.public_key.clone(), Instant::now(), ttl));
        tracing::info!(peer = %self.settings.name, node = %verified.node, "QKD peer's transport key verified");
        Ok(key.public_key.clone())
    }

    /// Fetch the held records of `key_ids` (each leaves the peer once): the
    /// records found, and the ids the peer does not hold.
    pub(crate) fn fetch_held(
        &self,
        key_ids: &[String],
    ) -> Result<(Vec<Record>, Vec<String>), PeerError> {
        let url = format!("{}/qkeyd/v1/peer/held", self.settings.url);
        let body = serde_json::to_vec(&HeldRequest { key_ids: key_ids.to_vec() })
            .expect("strings serialize");
        let text = self.get_or_post("POST", &url, Some(body), "the ciphertexts")?;
        let bad = |why: String| PeerError::Answer {
            peer: self.settings.name.clone(),
            what: "the ciphertexts",
            why,
        };
        let mut answer: HeldAnswer = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("not a held-record answer: {e}")))?;
        let missing = std::mem::take(&mut answer.missing);
        let records = answer.records().ok_or_else(|| bad("a record names no ciphertext".into()))?;
        Ok((records, missing))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Vec<u8>, Instant, Duration)>> {
        self.transport.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get_or_post(
        &self,
        method: &str,
        url: &str,
        body: Option<Vec<u8>>,
        what: &'static str,
    ) -> Result<Vec<u8>, PeerError> {
        let s = &self.settings;
        let answer = |why: String| PeerError::Answer { peer: s.name.clone(), what, why };
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(body.unwrap_or_default()).map_err(|e| answer(e.to_string()))?;
        let unreachable = |source: ureq::Error| PeerError::Unreachable {
            peer: s.name.clone(),
            url: s.url.clone(),
            hint: client::hint(&source, &s.url),
            source: Box::new(source),
        };
        let mut resp = self.agent.run(req).map_err(unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().read_to_vec().map_err(unreachable)?;
        if status != 200 {
            let message = serde_json::from_slice::<super::api::ErrorAnswer>(&bytes)
                .map(|e| e.message)
                .unwrap_or_else(|_| "(no message)".into());
            return Err(answer(format!("HTTP {status}: {message}")));
        }
        Ok(bytes)
    }
}
