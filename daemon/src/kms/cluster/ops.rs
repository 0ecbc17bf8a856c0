//! What an operator asks of the cluster: rotate, retire, remove a node, and
//! its status.

use std::{collections::BTreeSet, sync::Arc};

use serde::Serialize;
use zeroize::Zeroizing;

use super::{
    Cluster, View,
    etcd::{Cmp, Op},
    records::{KeyRecord, Removal, WriteRecord, parse, to_json},
    sync::blocking,
};
use crate::kms::{KmsError, lifecycle::RETIRE_GRACE, lock, missing};

/// What `qkeyd kms cluster remove` did.
#[derive(Debug, Serialize)]
pub(crate) struct Removed {
    /// The node.
    pub(crate) node: String,
    /// How many envelopes addressed to it were deleted.
    pub(crate) envelopes_deleted: usize,
    /// The KEKs it had said it holds: it may still have them.
    pub(crate) held: Vec<String>,
}

/// One node, as `qkeyd kms cluster status` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct NodeStatus {
    node: String,
    /// `admitted` (its evidence passes this node's policy), `refused`,
    /// `pending` (not checked yet, or no record), or `removed`.
    state: &'static str,
    identity: Option<String>,
    published_unix: Option<u64>,
    admitted_unix: Option<u64>,
    admitted_by: Option<String>,
    holds: Vec<String>,
    refusal: Option<String>,
}

/// One KEK of the cluster.
#[derive(Debug, Serialize)]
pub(crate) struct KeyStatus {
    key_id: String,
    epoch: u64,
    created_unix: u64,
    by: String,
    replaced_unix: Option<u64>,
    retired_unix: Option<u64>,
}

/// `GET /v1/kms/cluster`.
#[derive(Debug, Serialize)]
pub(crate) struct ClusterStatus {
    node: String,
    prefix: String,
    /// `ok`, or why etcd could not be read.
    etcd: String,
    /// The cluster's write key.
    write_key_id: Option<String>,
    epoch: Option<u64>,
    /// This node's write key (what its Status reports).
    local_write_key_id: Option<String>,
    nodes: Vec<NodeStatus>,
    keys: Vec<KeyStatus>,
}

impl Cluster {
    /// Make a new KEK the cluster's write key. Refused with etcd down, and
    /// on a node whose own evidence does not pass its policy.
    pub(crate) async fn rotate(self: &Arc<Self>) -> Result<String, KmsError> {
        let _busy = self.busy.lock().await;
        let view = self.read().await?;
        if let Some(p) = self.policy() {
            self.check_members(&view, &p).await;
        }
        let refused = {
            let known = lock(&self.known);
            (!known.members.contains_key(self.node())).then(|| {
                known
                    .refused
                    .get(self.node())
                    .map_or("it has not been checked yet".into(), |r| r.1.clone())
            })
        };
        if let Some(why) = refused {
            return Err(KmsError::ClusterConflict(format!(
                "this node is not a member, so it cannot rotate: its evidence does not pass the \
                 policy ({why})"
            )));
        }
        self.make_write(&view).await
    }

    /// Make a KEK, sealed here, and make it the cluster's write key in one
    /// transaction with its envelopes to every other member. If another
    /// node changed the write key first, the KEK is discarded.
    pub(super) async fn make_write(&self, view: &View) -> Result<String, KmsError> {
        let kms = self.kms.clone();
        let (key_id, value) = blocking(move || kms.new_shared_kek()).await?;
        match self.publish_write(view, &key_id, &value).await {
            Ok(()) => {
                let (kms, id) = (self.kms.clone(), key_id.clone());
                blocking(move || kms.follow_write(&id)).await?;
                tracing::info!(key_id, node = %self.node(), "cluster: new write KEK");
                Ok(key_id)
            }
            Err(e) => {
                let (kms, id) = (self.kms.clone(), key_id.clone());
                if let Err(d) = blocking(move || kms.retire(&id, true)).await {
                    tracing::warn!(key_id, error = %crate::incident::Chain(&d), "cluster: cannot discard a KEK that did not become the write key");
                }
                Err(e)
            }
        }
    }

