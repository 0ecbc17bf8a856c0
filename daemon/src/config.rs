//! Configuration: TOML is parsed into raw serde structs, then checked and turned
//! into a [`Config`] with real types. Nothing downstream sees the raw form.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use qkeyd_drivers::source::sim::Phase;
use qkeyd_health::HealthParams;
use serde::Deserialize;

use crate::pool::{EntropyMode, PoolConfig};

/// The configuration compiled into the binary, used when no file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Default REST listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8437";

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// REST listen address.
    pub listen: SocketAddr,
    /// Pool settings (mode comes from `[danger]`).
    pub pool: PoolConfig,
    /// Largest `bytes=` accepted by /v1/random.
    pub max_request_bytes: usize,
    /// The entropy sources, in order.
    pub sources: Vec<SourceConfig>,
    /// The key vault.
    pub keys: KeysConfig,
    /// The Kubernetes KMS v2 plugin (on when it has a socket).
    pub kms: KmsSettings,
    /// The PKCS#11 module's daemon socket (on when it has a socket).
    pub pkcs11: crate::p11::P11Settings,
    /// Options that weaken security.
    pub danger: Danger,
}

/// The KMS v2 plugin (`[kms]`): its socket, who may connect, and caches.
/// Its KEKs are kept by the vault's sealer (`keys.sealer`).
#[derive(Clone, Debug)]
pub struct KmsSettings {
    /// Where it listens; `None`: the plugin is off.
    pub socket: Option<crate::unix_socket::SocketSpec>,
    /// The mode of a socket file.
    pub mode: u32,
    /// Besides root and qkeyd's own user, the uids that may connect (checked
    /// on every connection: an abstract socket has no file permissions).
    pub allowed_uids: Vec<u32>,
    /// Cache lifetimes.
    pub config: crate::kms::KmsConfig,
}

/// The socket mode when `[kms] socket_mode` is not given.
pub const DEFAULT_KMS_SOCKET_MODE: u32 = 0o600;

impl crate::p11::P11Settings {
    /// Serve the module's socket on `socket` (what `--pkcs11-socket` does).
    pub fn set_socket(&mut self, socket: &str) -> anyhow::Result<()> {
        self.socket = Some(
            crate::unix_socket::SocketSpec::parse(socket, self.mode).map_err(anyhow::Error::msg)?,
        );
        Ok(())
    }
}

impl KmsSettings {
    /// Serve the plugin on `socket` (what `--kms-socket` does); every other
    /// `[kms]` setting stays.
    pub fn set_socket(&mut self, socket: &str) -> anyhow::Result<()> {
        self.socket = Some(
            crate::unix_socket::SocketSpec::parse(socket, self.mode).map_err(anyhow::Error::msg)?,
        );
        Ok(())
    }
}

/// The key vault (`[keys]`).
#[derive(Clone, Debug)]
pub struct KeysConfig {
    /// Where keys, the audit log and generated secrets live; `None`: chosen at
    /// start (`--state-dir`, `$STATE_DIRECTORY`, `~/.local/state/qkeyd`).
    pub state_dir: Option<PathBuf>,
    /// File holding the bearer token for key routes; `None`: `STATE_DIR/api-token`,
    /// generated on first start.
    pub token_file: Option<PathBuf>,
    /// The sealing backend.
    pub sealer: SealerConfig,
    /// How long a caller waits for the sealer.
    pub seal_timeout: Duration,
}

