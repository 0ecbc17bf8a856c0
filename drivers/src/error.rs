use std::{io, path::PathBuf};

use thiserror::Error;

/// Why a driver call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The device is not there right now (missing, unplugged, FIFO writer gone).
    /// Retrying later may succeed.
    #[error("device {path} unavailable")]
    Unavailable {
        /// The device path.
        path: PathBuf,
        /// The I/O error, if any (none for end-of-file).
        #[source]
        source: Option<io::Error>,
    },
    /// The operating system's random source failed.
    #[error("getrandom failed: {0}")]
    Os(getrandom::Error),
    /// A simulated device is in its vanished phase.
    #[error("simulated source {name} has vanished")]
    Vanished {
        /// The source name.
        name: String,
    },
    /// A source was configured with values it cannot honour.
    #[error("invalid source configuration: {0}")]
    Config(String),
    /// Any other backend failure, cause kept.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Whether the source may come back by itself (device reappears), as opposed
    /// to a configuration or system fault.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Vanished { .. })
    }
}
