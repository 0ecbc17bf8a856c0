//! What the nodes keep in etcd, under the configured prefix, and the KEK
//! envelope's cryptography.
//!
//! ```text
//! nodes/<node>          NodeRecord: evidence about the node's transport key
//! admitted/<node>       Admission: who first verified it, and when (for people)
//! removed/<node>        Removal: never admitted again
//! write                 WriteRecord: the cluster's write key (compare-and-swap)
//! keys/<key id>         KeyRecord: every KEK, retired ones as tombstones
//! kek/<key id>/<node>   Envelope: the KEK wrapped to that node
//! holds/<node>          Holds: the key ids the node has sealed locally
//! ```
//!
//! Nothing here is secret and nothing is trusted for being here: a node
//! counts as a member only if its own evidence verifies under the reader's
//! policy, and an envelope only if a member signed it.

use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce, aead::Aead as _, aead::Payload};
use qkeyd_attest::{Evidence, evidence::b64};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha3::{Digest as _, Sha3_256};
use zeroize::Zeroizing;

/// `format` of an envelope.
pub(super) const ENVELOPE_FORMAT: &str = "qkeyd-kek-envelope/1";
/// The ML-DSA context of an envelope's signature: the node identity key
/// signs statements under another, so neither passes for the other.
pub(crate) const ENVELOPE_CONTEXT: &[u8] = b"qkeyd-kek-envelope/1";
/// Domain separation of the nonce a node's evidence answers.
const JOIN_LABEL: &[u8] = b"qkeyd-cluster-join/1\0";
/// HKDF `info` of the key that wraps a KEK.
const WRAP_INFO: &[u8] = b"qkeyd-kek-wrap/1";
/// AES-GCM IV length.
pub(super) const IV_LEN: usize = 12;

/// The etcd keys, under the prefix.
#[derive(Clone, Debug)]
pub(super) struct Paths {
    prefix: String,
}

impl Paths {
    pub(super) fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    pub(super) fn prefix(&self) -> &[u8] {
        self.prefix.as_bytes()
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.prefix).into_bytes()
    }

    pub(super) fn node(&self, node: &str) -> Vec<u8> {
        self.key(&format!("nodes/{node}"))
    }

    pub(super) fn admitted(&self, node: &str) -> Vec<u8> {
        self.key(&format!("admitted/{node}"))
    }

    pub(super) fn removed(&self, node: &str) -> Vec<u8> {
        self.key(&format!("removed/{node}"))
    }

    pub(super) fn write(&self) -> Vec<u8> {
        self.key("write")
    }

    pub(super) fn kek_record(&self, key_id: &str) -> Vec<u8> {
        self.key(&format!("keys/{key_id}"))
    }

    pub(super) fn envelope(&self, key_id: &str, node: &str) -> Vec<u8> {
        self.key(&format!("kek/{key_id}/{node}"))
    }

    pub(super) fn envelopes(&self, key_id: &str) -> Vec<u8> {
        self.key(&format!("kek/{key_id}/"))
    }

    pub(super) fn holds(&self, node: &str) -> Vec<u8> {
        self.key(&format!("holds/{node}"))
    }

    /// What a key under the prefix is.
    pub(super) fn parse<'a>(&self, key: &'a [u8]) -> Option<Entry<'a>> {
        let rest = std::str::from_utf8(key.strip_prefix(self.prefix.as_bytes())?).ok()?;
        let (kind, name) = rest.split_once('/').unwrap_or((rest, ""));
        Some(match kind {
            "nodes" => Entry::Node(name),
            "admitted" => Entry::Admitted(name),
            "removed" => Entry::Removed(name),
            "write" if name.is_empty() => Entry::Write,
            "keys" => Entry::Key(name),
            "kek" => {
                let (key_id, node) = name.split_once('/')?;
                Entry::Envelope(key_id, node)
            }
            "holds" => Entry::Holds(name),
            _ => return None,
        })
    }
}