/// A sealing backend and its settings.
#[derive(Clone, Debug)]
pub enum SealerConfig {
    /// AES-256-GCM under a key file (development only).
    Soft {
        /// Key file; `None`: `STATE_DIR/soft-seal.key`, generated on first start.
        key_file: Option<PathBuf>,
    },
    /// An HSM through PKCS#11.
    Pkcs11 {
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
pub enum PinSource {
    /// A file (trailing newline ignored).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl PinSource {
    /// Read the PIN.
    pub fn read(&self) -> anyhow::Result<zeroize::Zeroizing<String>> {
        let pin = match self {
            Self::File(p) => zeroize::Zeroizing::new(
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the PIN file {}", p.display()))?,
            ),
            Self::Env(v) => zeroize::Zeroizing::new(
                std::env::var(v).with_context(|| format!("the PIN variable {v} is not set"))?,
            ),
        };
        Ok(zeroize::Zeroizing::new(pin.trim_end_matches(['\n', '\r']).to_owned()))
    }
}

/// One checked source.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Unique name (also a metric label).
    pub name: String,
    /// Backend and its settings.
    pub kind: SourceKind,
    /// Health-test parameters, already validated.
    pub params: HealthParams,
    /// How drift and trust are scored.
    pub scoring: Scoring,
}

/// Drift and trust scoring for a source (`[health]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scoring {
    /// Trust below this takes the source out of the pool.
    pub min_trust: f64,
    /// Periodic full §6.3 assessments; `None` when disabled.
    pub full: Option<FullAssessment>,
}

/// Periodic full SP 800-90B §6.3 assessments of a live source.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FullAssessment {
    /// Usable samples per assessment (the most recent ones).
    pub samples: usize,
    /// Time between assessments of a trusted source.
    pub interval: Duration,
    /// How far below the claim the final min(H) may fall and still pass.
    pub margin_bits: f64,
}

/// A source backend.
#[derive(Clone, Debug)]
pub enum SourceKind {
    /// `getrandom(2)`.
    Os,
    /// A character device or FIFO.
    CharDev {
        /// Device path.
        path: PathBuf,
    },
    /// The simulated QRNG.
    Sim {
        /// PRNG seed (random if not configured).
        seed: u64,
        /// Fault schedule.
        schedule: Vec<Phase>,
    },
}

/// Options that weaken a security property. Each one logs a warning at start-up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Danger {
    /// Serve from `getrandom(2)` when no configured source is healthy.
    pub os_fallback: bool,
    /// Allow simulated sources, whose samples are predictable from their seed.
    pub allow_sim_sources: bool,
}

impl Config {
    /// Parse and check TOML text.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let raw: RawConfig = toml::from_str(text)?;
        raw.check()
    }

    /// Read, parse and check a file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// The embedded default.
    pub fn embedded() -> anyhow::Result<Self> {
        Self::from_toml(EMBEDDED_DEFAULT).context("embedded default config")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    pool: RawPool,
    #[serde(default)]
    health: RawHealth,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default)]
    keys: RawKeys,
    #[serde(default)]
    kms: RawKms,
    #[serde(default)]
    pkcs11: RawP11,
    #[serde(default)]
    danger: RawDanger,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKms {
    socket: Option<String>,
    socket_mode: String,
    allowed_uids: Vec<u32>,
    status_cache_ms: u64,
    kek_cache_ms: u64,
}

impl Default for RawKms {
    fn default() -> Self {
        Self {
            socket: None,
            socket_mode: format!("{DEFAULT_KMS_SOCKET_MODE:o}"),
            allowed_uids: Vec::new(),
            status_cache_ms: 1000,
            kek_cache_ms: 2000,
        }
    }
}

