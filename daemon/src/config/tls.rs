//! `[tls]`: the REST API's certificate, key exchange groups, client
//! certificates and what each client may do.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{ConfigError, error::range};

/// What a caller of the REST API may do. Every route outside the open ones
/// (health, readiness, metrics) needs one.
#[derive(
    Clone, Copy, Debug, Eq, Hash, Ord, PartialEq, PartialOrd, Deserialize, serde::Serialize,
)]
pub(crate) enum Right {
    /// `GET /v1/random`.
    #[serde(rename = "random")]
    Random,
    /// List and show keys.
    #[serde(rename = "keys:read")]
    KeysRead,
    /// Sign, verify, encapsulate, decapsulate, derive.
    #[serde(rename = "keys:use")]
    KeysUse,
    /// Create, rotate, destroy keys.
    #[serde(rename = "keys:admin")]
    KeysAdmin,
    /// The KMS plugin's KEKs (`/v1/kms`).
    #[serde(rename = "kms:admin")]
    KmsAdmin,
    /// What the quantum edge gateway is given.
    #[serde(rename = "gateway")]
    Gateway,
}

impl Right {
    /// Every right (what the bearer token grants).
    pub(crate) const ALL: [Self; 6] = [
        Self::Random,
        Self::KeysRead,
        Self::KeysUse,
        Self::KeysAdmin,
        Self::KmsAdmin,
        Self::Gateway,
    ];

    /// The name used in the config and in answers.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::KeysRead => "keys:read",
            Self::KeysUse => "keys:use",
            Self::KeysAdmin => "keys:admin",
            Self::KmsAdmin => "kms:admin",
            Self::Gateway => "gateway",
        }
    }
}

/// A set of [`Right`]s.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub(crate) struct Rights(u8);

impl Rights {
    /// Every right.
    pub(crate) fn all() -> Self {
        Right::ALL.into_iter().collect()
    }

    /// Whether `right` is in the set.
    pub(crate) fn has(self, right: Right) -> bool {
        self.0 & (1 << right as u8) != 0
    }

    /// Both sets.
    pub(crate) fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The names of the rights held, in a fixed order.
    pub(crate) fn names(self) -> Vec<&'static str> {
        Right::ALL.into_iter().filter(|r| self.has(*r)).map(Right::name).collect()
    }
}

impl FromIterator<Right> for Rights {
    fn from_iter<I: IntoIterator<Item = Right>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |acc, r| acc | (1 << r as u8)))
    }
}

/// How a client certificate is recognised: one of its names.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) enum Identity {
    /// The subject's common name.
    Cn(String),
    /// A DNS name in the subjectAltName.
    Dns(String),
    /// An IP address in the subjectAltName.
    Ip(std::net::IpAddr),
    /// A URI in the subjectAltName (e.g. a SPIFFE id).
    Uri(String),
    /// An email address in the subjectAltName.
    Email(String),
    /// The whole subject DN, RFC 4514 (`CN=gw,O=Acme`).
    Subject(String),
}

impl Identity {
    /// Parse `cn:NAME`, `dns:NAME`, `ip:ADDR`, `uri:URI`, `email:ADDR`, `subject:DN`.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (kind, value) = s.split_once(':')?;
        if value.is_empty() {
            return None;
        }
        let v = value.to_owned();
        Some(match kind.to_ascii_lowercase().as_str() {
            "cn" => Self::Cn(v),
            "dns" => Self::Dns(v.to_ascii_lowercase()),
            "ip" => Self::Ip(value.parse().ok()?),
            "uri" => Self::Uri(v),
            "email" => Self::Email(v),
            "subject" => Self::Subject(v),
            _ => return None,
        })
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cn(v) => write!(f, "cn:{v}"),
            Self::Dns(v) => write!(f, "dns:{v}"),
            Self::Ip(v) => write!(f, "ip:{v}"),
            Self::Uri(v) => write!(f, "uri:{v}"),
            Self::Email(v) => write!(f, "email:{v}"),
            Self::Subject(v) => write!(f, "subject:{v}"),
        }
    }
}

/// One `[[tls.client]]`: a certificate identity and its rights.
#[derive(Clone, Debug)]
pub(crate) struct ClientRule {
    /// How the certificate is recognised.
    pub(crate) identity: Identity,
    /// What it may do.
    pub(crate) rights: Rights,
}

/// The key exchange groups offered (`[tls] groups`).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Groups {
    /// X25519MLKEM768 preferred, X25519 accepted from classical clients.
    Hybrid,
    /// X25519MLKEM768 alone: a classical client fails the handshake.
    PqOnly,
}

/// The REST API's TLS (`[tls]`; on when it has a certificate).
#[derive(Clone, Debug)]
pub(crate) struct TlsSettings {
    /// The certificate chain (PEM), leaf first.
    pub(crate) cert: PathBuf,
    /// Its private key (PEM).
    pub(crate) key: PathBuf,
    /// Key exchange groups.
    pub(crate) groups: Groups,
    /// Whether TLS 1.2 is accepted too.
    pub(crate) allow_tls12: bool,
    /// A handshake not finished in this long is dropped.
    pub(crate) handshake_timeout: Duration,
    /// How often the certificate and key files are checked for a change.
    pub(crate) reload_interval: Duration,
    /// The CAs client certificates are checked against; `None`: none asked for.
    pub(crate) client_ca: Option<PathBuf>,
    /// Client identities and their rights.
    pub(crate) clients: Vec<ClientRule>,
}

