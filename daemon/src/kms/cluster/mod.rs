//! KEKs shared by the control-plane nodes through etcd, so that every
//! kube-apiserver of a cluster reads what any other wrote.
//!
//! Each node publishes evidence ([`crate::attest`]) about its ML-KEM-1024
//! transport key, a vault key sealed by its own HSM or TPM and reserved for
//! this. A node counts as a member to another only if that evidence verifies
//! under the other's policy file, re-read at every poll. A member wraps every
//! live KEK it holds to every other member (ML-KEM-1024, then AES-256-GCM
//! with key id, recipient and epoch bound, signed with its ML-DSA-87
//! identity) and stores the envelope in etcd; the recipient checks that a
//! member signed it, unwraps it and seals the KEK with its own sealer. A KEK
//! is never in etcd in the clear. The layout is in [`records`].
//!
//! Making and rotating the write key is one etcd transaction that compares
//! the write record's revision, so two rotations at once make one KEK. A
//! node switches its own write key (what Status reports) only once it holds
//! the new KEK. Encrypt, Decrypt and Status never wait for etcd: they use the
//! KEKs sealed locally, so with etcd down only changes are refused.

mod etcd;
mod local;
mod ops;
mod records;
mod sync;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
    time::Instant,
};

use qkeyd_attest::Policy;

use self::{
    etcd::{Etcd, EtcdError, Kv},
    records::{Admission, Entry, Holds, KeyRecord, NodeRecord, Paths, Removal, WriteRecord, parse},
};
use super::{Kms, KmsError, lock};
use crate::{attest::Attestor, config::ClusterSettings, metrics::ClusterMetrics, vault::Vault};

pub(crate) use records::ENVELOPE_CONTEXT;

/// A node whose evidence passed this node's policy.
#[derive(Clone, Debug)]
struct Member {
    /// The etcd revision of the record that passed.
    revision: i64,
    /// Its identity fingerprint.
    identity: String,
    /// Its ML-DSA-87 identity key.
    identity_public: Vec<u8>,
    /// Its ML-KEM-1024 transport key.
    transport_public: Vec<u8>,
}

/// What this node has learnt, kept between polls.
#[derive(Debug, Default)]
struct Known {
    /// Members, by node name.
    members: HashMap<String, Member>,
    /// Nodes refused, by name: the record's revision and why.
    refused: HashMap<String, (i64, String)>,
    /// The last etcd failure, until etcd answers again.
    etcd_error: Option<String>,
    /// The policy file's last load failure, logged once.
    policy_error: Option<String>,
    /// The policy the cached verdicts were reached under.
    policy: Option<Policy>,
    /// When this node last published its evidence.
    published: Option<Instant>,
    /// Envelopes refused (key id, revision): logged once each.
    bad_envelopes: HashSet<(String, i64)>,
    /// This node was removed (logged once).
    removed: bool,
    /// Own KEKs that cannot be shared (logged once each).
    unshareable: HashSet<String>,
    /// The last sync that left etcd as it found it, if nothing changed since.
    settled: Option<sync::Settled>,
}

/// The cluster's state in etcd, as one read found it.
#[derive(Debug, Default)]
struct View {
    nodes: BTreeMap<String, Kv>,
    admitted: BTreeMap<String, Admission>,
    removed: BTreeMap<String, Removal>,
    write: Option<(WriteRecord, i64)>,
    keys: BTreeMap<String, (KeyRecord, i64)>,
    /// By (key id, node).
    envelopes: BTreeMap<(String, String), Kv>,
    holds: BTreeMap<String, Holds>,
}

impl View {
    /// The live (not retired) KEKs.
    fn live(&self) -> impl Iterator<Item = &KeyRecord> {
        self.keys.values().map(|(k, _)| k).filter(|k| k.retired_unix.is_none())
    }
}

/// This node's part in the cluster.
pub(crate) struct Cluster {
    kms: Arc<Kms>,
    vault: Arc<Vault>,
    attestor: Arc<Attestor>,
    etcd: Etcd,
    paths: Paths,
    settings: ClusterSettings,
    transport_id: String,
    known: Mutex<Known>,
    /// One change of this node's at a time (a poll, a rotation, …).
    busy: tokio::sync::Mutex<()>,
    metrics: ClusterMetrics,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.settings.node)
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

fn now_unix() -> u64 {
    super::now_unix()
}

impl From<EtcdError> for KmsError {
    fn from(e: EtcdError) -> Self {
        match e {
            EtcdError::Unreachable(why) => KmsError::EtcdDown(why),
            EtcdError::Refused(why) => KmsError::EtcdRefused(why),
            other => KmsError::EtcdRefused(other.to_string()),
        }
    }
}

impl Cluster {
    /// Find (or make, on first start) the transport key and connect to etcd
    /// (lazily: a node starts with etcd down).
    pub(crate) fn open(
        settings: &ClusterSettings,
        dir: &Path,
        kms: Arc<Kms>,
        vault: Arc<Vault>,
        attestor: Arc<Attestor>,
        metrics: ClusterMetrics,
    ) -> anyhow::Result<Arc<Self>> {
        let tls = etcd::load_tls(
            settings.ca_file.as_deref(),
            settings.cert_file.as_deref(),
            settings.key_file.as_deref(),
        )?;
        let etcd = Etcd::new(settings.endpoints.clone(), tls, settings.timeout)?;
        let transport_id = crate::attest::transport_key(&vault, dir)?;
        tracing::info!(
            node = %settings.node,
            endpoints = ?settings.endpoints,
            prefix = %settings.prefix,
            "KMS KEKs are shared through etcd"
        );
        Ok(Arc::new(Self {
            kms,
            vault,
            attestor,
            etcd,
            paths: Paths::new(&settings.prefix),
            settings: settings.clone(),
            transport_id,
            known: Mutex::new(Known::default()),
            busy: tokio::sync::Mutex::new(()),
            metrics,
        }))
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        &self.settings.node
    }

