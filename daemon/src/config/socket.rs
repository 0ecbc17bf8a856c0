//! Where a socket server listens: a path with a mode, or an abstract name.

use std::path::PathBuf;

/// A socket address that does not parse.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SocketSpecError {
    /// `@` with nothing after it.
    #[error("an abstract socket needs a name after '@'")]
    EmptyAbstractName,
    /// Neither an absolute path nor `@name`.
    #[error("socket {0:?}: give an absolute path or @name")]
    RelativePath(String),
}

/// Where a socket server (the KMS plugin, the PKCS#11 module's server) listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SocketSpec {
    /// A socket file, created with `mode`.
    Path {
        /// The file.
        path: PathBuf,
        /// Its permissions (0600 by default).
        mode: u32,
    },
    /// A Linux abstract socket (`@name`): no file, reachable in this network namespace.
    Abstract(String),
}

impl SocketSpec {
    /// Parse `/path`, `@name`, `unix:///path` or `unix:///@name` (the last two
    /// as an EncryptionConfiguration's `endpoint` writes them).
    pub(crate) fn parse(s: &str, mode: u32) -> Result<Self, SocketSpecError> {
        let s = s.strip_prefix("unix://").unwrap_or(s);
        let s = if s.starts_with("/@") { &s[1..] } else { s };
        if let Some(name) = s.strip_prefix('@') {
            if name.is_empty() {
                return Err(SocketSpecError::EmptyAbstractName);
            }
            return Ok(Self::Abstract(name.to_owned()));
        }
        if !s.starts_with('/') {
            return Err(SocketSpecError::RelativePath(s.to_owned()));
        }
        Ok(Self::Path { path: PathBuf::from(s), mode })
    }

    /// How kube-apiserver's EncryptionConfiguration names it.
    pub(crate) fn endpoint(&self) -> String {
        match self {
            Self::Path { path, .. } => format!("unix://{}", path.display()),
            Self::Abstract(name) => format!("unix:///@{name}"),
        }
    }
}
