//! The records a node holds for its peers until they expire (`enc_keys`'
//! side), and the key ids a node is delivering or has delivered to its own
//! SAEs (`dec_keys`' side).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Instant,
};

use serde_json::json;

use super::{QkdNode, ServeError, lock};
use crate::qkd::{
    link::Recent,
    peer::{HeldAnswer, Record},
};

/// Records held for peers, at most (each waits `hold_secs`): with one
/// ciphertext per record, about 110 MB. When full, `enc_keys` is refused
/// (503) rather than a waiting record dropped.
const MAX_HELD: usize = 1 << 16;

/// Records held for the peer by key id (with when they were issued), and
/// the ids in issue order, for expiry.
pub(super) type Holding = (HashMap<String, (Record, Instant)>, VecDeque<(Instant, String)>);

/// Key ids delivered here, and those being delivered.
pub(super) struct Delivery {
    pub(super) released: Recent<String>,
    pub(super) claimed: HashSet<String>,
}

/// Key ids one `dec_keys` is delivering: released when it succeeds
/// ([`Claim::deliver`]), given back when it fails (dropped).
pub(super) struct Claim<'a> {
    node: &'a QkdNode,
    ids: Vec<String>,
}

impl Claim<'_> {
    /// The keys were delivered: never again.
    pub(super) fn deliver(self) {
        let mut d = lock(&self.node.delivery);
        for id in &self.ids {
            d.released.insert(id.clone());
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut d = lock(&self.node.delivery);
        for id in &self.ids {
            d.claimed.remove(id);
        }
    }
}

impl QkdNode {
    /// Claim `key_ids` for one `dec_keys`: 400 if one was delivered here
    /// already or another request is delivering it.
    pub(super) fn claim(&self, key_ids: &[String]) -> Result<Claim<'_>, ServeError> {
        let mut d = lock(&self.delivery);
        if let Some(id) =
            key_ids.iter().find(|id| d.released.contains(*id) || d.claimed.contains(*id))
        {
            return Err(ServeError::bad_request(
                "key_ID already delivered (or being delivered)",
                vec![json!({ "key_ID": id })],
            ));
        }
        d.claimed.extend(key_ids.iter().cloned());
        Ok(Claim { node: self, ids: key_ids.to_vec() })
    }

    /// Forget expired records; 503 unless `n` more fit.
    pub(super) fn room(&self, n: usize) -> Result<(), ServeError> {
        let mut held = lock(&self.held);
        let (map, order) = &mut *held;
        let now = Instant::now();
        while let Some((at, id)) = order.front() {
            if now.duration_since(*at) < self.settings.hold {
                break;
            }
            map.remove(id);
            order.pop_front();
        }
        if map.len() + n > MAX_HELD {
            return Err(ServeError::unavailable(
                format!("{} keys are waiting for peer nodes to fetch them", map.len()),
                vec![json!({ "hold_secs": self.settings.hold.as_secs(), "max_held": MAX_HELD })],
            ));
        }
        Ok(())
    }

    /// Keep `records` for the peer, `hold_secs` from now.
    pub(super) fn hold(&self, records: Vec<Record>) {
        let mut held = lock(&self.held);
        let (map, order) = &mut *held;
        let now = Instant::now();
        for r in records {
            order.push_back((now, r.key_id.clone()));
            map.insert(r.key_id.clone(), (r, now));
        }
    }

    /// The peer API: hand `peer` the records of `key_ids` that are for its
    /// SAEs and not expired. They stay until they expire, so that a
    /// `dec_keys` that failed at the peer can be asked again; the peer
    /// delivers each key once.
    pub(crate) fn take_held(&self, peer: &str, key_ids: &[String]) -> HeldAnswer {
        let saes: &[String] = self
            .peers
            .iter()
            .find(|p| p.settings().name == peer)
            .map_or(&[], |p| &p.settings().saes[..]);
        let held = lock(&self.held);
        let now = Instant::now();
        let mut answer = HeldAnswer::default();
        let mut shared = Vec::new();
        for id in key_ids {
            match held.0.get(id) {
                Some((r, at))
                    if saes.contains(&r.slave) && now.duration_since(*at) < self.settings.hold =>
                {
                    answer.push(r.clone(), &mut shared);
                }
                _ => answer.missing.push(id.clone()),
            }
        }
        answer
    }
}
