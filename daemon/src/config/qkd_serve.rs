//! `[qkd.serve]`: the GS QKD 014 server this node runs for its local SAEs
//! (gateways, IPsec controllers), and `[qkd.peer.NAME]`: the qkeyd nodes at
//! the other ends of its QKD links, whose transport keys make the delivered
//! keys hybrid.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{ConfigError, Identity, KmeSettings, qkd::valid_sae_id};

/// How a delivered key is made from its QKD key and ML-KEM shared secret.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Combiner {
    /// HKDF-SHA256 over the ML-KEM secret ‖ the QKD key, with the key_ID,
    /// both SAE ids, the size and the ciphertext's hash as context (in the
    /// style of ETSI TS 103 744's concatenation KDF). Any key size.
    Hkdf,
    /// `qubip-xor`: ML-KEM secret ⊕ QKD key. 256-bit keys only.
    QubipXor,
    /// `qubip-hmac-sha256`: HMAC-SHA256(key = QKD key, ML-KEM secret).
    QubipHmac,
    /// `qubip-xor-hmac-sha256`: HMAC-SHA256(key = secret ⊕ QKD key, key_ID).
    QubipXorHmac,
}

impl Combiner {
    /// Its name in the config and in a key's extension.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Hkdf => "hkdf-sha256",
            Self::QubipXor => "qubip-xor",
            Self::QubipHmac => "qubip-hmac-sha256",
            Self::QubipXorHmac => "qubip-xor-hmac-sha256",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Hkdf, Self::QubipXor, Self::QubipHmac, Self::QubipXorHmac]
            .into_iter()
            .find(|c| c.as_str() == s)
    }

    /// Whether it makes keys of any size (else 256 bits only).
    pub(crate) fn any_size(self) -> bool {
        self == Self::Hkdf
    }
}

/// `[qkd.serve]`.
#[derive(Clone, Debug)]
pub(crate) struct ServeSettings {
    /// The listener (mutual TLS, its own port).
    pub(crate) listen: SocketAddr,
    /// The server certificate (PEM, leaf first); also this node's client
    /// certificate at its peers, so it needs clientAuth too.
    pub(crate) cert_file: PathBuf,
    /// Its key (PEM).
    pub(crate) key_file: PathBuf,
    /// The CAs that SAE and peer client certificates chain to.
    pub(crate) client_ca: PathBuf,
    /// The local SAE ids served: a client certificate whose CN is one of
    /// them is that SAE.
    pub(crate) saes: Vec<String>,
    /// How keys are combined.
    pub(crate) combiner: Combiner,
    /// Default key size, bits.
    pub(crate) key_size: u32,
    /// Smallest and largest key size, bits.
    pub(crate) min_key_size: u32,
    /// Largest key size, bits.
    pub(crate) max_key_size: u32,
    /// Keys one request may ask for.
    pub(crate) max_key_per_request: u32,
    /// How long a ciphertext waits for the peer to fetch it.
    pub(crate) hold: Duration,
}