/// A key under the prefix.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Entry<'a> {
    Node(&'a str),
    Admitted(&'a str),
    Removed(&'a str),
    Write,
    Key(&'a str),
    Envelope(&'a str, &'a str),
    Holds(&'a str),
}

/// A node's bid for membership: evidence about its ML-KEM-1024 transport
/// key, answering [`join_nonce`] of its name and `salt`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeRecord {
    pub(super) node: String,
    #[serde(with = "b64")]
    pub(super) salt: Vec<u8>,
    pub(super) published_unix: u64,
    pub(super) evidence: Evidence,
}

/// Who first found a node's evidence good, and when. For people: no node
/// trusts another for this record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Admission {
    pub(super) node: String,
    /// The identity key's fingerprint.
    pub(super) identity: String,
    pub(super) admitted_unix: u64,
    pub(super) by: String,
}

/// A node taken out: members never admit it again.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Removal {
    pub(super) node: String,
    pub(super) removed_unix: u64,
    pub(super) by: String,
}

/// The cluster's write key. Changed only by a transaction that compares its
/// revision, so two rotations at once make one new KEK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WriteRecord {
    pub(super) key_id: String,
    /// One more at every rotation.
    pub(super) epoch: u64,
    pub(super) created_unix: u64,
    pub(super) by: String,
}

/// One KEK of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyRecord {
    pub(super) key_id: String,
    pub(super) epoch: u64,
    pub(super) created_unix: u64,
    pub(super) by: String,
    #[serde(default)]
    pub(super) replaced_unix: Option<u64>,
    #[serde(default)]
    pub(super) retired_unix: Option<u64>,
}

/// The key ids a node has sealed locally.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Holds {
    pub(super) node: String,
    pub(super) keys: Vec<String>,
}

/// A KEK wrapped to one node: ML-KEM-1024 to its transport key, then
/// AES-256-GCM under a key derived from the shared secret, with
/// [`Envelope::aad`] bound; signed (ML-DSA-87, [`ENVELOPE_CONTEXT`]) by the
/// wrapping node over [`Envelope::signed_bytes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Envelope {
    pub(super) format: String,
    pub(super) key_id: String,
    /// The recipient.
    pub(super) node: String,
    pub(super) epoch: u64,
    /// The wrapping node.
    pub(super) from: String,
    #[serde(with = "b64")]
    pub(super) kem_ciphertext: Vec<u8>,
    #[serde(with = "b64")]
    pub(super) iv: Vec<u8>,
    /// AES-256-GCM ciphertext ‖ tag of the 32-byte KEK.
    #[serde(with = "b64")]
    pub(super) wrapped: Vec<u8>,
    #[serde(with = "b64", default)]
    pub(super) signature: Vec<u8>,
}

/// The associated data of a KEK's wrapping: key id, recipient and epoch.
#[derive(Serialize)]
struct Aad<'a> {
    format: &'a str,
    key_id: &'a str,
    node: &'a str,
    epoch: u64,
}

impl Envelope {
    /// The AES-GCM associated data.
    pub(super) fn aad(&self) -> Vec<u8> {
        let a = Aad {
            format: ENVELOPE_FORMAT,
            key_id: &self.key_id,
            node: &self.node,
            epoch: self.epoch,
        };
        serde_json::to_vec(&a).expect("strings and integers serialize")
    }

    /// What the signature covers: every field but the signature, as
    /// compact JSON in field order.
    pub(super) fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature.clear();
        serde_json::to_vec(&unsigned).expect("strings, integers and bytes serialize")
    }

    /// Wrap `kek` to the holder of `shared_secret` (from encapsulating to its
    /// transport key; `kem_ciphertext` is that encapsulation). Unsigned.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn seal(
        key_id: &str,
        node: &str,
        epoch: u64,
        from: &str,
        kem_ciphertext: Vec<u8>,
        shared_secret: &[u8; 32],
        iv: [u8; IV_LEN],
        kek: &[u8; 32],
    ) -> Self {
        let mut e = Self {
            format: ENVELOPE_FORMAT.into(),
            key_id: key_id.into(),
            node: node.into(),
            epoch,
            from: from.into(),
            kem_ciphertext,
            iv: iv.to_vec(),
            wrapped: Vec::new(),
            signature: Vec::new(),
        };
        let aad = e.aad();
        let wk = wrapping_key(shared_secret, &aad);
        e.wrapped = Aes256Gcm::new_from_slice(&wk[..])
            .expect("a 32-byte key")
            .encrypt(&Nonce::from(iv), Payload { msg: kek, aad: &aad })
            .expect("AES-GCM encrypts 32 bytes");
        e
    }

    /// The KEK, if the envelope authenticates under `shared_secret`.
    pub(super) fn open(&self, shared_secret: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let iv: [u8; IV_LEN] = self.iv.as_slice().try_into().ok()?;
        let aad = self.aad();
        let wk = wrapping_key(shared_secret, &aad);
        let kek = Zeroizing::new(
            Aes256Gcm::new_from_slice(&wk[..])
                .ok()?
                .decrypt(&Nonce::from(iv), Payload { msg: &self.wrapped, aad: &aad })
                .ok()?,
        );
        let mut out = Zeroizing::new([0u8; 32]);
        (kek.len() == 32).then(|| out.copy_from_slice(&kek))?;
        Some(out)
    }
}