    async fn publish_write(
        &self,
        view: &View,
        key_id: &str,
        value: &Zeroizing<[u8; 32]>,
    ) -> Result<(), KmsError> {
        let (now, me) = (super::now_unix(), self.node().to_owned());
        let epoch = view.keys.values().map(|(k, _)| k.epoch).max().unwrap_or(0) + 1;
        let write =
            WriteRecord { key_id: key_id.to_owned(), epoch, created_unix: now, by: me.clone() };
        let record = KeyRecord {
            key_id: key_id.to_owned(),
            epoch,
            created_unix: now,
            by: me.clone(),
            replaced_unix: None,
            retired_unix: None,
        };
        let mut ops = vec![
            Op::Put(self.paths.write(), to_json(&write)),
            Op::Put(self.paths.kek_record(key_id), to_json(&record)),
        ];
        if let Some((old, _)) = view.write.as_ref().and_then(|(w, _)| view.keys.get(&w.key_id)) {
            let mut old = old.clone();
            old.replaced_unix = Some(now);
            ops.push(Op::Put(self.paths.kek_record(&old.key_id), to_json(&old)));
        }
        let members: Vec<_> = lock(&self.known)
            .members
            .iter()
            .filter(|(n, _)| **n != me)
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect();
        for (node, m) in &members {
            let e = self.wrap(key_id, node, epoch, m, value).await?;
            ops.push(Op::Put(self.paths.envelope(key_id, node), to_json(&e)));
        }
        let wrapped = u64::try_from(members.len()).unwrap_or(u64::MAX);
        let write_key = self.paths.write();
        let cmp = match &view.write {
            None => Cmp::Absent(write_key.clone()),
            Some((_, rev)) => Cmp::ModRevision(write_key.clone(), *rev),
        };
        let outcome = self.etcd.txn(vec![cmp], ops).await;
        let now_write = || async {
            let kv = self.etcd.get(&write_key).await.ok().flatten()?;
            parse::<WriteRecord>(&kv.key, &kv.value).ok()
        };
        match outcome {
            Ok(true) => {
                self.metrics.envelopes.with_label_values(&["wrapped"]).inc_by(wrapped);
                Ok(())
            }
            Ok(false) => {
                let winner = now_write().await;
                Err(KmsError::ClusterConflict(format!(
                    "another node rotated first: {} (by {}) is the cluster's write key; this \
                     rotation made no KEK",
                    winner.as_ref().map_or("?", |w| &w.key_id),
                    winner.as_ref().map_or("?", |w| &w.by),
                )))
            }
            // The answer may be lost after etcd applied the transaction.
            Err(e) => match now_write().await {
                Some(w) if w.key_id == key_id => Ok(()),
                _ => Err(e.into()),
            },
        }
    }

    /// Retire `key_id` on every node, with the single-node grace rules.
    pub(crate) async fn retire(
        self: &Arc<Self>,
        key_id: &str,
        force: bool,
    ) -> Result<(), KmsError> {
        let _busy = self.busy.lock().await;
        let view = self.read().await?;
        let Some((k, rev)) = view.keys.get(key_id) else {
            if self.kms.holds(key_id) {
                // A KEK of this node's own, from before it was clustered.
                let (kms, id) = (self.kms.clone(), key_id.to_owned());
                return blocking(move || kms.retire(&id, force)).await;
            }
            let file = lock(&self.kms.file).clone();
            return Err(missing(&file, key_id));
        };
        if let Some(at) = k.retired_unix {
            return Err(KmsError::Retired { key_id: key_id.to_owned(), at });
        }
        if view.write.as_ref().is_some_and(|(w, _)| w.key_id == key_id) {
            return Err(KmsError::RetireWriteKey(key_id.to_owned()));
        }
        if !force {
            let grace = RETIRE_GRACE.as_secs();
            let ago = k.replaced_unix.map(|t| super::now_unix().saturating_sub(t));
            if ago.is_none_or(|a| a < grace) {
                return Err(KmsError::RecentlyReplaced {
                    key_id: key_id.to_owned(),
                    ago: ago.unwrap_or(0),
                    grace,
                });
            }
            if let Some(ago) = self.kms.used_within_grace(key_id) {
                return Err(KmsError::RecentlyUsed { key_id: key_id.to_owned(), ago });
            }
        }
        let mut retired = k.clone();
        retired.retired_unix = Some(super::now_unix());
        let key = self.paths.kek_record(key_id);
        let ops = vec![
            Op::Put(key.clone(), to_json(&retired)),
            Op::DeletePrefix(self.paths.envelopes(key_id)),
        ];
        if !self.etcd.txn(vec![Cmp::ModRevision(key, *rev)], ops).await? {
            return Err(KmsError::ClusterConflict(format!(
                "{key_id} changed in etcd meanwhile; try again"
            )));
        }
        if self.kms.holds(key_id) {
            let (kms, id) = (self.kms.clone(), key_id.to_owned());
            blocking(move || kms.retire(&id, true)).await?;
        }
        tracing::info!(key_id, force, "cluster: KEK retired on every node");
        Ok(())
    }