/// `[qkd.peer.NAME]`: a qkeyd node at the other end of a QKD link.
#[derive(Clone, Debug)]
pub(crate) struct PeerSettings {
    /// Its name in the config.
    pub(crate) name: String,
    /// Its `[qkd.serve]` listener, `https://host:port`.
    pub(crate) url: String,
    /// The CAs its server certificate chains to.
    pub(crate) ca_file: PathBuf,
    /// Its client certificate at this node's `[qkd.serve]`.
    pub(crate) identity: Identity,
    /// The `qkeyd verify` policy its transport key's evidence must pass.
    pub(crate) policy: PathBuf,
    /// Its node identity's fingerprint (`GET /v1/attest/identity`): the
    /// evidence must be signed by that identity. Required unless the policy
    /// requires a TPM quote from a trusted AK.
    pub(crate) node_fingerprint: Option<String>,
    /// The `[qkd.kme.NAME]` of the link between the two nodes.
    pub(crate) kme: String,
    /// Its SAE id at the KMEs (one of that KME's `peers`).
    pub(crate) kme_sae_id: String,
    /// The SAEs it serves.
    pub(crate) saes: Vec<String>,
    /// How long one request to it may take.
    pub(crate) timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServe {
    listen: String,
    cert_file: PathBuf,
    key_file: PathBuf,
    client_ca: PathBuf,
    saes: Vec<String>,
    #[serde(default = "default_combiner")]
    combiner: String,
    #[serde(default = "default_key_size")]
    key_size: u32,
    #[serde(default = "default_min_key_size")]
    min_key_size: u32,
    #[serde(default = "default_max_key_size")]
    max_key_size: u32,
    #[serde(default = "default_max_per_request")]
    max_key_per_request: u32,
    #[serde(default = "default_hold")]
    hold_secs: u64,
}

fn default_combiner() -> String {
    Combiner::Hkdf.as_str().into()
}
fn default_key_size() -> u32 {
    256
}
fn default_min_key_size() -> u32 {
    64
}
/// HKDF-SHA256 makes at most 255 × 32 bytes; 8192 bits stays well inside.
fn default_max_key_size() -> u32 {
    8192
}
fn default_max_per_request() -> u32 {
    128
}
fn default_hold() -> u64 {
    300
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    url: String,
    ca_file: PathBuf,
    identity: String,
    policy: PathBuf,
    #[serde(default)]
    node_fingerprint: Option<String>,
    kme: String,
    kme_sae_id: String,
    saes: Vec<String>,
    #[serde(default = "default_timeout")]
    timeout_secs: f64,
}

fn default_timeout() -> f64 {
    5.0
}

fn check_saes(saes: &[String], bad: &dyn Fn(String) -> ConfigError) -> Result<(), ConfigError> {
    if saes.is_empty() {
        return Err(bad("saes is empty: list the SAE ids".into()));
    }
    if let Some(s) = saes.iter().find(|s| !valid_sae_id(s)) {
        return Err(bad(format!("SAE id {s:?}: use 1-128 characters of [A-Za-z0-9._~-]")));
    }
    Ok(())
}

impl RawServe {
    pub(super) fn check(self, peers: &[PeerSettings]) -> Result<ServeSettings, ConfigError> {
        let bad = |problem: String| ConfigError::QkdTable { table: "qkd.serve".into(), problem };
        let listen: SocketAddr = self
            .listen
            .parse()
            .map_err(|e| bad(format!("listen {:?} is not an address:port: {e}", self.listen)))?;
        check_saes(&self.saes, &bad)?;
        if let Some(p) = peers.iter().find(|p| p.saes.iter().any(|s| self.saes.contains(s))) {
            return Err(bad(format!(
                "an SAE id is both local (saes) and [qkd.peer.{}]'s: each SAE is served by one node",
                p.name
            )));
        }
        // Records go to the peer that serves their SAE, recognised by its
        // certificate: no SAE under two peers, no two peers (or a peer and
        // a local SAE) with one certificate identity.
        for (i, p) in peers.iter().enumerate() {
            for q in &peers[i + 1..] {
                if p.saes.iter().any(|s| q.saes.contains(s)) {
                    return Err(bad(format!(
                        "[qkd.peer.{}] and [qkd.peer.{}] list the same SAE: each SAE is served \
                         by one node",
                        p.name, q.name
                    )));
                }
                if p.identity.to_string() == q.identity.to_string() {
                    return Err(bad(format!(
                        "[qkd.peer.{}] and [qkd.peer.{}] have the same identity",
                        p.name, q.name
                    )));
                }
            }
            if let Some(s) = self.saes.iter().find(|s| p.identity.to_string() == format!("cn:{s}"))
            {
                return Err(bad(format!(
                    "[qkd.peer.{}] identity is the certificate of local SAE {s}",
                    p.name
                )));
            }
        }
        let combiner = Combiner::parse(&self.combiner).ok_or_else(|| {
            bad(format!(
                "combiner {:?}: use hkdf-sha256, or for interop qubip-xor, qubip-hmac-sha256, \
                 qubip-xor-hmac-sha256",
                self.combiner
            ))
        })?;
        let sizes = [self.min_key_size, self.key_size, self.max_key_size];
        if sizes.iter().any(|s| !s.is_multiple_of(8) || *s == 0)
            || !(self.min_key_size <= self.key_size && self.key_size <= self.max_key_size)
            || self.max_key_size > 8192
        {
            return Err(bad(format!(
                "key sizes must be multiples of 8 with 0 < min_key_size {} <= key_size {} <= \
                 max_key_size {} <= 8192",
                self.min_key_size, self.key_size, self.max_key_size
            )));
        }
        if !combiner.any_size() && sizes != [256; 3] {
            return Err(bad(format!(
                "combiner {} makes 256-bit keys only: set min_key_size, key_size and \
                 max_key_size to 256",
                combiner.as_str()
            )));
        }
        if !(1..=1024).contains(&self.max_key_per_request) {
            return Err(bad(format!(
                "max_key_per_request must be in 1..=1024, got {}",
                self.max_key_per_request
            )));
        }
        if !(1..=86_400).contains(&self.hold_secs) {
            return Err(bad(format!("hold_secs must be in 1..=86400, got {}", self.hold_secs)));
        }
        Ok(ServeSettings {
            listen,
            cert_file: self.cert_file,
            key_file: self.key_file,
            client_ca: self.client_ca,
            saes: self.saes,
            combiner,
            key_size: self.key_size,
            min_key_size: self.min_key_size,
            max_key_size: self.max_key_size,
            max_key_per_request: self.max_key_per_request,
            hold: Duration::from_secs(self.hold_secs),
        })
    }
}

impl RawPeer {
    pub(super) fn check(
        self,
        name: String,
        kmes: &[KmeSettings],
    ) -> Result<PeerSettings, ConfigError> {
        let bad =
            |problem: String| ConfigError::QkdTable { table: format!("qkd.peer.{name}"), problem };
        if !super::valid_name(&name) {
            return Err(bad("the name: use 1-64 characters of [A-Za-z0-9._-]".into()));
        }
        let url = self.url.trim_end_matches('/').to_owned();
        if !super::qkd::https_base(&url) {
            return Err(bad(format!("url {:?} must be https://HOST[:PORT]", self.url)));
        }
        let identity = Identity::parse(&self.identity).ok_or_else(|| {
            bad(format!(
                "identity {:?}: use cn:, dns:, ip:, uri:, email: or subject: and a value",
                self.identity
            ))
        })?;
        if let Some(f) = &self.node_fingerprint {
            let hex = f.strip_prefix("sha3-256:").unwrap_or(f);
            if !(hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())) {
                return Err(bad(format!(
                    "node_fingerprint {f:?} is not sha3-256: and 64 hex digits (as GET \
                     /v1/attest/identity shows it)"
                )));
            }
        }
        let Some(kme) = kmes.iter().find(|k| k.name == self.kme) else {
            return Err(bad(format!("kme {:?} names no [qkd.kme.NAME]", self.kme)));
        };
        if !kme.peers.contains(&self.kme_sae_id) {
            return Err(bad(format!(
                "kme_sae_id {:?} is not among [qkd.kme.{}] peers",
                self.kme_sae_id, kme.name
            )));
        }
        check_saes(&self.saes, &bad)?;
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 300.0) {
            return Err(bad(format!(
                "timeout_secs must be in (0, 300], got {}",
                self.timeout_secs
            )));
        }
        Ok(PeerSettings {
            name,
            url,
            ca_file: self.ca_file,
            identity,
            policy: self.policy,
            node_fingerprint: self.node_fingerprint.map(|f| {
                format!(
                    "sha3-256:{}",
                    f.strip_prefix("sha3-256:").unwrap_or(&f).to_ascii_lowercase()
                )
            }),
            kme: self.kme,
            kme_sae_id: self.kme_sae_id,
            saes: self.saes,
            timeout: Duration::from_secs_f64(self.timeout_secs),
        })
    }
}
