//! The TOML as serde reads it, and the checks that turn it into a [`Config`].

use std::{collections::HashSet, net::SocketAddr, path::PathBuf, time::Duration};

use qkeyd_drivers::source::sim::Phase;
use qkeyd_health::HealthParams;
use serde::Deserialize;

use super::{
    Config, ConfigError, DEFAULT_LISTEN, Danger, EntropyMode, FullAssessment, KeysConfig,
    PinSource, PoolConfig, Scoring, SealerConfig, SourceConfig, SourceKind,
    error::range,
    services::{RawKms, RawModule},
};

/// Highest `[health] monitor_rate`: far above any device, low enough that a
/// typo cannot turn a source thread into a busy loop over `getrandom(2)`.
const MAX_MONITOR_RATE: u32 = 1 << 24;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
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
    module: RawModule,
    #[serde(default)]
    tls: super::tls::RawTls,
    #[serde(default)]
    attest: Option<super::attest::RawAttest>,
    #[serde(default)]
    qkd: super::qkd::RawQkd,
    #[serde(default)]
    kernel: super::kernel::RawKernel,
    #[serde(default)]
    danger: RawDanger,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKeys {
    state_dir: Option<PathBuf>,
    token_file: Option<PathBuf>,
    sealer: String,
    seal_timeout_ms: u64,
    soft: RawSoft,
    hsm: Option<RawHsm>,
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
            hsm: None,
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
struct RawHsm {
    module: PathBuf,
    token_label: String,
    pin_file: Option<PathBuf>,
    pin_env: Option<String>,
}

impl RawKeys {
    fn check(self) -> Result<KeysConfig, ConfigError> {
        range(
            (100..=60_000).contains(&self.seal_timeout_ms),
            "keys.seal_timeout_ms",
            "100..=60000",
            self.seal_timeout_ms,
        )?;
        let sealer = match self.sealer.as_str() {
            "soft" => SealerConfig::Soft { key_file: self.soft.key_file },
            "hsm" => {
                let p = self.hsm.ok_or(ConfigError::Inconsistent(
                    "keys.sealer = \"hsm\" needs a [keys.hsm] table",
                ))?;
                let pin = match (p.pin_file, p.pin_env) {
                    (Some(f), None) => PinSource::File(f),
                    (None, Some(v)) => PinSource::Env(v),
                    _ => {
                        return Err(ConfigError::Inconsistent(
                            "[keys.hsm] needs exactly one of pin_file and pin_env",
                        ));
                    }
                };
                if p.token_label.is_empty() {
                    return Err(ConfigError::Inconsistent("[keys.hsm] token_label is empty"));
                }
                SealerConfig::Hsm { module: p.module, token_label: p.token_label, pin }
            }
            "tpm" => {
                let t = self.tpm.ok_or(ConfigError::Inconsistent(
                    "keys.sealer = \"tpm\" needs a [keys.tpm] table",
                ))?;
                if let Some(bad) = t.pcrs.iter().find(|&&p| p > 23) {
                    range(false, "keys.tpm.pcrs", "PCRs 0..=23", bad)?;
                }
                SealerConfig::Tpm { tcti: t.tcti, pcrs: t.pcrs }
            }
            other => return Err(ConfigError::UnknownSealer(other.to_owned())),
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
    monitor_rate: u32,
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
            monitor_rate: 4096,
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
    #[serde(default)]
    plaintext_beyond_loopback: bool,
    #[serde(default)]
    qkd_without_ml_kem: bool,
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
    Tpm {
        name: String,
        tcti: String,
        #[serde(default = "eight")]
        claimed_h: f64,
    },
    Pkcs11 {
        name: String,
        module: PathBuf,
        token_label: String,
        #[serde(default)]
        pin_file: Option<PathBuf>,
        #[serde(default)]
        pin_env: Option<String>,
        #[serde(default = "eight")]
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
    pub(super) fn check(self) -> Result<Config, ConfigError> {
        let listen = self.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr =
            listen.parse().map_err(|e| ConfigError::Listen(listen.to_owned(), e))?;
        let p = self.pool;
        range(
            (1..=1u64 << 48).contains(&p.reseed_interval_requests),
            "pool.reseed_interval_requests",
            "1..=2^48 (SP 800-90A)",
            p.reseed_interval_requests,
        )?;
        range(
            p.reseed_interval_secs.is_finite()
                && p.reseed_interval_secs > 0.0
                && p.reseed_interval_secs <= 86_400.0,
            "pool.reseed_interval_secs",
            "positive and at most 86400 (a day)",
            p.reseed_interval_secs,
        )?;
        range(
            (1..=60_000).contains(&p.seed_timeout_ms),
            "pool.seed_timeout_ms",
            "1..=60000",
            p.seed_timeout_ms,
        )?;
        range(
            (1..=64 << 20).contains(&p.max_request_bytes),
            "pool.max_request_bytes",
            "1..=67108864",
            p.max_request_bytes,
        )?;
        let h = &self.health;
        range((0.0..=1.0).contains(&h.min_trust), "health.min_trust", "within 0..=1", h.min_trust)?;
        range(
            h.assessment_samples == 0 || (65_536..=16 << 20).contains(&h.assessment_samples),
            "health.assessment_samples",
            "0 (off) or 65536..=16777216",
            h.assessment_samples,
        )?;
        range(
            (1.0..=1e7).contains(&h.assessment_interval_secs),
            "health.assessment_interval_secs",
            "1..=1e7",
            h.assessment_interval_secs,
        )?;
        range(
            h.assessment_margin_bits > 0.0 && h.assessment_margin_bits <= 8.0,
            "health.assessment_margin_bits",
            "in (0, 8]",
            h.assessment_margin_bits,
        )?;
        range(
            h.monitor_rate <= MAX_MONITOR_RATE,
            "health.monitor_rate",
            "0 (off) ..= 16777216 samples per second",
            h.monitor_rate,
        )?;
        let scoring = Scoring {
            min_trust: h.min_trust,
            monitor_rate: h.monitor_rate,
            full: (h.assessment_samples > 0).then(|| FullAssessment {
                samples: h.assessment_samples,
                interval: Duration::from_secs_f64(h.assessment_interval_secs),
                margin_bits: h.assessment_margin_bits,
            }),
        };
        if self.sources.is_empty() {
            return Err(ConfigError::NoSource);
        }
        let mut names = HashSet::new();
        let mut sources = Vec::with_capacity(self.sources.len());
        for raw in self.sources {
            let (name, kind, bits, h) = match raw {
                RawSource::Os { name, claimed_h } => (name, SourceKind::Os, 8, claimed_h),
                RawSource::Chardev { name, path, bits_per_sample, claimed_h } => {
                    (name, SourceKind::CharDev { path }, bits_per_sample, claimed_h)
                }
                RawSource::Tpm { name, tcti, claimed_h } => {
                    (name, SourceKind::Tpm { tcti }, 8, claimed_h)
                }
                RawSource::Pkcs11 { name, module, token_label, pin_file, pin_env, claimed_h } => {
                    let pin = match (pin_file, pin_env) {
                        (None, None) => None,
                        (Some(f), None) => Some(PinSource::File(f)),
                        (None, Some(v)) => Some(PinSource::Env(v)),
                        (Some(_), Some(_)) => {
                            return Err(ConfigError::Inconsistent(
                                "a pkcs11 source takes at most one of pin_file and pin_env",
                            ));
                        }
                    };
                    (name, SourceKind::Pkcs11 { module, token_label, pin }, 8, claimed_h)
                }
                RawSource::Sim { name, seed, bits_per_sample, claimed_h, schedule } => {
                    if !self.danger.allow_sim_sources {
                        return Err(ConfigError::SimNotAllowed(name));
                    }
                    let seed = match seed {
                        Some(s) => s,
                        None => {
                            let mut b = [0u8; 8];
                            getrandom::fill(&mut b).map_err(ConfigError::SimSeed)?;
                            u64::from_le_bytes(b)
                        }
                    };
                    (name, SourceKind::Sim { seed, schedule }, bits_per_sample, claimed_h)
                }
            };
            if !super::valid_name(&name) {
                return Err(ConfigError::SourceName(name));
            }
            if !names.insert(name.clone()) {
                return Err(ConfigError::DuplicateSource(name));
            }
            let params = HealthParams {
                bits_per_sample: bits,
                claimed_h: h,
                alpha_log2: self.health.alpha_log2,
                permanent_alpha_log2: self.health.permanent_alpha_log2,
                max_failed_startups: self.health.max_failed_startups,
            };
            if let Err(source) = params.cutoffs() {
                return Err(ConfigError::Health { name, source });
            }
            sources.push(SourceConfig { name, kind, params, scoring });
        }
        let keys = self.keys.check()?;
        let kms = self.kms.check()?;
        let module = self.module.check()?;
        let tls = self.tls.check()?;
        let attest = self.attest.map(|a| a.check(&keys.sealer)).transpose()?;
        if kms.cluster.is_some() && attest.is_none() {
            return Err(ConfigError::Inconsistent(
                "[kms.cluster] needs [attest]: a node is given the shared KEKs on the strength \
                 of its evidence, signed by its identity key",
            ));
        }
        let qkd = self.qkd.check()?;
        let kernel = self.kernel.check()?;
        let danger = Danger {
            os_fallback: self.danger.os_fallback,
            allow_sim_sources: self.danger.allow_sim_sources,
            plaintext_beyond_loopback: self.danger.plaintext_beyond_loopback,
            qkd_without_ml_kem: self.danger.qkd_without_ml_kem,
        };
        if let Some(serve) = &qkd.serve {
            if qkd.peers.is_empty() {
                return Err(ConfigError::Inconsistent(
                    "[qkd.serve] needs a [qkd.peer.NAME] for the node at the other end of each \
                     link: it serves the SAEs there, and holds the ML-KEM half of their keys",
                ));
            }
            if attest.is_none() && !danger.qkd_without_ml_kem {
                return Err(ConfigError::Inconsistent(
                    "[qkd.serve] needs [attest]: peers trust this node's transport key on the \
                     strength of its evidence (without it, only [danger] qkd_without_ml_kem = \
                     true, which delivers keys without ML-KEM)",
                ));
            }
            if serve.listen == listen {
                return Err(ConfigError::Inconsistent(
                    "[qkd.serve] listen must differ from the REST API's listen",
                ));
            }
        }
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
                kernel_feed: kernel,
            },
            max_request_bytes: p.max_request_bytes,
            keys,
            kms,
            module,
            sources,
            tls: tls.tls,
            tls_pending: tls.pending,
            access: tls.access,
            attest,
            kmes: qkd.kmes,
            qkd_serve: qkd.serve,
            qkd_peers: qkd.peers,
            danger,
        })
    }
}
