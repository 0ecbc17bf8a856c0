//! `[qkd.kme.NAME]`: Key Management Entities of QKD links, reached through
//! the ETSI GS QKD 014 REST API. 014 makes mutual TLS mandatory, so each
//! KME needs an `https://` URL, its CA and this SAE's certificate and key.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::ConfigError;

/// One KME and the SAEs this node exchanges keys with through it.
#[derive(Clone, Debug)]
pub(crate) struct KmeSettings {
    /// Its name in the config (`[qkd.kme.NAME]`).
    pub(crate) name: String,
    /// Its base URL (`https://host:port`); the API is under `/api/v1/keys/`.
    pub(crate) url: String,
    /// The CA certificates (PEM) its server certificate must chain to.
    pub(crate) ca_file: PathBuf,
    /// This SAE's client certificate (PEM); the KME takes the SAE id from it.
    pub(crate) cert_file: PathBuf,
    /// Its private key (PEM).
    pub(crate) key_file: PathBuf,
    /// This node's SAE id at that KME.
    pub(crate) sae_id: String,
    /// The SAE ids at the other ends of its links.
    pub(crate) peers: Vec<String>,
    /// How long one request may take.
    pub(crate) timeout: Duration,
    /// Min-entropy claimed per key byte, for the links' health tests.
    pub(crate) claimed_h: f64,
    /// Trust below which a link is out of use.
    pub(crate) min_trust: f64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQkd {
    #[serde(default)]
    kme: BTreeMap<String, RawKme>,
    #[serde(default)]
    serve: Option<super::qkd_serve::RawServe>,
    #[serde(default)]
    peer: BTreeMap<String, super::qkd_serve::RawPeer>,
}

/// The checked `[qkd]` tables.
#[derive(Clone, Debug, Default)]
pub(super) struct QkdSettings {
    /// The KMEs, by name.
    pub(crate) kmes: Vec<KmeSettings>,
    /// The GS QKD 014 server for local SAEs, if any.
    pub(crate) serve: Option<super::qkd_serve::ServeSettings>,
    /// The qkeyd nodes at the other ends of the links.
    pub(crate) peers: Vec<super::qkd_serve::PeerSettings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKme {
    url: String,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    sae_id: String,
    peers: Vec<String>,
    #[serde(default = "default_timeout")]
    timeout_secs: f64,
    #[serde(default = "default_claimed_h")]
    claimed_h: f64,
    #[serde(default = "default_min_trust")]
    min_trust: f64,
}

fn default_timeout() -> f64 {
    5.0
}

/// Privacy-amplified QKD keys are meant to be uniform (8 bits per byte);
/// the claim leaves a margin, as for a hardware source.
fn default_claimed_h() -> f64 {
    7.5
}

fn default_min_trust() -> f64 {
    0.89
}

/// Whether `id` can be an SAE id here: 1 to 128 characters that need no
/// escaping in a URL path segment (`[A-Za-z0-9._~-]`), since 014 puts SAE
/// ids in its paths.
pub(crate) fn valid_sae_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// Whether `url` is `https://HOST[:PORT]` and nothing more.
pub(super) fn https_base(url: &str) -> bool {
    let host = url.get(..8).filter(|s| s.eq_ignore_ascii_case("https://")).map(|_| &url[8..]);
    host.is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#', '@']))
}

impl RawQkd {
    pub(super) fn check(self) -> Result<QkdSettings, ConfigError> {
        let kmes: Vec<KmeSettings> =
            self.kme.into_iter().map(|(name, raw)| raw.check(name)).collect::<Result<_, _>>()?;
        let peers = self
            .peer
            .into_iter()
            .map(|(name, raw)| raw.check(name, &kmes))
            .collect::<Result<Vec<_>, _>>()?;
        let serve = self.serve.map(|s| s.check(&peers)).transpose()?;
        if serve.is_none() && !peers.is_empty() {
            return Err(ConfigError::Inconsistent(
                "[qkd.peer.NAME] needs [qkd.serve]: peers fetch ciphertexts from its listener, \
                 and its certificate is this node's client certificate at theirs",
            ));
        }
        Ok(QkdSettings { kmes, serve, peers })
    }
}

impl RawKme {
    fn check(self, name: String) -> Result<KmeSettings, ConfigError> {
        let bad = |problem: String| ConfigError::Kme { kme: name.clone(), problem };
        if !super::valid_name(&name) {
            return Err(bad("the name: use 1-64 characters of [A-Za-z0-9._-]".into()));
        }
        let url = self.url.trim_end_matches('/').to_owned();
        if !https_base(&url) {
            return Err(bad(format!(
                "url {:?} must be https://HOST[:PORT] (GS QKD 014 requires mutual TLS; the API \
                 paths are added)",
                self.url
            )));
        }
        if !valid_sae_id(&self.sae_id) {
            return Err(bad(format!(
                "sae_id {:?}: use 1-128 characters of [A-Za-z0-9._~-]",
                self.sae_id
            )));
        }
        if self.peers.is_empty() {
            return Err(bad("peers is empty: list the SAE ids at the other ends".into()));
        }
        if let Some(p) = self.peers.iter().find(|p| !valid_sae_id(p)) {
            return Err(bad(format!("peer {p:?}: use 1-128 characters of [A-Za-z0-9._~-]")));
        }
        if self.peers.contains(&self.sae_id) {
            return Err(bad(format!("peers lists this node's own sae_id {:?}", self.sae_id)));
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 300.0) {
            return Err(bad(format!(
                "timeout_secs must be in (0, 300], got {}",
                self.timeout_secs
            )));
        }
        if !(self.claimed_h > 0.0 && self.claimed_h <= 8.0) {
            return Err(bad(format!("claimed_h must be in (0, 8], got {}", self.claimed_h)));
        }
        if let Err(e) = qkeyd_health::HealthParams::new(8, self.claimed_h).cutoffs() {
            return Err(bad(format!("claimed_h {}: {e}", self.claimed_h)));
        }
        if !(0.0..=1.0).contains(&self.min_trust) {
            return Err(bad(format!("min_trust must be in [0, 1], got {}", self.min_trust)));
        }
        Ok(KmeSettings {
            name,
            url,
            ca_file: self.ca_file,
            cert_file: self.cert_file,
            key_file: self.key_file,
            sae_id: self.sae_id,
            peers: self.peers,
            timeout: Duration::from_secs_f64(self.timeout_secs),
            claimed_h: self.claimed_h,
            min_trust: self.min_trust,
        })
    }
}
