//! Why a KMS call failed, and which kind of failure that is to a client.

use std::sync::Arc;

use qkeyd_drivers::Error as SealError;

use super::{
    format::{FORMAT, FORMAT_ANNOTATION, MAX_CIPHERTEXT, MAX_KEY_ID, MAX_PLAINTEXT, OVERHEAD},
    store::StoreError,
};
use crate::pool::PoolError;

/// Why a KMS call failed. Messages carry key ids, lengths and reasons, never
/// secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum KmsError {
    /// Encrypt's plaintext is empty or too long.
    #[error("plaintext of {0} bytes: 1 to {MAX_PLAINTEXT} bytes are accepted")]
    PlaintextLength(usize),
    /// Decrypt named no key.
    #[error("key_id is empty")]
    EmptyKeyId,
    /// Decrypt's key id is longer than kube-apiserver ever sends.
    #[error("key_id of {0} bytes: at most {MAX_KEY_ID}")]
    KeyIdLength(usize),
    /// The format annotation is missing.
    #[error("annotation {FORMAT_ANNOTATION} is missing")]
    MissingFormat,
    /// The format annotation names a format this plugin does not write.
    #[error("annotation {FORMAT_ANNOTATION} is {0:?}; this plugin writes format \"1\"")]
    OtherFormat(String),
    /// An annotation this plugin never writes.
    #[error("unexpected annotation {0:?}: this plugin writes only {FORMAT_ANNOTATION}")]
    UnexpectedAnnotation(String),
    /// The ciphertext cannot be one of this plugin's.
    #[error("ciphertext of {0} bytes: this plugin's are {min} to {MAX_CIPHERTEXT} bytes", min = OVERHEAD + 1)]
    CiphertextLength(usize),
    /// The ciphertext's format byte is unknown.
    #[error("ciphertext format {0} is unknown (this plugin writes {FORMAT})")]
    UnknownCiphertextFormat(u8),
    /// The ciphertext does not authenticate under the key it names.
    #[error(
        "ciphertext does not authenticate under key_id {0} (corrupted, or not made by this key)"
    )]
    NotAuthentic(String),
    /// The key id is not one of this plugin's.
    #[error("unknown key_id {0:?}: not a KEK of this plugin")]
    UnknownKey(String),
    /// The key id was retired.
    #[error(
        "key_id {key_id} was retired (at Unix time {at}); data under it can no longer be decrypted"
    )]
    Retired {
        /// The key id.
        key_id: String,
        /// When, Unix seconds.
        at: u64,
    },
    /// Retiring the write key.
    #[error(
        "{0} is the write key; rotate first, then retire it once every Secret has been \
         rewritten under the new key"
    )]
    RetireWriteKey(String),
    /// Retiring a KEK within its grace period after a rotation.
    #[error(
        "{key_id} was the write key {ago}s ago: kube-apiserver may still write under it for a \
         few minutes after a rotation; retire it after {grace}s, or force"
    )]
    RecentlyReplaced {
        /// The key id.
        key_id: String,
        /// Seconds since it was replaced.
        ago: u64,
        /// The grace period, seconds.
        grace: u64,
    },
    /// Retiring a KEK within its grace period after a use.
    #[error(
        "{key_id} decrypted or encrypted {ago}s ago: data under it is still being read; \
         rewrite it under the new key first, or force"
    )]
    RecentlyUsed {
        /// The key id.
        key_id: String,
        /// Seconds since its last use.
        ago: u64,
    },
    /// The sealer (HSM, TPM) failed.
    #[error("KEK backend")]
    Seal(#[source] SealError),
    /// The sealer did not answer in time.
    #[error("the KEK backend did not answer within {0:?}")]
    TooSlow(std::time::Duration),
    /// No health-tested entropy for an IV, a probe or a new KEK.
    #[error("no health-tested entropy")]
    Entropy(#[source] PoolError),
    /// The KEK file could not be read or written.
    #[error("KEK file")]
    Store(#[source] StoreError),
    /// The audit log could not be written: the change was not made.
    #[error("audit log (STATE_DIR/audit.log)")]
    AuditLog(#[source] std::io::Error),
    /// A round trip through the backend gave back other bytes.
    #[error("KEK {0}: the round trip through the backend returned other bytes")]
    RoundTrip(String),
    /// A new key id is already taken (the pool repeated itself).
    #[error("a new key id collides with an existing one")]
    KeyIdCollision,
    /// A sealed KEK unsealed to the wrong length.
    #[error("KEK {0} is not 32 bytes")]
    KekLength(String),
    /// AES-GCM refused its input (only inputs over 2^36 bytes are refused).
    #[error("AES-GCM encryption failed")]
    Aead,
    /// A blocking task ended without an answer (it panicked).
    #[error("a KMS task ended without an answer")]
    TaskLost,
    /// The last Status check failed; this is its answer, reused until the
    /// next check.
    #[error("the last check of the backend failed")]
    LastCheck(#[source] Arc<KmsError>),
    /// The plugin is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// Clustered, and this node does not hold the cluster's write KEK yet.
    #[error(
        "this node does not hold the cluster's write KEK yet: it is admitted and sent the \
         KEK once its evidence passes a member's policy (see `qkeyd kms cluster status`)"
    )]
    NotShared,
    /// Clustered, and etcd cannot be reached: rotation, retirement and
    /// admission wait for it (Encrypt, Decrypt and Status do not).
    #[error("etcd is unreachable, so the cluster's KEKs cannot change now: {0}")]
    EtcdDown(String),
    /// Clustered, and etcd refused a request.
    #[error("etcd refused the request: {0}")]
    EtcdRefused(String),
    /// Clustered: this node's evidence, signature or a peer's transport key
    /// could not be used.
    #[error("attestation: {0}")]
    Attest(String),
    /// Clustered: another node changed the cluster's KEKs first.
    #[error("{0}")]
    ClusterConflict(String),
    /// A token KEK made before the node was clustered has no sealed copy to
    /// wrap for another node.
    #[error(
        "KEK {0} lives only inside this node's token (made before the node was clustered): \
         it cannot be shared; rotate to make a shared one"
    )]
    NotShareable(String),
    /// Clustered: the request names something the cluster does not have.
    #[error("{0}")]
    ClusterNotFound(String),
}

