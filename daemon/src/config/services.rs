//! The `[kms]` and `[module]` tables as serde reads them, and their checks:
//! the KMS plugin's and the PKCS#11 module server's sockets, who may use
//! them, and their caches and limits.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{
    ConfigError, DEFAULT_KMS_SOCKET_MODE, DEFAULT_MODULE_SOCKET_MODE, KmsSettings, ModuleSettings,
    PinSource, SocketSpec, error::range,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawKms {
    socket: Option<String>,
    socket_mode: String,
    allowed_uids: Vec<u32>,
    status_cache_ms: u64,
    kek_cache_ms: u64,
    inline_token_session: bool,
    cluster: Option<super::cluster::RawCluster>,
}

impl Default for RawKms {
    fn default() -> Self {
        Self {
            socket: None,
            socket_mode: format!("{DEFAULT_KMS_SOCKET_MODE:o}"),
            allowed_uids: Vec::new(),
            status_cache_ms: 1000,
            kek_cache_ms: 2000,
            inline_token_session: true,
            cluster: None,
        }
    }
}

impl RawKms {
    pub(super) fn check(self) -> Result<KmsSettings, ConfigError> {
        let mode = socket_mode("kms.socket_mode", &self.socket_mode)?;
        range(
            self.status_cache_ms <= 60_000,
            "kms.status_cache_ms",
            "at most 60000 (kube-apiserver polls Status every minute)",
            self.status_cache_ms,
        )?;
        range(
            self.kek_cache_ms <= 3_600_000,
            "kms.kek_cache_ms",
            "at most 3600000",
            self.kek_cache_ms,
        )?;
        let socket = socket("kms.socket", self.socket, mode)?;
        let cluster = self.cluster.map(super::cluster::RawCluster::check).transpose()?;
        if cluster.is_some() && socket.is_none() {
            return Err(ConfigError::Inconsistent(
                "[kms.cluster] shares the KMS plugin's KEKs: set kms.socket too",
            ));
        }
        Ok(KmsSettings {
            socket,
            mode,
            allowed_uids: self.allowed_uids,
            status_cache: Duration::from_millis(self.status_cache_ms),
            kek_cache: Duration::from_millis(self.kek_cache_ms),
            inline_token_session: self.inline_token_session,
            cluster,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawModule {
    socket: Option<String>,
    socket_mode: String,
    allowed_uids: Vec<u32>,
    allowed_gids: Vec<u32>,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
    so_pin_file: Option<PathBuf>,
    so_pin_env: Option<String>,
    key_cache_ms: u64,
    max_connections: usize,
    max_connections_per_uid: Option<usize>,
    idle_timeout_secs: u64,
}

impl Default for RawModule {
    fn default() -> Self {
        Self {
            socket: None,
            socket_mode: format!("{DEFAULT_MODULE_SOCKET_MODE:o}"),
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            pin_file: None,
            pin_env: None,
            so_pin_file: None,
            so_pin_env: None,
            key_cache_ms: 2000,
            max_connections: 256,
            max_connections_per_uid: None,
            idle_timeout_secs: 300,
        }
    }
}

/// Parse an octal socket mode the owner can use.
fn socket_mode(key: &'static str, mode: &str) -> Result<u32, ConfigError> {
    u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777 && m & 0o600 == 0o600)
        .ok_or_else(|| ConfigError::SocketMode { key, value: mode.to_owned() })
}

/// Parse an optional socket option.
fn socket(
    key: &'static str,
    s: Option<String>,
    mode: u32,
) -> Result<Option<SocketSpec>, ConfigError> {
    s.map(|s| SocketSpec::parse(&s, mode))
        .transpose()
        .map_err(|source| ConfigError::Socket { key, source })
}

impl RawModule {
    pub(super) fn check(self) -> Result<ModuleSettings, ConfigError> {
        let mode = socket_mode("module.socket_mode", &self.socket_mode)?;
        range(
            self.key_cache_ms <= 3_600_000,
            "module.key_cache_ms",
            "at most 3600000",
            self.key_cache_ms,
        )?;
        range(
            (1..=4096).contains(&self.max_connections),
            "module.max_connections",
            "1..=4096",
            self.max_connections,
        )?;
        // One uid's share: a quarter of all connections by default, so a
        // flood from one uid leaves room for the others.
        let per_uid = self.max_connections_per_uid.unwrap_or((self.max_connections / 4).max(1));
        range(
            (1..=self.max_connections).contains(&per_uid),
            "module.max_connections_per_uid",
            "1..=max_connections",
            per_uid,
        )?;
        range(
            (1..=86_400).contains(&self.idle_timeout_secs),
            "module.idle_timeout_secs",
            "1..=86400",
            self.idle_timeout_secs,
        )?;
        let pin = match (self.pin_file, self.pin_env) {
            (Some(f), None) => Some(PinSource::File(f)),
            (None, Some(v)) => Some(PinSource::Env(v)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Inconsistent(
                    "[module] takes at most one of pin_file and pin_env",
                ));
            }
        };
        let so_pin = match (self.so_pin_file, self.so_pin_env) {
            (Some(f), None) => Some(PinSource::File(f)),
            (None, Some(v)) => Some(PinSource::Env(v)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Inconsistent(
                    "[module] takes at most one of so_pin_file and so_pin_env",
                ));
            }
        };
        let socket = socket("module.socket", self.socket, mode)?;
        Ok(ModuleSettings {
            socket,
            mode,
            allowed_uids: self.allowed_uids,
            allowed_gids: self.allowed_gids,
            pin,
            so_pin,
            key_cache: Duration::from_millis(self.key_cache_ms),
            max_connections: self.max_connections,
            max_connections_per_uid: per_uid,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
        })
    }
}