    /// Why etcd could not be reached at the last poll (`None`: it was).
    pub(crate) fn etcd_error(&self) -> Option<String> {
        lock(&self.known).etcd_error.clone()
    }

    /// Poll etcd every `poll_interval` for as long as the runtime runs.
    pub(crate) fn spawn(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let outcome = me.poll().await;
                me.note_etcd(outcome.as_ref().err());
                let label = match &outcome {
                    Ok(sync::Polled::Synced) => "ok",
                    Ok(sync::Polled::Unchanged) => "unchanged",
                    Err(KmsError::EtcdDown(_)) => "etcd_down",
                    Err(_) => "failed",
                };
                me.metrics.polls.with_label_values(&[label]).inc();
                me.metrics.etcd_up.set(i64::from(label != "etcd_down"));
                let (admitted, refused) = {
                    let known = lock(&me.known);
                    (known.members.len(), known.refused.len())
                };
                for (state, n) in [("admitted", admitted), ("refused", refused)] {
                    me.metrics
                        .nodes
                        .with_label_values(&[state])
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
                if let Err(e) = outcome
                    && !matches!(e, KmsError::EtcdDown(_))
                {
                    tracing::warn!(error = %crate::incident::Chain(&e), "cluster poll failed");
                }
                tokio::time::sleep(me.settings.poll_interval).await;
            }
        });
    }

    /// Log etcd going away and coming back, once each.
    fn note_etcd(&self, error: Option<&KmsError>) {
        let mut known = lock(&self.known);
        match (error, known.etcd_error.is_some()) {
            (Some(KmsError::EtcdDown(why)), false) => {
                tracing::warn!(
                    error = %why,
                    "etcd is unreachable: Encrypt, Decrypt and Status go on with the KEKs \
                     sealed here; rotation and admission wait"
                );
                known.etcd_error = Some(why.clone());
            }
            (None, true) => {
                tracing::info!("etcd is reachable again");
                known.etcd_error = None;
            }
            _ => {}
        }
    }

    /// The policy a node's evidence must pass: the file, read now. A file
    /// that does not load admits nobody (logged once per reason).
    fn policy(&self) -> Option<Policy> {
        match Policy::load(&self.settings.policy) {
            Ok(p) => {
                let mut known = lock(&self.known);
                known.policy_error = None;
                if known.policy.as_ref() != Some(&p) {
                    // Another policy: every node is checked again under it.
                    known.members.clear();
                    known.refused.clear();
                    known.policy = Some(p.clone());
                }
                Some(p)
            }
            Err(e) => {
                let why = e.to_string();
                let mut known = lock(&self.known);
                if known.policy_error.as_deref() != Some(&why) {
                    tracing::error!(error = %why, "cluster: the policy file does not load; no node is admitted until it does");
                    known.policy_error = Some(why);
                }
                None
            }
        }
    }

    /// Everything under the prefix, in one read. Records that do not parse
    /// are left out (and logged).
    async fn read(&self) -> Result<View, KmsError> {
        let kvs = self.etcd.list(self.paths.prefix()).await?;
        let mut v = View::default();
        for kv in kvs {
            let bad = |e: String| tracing::warn!(error = %e, "cluster: a record is not readable; ignored");
            match self.paths.parse(&kv.key) {
                Some(Entry::Node(n)) => {
                    v.nodes.insert(n.to_owned(), kv);
                }
                Some(Entry::Admitted(n)) => match parse(&kv.key, &kv.value) {
                    Ok(a) => drop(v.admitted.insert(n.to_owned(), a)),
                    Err(e) => bad(e),
                },
                Some(Entry::Removed(n)) => match parse(&kv.key, &kv.value) {
                    Ok(r) => drop(v.removed.insert(n.to_owned(), r)),
                    Err(e) => bad(e),
                },
                Some(Entry::Write) => match parse(&kv.key, &kv.value) {
                    Ok(w) => v.write = Some((w, kv.mod_revision)),
                    Err(e) => bad(e),
                },
                Some(Entry::Key(id)) => match parse::<KeyRecord>(&kv.key, &kv.value) {
                    Ok(k) if k.key_id == id => {
                        drop(v.keys.insert(id.to_owned(), (k, kv.mod_revision)))
                    }
                    Ok(_) => {
                        bad(format!("{} names another key id", String::from_utf8_lossy(&kv.key)))
                    }
                    Err(e) => bad(e),
                },
                Some(Entry::Envelope(id, n)) => {
                    v.envelopes.insert((id.to_owned(), n.to_owned()), kv);
                }
                Some(Entry::Holds(n)) => match parse(&kv.key, &kv.value) {
                    Ok(h) => drop(v.holds.insert(n.to_owned(), h)),
                    Err(e) => bad(e),
                },
                None => {}
            }
        }
        Ok(v)
    }

    /// The node record of `node`, parsed.
    fn node_record(view: &View, node: &str) -> Option<NodeRecord> {
        let kv = view.nodes.get(node)?;
        parse(&kv.key, &kv.value).ok()
    }
}