impl RawKms {
    fn check(self) -> anyhow::Result<KmsSettings> {
        let mode = socket_mode("kms.socket_mode", &self.socket_mode)?;
        ensure!(
            self.status_cache_ms <= 60_000,
            "kms.status_cache_ms must be at most 60000 (kube-apiserver polls Status every minute)"
        );
        ensure!(self.kek_cache_ms <= 3_600_000, "kms.kek_cache_ms must be at most 3600000");
        let socket = self
            .socket
            .map(|s| crate::unix_socket::SocketSpec::parse(&s, mode).map_err(anyhow::Error::msg))
            .transpose()
            .context("kms.socket")?;
        Ok(KmsSettings {
            socket,
            mode,
            allowed_uids: self.allowed_uids,
            config: crate::kms::KmsConfig {
                status_cache: Duration::from_millis(self.status_cache_ms),
                kek_cache: Duration::from_millis(self.kek_cache_ms),
            },
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawP11 {
    socket: Option<String>,
    socket_mode: String,
    allowed_uids: Vec<u32>,
    allowed_gids: Vec<u32>,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
    key_cache_ms: u64,
    max_connections: usize,
}

impl Default for RawP11 {
    fn default() -> Self {
        Self {
            socket: None,
            socket_mode: format!("{:o}", crate::p11::DEFAULT_SOCKET_MODE),
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            pin_file: None,
            pin_env: None,
            key_cache_ms: 2000,
            max_connections: 256,
        }
    }
}

/// Parse an octal socket mode the owner can use.
fn socket_mode(what: &str, mode: &str) -> anyhow::Result<u32> {
    let m = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .with_context(|| format!("{what} {mode:?} is not an octal mode such as \"0600\""))?;
    ensure!(m & 0o600 == 0o600, "{what} {m:o}: the owner needs read and write");
    Ok(m)
}

impl RawP11 {
    fn check(self) -> anyhow::Result<crate::p11::P11Settings> {
        let mode = socket_mode("pkcs11.socket_mode", &self.socket_mode)?;
        ensure!(self.key_cache_ms <= 3_600_000, "pkcs11.key_cache_ms must be at most 3600000");
        ensure!(
            (1..=4096).contains(&self.max_connections),
            "pkcs11.max_connections must be 1..=4096"
        );
        let pin = match (self.pin_file, self.pin_env) {
            (Some(f), None) => Some(PinSource::File(f)),
            (None, Some(v)) => Some(PinSource::Env(v)),
            (None, None) => None,
            _ => bail!("[pkcs11] takes at most one of pin_file and pin_env"),
        };
        let socket = self
            .socket
            .map(|s| crate::unix_socket::SocketSpec::parse(&s, mode).map_err(anyhow::Error::msg))
            .transpose()
            .context("pkcs11.socket")?;
        Ok(crate::p11::P11Settings {
            socket,
            mode,
            allowed_uids: self.allowed_uids,
            allowed_gids: self.allowed_gids,
            pin,
            key_cache: Duration::from_millis(self.key_cache_ms),
            max_connections: self.max_connections,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKeys {
    state_dir: Option<PathBuf>,
    token_file: Option<PathBuf>,
    sealer: String,
    seal_timeout_ms: u64,
    soft: RawSoft,
    pkcs11: Option<RawPkcs11>,
    tpm: Option<RawTpm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTpm {
    tcti: String,
    #[serde(default)]
    pcrs: Vec<u8>,
}

impl Default for RawKeys {
    fn default() -> Self {
        Self {
            state_dir: None,
            token_file: None,
            sealer: "soft".into(),
            seal_timeout_ms: 5000,
            soft: RawSoft::default(),
            pkcs11: None,
            tpm: None,
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSoft {
    key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs11 {
    module: PathBuf,
    token_label: String,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
}

impl RawKeys {
    fn check(self) -> anyhow::Result<KeysConfig> {
        ensure!(
            (100..=60_000).contains(&self.seal_timeout_ms),
            "keys.seal_timeout_ms must be 100..=60000, got {}",
            self.seal_timeout_ms
        );
        let sealer = match self.sealer.as_str() {
            "soft" => SealerConfig::Soft { key_file: self.soft.key_file },
            "pkcs11" => {
                let p =
                    self.pkcs11.context("keys.sealer = \"pkcs11\" needs a [keys.pkcs11] table")?;
                let pin = match (p.pin_file, p.pin_env) {
                    (Some(f), None) => PinSource::File(f),
                    (None, Some(v)) => PinSource::Env(v),
                    _ => bail!("[keys.pkcs11] needs exactly one of pin_file and pin_env"),
                };
                ensure!(!p.token_label.is_empty(), "[keys.pkcs11] token_label is empty");
                SealerConfig::Pkcs11 { module: p.module, token_label: p.token_label, pin }
            }
            "tpm" => {
                let t = self.tpm.context("keys.sealer = \"tpm\" needs a [keys.tpm] table")?;
                if let Some(bad) = t.pcrs.iter().find(|&&p| p > 23) {
                    bail!("[keys.tpm] pcrs: PCR {bad} is out of range 0..=23");
                }
                SealerConfig::Tpm { tcti: t.tcti, pcrs: t.pcrs }
            }
            other => bail!("keys.sealer {other:?}: use \"soft\", \"pkcs11\" or \"tpm\""),
        };
        Ok(KeysConfig {
            state_dir: self.state_dir,
            token_file: self.token_file,
            sealer,
            seal_timeout: Duration::from_millis(self.seal_timeout_ms),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPool {
    reseed_interval_requests: u64,
    reseed_interval_secs: f64,
    seed_timeout_ms: u64,
    max_request_bytes: usize,
}

impl Default for RawPool {
    fn default() -> Self {
        Self {
            reseed_interval_requests: 1 << 16,
            reseed_interval_secs: 60.0,
            seed_timeout_ms: 2000,
            max_request_bytes: 1 << 20,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHealth {
    alpha_log2: f64,
    permanent_alpha_log2: f64,
    max_failed_startups: u32,
    min_trust: f64,
    assessment_samples: usize,
    assessment_interval_secs: f64,
    assessment_margin_bits: f64,
}

impl Default for RawHealth {
    fn default() -> Self {
        let d = HealthParams::new(8, 8.0);
        Self {
            alpha_log2: d.alpha_log2,
            permanent_alpha_log2: d.permanent_alpha_log2,
            max_failed_startups: d.max_failed_startups,
            min_trust: 0.89,
            assessment_samples: 1_000_000,
            assessment_interval_secs: 3600.0,
            assessment_margin_bits: 2.0,
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDanger {
    #[serde(default)]
    os_fallback: bool,
    #[serde(default)]
    allow_sim_sources: bool,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum RawSource {
    Os {
        name: String,
        #[serde(default = "eight")]
        claimed_h: f64,
    },
    Chardev {
        name: String,
        path: PathBuf,
        #[serde(default = "eight_bits")]
        bits_per_sample: u32,
        claimed_h: f64,
    },
    Sim {
        name: String,
        #[serde(default)]
        seed: Option<u64>,
        #[serde(default = "eight_bits")]
        bits_per_sample: u32,
        #[serde(default = "eight")]
        claimed_h: f64,
        #[serde(default)]
        schedule: Vec<Phase>,
    },
}

fn eight() -> f64 {
    8.0
}

fn eight_bits() -> u32 {
    8
}

impl RawConfig {
    fn check(self) -> anyhow::Result<Config> {
        let listen = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr =
            listen.parse().with_context(|| format!("listen: {listen:?} is not ADDR:PORT"))?;
        let p = self.pool;
        ensure!(
            (1..=1u64 << 48).contains(&p.reseed_interval_requests),
            "pool.reseed_interval_requests must be 1..=2^48 (SP 800-90A), got {}",
            p.reseed_interval_requests
        );
        ensure!(
            p.reseed_interval_secs.is_finite() && p.reseed_interval_secs > 0.0,
            "pool.reseed_interval_secs must be positive"
        );
        ensure!(
            p.reseed_interval_secs <= 86_400.0,
            "pool.reseed_interval_secs must be at most 86400 (a day)"
        );
        ensure!(
            (1..=60_000).contains(&p.seed_timeout_ms),
            "pool.seed_timeout_ms must be 1..=60000"
        );
        ensure!(
            (1..=64 << 20).contains(&p.max_request_bytes),
            "pool.max_request_bytes must be 1..=67108864, got {}",
            p.max_request_bytes
        );
        ensure!(
            (0.0..=1.0).contains(&self.health.min_trust),
            "health.min_trust must be within 0..=1, got {}",
            self.health.min_trust
        );
        let h = &self.health;
        ensure!(
            h.assessment_samples == 0 || (65_536..=16 << 20).contains(&h.assessment_samples),
            "health.assessment_samples must be 0 (off) or 65536..=16777216, got {}",
            h.assessment_samples
        );
        ensure!(
            (1.0..=1e7).contains(&h.assessment_interval_secs),
            "health.assessment_interval_secs must be 1..=1e7, got {}",
            h.assessment_interval_secs
        );
        ensure!(
            h.assessment_margin_bits > 0.0 && h.assessment_margin_bits <= 8.0,
            "health.assessment_margin_bits must be in (0, 8], got {}",
            h.assessment_margin_bits
        );
        let scoring = Scoring {
            min_trust: h.min_trust,
            full: (h.assessment_samples > 0).then(|| FullAssessment {
                samples: h.assessment_samples,
                interval: Duration::from_secs_f64(h.assessment_interval_secs),
                margin_bits: h.assessment_margin_bits,
            }),
        };
        if self.sources.is_empty() {
            bail!("no [[source]] configured: add at least one (kind = \"os\" runs anywhere)");
        }
        let mut names = HashSet::new();
        let mut sources = Vec::with_capacity(self.sources.len());
        for raw in self.sources {
            let (name, kind, bits, h) = match raw {
                RawSource::Os { name, claimed_h } => (name, SourceKind::Os, 8, claimed_h),
                RawSource::Chardev { name, path, bits_per_sample, claimed_h } => {
                    (name, SourceKind::CharDev { path }, bits_per_sample, claimed_h)
                }
                RawSource::Sim { name, seed, bits_per_sample, claimed_h, schedule } => {
                    ensure!(
                        self.danger.allow_sim_sources,
                        "source {name:?} is simulated: its samples are predictable, so it \
                         needs [danger] allow_sim_sources = true (tests and demos only)"
                    );
                    let seed = match seed {
                        Some(s) => s,
                        None => {
                            let mut b = [0u8; 8];
                            getrandom::fill(&mut b).context("seeding a sim source")?;
                            u64::from_le_bytes(b)
                        }
                    };
                    (name, SourceKind::Sim { seed, schedule }, bits_per_sample, claimed_h)
                }
            };
            ensure!(
                !name.is_empty()
                    && name.len() <= 64
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "source name {name:?}: use 1-64 characters of [A-Za-z0-9._-]"
            );
            ensure!(names.insert(name.clone()), "source name {name:?} is used twice");
            let params = HealthParams {
                bits_per_sample: bits,
                claimed_h: h,
                alpha_log2: self.health.alpha_log2,
                permanent_alpha_log2: self.health.permanent_alpha_log2,
                max_failed_startups: self.health.max_failed_startups,
            };
            params.cutoffs().with_context(|| format!("source {name:?}"))?;
            sources.push(SourceConfig { name, kind, params, scoring });
        }
        let keys = self.keys.check()?;
        let kms = self.kms.check()?;
        let pkcs11 = self.pkcs11.check()?;
        let danger = Danger {
            os_fallback: self.danger.os_fallback,
            allow_sim_sources: self.danger.allow_sim_sources,
        };
        Ok(Config {
            listen,
            pool: PoolConfig {
                reseed_interval_requests: p.reseed_interval_requests,
                reseed_interval: Duration::from_secs_f64(p.reseed_interval_secs),
                seed_timeout: Duration::from_millis(p.seed_timeout_ms),
                mode: if danger.os_fallback {
                    EntropyMode::OsFallback
                } else {
                    EntropyMode::FailClosed
                },
            },
            max_request_bytes: p.max_request_bytes,
            keys,
            kms,
            pkcs11,
            sources,
            danger,
        })
    }
}

#[cfg(test)]
mod tests {
    use qkeyd_drivers::source::sim::Fault;

    use super::*;

    #[test]
    fn embedded_default_is_os_fail_closed_on_loopback() {
        let c = Config::embedded().unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.sources.len(), 1);
        assert!(matches!(c.sources[0].kind, SourceKind::Os));
        assert_eq!(c.pool.mode, EntropyMode::FailClosed);
        assert!(!c.danger.os_fallback);
    }

    #[test]
    fn example_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.example.toml");
        let c = Config::load(Path::new(path)).unwrap();
        assert!(c.sources.len() >= 3);
    }

    #[test]
    fn sim_schedule_parses() {
        let c = Config::from_toml(
            r#"
            [[source]]
            name = "q"
            kind = "sim"
            seed = 7
            claimed_h = 7.5
            [[source.schedule]]
            after_samples = 100
            fault = "stuck"
            value = 3
            [[source.schedule]]
            after_samples = 200
            fault = "drift"
            value = 0
            to_p = 0.25
            over_samples = 1000
            [danger]
            os_fallback = true
            allow_sim_sources = true
            "#,
        )
        .unwrap();
        let SourceKind::Sim { seed, schedule } = &c.sources[0].kind else { panic!() };
        assert_eq!(*seed, 7);
        assert_eq!(schedule[0].fault, Fault::Stuck { value: 3 });
        assert_eq!(schedule[1].after_samples, 200);
        assert_eq!(c.pool.mode, EntropyMode::OsFallback);
    }

    #[test]
    fn pkcs11_settings_parse_with_defaults_and_refuse_nonsense() {
        let os = "[[source]]\nname=\"o\"\nkind=\"os\"\n";
        let c = Config::from_toml(os).unwrap();
        assert!(c.pkcs11.socket.is_none(), "off unless asked for");
        assert_eq!(c.pkcs11.mode, 0o660);
        let c = Config::from_toml(&format!(
            "{os}[pkcs11]\nsocket=\"@qkeyd-p11\"\nallowed_gids=[990]\npin_env=\"P\"\nkey_cache_ms=0\n"
        ))
        .unwrap();
        assert_eq!(
            c.pkcs11.socket,
            Some(crate::unix_socket::SocketSpec::Abstract("qkeyd-p11".into()))
        );
        assert_eq!(c.pkcs11.allowed_gids, [990]);
        assert!(matches!(c.pkcs11.pin, Some(PinSource::Env(ref v)) if v == "P"));
        assert!(c.pkcs11.key_cache.is_zero());
        for (bad, needle) in [
            ("[pkcs11]\nsocket=\"rel.sock\"", "absolute path"),
            ("[pkcs11]\nsocket_mode=\"0060\"", "owner needs"),
            ("[pkcs11]\npin_file=\"/a\"\npin_env=\"B\"", "at most one"),
            ("[pkcs11]\nmax_connections=0", "1..=4096"),
            ("[pkcs11]\nkey_cache_ms=99999999", "3600000"),
            ("[pkcs11]\nbogus=1", "unknown field"),
        ] {
            let e = format!("{:#}", Config::from_toml(&format!("{os}{bad}")).unwrap_err());
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let cases = [
            ("listen = \"nope\"\n[[source]]\nname=\"o\"\nkind=\"os\"", "not ADDR:PORT"),
            ("", "no [[source]]"),
            (
                "[[source]]\nname=\"o\"\nkind=\"os\"\n[[source]]\nname=\"o\"\nkind=\"os\"",
                "used twice",
            ),
            ("[[source]]\nname=\"o o\"\nkind=\"os\"", "1-64 characters"),
            ("[[source]]\nname=\"c\"\nkind=\"chardev\"\npath=\"/x\"\nclaimed_h=9.0", "min-entropy"),
            ("[[source]]\nname=\"o\"\nkind=\"tpm\"", "unknown variant"),
            ("[[source]]\nname=\"o\"\nkind=\"os\"\nbogus=1", "unknown field"),
            ("[pool]\nreseed_interval_requests=0\n[[source]]\nname=\"o\"\nkind=\"os\"", "2^48"),
            (
                "[health]\npermanent_alpha_log2=-10.0\n[[source]]\nname=\"o\"\nkind=\"os\"",
                "permanent",
            ),
            ("[[source]]\nname=\"s\"\nkind=\"sim\"", "allow_sim_sources"),
            (
                "[pool]\nseed_timeout_ms=99999999999\n[[source]]\nname=\"o\"\nkind=\"os\"",
                "1..=60000",
            ),
            ("[pool]\nreseed_interval_secs=1e300\n[[source]]\nname=\"o\"\nkind=\"os\"", "86400"),
        ];
        for (text, needle) in cases {
            let e = format!("{:#}", Config::from_toml(text).unwrap_err());
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }
}
