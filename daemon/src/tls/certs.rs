//! The certificate being served, and its reload: the files are read again
//! when they change (checked every `reload_interval`, and at once on
//! SIGHUP). New handshakes get the new certificate; connections already open
//! keep theirs. A file that does not load (garbage, a key that is not the
//! certificate's) is refused with a log line and the previous pair stays.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use sha2::{Digest as _, Sha256};

use crate::metrics::TlsMetrics;

/// Why a certificate and key pair does not load. Names the file, never key bytes.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    /// A file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No PEM certificate in the certificate file.
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    /// The certificate file's PEM does not parse.
    #[error("{} is not a PEM certificate chain: {detail}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The leaf certificate is not X.509 DER.
    #[error("{}: the first certificate does not parse as X.509", .0.display())]
    NotX509(PathBuf),
    /// No usable private key in the key file.
    #[error(
        "{} holds no usable private key (PEM PKCS#8, SEC1 or PKCS#1, of a type rustls signs with)",
        .0.display()
    )]
    BadKey(PathBuf),
    /// The key is not the certificate's.
    #[error("the key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// A certificate and key as loaded.
pub(crate) struct Loaded {
    pub(crate) key: Arc<CertifiedKey>,
    /// SHA-256 of the leaf certificate's DER, hex.
    pub(crate) sha256: String,
    /// The leaf's notAfter, Unix seconds.
    pub(crate) not_after: i64,
}

/// Read and check a certificate chain and its key.
pub(crate) fn load(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Loaded, CertError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Read { path: path.to_owned(), source })
    };
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::BadCertificate { path: cert.to_owned(), detail: e.to_string() })?;
    let leaf = chain.first().ok_or_else(|| CertError::NoCertificate(cert.to_owned()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|_| CertError::NotX509(cert.to_owned()))?;
    let not_after = parsed.validity().not_after.timestamp();
    let sha256 = hex::encode(Sha256::digest(leaf.as_ref()));
    let key_pem = zeroize::Zeroizing::new(read(key)?);
    let der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| CertError::BadKey(key.to_owned()))?;
    let certified = CertifiedKey::from_der(chain, der, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            CertError::Mismatch { cert: cert.to_owned(), key: key.to_owned() }
        }
        _ => CertError::BadKey(key.to_owned()),
    })?;
    Ok(Loaded { key: Arc::new(certified), sha256, not_after })
}

/// What a file looked like when last read: a change in any of these is a change.
#[derive(Clone, Debug, Eq, PartialEq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    // Follows symlinks: a Kubernetes secret volume swaps a `..data` link.
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len(), inode: m.ino() })
}

/// The certificate served to new handshakes, and its files.
pub(crate) struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as last read (loaded or refused), so one bad file is
    /// logged once, not at every check.
    seen: Mutex<(Option<Stamp>, Option<Stamp>)>,
    metrics: TlsMetrics,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").field("cert", &self.cert).finish_non_exhaustive()
    }
}

impl CertStore {
    /// Load the pair for the first time: an error here stops the start.
    pub(crate) fn open(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
        metrics: TlsMetrics,
    ) -> Result<Self, CertError> {
        let seen = (stamp(cert), stamp(key));
        let loaded = load(cert, key, &provider)?;
        log_loaded(cert, &loaded, &metrics);
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: RwLock::new(loaded.key),
            seen: Mutex::new(seen),
            metrics,
        })
    }

    /// Read the files again if they changed since last read (or always, with
    /// `force`). Returns whether a new pair is now served.
    pub(crate) fn check(&self, force: bool) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        {
            let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !force && *seen == now {
                return false;
            }
            *seen = now;
        }
        match load(&self.cert, &self.key, &self.provider) {
            Ok(loaded) => {
                log_loaded(&self.cert, &loaded, &self.metrics);
                self.metrics.reloads.with_label_values(&["loaded"]).inc();
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    loaded.key;
                true
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["refused"]).inc();
                tracing::warn!(
                    error = %crate::incident::Chain(&e),
                    "TLS certificate refused; the previous one stays"
                );
                false
            }
        }
    }
}

fn log_loaded(cert: &Path, loaded: &Loaded, metrics: &TlsMetrics) {
    metrics.expiry.set(loaded.not_after);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if loaded.not_after <= now {
        tracing::warn!(file = %cert.display(), sha256 = %loaded.sha256, "the TLS certificate has expired; clients will refuse it");
    }
    tracing::info!(
        file = %cert.display(),
        sha256 = %loaded.sha256,
        not_after = loaded.not_after,
        "TLS certificate loaded"
    );
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}
