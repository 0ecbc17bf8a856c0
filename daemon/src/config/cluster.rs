//! `[kms.cluster]`: the KMS plugin's KEKs shared with the other
//! control-plane nodes through etcd. On when the table is present.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{ConfigError, error::range};

/// The etcd key prefix unless configured.
pub(crate) const DEFAULT_PREFIX: &str = "/qkeyd/v1/";

/// Where the shared KEKs live and who may hold them.
#[derive(Clone, Debug)]
pub(crate) struct ClusterSettings {
    /// etcd client URLs (`https://…`, or `http://` on loopback).
    pub(crate) endpoints: Vec<String>,
    /// etcd's CA certificate (PEM), as kube-apiserver's `--etcd-cafile`.
    pub(crate) ca_file: Option<PathBuf>,
    /// This node's etcd client certificate (PEM), as `--etcd-certfile`.
    pub(crate) cert_file: Option<PathBuf>,
    /// Its key (PEM), as `--etcd-keyfile`.
    pub(crate) key_file: Option<PathBuf>,
    /// The key prefix, ending in `/`.
    pub(crate) prefix: String,
    /// This node's name in the cluster.
    pub(crate) node: String,
    /// The verifier policy (a `qkeyd-attest` policy file) a node's evidence
    /// must pass to be given the KEKs; read again at every poll.
    pub(crate) policy: PathBuf,
    /// How often the node reads the cluster's state.
    pub(crate) poll_interval: Duration,
    /// How long one etcd request may take.
    pub(crate) timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCluster {
    endpoints: Vec<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    prefix: String,
    node: Option<String>,
    policy: Option<PathBuf>,
    poll_interval_secs: f64,
    timeout_secs: f64,
}

impl Default for RawCluster {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            prefix: DEFAULT_PREFIX.into(),
            node: None,
            policy: None,
            poll_interval_secs: 2.0,
            timeout_secs: 5.0,
        }
    }
}

/// Whether `name` can be a node name: 1 to 63 of `[A-Za-z0-9._-]` (a host
/// name's label characters), so it is one etcd key segment.
pub(crate) fn valid_node_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RawCluster {
    pub(super) fn check(self) -> Result<ClusterSettings, ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::Inconsistent(
                "[kms.cluster] needs endpoints: etcd's client URLs, as kube-apiserver's \
                 --etcd-servers",
            ));
        }
        for e in &self.endpoints {
            let loopback = e.starts_with("http://127.")
                || e.starts_with("http://localhost:")
                || e.starts_with("http://[::1]:");
            range(
                e.starts_with("https://") || loopback,
                "kms.cluster.endpoints",
                "https:// URLs (http:// only on loopback)",
                e,
            )?;
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ConfigError::Inconsistent(
                "kms.cluster.cert_file and key_file go together: etcd's client certificate \
                 and its key",
            ));
        }
        if self.endpoints.iter().any(|e| e.starts_with("https://")) && self.ca_file.is_none() {
            return Err(ConfigError::Inconsistent(
                "kms.cluster: https endpoints need ca_file (etcd's CA, as --etcd-cafile)",
            ));
        }
        range(
            self.prefix.starts_with('/') && self.prefix.ends_with('/') && self.prefix.len() > 1,
            "kms.cluster.prefix",
            "a key prefix starting and ending with / (default /qkeyd/v1/)",
            &self.prefix,
        )?;
        let node = match self.node {
            Some(n) => n,
            None => host_name().ok_or(ConfigError::Inconsistent(
                "kms.cluster.node is not set and the host name cannot be read",
            ))?,
        };
        range(valid_node_name(&node), "kms.cluster.node", "1-63 of [A-Za-z0-9._-]", &node)?;
        let policy = self.policy.ok_or(ConfigError::Inconsistent(
            "[kms.cluster] needs policy: the verifier policy file a node's evidence must pass \
             to be given the KEKs",
        ))?;
        let secs = |key, v: f64, max: f64| {
            range(v.is_finite() && v >= 0.1 && v <= max, key, "0.1 to the maximum", v)
                .map(|()| Duration::from_secs_f64(v))
        };
        Ok(ClusterSettings {
            endpoints: self.endpoints,
            ca_file: self.ca_file,
            cert_file: self.cert_file,
            key_file: self.key_file,
            prefix: self.prefix,
            node,
            policy,
            poll_interval: secs("kms.cluster.poll_interval_secs", self.poll_interval_secs, 300.0)?,
            timeout: secs("kms.cluster.timeout_secs", self.timeout_secs, 60.0)?,
        })
    }
}

fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}
