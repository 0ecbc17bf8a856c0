//! Why a configuration does not load: one variant per kind of mistake, each
//! naming the option, so an operator can fix the file from the message.

use std::{fmt::Display, io, path::PathBuf};

use super::socket::SocketSpecError;

/// Why a configuration does not load or check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("invalid config file {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        #[source]
        source: Box<ConfigError>,
    },
    /// The configuration compiled into the binary does not check (a bug).
    #[error("embedded default config")]
    Embedded(#[source] Box<ConfigError>),
    /// Not TOML, or an option of the wrong type or an unknown one.
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    /// An option under a name it no longer has.
    #[error("{old} was renamed {new} ({note})")]
    Renamed {
        /// The old name, as the file has it.
        old: String,
        /// The name now.
        new: &'static str,
        /// What else to know.
        note: &'static str,
    },
    /// A value outside what its option allows.
    #[error("{key} must be {allowed}, got {value}")]
    OutOfRange {
        /// The option.
        key: &'static str,
        /// What it allows.
        allowed: &'static str,
        /// What the file has.
        value: String,
    },
    /// Options that contradict each other, or one that needs another.
    #[error("{0}")]
    Inconsistent(&'static str),
    /// `keys.sealer` names no sealer.
    #[error("keys.sealer {0:?}: use \"soft\", \"hsm\" or \"tpm\"")]
    UnknownSealer(String),
    /// `listen` is not an address.
    #[error("listen: {0:?} is not ADDR:PORT")]
    Listen(String, #[source] std::net::AddrParseError),
    /// A socket option that does not parse.
    #[error("{key}")]
    Socket {
        /// The option.
        key: &'static str,
        /// Why.
        #[source]
        source: SocketSpecError,
    },
    /// A socket mode that is not octal, or that locks its owner out.
    #[error(
        "{key} {value:?} is not an octal mode such as \"0600\" in which the owner needs read and write"
    )]
    SocketMode {
        /// The option.
        key: &'static str,
        /// What the file has.
        value: String,
    },
    /// No source at all.
    #[error("no [[source]] configured: add at least one (kind = \"os\" runs anywhere)")]
    NoSource,
    /// A source name that cannot be a metric label.
    #[error("source name {0:?}: use 1-64 characters of [A-Za-z0-9._-]")]
    SourceName(String),
    /// Two sources with one name.
    #[error("source name {0:?} is used twice")]
    DuplicateSource(String),
    /// A simulated source without the option that allows it.
    #[error(
        "source {0:?} is simulated: its samples are predictable, so it needs [danger] \
         allow_sim_sources = true (tests and demos only)"
    )]
    SimNotAllowed(String),
    /// A source's health-test parameters are impossible (its claim, its α).
    #[error("source {name:?}")]
    Health {
        /// The source.
        name: String,
        /// Why.
        #[source]
        source: qkeyd_health::Error,
    },
    /// No OS randomness to seed a simulated source that has no seed.
    #[error("seeding a sim source")]
    SimSeed(#[source] getrandom::Error),
    /// The PIN file cannot be read.
    #[error("cannot read the PIN file {}", path.display())]
    PinFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Plain HTTP on an address other machines reach.
    #[error(
        "listen {0}: without TLS the REST API listens on loopback only; give a certificate \
         ([tls] cert and key, or --tls-cert and --tls-key; `qkeyd tls self-issue` makes one), \
         or set [danger] plaintext_beyond_loopback = true"
    )]
    PlaintextListen(std::net::SocketAddr),
    /// The PIN variable is not set.
    #[error("the PIN variable {0} is not set")]
    PinEnv(String),
    /// A `[qkd.kme.NAME]` table that cannot work.
    #[error("[qkd.kme.{kme}]: {problem}")]
    Kme {
        /// The KME's name in the config.
        kme: String,
        /// What is wrong.
        problem: String,
    },
    /// A `[qkd.serve]` or `[qkd.peer.NAME]` table that cannot work.
    #[error("[{table}]: {problem}")]
    QkdTable {
        /// The table, e.g. `qkd.peer.b`.
        table: String,
        /// What is wrong.
        problem: String,
    },
}

/// `Ok` if `ok`, else `key` is out of range.
pub(super) fn range(
    ok: bool,
    key: &'static str,
    allowed: &'static str,
    value: impl Display,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { key, allowed, value: value.to_string() })
    }
}
