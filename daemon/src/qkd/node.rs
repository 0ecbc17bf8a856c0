//! The GS QKD 014 server's work, behind its HTTP layer (`server.rs`): keys
//! for local SAEs, made hybrid from a QKD key and an ML-KEM-1024 secret.
//!
//! `enc_keys` at this node (the master's side): QKD keys from the link's
//! KME, each checked by the link's health; an encapsulation to the peer
//! node's attested transport key; the delivered key from both
//! ([`hybrid::combine`]); the ciphertext held for the peer. `dec_keys` at
//! the peer (the slave's side): the held records fetched from this node,
//! the same QKD keys from its KME, decapsulation with its own transport
//! key, the same key. Blocking throughout: the server calls in on the
//! blocking pool.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

use base64::Engine as _;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use self::held::{Delivery, Holding};
use super::{
    api::{Key, KeyContainer, KeyRequest, Status},
    client::Kme,
    hybrid::{self, Context, QKD_KEY_LEN},
    link::{LinkHealth, Recent},
    peer::{Peer, Record},
};
use crate::{
    attest::Attestor,
    config::{Combiner, KmeSettings, PeerSettings, ServeSettings},
    incident::{Chain, Incident},
    metrics::QkdMetrics,
    pool::Pool,
    vault::{OpenKey, Vault},
};

/// An answer that is not keys: HTTP status, 014 `message` and `details`.
#[derive(Debug)]
pub(crate) struct ServeError {
    /// HTTP status.
    pub(crate) status: u16,
    /// For people.
    pub(crate) message: String,
    /// Free-form, never secret.
    pub(crate) details: Vec<Value>,
}

impl ServeError {
    pub(crate) fn new(status: u16, message: impl Into<String>, details: Vec<Value>) -> Self {
        Self { status, message: message.into(), details }
    }

    pub(crate) fn bad_request(message: impl Into<String>, details: Vec<Value>) -> Self {
        Self::new(400, message, details)
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, message, Vec::new())
    }

    fn unavailable(message: impl Into<String>, details: Vec<Value>) -> Self {
        Self::new(503, message, details)
    }

    pub(crate) fn internal(incident: Incident) -> Self {
        Self::new(500, "internal error", vec![json!({ "incident": incident.to_string() })])
    }
}

/// A QKD key that passed its link's health: its id at the KMEs and its bytes.
type QkdKey = (String, Zeroizing<[u8; QKD_KEY_LEN]>);

/// An ML-KEM shared secret.
type Secret = Zeroizing<[u8; 32]>;

/// One encapsulation to a peer's transport key.
struct Kem {
    ciphertext: Arc<Vec<u8>>,
    secret: Option<Secret>,
    confirm: Option<[u8; 16]>,
}

/// One QKD link: its KME and the health of its key stream.
struct Link {
    kme: Kme,
    health: Mutex<LinkHealth>,
}

/// Where a node stands with its KMEs and peers.
pub(crate) struct QkdNode {
    settings: ServeSettings,
    without_ml_kem: bool,
    links: BTreeMap<String, Link>,
    peers: Vec<Peer>,
    pool: Arc<Pool>,
    vault: Arc<Vault>,
    attestor: Option<Arc<Attestor>>,
    transport_id: Option<String>,
    transport_key: Mutex<Option<Arc<OpenKey>>>,
    /// Records issued here, waiting for the peer; in issue order for expiry.
    held: Mutex<Holding>,
    /// Key ids delivered here to a slave SAE, and those a `dec_keys` is
    /// working on.
    delivery: Mutex<Delivery>,
    metrics: QkdMetrics,
}

impl std::fmt::Debug for QkdNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QkdNode").field("listen", &self.settings.listen).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the node is made of.
pub(crate) struct Parts {
    pub(crate) settings: ServeSettings,
    pub(crate) without_ml_kem: bool,
    pub(crate) kmes: Vec<KmeSettings>,
    pub(crate) peers: Vec<PeerSettings>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) vault: Arc<Vault>,
    pub(crate) attestor: Option<Arc<Attestor>>,
    pub(crate) transport_id: Option<String>,
    pub(crate) metrics: QkdMetrics,
}

