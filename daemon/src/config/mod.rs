//! Configuration: TOML is parsed into raw serde structs (`raw.rs`), then checked
//! and turned into a [`Config`] with real types. Nothing downstream sees the raw
//! form, and every checked settings type lives here: the modules that use them
//! import them from `config`, never the other way round.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use qkeyd_drivers::source::sim::Phase;
use qkeyd_health::HealthParams;

mod attest;
mod cluster;
mod error;
mod kernel;
mod qkd;
mod qkd_serve;
mod raw;
mod renamed;
mod services;
mod socket;
#[cfg(test)]
mod tests;
mod tls;

pub(crate) use attest::AttestSettings;
pub(crate) use cluster::{ClusterSettings, valid_node_name};
pub(crate) use error::ConfigError;
pub(crate) use kernel::KernelFeed;
pub(crate) use qkd::KmeSettings;
pub(crate) use qkd_serve::{Combiner, PeerSettings, ServeSettings};
pub(crate) use socket::{SocketSpec, SocketSpecError};
pub(crate) use tls::{
    Access, ClientRule, Groups, Identity, PendingTls, Right, Rights, TlsSettings,
};

/// The configuration compiled into the binary, used when no file is given.
pub(crate) const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Default REST listen address: loopback only.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8437";

/// A checked configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// REST listen address.
    pub(crate) listen: SocketAddr,
    /// Pool settings (mode comes from `[danger]`).
    pub(crate) pool: PoolConfig,
    /// Largest `bytes=` accepted by /v1/random.
    pub(crate) max_request_bytes: usize,
    /// The entropy sources, in order.
    pub(crate) sources: Vec<SourceConfig>,
    /// The key vault.
    pub(crate) keys: KeysConfig,
    /// The Kubernetes KMS v2 plugin (on when it has a socket).
    pub(crate) kms: KmsSettings,
    /// The socket served to the PKCS#11 module (on when it has a socket).
    pub(crate) module: ModuleSettings,
    /// TLS on the REST API (on when it has a certificate and key).
    pub(crate) tls: Option<TlsSettings>,
    /// The `[tls]` options, for files given on the command line.
    pub(crate) tls_pending: PendingTls,
    /// Who may do what on the REST API.
    pub(crate) access: Access,
    /// Attested keys for the gateway (on when `[attest]` is present).
    pub(crate) attest: Option<AttestSettings>,
    /// The QKD links' KMEs (`[qkd.kme.NAME]`), by name.
    pub(crate) kmes: Vec<KmeSettings>,
    /// The GS QKD 014 server (`[qkd.serve]`), if any.
    pub(crate) qkd_serve: Option<ServeSettings>,
    /// The qkeyd nodes at the other ends of QKD links (`[qkd.peer.NAME]`).
    pub(crate) qkd_peers: Vec<PeerSettings>,
    /// Options that weaken security.
    pub(crate) danger: Danger,
}

/// Whether `name` can name a source or a KME: 1-64 characters of
/// `[A-Za-z0-9._-]` (it appears in logs and metric labels).
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The KMS v2 plugin (`[kms]`): its socket, who may connect, and caches.
/// Its KEKs are kept by the vault's sealer (`keys.sealer`).
#[derive(Clone, Debug)]
pub(crate) struct KmsSettings {
    /// Where it listens; `None`: the plugin is off.
    pub(crate) socket: Option<SocketSpec>,
    /// The mode of a socket file.
    pub(crate) mode: u32,
    /// Besides root and qkeyd's own user, the uids that may connect (checked
    /// on every connection: an abstract socket has no file permissions).
    pub(crate) allowed_uids: Vec<u32>,
    /// How long a Status answer (a real round trip through the backend) is reused.
    pub(crate) status_cache: Duration,
    /// How long an unsealed KEK (tpm, soft) is kept in memory.
    pub(crate) kek_cache: Duration,
    /// Whether a token KEK's AES-GCM may run on the calling thread through
    /// the HSM sealer's second (inline) session when it is free; off, every
    /// token operation is queued on the sealer's thread.
    pub(crate) inline_token_session: bool,
    /// KEKs shared with the other control-plane nodes through etcd.
    pub(crate) cluster: Option<ClusterSettings>,
}

/// The socket mode when `[kms] socket_mode` is not given.
pub(crate) const DEFAULT_KMS_SOCKET_MODE: u32 = 0o600;

