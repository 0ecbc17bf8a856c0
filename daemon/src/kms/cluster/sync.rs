//! One poll: publish this node's evidence when it is due, check the other
//! nodes' evidence, wrap KEKs to members that lack them, take in envelopes
//! addressed here, follow retirements and the write key.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use qkeyd_attest::{Policy, VerifierState};
use qkeyd_pqc::Algorithm;
use zeroize::Zeroizing;

use super::{
    Cluster, Member, View,
    etcd::{Cmp, Op, Stamp},
    records::{
        Admission, ENVELOPE_CONTEXT, Envelope, Holds, IV_LEN, KeyRecord, NodeRecord, join_nonce,
        parse, to_json,
    },
};
use crate::kms::{KmsError, lock};

/// The ML-KEM-1024 encapsulation key's length.
const TRANSPORT_KEY_LEN: usize = 1568;

/// What a poll did.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Polled {
    /// Read the cluster's state and brought this node in line with it.
    Synced,
    /// Nothing had changed since a sync that left nothing to do.
    Unchanged,
}

/// A sync after which etcd held what it held before, under this policy.
#[derive(Debug)]
pub(super) struct Settled {
    stamp: Stamp,
    policy: Option<Policy>,
    at: Instant,
}

/// The longest a node goes without a full sync: local work that failed (a
/// token that was busy, say) is tried again at least this often.
const RESYNC: Duration = Duration::from_secs(30);

impl Cluster {
    /// One poll: a sync unless neither etcd's state under the prefix nor the
    /// policy changed since the last sync that left nothing to do (one small
    /// read). Changes nothing locally if etcd cannot be read.
    pub(super) async fn poll(self: &Arc<Self>) -> Result<Polled, KmsError> {
        let _busy = self.busy.lock().await;
        let before = self.etcd.stamp(self.paths.prefix()).await?;
        let policy = self.policy();
        // This node's evidence must be republished at half the policy's age
        // limit; a full sync every quarter of it is in time for that.
        let max_age = policy.as_ref().map_or(300, |p| p.max_age_secs);
        let resync = RESYNC.min(Duration::from_secs(max_age / 4));
        let settled = lock(&self.known)
            .settled
            .as_ref()
            .is_some_and(|s| s.stamp == before && s.policy == policy && s.at.elapsed() < resync);
        if settled {
            return Ok(Polled::Unchanged);
        }
        self.sync(policy.as_ref()).await?;
        // Whatever this sync wrote, or another node did meanwhile, calls for
        // another; a sync that found and left the same state does not.
        let settled = (self.etcd.stamp(self.paths.prefix()).await? == before).then(|| Settled {
            stamp: before,
            policy,
            at: Instant::now(),
        });
        lock(&self.known).settled = settled;
        Ok(Polled::Synced)
    }