/// What a failure means to a client: the one classification the gRPC and
/// REST mappings share.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Kind {
    /// The request is malformed or names nothing usable.
    InvalidArgument,
    /// The key id is unknown or retired.
    NotFound,
    /// The request conflicts with the state (retiring the write key too soon).
    Conflict,
    /// The backend or the entropy pool cannot serve now; retrying may work.
    Unavailable,
    /// A fault of this plugin or its files: the detail is logged, not sent.
    Internal,
}

impl KmsError {
    /// Which kind of failure this is to a client.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Self::PlaintextLength(_)
            | Self::EmptyKeyId
            | Self::KeyIdLength(_)
            | Self::MissingFormat
            | Self::OtherFormat(_)
            | Self::UnexpectedAnnotation(_)
            | Self::CiphertextLength(_)
            | Self::UnknownCiphertextFormat(_)
            | Self::NotAuthentic(_) => Kind::InvalidArgument,
            Self::UnknownKey(_) | Self::Retired { .. } | Self::ClusterNotFound(_) => Kind::NotFound,
            Self::RetireWriteKey(_)
            | Self::RecentlyReplaced { .. }
            | Self::RecentlyUsed { .. }
            | Self::ClusterConflict(_) => Kind::Conflict,
            Self::Seal(e) if e.is_transient() || matches!(e, SealError::Auth(_)) => {
                Kind::Unavailable
            }
            Self::TooSlow(_)
            | Self::Entropy(_)
            | Self::ShuttingDown
            | Self::NotShared
            | Self::EtcdDown(_)
            | Self::EtcdRefused(_)
            | Self::Attest(_) => Kind::Unavailable,
            Self::LastCheck(e) => e.kind(),
            Self::Seal(_)
            | Self::Store(_)
            | Self::AuditLog(_)
            | Self::RoundTrip(_)
            | Self::KeyIdCollision
            | Self::KekLength(_)
            | Self::NotShareable(_)
            | Self::Aead
            | Self::TaskLost => Kind::Internal,
        }
    }
}

impl From<SealError> for KmsError {
    fn from(e: SealError) -> Self {
        Self::Seal(e)
    }
}

impl From<PoolError> for KmsError {
    fn from(e: PoolError) -> Self {
        Self::Entropy(e)
    }
}

impl From<StoreError> for KmsError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}