/// The socket served to the PKCS#11 module (`[module]`): where, who may
/// connect, the token PIN, and caches.
#[derive(Clone, Debug)]
pub(crate) struct ModuleSettings {
    /// Where the module connects; `None`: not served.
    pub(crate) socket: Option<SocketSpec>,
    /// Mode of a socket file (0660 by default: owner and group).
    pub(crate) mode: u32,
    /// Besides root and qkeyd's own user, the uids that may connect.
    pub(crate) allowed_uids: Vec<u32>,
    /// Groups that may connect: the peer's primary gid (SO_PEERCRED gives no
    /// supplementary groups).
    pub(crate) allowed_gids: Vec<u32>,
    /// The token PIN; `None`: `STATE_DIR/module-pin`, generated on first start.
    pub(crate) pin: Option<PinSource>,
    /// The security officer's PIN; `None`: `STATE_DIR/module-so-pin`, generated
    /// on first start.
    pub(crate) so_pin: Option<PinSource>,
    /// How long a connection keeps a vault key unsealed after its last use.
    pub(crate) key_cache: Duration,
    /// Most connections served at once.
    pub(crate) max_connections: usize,
    /// Most connections one peer uid may hold at once.
    pub(crate) max_connections_per_uid: usize,
    /// A connection that holds no session keys is closed after this long
    /// without a request (the module reconnects on its next call).
    pub(crate) idle_timeout: Duration,
}

/// The module socket's mode when `[module] socket_mode` is not given: the
/// owner and the socket's group.
pub(crate) const DEFAULT_MODULE_SOCKET_MODE: u32 = 0o660;

impl ModuleSettings {
    /// Serve the module's socket on `socket` (what `--module-socket` does);
    /// every other `[module]` setting stays.
    pub(crate) fn set_socket(&mut self, socket: &str) -> Result<(), SocketSpecError> {
        self.socket = Some(SocketSpec::parse(socket, self.mode)?);
        Ok(())
    }
}

impl KmsSettings {
    /// Serve the plugin on `socket` (what `--kms-socket` does); every other
    /// `[kms]` setting stays.
    pub(crate) fn set_socket(&mut self, socket: &str) -> Result<(), SocketSpecError> {
        self.socket = Some(SocketSpec::parse(socket, self.mode)?);
        Ok(())
    }
}

/// The key vault (`[keys]`).
#[derive(Clone, Debug)]
pub(crate) struct KeysConfig {
    /// Where keys, the audit log and generated secrets live; `None`: chosen at
    /// start (`--state-dir`, `$STATE_DIRECTORY`, `~/.local/state/qkeyd`).
    pub(crate) state_dir: Option<PathBuf>,
    /// File holding the bearer token for key routes; `None`: `STATE_DIR/api-token`,
    /// generated on first start.
    pub(crate) token_file: Option<PathBuf>,
    /// The sealing backend.
    pub(crate) sealer: SealerConfig,
    /// How long a caller waits for the sealer.
    pub(crate) seal_timeout: Duration,
}

/// A sealing backend and its settings.
#[derive(Clone, Debug)]
pub(crate) enum SealerConfig {
    /// AES-256-GCM under a key file (development only).
    Soft {
        /// Key file; `None`: `STATE_DIR/soft-seal.key`, generated on first start.
        key_file: Option<PathBuf>,
    },
    /// An HSM through its PKCS#11 library (`[keys.hsm]`).
    Hsm {
        /// The module.
        module: PathBuf,
        /// The token's label.
        token_label: String,
        /// Where the user PIN is read from.
        pin: PinSource,
    },
    /// A TPM 2.0 (needs a build with the `tpm` feature).
    Tpm {
        /// TCTI, e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`.
        tcti: String,
        /// SHA-256 PCRs the seeds are bound to (empty: no policy).
        pcrs: Vec<u8>,
    },
}

/// Where a PIN comes from. The PIN itself is never in the config.
#[derive(Clone, Debug)]
pub(crate) enum PinSource {
    /// A file (trailing newline ignored).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl PinSource {
    /// Read the PIN.
    pub(crate) fn read(&self) -> Result<zeroize::Zeroizing<String>, ConfigError> {
        let pin = match self {
            Self::File(p) => zeroize::Zeroizing::new(
                std::fs::read_to_string(p)
                    .map_err(|source| ConfigError::PinFile { path: p.clone(), source })?,
            ),
            Self::Env(v) => zeroize::Zeroizing::new(
                std::env::var(v).map_err(|_| ConfigError::PinEnv(v.clone()))?,
            ),
        };
        Ok(zeroize::Zeroizing::new(pin.trim_end_matches(['\n', '\r']).to_owned()))
    }
}

/// One checked source.
#[derive(Clone, Debug)]
pub(crate) struct SourceConfig {
    /// Unique name (also a metric label).
    pub(crate) name: String,
    /// Backend and its settings.
    pub(crate) kind: SourceKind,
    /// Health-test parameters, already validated.
    pub(crate) params: HealthParams,
    /// How drift and trust are scored.
    pub(crate) scoring: Scoring,
}

/// Drift and trust scoring for a source (`[health]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Scoring {
    /// Trust below this takes the source out of the pool.
    pub(crate) min_trust: f64,
    /// Periodic full §6.3 assessments; `None` when disabled.
    pub(crate) full: Option<FullAssessment>,
    /// Samples a second read and scored while the pool takes no seed, so that
    /// drift and trust stay current on an idle node; 0: read only for seeds.
    pub(crate) monitor_rate: u32,
}