    /// Read the cluster's state and act on it.
    async fn sync(self: &Arc<Self>, policy: Option<&Policy>) -> Result<(), KmsError> {
        let view = self.read().await?;
        let me = self.node().to_owned();
        if view.removed.contains_key(&me) {
            let mut known = lock(&self.known);
            if !known.removed {
                tracing::error!(
                    node = %me,
                    "cluster: this node was removed; it publishes nothing and receives no KEK"
                );
                known.removed = true;
            }
            return Ok(());
        }
        lock(&self.known).removed = false;
        self.publish_if_due(&view, policy).await?;
        // Read again if this node just published, so it sees its own record.
        let view =
            if lock(&self.known).published.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                self.read().await?
            } else {
                view
            };
        if let Some(p) = policy {
            self.check_members(&view, p).await;
        }
        let member = lock(&self.known).members.contains_key(&me);
        if member {
            self.record_admissions(&view).await?;
            self.share_own(&view).await?;
            if view.write.is_none() {
                match self.make_write(&view).await {
                    Ok(_) | Err(KmsError::ClusterConflict(_)) => {}
                    Err(e) => return Err(e),
                }
                return Ok(());
            }
            self.wrap_missing(&view).await?;
        }
        self.receive(&view).await;
        self.apply_retired(&view).await;
        // The blocking pool (a KEK file write) only when there is a switch to make.
        if let Some((w, _)) = view.write.as_ref().filter(|(w, _)| {
            self.kms.local_write().as_deref() != Some(&w.key_id) && self.kms.holds(&w.key_id)
        }) {
            let (kms, id) = (self.kms.clone(), w.key_id.clone());
            if let Err(e) = blocking(move || kms.follow_write(&id)).await {
                tracing::warn!(error = %crate::incident::Chain(&e), "cluster: cannot switch to the cluster's write key");
            }
        }
        self.publish_holds(&view).await
    }

    /// Publish fresh evidence about the transport key when there is none,
    /// it is not this node's, or it is past half the policy's age limit.
    async fn publish_if_due(&self, view: &View, policy: Option<&Policy>) -> Result<(), KmsError> {
        let me = self.node();
        let max_age = policy.map_or(300, |p| p.max_age_secs);
        let fresh = Self::node_record(view, me).is_some_and(|r| {
            r.evidence.identity.fingerprint == self.attestor.fingerprint()
                && super::now_unix().saturating_sub(r.published_unix) < max_age / 2
        });
        if fresh {
            return Ok(());
        }
        let mut salt = [0u8; 16];
        self.kms.pool.fill(&mut salt)?;
        let nonce = join_nonce(&self.settings.prefix, me, &salt);
        let (attestor, id) = (self.attestor.clone(), self.transport_id.clone());
        let evidence = tokio::task::spawn_blocking(move || attestor.evidence(&id, None, &nonce))
            .await
            .map_err(|_| KmsError::TaskLost)?
            .map_err(|e| KmsError::Attest(e.to_string()))?;
        let record = NodeRecord {
            node: me.to_owned(),
            salt: salt.to_vec(),
            published_unix: super::now_unix(),
            evidence,
        };
        self.etcd.put(&self.paths.node(me), &to_json(&record)).await?;
        lock(&self.known).published = Some(std::time::Instant::now());
        tracing::info!(node = %me, "cluster: published this node's evidence");
        Ok(())
    }

    /// Check every node record not checked at its current revision against
    /// `policy`; refusals are logged once per record.
    pub(super) async fn check_members(&self, view: &View, policy: &Policy) {
        let todo: Vec<(String, i64, Vec<u8>)> = {
            let known = lock(&self.known);
            view.nodes
                .iter()
                .filter(|(n, _)| !view.removed.contains_key(*n))
                .filter(|(n, kv)| {
                    known.members.get(*n).is_none_or(|m| m.revision != kv.mod_revision)
                        && known.refused.get(*n).is_none_or(|r| r.0 != kv.mod_revision)
                })
                .map(|(n, kv)| (n.clone(), kv.mod_revision, kv.value.clone()))
                .collect()
        };
        {
            let mut known = lock(&self.known);
            known
                .members
                .retain(|n, _| view.nodes.contains_key(n) && !view.removed.contains_key(n));
        }
        for (node, revision, value) in todo {
            let (prefix, p) = (self.settings.prefix.clone(), policy.clone());
            let n = node.clone();
            let checked = tokio::task::spawn_blocking(move || check_node(&prefix, &n, &value, &p))
                .await
                .unwrap_or_else(|_| Err("the check ended without an answer".into()));
            let mut known = lock(&self.known);
            match checked {
                Ok(mut m) => {
                    m.revision = revision;
                    if known.members.insert(node.clone(), m).is_none() {
                        tracing::info!(node = %node, "cluster: node's evidence passes the policy");
                    }
                    known.refused.remove(&node);
                }
                Err(why) => {
                    tracing::warn!(node = %node, reason = %why, "cluster: node refused: its evidence does not pass the policy");
                    known.members.remove(&node);
                    known.refused.insert(node, (revision, why));
                }
            }
        }
    }

    /// Write `admitted/<node>` for members that have none (or another
    /// identity's).
    async fn record_admissions(&self, view: &View) -> Result<(), KmsError> {
        let members: Vec<(String, String)> = lock(&self.known)
            .members
            .iter()
            .map(|(n, m)| (n.clone(), m.identity.clone()))
            .collect();
        for (node, identity) in members {
            if view.admitted.get(&node).is_some_and(|a| a.identity == identity) {
                continue;
            }
            let a = Admission {
                node: node.clone(),
                identity,
                admitted_unix: super::now_unix(),
                by: self.node().to_owned(),
            };
            let key = self.paths.admitted(&node);
            // First come, first written; a node with a new identity replaces its record.
            let cmps = match view.admitted.get(&node) {
                None => vec![Cmp::Absent(key.clone())],
                Some(_) => vec![],
            };
            if self.etcd.txn(cmps, vec![Op::Put(key, to_json(&a))]).await? {
                tracing::info!(node = %node, "cluster: node admitted");
            }
        }
        Ok(())
    }

    /// Make the KEKs this node had before it was clustered the cluster's too
    /// (decrypt-only, epoch 0), so every member can read what was written
    /// under them. A token KEK made then has no sealed copy and stays this
    /// node's alone (logged once).
    async fn share_own(&self, view: &View) -> Result<(), KmsError> {
        for (key_id, created_unix, shareable) in self.kms.own_keks() {
            if view.keys.contains_key(&key_id) {
                continue;
            }
            if !shareable {
                if lock(&self.known).unshareable.insert(key_id.clone()) {
                    tracing::warn!(
                        key_id,
                        "cluster: this KEK lives only in this node's token (made before the node was clustered) and cannot be shared; data under it decrypts on this node only"
                    );
                }
                continue;
            }
            let record = KeyRecord {
                key_id: key_id.clone(),
                epoch: 0,
                created_unix,
                by: self.node().to_owned(),
                replaced_unix: Some(super::now_unix()),
                retired_unix: None,
            };
            let key = self.paths.kek_record(&key_id);
            if self
                .etcd
                .txn(vec![Cmp::Absent(key.clone())], vec![Op::Put(key, to_json(&record))])
                .await?
            {
                tracing::info!(
                    key_id,
                    "cluster: a KEK from before this node was clustered is shared"
                );
            }
        }
        Ok(())
    }

    /// Wrap every live KEK this node holds to every other member lacking it:
    /// all of one member's envelopes in one transaction, so that a newcomer
    /// finds the write key and the older KEKs together.
    async fn wrap_missing(&self, view: &View) -> Result<(), KmsError> {
        let members: Vec<(String, Member)> = lock(&self.known)
            .members
            .iter()
            .filter(|(n, _)| n.as_str() != self.node())
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect();
        let mut values: HashMap<String, Option<Zeroizing<[u8; 32]>>> = HashMap::new();
        for (node, m) in &members {
            let lacking: Vec<_> = view
                .live()
                .filter(|k| self.kms.holds(&k.key_id))
                .filter(|k| {
                    !view.envelopes.contains_key(&(k.key_id.clone(), node.clone()))
                        && !view.holds.get(node).is_some_and(|h| h.keys.contains(&k.key_id))
                })
                .collect();
            if lacking.is_empty() {
                continue;
            }
            let mut cmps = vec![Cmp::ModRevision(self.paths.node(node), m.revision)];
            let mut ops = Vec::new();
            for k in &lacking {
                if !values.contains_key(&k.key_id) {
                    let (kms, id) = (self.kms.clone(), k.key_id.clone());
                    let value = blocking(move || kms.kek_value(&id)).await;
                    if let Err(e) = &value {
                        tracing::warn!(key_id = %k.key_id, error = %crate::incident::Chain(e), "cluster: cannot read a KEK to wrap it");
                    }
                    values.insert(k.key_id.clone(), value.ok());
                }
                let Some(Some(value)) = values.get(&k.key_id) else { continue };
                let e = self.wrap(&k.key_id, node, k.epoch, m, value).await?;
                let key = self.paths.envelope(&k.key_id, node);
                cmps.push(Cmp::Absent(key.clone()));
                ops.push(Op::Put(key, to_json(&e)));
            }
            let count = u64::try_from(ops.len()).unwrap_or(u64::MAX);
            if count > 0 && self.etcd.txn(cmps, ops).await? {
                self.metrics.envelopes.with_label_values(&["wrapped"]).inc_by(count);
                tracing::info!(node = %node, keks = count, "cluster: KEKs wrapped to node");
            }
        }
        Ok(())
    }

    /// An envelope of `kek` to `node`, signed by this node.
    pub(super) async fn wrap(
        &self,
        key_id: &str,
        node: &str,
        epoch: u64,
        to: &Member,
        kek: &Zeroizing<[u8; 32]>,
    ) -> Result<Envelope, KmsError> {
        let mut m = Zeroizing::new([0u8; 32]);
        let mut iv = [0u8; IV_LEN];
        self.kms.pool.fill(&mut m[..])?;
        self.kms.pool.fill(&mut iv)?;
        let (ct, secret) =
            qkeyd_pqc::encapsulate(Algorithm::MlKem1024, &to.transport_public, &m)
                .map_err(|e| KmsError::Attest(format!("node {node}'s transport key: {e}")))?;
        let mut e = Envelope::seal(key_id, node, epoch, self.node(), ct, &secret, iv, kek);
        let (attestor, bytes) = (self.attestor.clone(), e.signed_bytes());
        e.signature = tokio::task::spawn_blocking(move || attestor.sign_envelope(&bytes))
            .await
            .map_err(|_| KmsError::TaskLost)?
            .map_err(|err| KmsError::Attest(err.to_string()))?;
        Ok(e)
    }

    /// Take in the envelopes addressed to this node for live KEKs it lacks.
    async fn receive(&self, view: &View) {
        let me = self.node().to_owned();
        for k in view.live() {
            if self.kms.holds(&k.key_id) || self.kms.retired_here(&k.key_id) {
                continue;
            }
            let Some(kv) = view.envelopes.get(&(k.key_id.clone(), me.clone())) else { continue };
            if lock(&self.known).bad_envelopes.contains(&(k.key_id.clone(), kv.mod_revision)) {
                continue;
            }
            let opened = match parse::<Envelope>(&kv.key, &kv.value) {
                Ok(e) => self.open_envelope(&e, k.epoch).await.map(|v| (e.from, v)),
                Err(why) => Err(why),
            };
            match opened {
                Ok((from, value)) => {
                    let (kms, id, created) = (self.kms.clone(), k.key_id.clone(), k.created_unix);
                    match blocking(move || kms.adopt(&id, created, &value)).await {
                        Ok(()) => {
                            self.metrics.envelopes.with_label_values(&["received"]).inc();
                            tracing::info!(key_id = %k.key_id, from = %from, "cluster: KEK received and sealed here");
                        }
                        Err(e) => {
                            tracing::warn!(key_id = %k.key_id, error = %crate::incident::Chain(&e), "cluster: cannot seal a received KEK here")
                        }
                    }
                }
                Err(why) => {
                    tracing::warn!(key_id = %k.key_id, reason = %why, "cluster: envelope refused");
                    self.metrics.envelopes.with_label_values(&["refused"]).inc();
                    lock(&self.known).bad_envelopes.insert((k.key_id.clone(), kv.mod_revision));
                    // Delete it (unless it changed meanwhile) so that a member wraps the KEK
                    // to this node again.
                    let cmps = vec![Cmp::ModRevision(kv.key.clone(), kv.mod_revision)];
                    if let Err(e) = self.etcd.txn(cmps, vec![Op::Delete(kv.key.clone())]).await {
                        tracing::warn!(key_id = %k.key_id, error = %e, "cluster: cannot delete a refused envelope");
                    }
                }
            }
        }
    }

    /// Check an envelope addressed here and unwrap it: signed by a member,
    /// for this node, at the KEK's epoch, and authentic under the secret
    /// this node's transport key decapsulates.
    async fn open_envelope(&self, e: &Envelope, epoch: u64) -> Result<Zeroizing<[u8; 32]>, String> {
        if e.node != self.node() || e.epoch != epoch {
            return Err(format!(
                "it names node {} epoch {}, not this node at the KEK's epoch {epoch}",
                e.node, e.epoch
            ));
        }
        let signer = lock(&self.known).members.get(&e.from).cloned();
        let Some(signer) = signer else {
            return Err(format!("it is signed by {}, which is not a member", e.from));
        };
        let good = qkeyd_pqc::verify(
            Algorithm::MlDsa87,
            &signer.identity_public,
            &e.signed_bytes(),
            ENVELOPE_CONTEXT,
            &e.signature,
        );
        if !matches!(good, Ok(true)) {
            return Err(format!("its signature does not verify under {}'s identity", e.from));
        }
        let (vault, id, ct) =
            (self.vault.clone(), self.transport_id.clone(), e.kem_ciphertext.clone());
        let secret = tokio::task::spawn_blocking(move || {
            let key = vault.open_reserved(&id)?;
            vault.decapsulate_open(&key, &ct)
        })
        .await
        .map_err(|_| "the unwrap ended without an answer".to_owned())?
        .map_err(|err| format!("the transport key: {err}"))?;
        e.open(&secret).ok_or_else(|| {
            "it does not authenticate (tampered, or not for this node's transport key)".into()
        })
    }

    /// Retire here what the cluster retired.
    async fn apply_retired(&self, view: &View) {
        for (k, _) in view.keys.values() {
            if k.retired_unix.is_none() || !self.kms.holds(&k.key_id) {
                continue;
            }
            let (kms, id) = (self.kms.clone(), k.key_id.clone());
            if let Err(e) = blocking(move || kms.retire(&id, true)).await {
                tracing::warn!(key_id = %k.key_id, error = %crate::incident::Chain(&e), "cluster: cannot retire here a KEK the cluster retired");
            }
        }
    }

    /// Publish the key ids this node holds, when they changed.
    async fn publish_holds(&self, view: &View) -> Result<(), KmsError> {
        let mut keys = self.kms.held();
        keys.sort();
        let h = Holds { node: self.node().to_owned(), keys };
        if view.holds.get(self.node()) != Some(&h) {
            self.etcd.put(&self.paths.holds(self.node()), &to_json(&h)).await?;
        }
        Ok(())
    }
}

