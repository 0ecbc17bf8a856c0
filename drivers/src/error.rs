use std::{io, path::PathBuf};

use thiserror::Error;

/// Why a driver call failed: a source's read or a sealer's operation.
/// Messages never contain sample values or secret material.
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
    /// The HSM/TPM cannot be reached now (gone, not answering); retry later.
    #[error("seal backend unavailable: {0}")]
    SealerUnavailable(String),
    /// The sealer's backend refused our credentials (wrong PIN).
    #[error("seal backend refused login: {0}")]
    Auth(String),
    /// The backend object a sealed record needs no longer exists.
    #[error("the {backend} key {object:?} that sealed this record no longer exists")]
    ObjectGone {
        /// Backend name.
        backend: &'static str,
        /// The object's label.
        object: String,
    },
    /// The backend's policy refused the secret (a TPM PCR policy whose PCRs changed).
    #[error("seal policy not satisfied: {0}")]
    Policy(String),
    /// A sealed record or its associated data was changed, or sealed by another key.
    #[error("sealed record failed authentication (tampered, or sealed by another key)")]
    Integrity,
    /// A sealed record is not one this backend made.
    #[error("sealed record is malformed: {0}")]
    Malformed(String),
    /// The caller waited longer than its timeout for the sealer.
    #[error("seal backend did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The sealer cannot do this operation (keys held inside it: only an HSM).
    #[error("the {0} backend does not support this operation")]
    Unsupported(&'static str),
    /// Any other sealer backend failure.
    #[error("seal backend error: {0}")]
    Backend(String),
}

impl Error {
    /// Whether the source or sealer may work again by itself (a device
    /// reappears, a token is reinserted, a TPM answers again), as opposed to a
    /// configuration, data or system fault: the caller backs off and retries.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. }
                | Self::Vanished { .. }
                | Self::SealerUnavailable(_)
                | Self::Timeout(_)
        )
    }
}