/// Periodic full SP 800-90B §6.3 assessments of a live source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct FullAssessment {
    /// Usable samples per assessment (the most recent ones).
    pub(crate) samples: usize,
    /// Time between assessments of a trusted source.
    pub(crate) interval: Duration,
    /// How far below the claim the final min(H) may fall and still pass.
    pub(crate) margin_bits: f64,
}

/// A source backend.
#[derive(Clone, Debug)]
pub(crate) enum SourceKind {
    /// `getrandom(2)`.
    Os,
    /// A character device or FIFO.
    CharDev {
        /// Device path.
        path: PathBuf,
    },
    /// A TPM 2.0's `TPM2_GetRandom`.
    Tpm {
        /// TCTI, e.g. `device:/dev/tpmrm0`.
        tcti: String,
    },
    /// An HSM's `C_GenerateRandom`, through its PKCS#11 module.
    Pkcs11 {
        /// The module.
        module: PathBuf,
        /// The token's label.
        token_label: String,
        /// The user PIN, if the token wants a login first.
        pin: Option<PinSource>,
    },
    /// The simulated QRNG.
    Sim {
        /// PRNG seed (random if not configured).
        seed: u64,
        /// Fault schedule.
        schedule: Vec<Phase>,
    },
}

/// Pool settings (`[pool]`, the mode from `[danger]`).
#[derive(Clone, Debug)]
pub(crate) struct PoolConfig {
    /// Generate calls (of at most 64 KiB each) between reseeds.
    pub(crate) reseed_interval_requests: u64,
    /// Longest time between reseeds.
    pub(crate) reseed_interval: Duration,
    /// How long a request waits for a seed block before giving up.
    pub(crate) seed_timeout: Duration,
    /// Behaviour with no healthy source.
    pub(crate) mode: EntropyMode,
    /// Crediting the kernel's entropy pool (`[kernel]`), if on.
    pub(crate) kernel_feed: Option<KernelFeed>,
}

/// What the pool does when no source is healthy.
#[derive(Clone, Copy, Debug, Eq, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum EntropyMode {
    /// Refuse to serve.
    FailClosed,
    /// Serve from the OS (dangerous: the hardware guarantee is gone).
    OsFallback,
}

/// Options that weaken a security property. Each one logs a warning at start-up.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Danger {
    /// Serve from `getrandom(2)` when no configured source is healthy.
    pub(crate) os_fallback: bool,
    /// Allow simulated sources, whose samples are predictable from their seed.
    pub(crate) allow_sim_sources: bool,
    /// Serve the REST API without TLS on an address beyond loopback.
    pub(crate) plaintext_beyond_loopback: bool,
    /// Deliver QKD keys without ML-KEM (`[qkd.serve]`): a key is then only
    /// as safe as the QKD link and its KME.
    pub(crate) qkd_without_ml_kem: bool,
}

impl Config {
    /// Parse and check TOML text.
    pub(crate) fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let value: toml::Table = toml::from_str(text)?;
        renamed::refuse_old_names(&value)?;
        let raw: raw::RawConfig = value.try_into()?;
        raw.check()
    }

    /// Read, parse and check a file.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::from_toml(&text)
            .map_err(|e| ConfigError::File { path: path.to_owned(), source: Box::new(e) })
    }

    /// Take the TLS certificate and key from the command line: each given
    /// file replaces the config's; TLS turns on when both are known.
    pub(crate) fn set_tls_files(
        &mut self,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<(), ConfigError> {
        let (cert, key) = match (cert, key, &self.tls) {
            (None, None, _) => return Ok(()),
            (Some(c), Some(k), _) => (c, k),
            (Some(c), None, Some(t)) => (c, t.key.clone()),
            (None, Some(k), Some(t)) => (t.cert.clone(), k),
            _ => {
                return Err(ConfigError::Inconsistent(
                    "--tls-cert and --tls-key go together (or with [tls] cert and key)",
                ));
            }
        };
        self.tls = Some(self.tls_pending.with_files(cert, key));
        Ok(())
    }

    /// The checks that need the final listen address and TLS files (after
    /// the command line's overrides): plain HTTP stays on loopback unless
    /// `[danger]` says otherwise, and client certificates need TLS.
    pub(crate) fn check_serving(&self) -> Result<(), ConfigError> {
        if self.tls.is_none() && self.tls_pending.client_ca.is_some() {
            return Err(ConfigError::Inconsistent(
                "tls.client_ca needs a certificate and key (tls.cert and tls.key, or \
                 --tls-cert and --tls-key): client certificates are asked for in the handshake",
            ));
        }
        if self.tls.is_none()
            && !self.listen.ip().is_loopback()
            && !self.danger.plaintext_beyond_loopback
        {
            return Err(ConfigError::PlaintextListen(self.listen));
        }
        Ok(())
    }

    /// The embedded default.
    pub(crate) fn embedded() -> Result<Self, ConfigError> {
        Self::from_toml(EMBEDDED_DEFAULT).map_err(|e| ConfigError::Embedded(Box::new(e)))
    }
}