/// Check a node record under `policy`: the evidence verifies (signature,
/// quote, PCRs, age, sealer, …), answers the nonce of this prefix, node and
/// salt, and is about an ML-KEM-1024 key.
pub(super) fn check_node(
    prefix: &str,
    node: &str,
    value: &[u8],
    policy: &Policy,
) -> Result<Member, String> {
    let r: NodeRecord = parse(node.as_bytes(), value)?;
    if r.node != node {
        return Err(format!("the record names node {}", r.node));
    }
    let nonce = join_nonce(prefix, node, &r.salt);
    let json = serde_json::to_vec(&r.evidence).map_err(|e| e.to_string())?;
    let verified = qkeyd_attest::verify(
        &json,
        &nonce,
        policy,
        &mut VerifierState::default(),
        super::now_unix(),
    )
    .map_err(|f| f.to_string())?;
    let key = &verified.statement.key;
    if key.alg != Algorithm::MlKem1024.name() || key.public_key.len() != TRANSPORT_KEY_LEN {
        return Err(format!("the attested key is {}, not an ML-KEM-1024 transport key", key.alg));
    }
    Ok(Member {
        revision: 0,
        identity: verified.node,
        identity_public: r.evidence.identity.public_key,
        transport_public: key.public_key.clone(),
    })
}

/// `op` on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, KmsError> + Send + 'static,
) -> Result<T, KmsError> {
    tokio::task::spawn_blocking(op).await.map_err(|_| KmsError::TaskLost)?
}