    /// Take `node` out: its envelopes, records and membership go, and it is
    /// never admitted again. It may still hold KEKs: rotate next.
    pub(crate) async fn remove(self: &Arc<Self>, node: &str) -> Result<Removed, KmsError> {
        if !crate::config::valid_node_name(node) {
            return Err(KmsError::ClusterNotFound(format!("{node:?} is not a node name")));
        }
        if node == self.node() {
            return Err(KmsError::ClusterConflict(
                "a node does not remove itself: run this on another member".into(),
            ));
        }
        let _busy = self.busy.lock().await;
        let view = self.read().await?;
        let envelopes: Vec<Vec<u8>> = view
            .envelopes
            .iter()
            .filter(|((_, n), _)| n == node)
            .map(|(_, kv)| kv.key.clone())
            .collect();
        let known = view.nodes.contains_key(node)
            || view.admitted.contains_key(node)
            || view.holds.contains_key(node)
            || !envelopes.is_empty();
        if !known {
            return Err(KmsError::ClusterNotFound(format!("the cluster has no node {node:?}")));
        }
        let removal = Removal {
            node: node.to_owned(),
            removed_unix: super::now_unix(),
            by: self.node().to_owned(),
        };
        let mut ops = vec![
            Op::Put(self.paths.removed(node), to_json(&removal)),
            Op::Delete(self.paths.node(node)),
            Op::Delete(self.paths.admitted(node)),
            Op::Delete(self.paths.holds(node)),
        ];
        ops.extend(envelopes.iter().cloned().map(Op::Delete));
        self.etcd.txn(vec![], ops).await?;
        lock(&self.known).members.remove(node);
        let held = view.holds.get(node).map(|h| h.keys.clone()).unwrap_or_default();
        tracing::warn!(
            node,
            envelopes = envelopes.len(),
            held = ?held,
            "cluster: node removed; it may still hold the KEKs it had: rotate now"
        );
        Ok(Removed { node: node.to_owned(), envelopes_deleted: envelopes.len(), held })
    }

    /// The cluster as this node sees it. With etcd down, only this node's
    /// own part.
    pub(crate) async fn status(&self) -> ClusterStatus {
        let mut s = ClusterStatus {
            node: self.node().to_owned(),
            prefix: self.settings.prefix.clone(),
            etcd: "ok".into(),
            write_key_id: None,
            epoch: None,
            local_write_key_id: self.kms.local_write(),
            nodes: Vec::new(),
            keys: Vec::new(),
        };
        let view = match self.read().await {
            Ok(v) => v,
            Err(KmsError::EtcdDown(why)) => {
                s.etcd = format!("unreachable: {why}");
                return s;
            }
            Err(e) => {
                s.etcd = e.to_string();
                return s;
            }
        };
        s.write_key_id = view.write.as_ref().map(|(w, _)| w.key_id.clone());
        s.epoch = view.write.as_ref().map(|(w, _)| w.epoch);
        let names: BTreeSet<&String> = view
            .nodes
            .keys()
            .chain(view.admitted.keys())
            .chain(view.removed.keys())
            .chain(view.holds.keys())
            .collect();
        let known = lock(&self.known);
        for name in names {
            let record = Self::node_record(&view, name);
            let admission = view.admitted.get(name);
            let refusal = known.refused.get(name).map(|r| r.1.clone());
            let state = if view.removed.contains_key(name) {
                "removed"
            } else if known.members.contains_key(name) {
                "admitted"
            } else if refusal.is_some() {
                "refused"
            } else {
                "pending"
            };
            s.nodes.push(NodeStatus {
                node: name.clone(),
                state,
                identity: known
                    .members
                    .get(name)
                    .map(|m| m.identity.clone())
                    .or_else(|| admission.map(|a| a.identity.clone())),
                published_unix: record.map(|r| r.published_unix),
                admitted_unix: admission.map(|a| a.admitted_unix),
                admitted_by: admission.map(|a| a.by.clone()),
                holds: view.holds.get(name).map(|h| h.keys.clone()).unwrap_or_default(),
                refusal,
            });
        }
        s.keys = view
            .keys
            .values()
            .map(|(k, _)| KeyStatus {
                key_id: k.key_id.clone(),
                epoch: k.epoch,
                created_unix: k.created_unix,
                by: k.by.clone(),
                replaced_unix: k.replaced_unix,
                retired_unix: k.retired_unix,
            })
            .collect();
        s
    }
}