/// HKDF-SHA256(salt = SHA3-256(`aad`), ikm = `shared_secret`, info =
/// [`WRAP_INFO`]).
fn wrapping_key(shared_secret: &[u8; 32], aad: &[u8]) -> Zeroizing<[u8; 32]> {
    let salt = Sha3_256::digest(aad);
    let mut okm = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), shared_secret)
        .expand(WRAP_INFO, &mut okm[..])
        .expect("32 bytes is within HKDF-SHA256's output limit");
    okm
}

/// The nonce a node's evidence answers: SHA3-256 of the label, the prefix,
/// the node name and the node's salt, so evidence published for one node or
/// one cluster does not pass for another.
pub(super) fn join_nonce(prefix: &str, node: &str, salt: &[u8]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    h.update(JOIN_LABEL);
    for part in [prefix.as_bytes(), node.as_bytes()] {
        h.update(part);
        h.update([0]);
    }
    h.update(salt);
    h.finalize().into()
}

/// Parse a record, naming the key on failure.
pub(super) fn parse<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value)
        .map_err(|e| format!("{} does not parse: {e}", String::from_utf8_lossy(key)))
}

/// A record as stored.
pub(super) fn to_json<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secret: &[u8; 32]) -> Envelope {
        Envelope::seal("qkeyd-kek-1", "n2", 3, "n1", vec![9; 8], secret, [1; IV_LEN], &[7; 32])
    }

    #[test]
    fn an_envelope_opens_with_its_secret_and_nothing_else() {
        let secret = [5u8; 32];
        let e = sample(&secret);
        assert_eq!(*e.open(&secret).unwrap(), [7u8; 32]);
        assert!(e.open(&[6u8; 32]).is_none());
        assert_eq!(e.wrapped.len(), 32 + 16);
        // Each bound field, changed, stops it opening.
        for change in [
            |e: &mut Envelope| e.key_id.push('x'),
            |e: &mut Envelope| e.node = "n3".into(),
            |e: &mut Envelope| e.epoch += 1,
            |e: &mut Envelope| e.iv[0] ^= 1,
            |e: &mut Envelope| e.wrapped[0] ^= 1,
        ] {
            let mut bad = e.clone();
            change(&mut bad);
            assert!(bad.open(&secret).is_none(), "{bad:?}");
        }
        // The signature covers the sender, which the AAD does not.
        let mut other = e.clone();
        other.from = "n9".into();
        assert_ne!(other.signed_bytes(), e.signed_bytes());
        let mut signed = e.clone();
        signed.signature = vec![1, 2, 3];
        assert_eq!(signed.signed_bytes(), e.signed_bytes());
        let back: Envelope = parse(b"k", &to_json(&signed)).unwrap();
        assert_eq!(back, signed);
    }

    #[test]
    fn keys_under_the_prefix_are_named_and_others_are_not() {
        let p = Paths::new("/q/");
        assert_eq!(p.parse(&p.node("n1")), Some(Entry::Node("n1")));
        assert_eq!(p.parse(&p.write()), Some(Entry::Write));
        assert_eq!(p.parse(&p.envelope("k1", "n2")), Some(Entry::Envelope("k1", "n2")));
        assert_eq!(p.parse(&p.holds("n2")), Some(Entry::Holds("n2")));
        assert_eq!(p.parse(&p.kek_record("k1")), Some(Entry::Key("k1")));
        assert_eq!(p.parse(b"/q/other/x"), None);
        assert_eq!(p.parse(b"/other/nodes/n1"), None);
    }

    #[test]
    fn the_join_nonce_binds_prefix_node_and_salt() {
        let n = join_nonce("/q/", "n1", &[1; 16]);
        assert_ne!(n, join_nonce("/q/", "n2", &[1; 16]));
        assert_ne!(n, join_nonce("/r/", "n1", &[1; 16]));
        assert_ne!(n, join_nonce("/q/", "n1", &[2; 16]));
        assert_ne!(join_nonce("/q/a", "b", &[]), join_nonce("/q/", "ab", &[]));
    }
}