/// Who may do what on the REST API, with or without TLS.
#[derive(Clone, Debug)]
pub(crate) struct Access {
    /// Whether the bearer token grants every right.
    pub(crate) bearer_token: bool,
    /// Rights of a request with neither a certificate nor a token.
    pub(crate) anonymous: Rights,
}

impl Default for Access {
    fn default() -> Self {
        Self { bearer_token: true, anonymous: [Right::Random].into_iter().collect() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    groups: String,
    min_version: String,
    handshake_timeout_secs: u64,
    reload_interval_secs: u64,
    client_ca: Option<PathBuf>,
    bearer_token: bool,
    anonymous: Vec<Right>,
    #[serde(rename = "client")]
    clients: Vec<RawClient>,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            groups: "hybrid".into(),
            min_version: "1.3".into(),
            handshake_timeout_secs: 10,
            reload_interval_secs: 5,
            client_ca: None,
            bearer_token: true,
            anonymous: vec![Right::Random],
            clients: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    identity: String,
    rights: Vec<Right>,
}

/// The checked `[tls]` table: its settings, if TLS is on, and the access rules.
pub(super) struct CheckedTls {
    pub(super) tls: Option<TlsSettings>,
    pub(super) access: Access,
    /// `[tls]` options other than the files, kept for `--tls-cert` / `--tls-key`.
    pub(super) pending: PendingTls,
}

/// `[tls]` options that apply once the files are known.
#[derive(Clone, Debug)]
pub(crate) struct PendingTls {
    groups: Groups,
    allow_tls12: bool,
    handshake_timeout: Duration,
    reload_interval: Duration,
    pub(super) client_ca: Option<PathBuf>,
    clients: Vec<ClientRule>,
}

impl PendingTls {
    /// TLS settings with these files.
    pub(crate) fn with_files(&self, cert: PathBuf, key: PathBuf) -> TlsSettings {
        TlsSettings {
            cert,
            key,
            groups: self.groups,
            allow_tls12: self.allow_tls12,
            handshake_timeout: self.handshake_timeout,
            reload_interval: self.reload_interval,
            client_ca: self.client_ca.clone(),
            clients: self.clients.clone(),
        }
    }
}

impl RawTls {
    pub(super) fn check(self) -> Result<CheckedTls, ConfigError> {
        let groups = match self.groups.as_str() {
            "hybrid" => Groups::Hybrid,
            "pq-only" => Groups::PqOnly,
            other => {
                return Err(ConfigError::OutOfRange {
                    key: "tls.groups",
                    allowed: "\"hybrid\" or \"pq-only\"",
                    value: format!("{other:?}"),
                });
            }
        };
        let allow_tls12 = match self.min_version.as_str() {
            "1.3" => false,
            "1.2" => true,
            other => {
                return Err(ConfigError::OutOfRange {
                    key: "tls.min_version",
                    allowed: "\"1.3\" or \"1.2\"",
                    value: format!("{other:?}"),
                });
            }
        };
        if allow_tls12 && groups == Groups::PqOnly {
            return Err(ConfigError::Inconsistent(
                "tls.groups = \"pq-only\" needs TLS 1.3 (X25519MLKEM768 is a TLS 1.3 group): \
                 drop tls.min_version = \"1.2\"",
            ));
        }
        range(
            (1..=300).contains(&self.handshake_timeout_secs),
            "tls.handshake_timeout_secs",
            "1..=300",
            self.handshake_timeout_secs,
        )?;
        range(
            (1..=86_400).contains(&self.reload_interval_secs),
            "tls.reload_interval_secs",
            "1..=86400",
            self.reload_interval_secs,
        )?;
        let mut clients = Vec::new();
        for c in self.clients {
            let identity = Identity::parse(&c.identity).ok_or(ConfigError::OutOfRange {
                key: "tls.client.identity",
                allowed: "cn:NAME, dns:NAME, ip:ADDR, uri:URI, email:ADDR or subject:DN",
                value: format!("{:?}", c.identity),
            })?;
            if clients.iter().any(|r: &ClientRule| r.identity == identity) {
                return Err(ConfigError::OutOfRange {
                    key: "tls.client.identity",
                    allowed: "each identity once",
                    value: format!("{:?} twice", c.identity),
                });
            }
            clients.push(ClientRule { identity, rights: c.rights.into_iter().collect() });
        }
        if !clients.is_empty() && self.client_ca.is_none() {
            return Err(ConfigError::Inconsistent(
                "[[tls.client]] rules need tls.client_ca: the CA that issues the client certificates",
            ));
        }
        if !self.bearer_token && self.client_ca.is_none() {
            return Err(ConfigError::Inconsistent(
                "tls.bearer_token = false needs tls.client_ca, or nothing could manage keys",
            ));
        }
        let pending = PendingTls {
            groups,
            allow_tls12,
            handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
            reload_interval: Duration::from_secs(self.reload_interval_secs),
            client_ca: self.client_ca,
            clients,
        };
        let tls = match (self.cert, self.key) {
            (Some(cert), Some(key)) => Some(pending.with_files(cert, key)),
            // `--tls-cert` / `--tls-key` may still give them.
            (None, None) => None,
            _ => return Err(ConfigError::Inconsistent("tls.cert and tls.key go together")),
        };
        let access = Access {
            bearer_token: self.bearer_token,
            anonymous: self.anonymous.into_iter().collect(),
        };
        Ok(CheckedTls { tls, access, pending })
    }
}