impl QkdNode {
    /// Check the KMEs' and peers' TLS files and make the links.
    pub(crate) fn new(p: Parts) -> anyhow::Result<Self> {
        let mut links = BTreeMap::new();
        for k in p.kmes.iter().filter(|k| p.peers.iter().any(|peer| peer.kme == k.name)) {
            let health = LinkHealth::new(k.claimed_h, k.min_trust)
                .map_err(|e| anyhow::anyhow!("[qkd.kme.{}] claimed_h: {e}", k.name))?;
            let link = Link { kme: Kme::new(k)?, health: Mutex::new(health) };
            p.metrics.link_trust.with_label_values(&[&k.name]).set(1.0);
            p.metrics.link_out_of_use.with_label_values(&[&k.name]).set(0);
            links.insert(k.name.clone(), link);
        }
        let peers =
            p.peers.iter().map(|s| Peer::new(s, &p.settings)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            settings: p.settings,
            without_ml_kem: p.without_ml_kem,
            links,
            peers,
            pool: p.pool,
            vault: p.vault,
            attestor: p.attestor,
            transport_id: p.transport_id,
            transport_key: Mutex::new(None),
            held: Mutex::new((HashMap::new(), VecDeque::new())),
            delivery: Mutex::new(Delivery { released: Recent::new(), claimed: HashSet::new() }),
            metrics: p.metrics,
        })
    }

    /// The settings.
    pub(crate) fn settings(&self) -> &ServeSettings {
        &self.settings
    }

    /// The metrics.
    pub(crate) fn metrics(&self) -> &QkdMetrics {
        &self.metrics
    }

    /// The peer whose SAEs include `sae`.
    fn peer_of(&self, sae: &str, role: &str) -> Result<&Peer, ServeError> {
        self.peers.iter().find(|p| p.settings().saes.iter().any(|s| s == sae)).ok_or_else(|| {
            ServeError::bad_request(
                format!("{role} {sae} is not an SAE of a peer node"),
                vec![json!({ "parameter": role })],
            )
        })
    }

    fn link_of(&self, peer: &Peer) -> &Link {
        // The config checked that every peer's kme is a [qkd.kme.NAME], and
        // `new` made a link for each such KME.
        &self.links[&peer.settings().kme]
    }

    /// The peer a client certificate's rule name stands for.
    pub(crate) fn peer_named_by(&self, client: &str) -> Option<&str> {
        self.peers
            .iter()
            .find(|p| p.settings().identity.to_string() == client)
            .map(|p| p.settings().name.as_str())
    }

    /// `GET …/{slave}/status` for `caller`.
    pub(crate) fn status(&self, caller: &str, slave: &str) -> Result<Status, ServeError> {
        let peer = self.peer_of(slave, "slave_SAE_ID")?;
        let link = self.link_of(peer);
        let kme = link
            .kme
            .status(&peer.settings().kme_sae_id)
            .map_err(|e| self.kme_error(&link.kme, &e))?;
        let s = &self.settings;
        // One QKD key per delivered key, whatever its size.
        let stored = kme.stored_key_count.saturating_mul(u64::from(kme.key_size)) / 256;
        Ok(Status {
            source_kme_id: kme.source_kme_id,
            target_kme_id: kme.target_kme_id,
            master_sae_id: caller.to_owned(),
            slave_sae_id: slave.to_owned(),
            key_size: s.key_size,
            stored_key_count: stored,
            max_key_count: kme.max_key_count.saturating_mul(u64::from(kme.key_size)) / 256,
            max_key_per_request: s.max_key_per_request,
            max_key_size: s.max_key_size,
            min_key_size: s.min_key_size,
            max_sae_id_count: 0,
            status_extension: Some(json!({
                "qkeyd_combiner": self.combiner_name(),
                "qkeyd_link_trust": lock(&link.health).trust(),
            })),
        })
    }

    fn combiner_name(&self) -> &'static str {
        if self.without_ml_kem { "qkd-only-hkdf-sha256" } else { self.settings.combiner.as_str() }
    }

    /// `enc_keys` of `caller` for `slave`.
    pub(crate) fn enc_keys(
        &self,
        caller: &str,
        slave: &str,
        req: &KeyRequest,
    ) -> Result<KeyContainer, ServeError> {
        let s = &self.settings;
        let peer = self.peer_of(slave, "slave_SAE_ID")?;
        let number = req.number.unwrap_or(1);
        if number == 0 || number > s.max_key_per_request {
            return Err(ServeError::bad_request(
                format!("number must be 1 to max_key_per_request ({})", s.max_key_per_request),
                vec![
                    json!({ "parameter": "number", "max_key_per_request": s.max_key_per_request }),
                ],
            ));
        }
        let size = req.size.unwrap_or(s.key_size);
        if !size.is_multiple_of(8) || size < s.min_key_size || size > s.max_key_size {
            return Err(ServeError::bad_request(
                format!(
                    "size must be a multiple of 8 from min_key_size {} to max_key_size {}",
                    s.min_key_size, s.max_key_size
                ),
                vec![json!({ "parameter": "size" })],
            ));
        }
        if !req.additional_slave_sae_ids.is_empty() {
            return Err(ServeError::bad_request(
                "additional_slave_SAE_IDs are not supported (max_SAE_ID_count is 0)",
                vec![json!({ "parameter": "additional_slave_SAE_IDs" })],
            ));
        }
        if let Some(ext) = req.extension_mandatory.as_ref().filter(|v| !is_empty(v)) {
            let names: Vec<Value> = match ext {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            return Err(ServeError::bad_request(
                "not supported extension_mandatory",
                vec![json!({ "extension_mandatory_unsupported": names })],
            ));
        }
        let link = self.link_of(peer);
        let transport = if self.without_ml_kem {
            None
        } else {
            let mut nonce = [0u8; 32];
            self.fill(&mut nonce)?;
            Some(peer.transport_key(&nonce).map_err(|e| self.peer_error(&e))?)
        };
        // One encapsulation for the request: every key of it binds the same
        // ciphertext, and each has its own QKD key. The qubip-compat
        // combiners use the secret as it is (XOR would give away the
        // secret, and every key of the request, with one key and the QKD
        // keys), so they get one encapsulation per key.
        let encapsulations =
            if transport.is_some() && !self.settings.combiner.any_size() { number } else { 1 };
        // Everything that can fail here fails before the KME gives up keys.
        let mut random =
            Zeroizing::new(vec![0u8; 32 * encapsulations as usize + 16 * number as usize]);
        self.fill(&mut random)?;
        self.room(number as usize)?;
        let (ms, ids) = random.split_at(32 * encapsulations as usize);
        let kems = ms
            .chunks_exact(32)
            .map(|m| self.encapsulate(transport.as_deref(), m.try_into().expect("32 bytes")))
            .collect::<Result<Vec<_>, _>>()?;
        let qkd = self.draw(link, &peer.settings().kme_sae_id, number)?;
        let mut keys = Vec::with_capacity(qkd.len());
        let mut records = Vec::with_capacity(qkd.len());
        for (i, ((qkd_id, qkd_key), r)) in qkd.iter().zip(ids.chunks_exact(16)).enumerate() {
            let kem = &kems[i % kems.len()];
            let key_id = hybrid::uuid(r.try_into().expect("16 bytes"));
            let ctx = Context {
                key_id: &key_id,
                master: caller,
                slave,
                size_bits: size,
                ciphertext: &kem.ciphertext,
            };
            let key = self.combine(kem.secret.as_deref(), qkd_key, &ctx)?;
            keys.push(delivered(key_id.clone(), &key));
            records.push(Record {
                key_id,
                qkd_key_id: qkd_id.clone(),
                master: caller.to_owned(),
                slave: slave.to_owned(),
                size,
                combiner: self.combiner_name().to_owned(),
                ciphertext: kem.ciphertext.clone(),
                confirm: kem.confirm,
            });
        }
        self.hold(records);
        self.metrics.delivered.with_label_values(&["enc"]).inc_by(keys.len() as u64);
        Ok(KeyContainer { keys, key_container_extension: None })
    }

    /// `dec_keys` of `caller` for keys `master` took.
    pub(crate) fn dec_keys(
        &self,
        caller: &str,
        master: &str,
        key_ids: &[String],
    ) -> Result<KeyContainer, ServeError> {
        let peer = self.peer_of(master, "master_SAE_ID")?;
        let max = self.settings.max_key_per_request as usize;
        if key_ids.is_empty() || key_ids.len() > max {
            return Err(ServeError::bad_request(
                format!("key_IDs must name 1 to max_key_per_request ({max}) keys"),
                vec![json!({ "parameter": "key_IDs", "max_key_per_request": max })],
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(id) = key_ids.iter().find(|id| !seen.insert(*id)) {
            return Err(ServeError::bad_request(
                "duplicate key_ID in request",
                vec![json!({ "key_ID": id })],
            ));
        }
        // The ids are this request's until it ends: a second request for
        // one of them is refused, not raced.
        let claim = self.claim(key_ids)?;
        let records = self.records(peer, key_ids)?;
        let s = &self.settings;
        for r in &records {
            if r.slave != caller || r.master != master {
                return Err(ServeError::unauthorized(format!(
                    "key_ID {} was not issued to this SAE pair",
                    r.key_id
                )));
            }
            if r.combiner != self.combiner_name() {
                return Err(ServeError::unavailable(
                    "the peer node made this key with another combiner",
                    vec![
                        json!({ "key_ID": r.key_id, "peer_combiner": r.combiner, "combiner": self.combiner_name() }),
                    ],
                ));
            }
            if !r.size.is_multiple_of(8) || r.size < s.min_key_size || r.size > s.max_key_size {
                return Err(ServeError::unavailable(
                    "the peer node issued this key with a size outside this node's limits",
                    vec![json!({ "key_ID": r.key_id, "size": r.size })],
                ));
            }
        }
        // Decapsulate (each distinct ciphertext once) and check the key
        // confirmations before the KME gives up its keys.
        let mut secrets: Vec<(Arc<Vec<u8>>, Secret)> = Vec::new();
        if !self.without_ml_kem {
            for r in &records {
                if secrets.iter().any(|(c, _)| c == &r.ciphertext) {
                    continue;
                }
                let secret = self.decapsulate(&r.ciphertext)?;
                let mine = hybrid::confirmation(&secret, &r.ciphertext);
                if !r.confirm.is_some_and(|c| bool::from(c.ct_eq(&mine))) {
                    return Err(ServeError::unavailable(
                        "the peer node's ciphertext does not open to the same secret here \
                         (encapsulated to another transport key of this node, or changed); \
                         no key is delivered",
                        vec![json!({ "key_ID": r.key_id })],
                    ));
                }
                secrets.push((r.ciphertext.clone(), secret));
            }
        }
        let link = self.link_of(peer);
        let qkd_ids: Vec<&str> = records.iter().map(|r| r.qkd_key_id.as_str()).collect();
        let qkd = self.fetch(link, &peer.settings().kme_sae_id, &qkd_ids)?;
        let mut keys = Vec::with_capacity(records.len());
        for (r, (_, qkd_key)) in records.iter().zip(&qkd) {
            let secret = secrets.iter().find(|(c, _)| c == &r.ciphertext).map(|(_, s)| s);
            let ctx = Context {
                key_id: &r.key_id,
                master,
                slave: caller,
                size_bits: r.size,
                ciphertext: &r.ciphertext,
            };
            let key = self.combine(secret.map(|s| &**s), qkd_key, &ctx)?;
            keys.push(delivered(r.key_id.clone(), &key));
        }
        claim.deliver();
        self.metrics.delivered.with_label_values(&["dec"]).inc_by(keys.len() as u64);
        Ok(KeyContainer { keys, key_container_extension: None })
    }

    /// The records of `key_ids`, in that order, from `peer` (which keeps
    /// them until they expire, so a failed `dec_keys` can be asked again).
    fn records(&self, peer: &Peer, key_ids: &[String]) -> Result<Vec<Record>, ServeError> {
        let (held, missing) = peer.fetch_held(key_ids).map_err(|e| self.peer_error(&e))?;
        if let Some(id) = missing.first() {
            return Err(ServeError::bad_request(
                "unknown key_ID (never issued to this node's SAEs, or expired)",
                vec![json!({ "key_ID": id })],
            ));
        }
        let mut by_id: HashMap<String, Record> =
            held.into_iter().map(|r| (r.key_id.clone(), r)).collect();
        key_ids
            .iter()
            .map(|id| {
                by_id.remove(id).ok_or_else(|| {
                    ServeError::unavailable(
                        format!(
                            "peer node {} answered without the record of a key_ID",
                            peer.settings().name
                        ),
                        vec![json!({ "key_ID": id })],
                    )
                })
            })
            .collect()
    }

    /// An ML-KEM-1024 encapsulation to `transport` with randomness `m` (none
    /// without a transport key), and its key confirmation.
    fn encapsulate(&self, transport: Option<&[u8]>, m: &[u8; 32]) -> Result<Kem, ServeError> {
        let Some(pk) = transport else {
            return Ok(Kem { ciphertext: Arc::new(Vec::new()), secret: None, confirm: None });
        };
        let (ct, ss) = qkeyd_pqc::encapsulate(qkeyd_pqc::Algorithm::MlKem1024, pk, m)
            .map_err(|e| ServeError::internal(Incident::log("encapsulating to a peer", &e)))?;
        let confirm = hybrid::confirmation(&ss, &ct);
        Ok(Kem { ciphertext: Arc::new(ct), secret: Some(ss), confirm: Some(confirm) })
    }

    fn combine(
        &self,
        secret: Option<&[u8; 32]>,
        qkd: &[u8; QKD_KEY_LEN],
        ctx: &Context<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, ServeError> {
        let combiner = if self.without_ml_kem { Combiner::Hkdf } else { self.settings.combiner };
        hybrid::combine(combiner, secret, qkd, ctx).map_err(|e| {
            ServeError::bad_request(e.to_string(), vec![json!({ "parameter": "size" })])
        })
    }

    /// Decapsulate with this node's transport key.
    fn decapsulate(&self, ct: &[u8]) -> Result<Zeroizing<[u8; 32]>, ServeError> {
        let Some(id) = &self.transport_id else {
            return Err(ServeError::unavailable(
                "this node has no transport key (it needs [attest])",
                Vec::new(),
            ));
        };
        if ct.len() != qkeyd_pqc::Algorithm::MlKem1024.output_len() {
            return Err(ServeError::unavailable(
                "the peer node sent no ML-KEM-1024 ciphertext for this key",
                vec![json!({ "ciphertext_bytes": ct.len() })],
            ));
        }
        let cached = lock(&self.transport_key).clone();
        let key = match cached {
            Some(k) => k,
            None => {
                let k = Arc::new(self.vault.open_reserved(id).map_err(|e| {
                    ServeError::internal(Incident::log("opening the transport key", &e))
                })?);
                *lock(&self.transport_key) = Some(k.clone());
                k
            }
        };
        self.vault.decapsulate_open(&key, ct).map_err(|e| {
            lock(&self.transport_key).take();
            ServeError::internal(Incident::log("decapsulating with the transport key", &e))
        })
    }

    /// The peer API: evidence about this node's transport key for `nonce`.
    pub(crate) fn evidence(&self, nonce: &[u8]) -> Result<Vec<u8>, ServeError> {
        let (Some(a), Some(id)) = (&self.attestor, &self.transport_id) else {
            return Err(ServeError::new(404, "this node delivers keys without ML-KEM", Vec::new()));
        };
        let ev = a.evidence(id, None, nonce).map_err(|e| {
            ServeError::bad_request(
                format!("no evidence: {}", Chain(&e)),
                vec![json!({ "parameter": "nonce" })],
            )
        })?;
        serde_json::to_vec(&ev)
            .map_err(|e| ServeError::internal(Incident::log("encoding evidence", &e)))
    }

    fn fill(&self, out: &mut [u8]) -> Result<(), ServeError> {
        self.pool.fill(out).map(|_| ()).map_err(|e| {
            ServeError::unavailable(
                "no healthy entropy to make keys with",
                vec![json!({ "reason": Chain(&e).to_string() })],
            )
        })
    }
}

/// A delivered key as 014 writes it.
fn delivered(key_id: String, key: &[u8]) -> Key {
    Key {
        key_id,
        key_id_extension: None,
        key: base64::engine::general_purpose::STANDARD.encode(key),
        key_extension: None,
    }
}

/// An absent extension: null, `{}` or `[]`.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

mod held;
mod links;
