//! The TLS side of the `qkeyd keys` / `qkeyd kms` clients.
//!
//! An `https://` URL is spoken over rustls on the aws-lc-rs provider, with
//! the hybrid X25519MLKEM768 group offered first (so a daemon set to
//! `groups = "pq-only"` accepts the CLI). The daemon's certificate must chain
//! to the certificates of `--ca-file`: this client has no built-in roots, so
//! an `https://` URL without `--ca-file` is refused before anything is sent.
//! `--client-cert`/`--client-key` present a client certificate. A plain
//! `http://` URL is spoken as before, and refuses the TLS options rather than
//! ignore them.
//!
//! Every file is checked here, with an error that names it, so a wrong file
//! never reaches the handshake (where ureq would panic or a server would see
//! an empty chain). The key file is read into a zeroizing buffer; its bytes
//! never appear in an error.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rustls::{
    RootCertStore,
    crypto::{CryptoProvider, aws_lc_rs},
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    sign::CertifiedKey,
};
use ureq::tls::{ClientCert, RootCerts, TlsConfig, TlsProvider};
use zeroize::{Zeroize as _, Zeroizing};

/// How long one request may take, start to end.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The TLS files a client was given (`--ca-file`, `--client-cert`,
/// `--client-key`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Options<'a> {
    /// CA certificates (PEM) the daemon's certificate must chain to.
    pub(crate) ca_file: Option<&'a Path>,
    /// Client certificate chain (PEM, leaf first).
    pub(crate) client_cert: Option<&'a Path>,
    /// The client certificate's private key (PEM).
    pub(crate) client_key: Option<&'a Path>,
}

/// Why no client could be built for a URL and options. Names files, never
/// their contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ClientTlsError {
    /// An `https://` URL without `--ca-file`.
    #[error(
        "--url {url} needs --ca-file FILE (or QKEYD_CA_FILE): the CA certificate that \
         signed the daemon's (for a `qkeyd tls self-issue` certificate, its server.crt); \
         this client has no built-in CA roots"
    )]
    NeedCaFile {
        /// The URL.
        url: String,
    },
    /// A TLS option with a plain `http://` URL.
    #[error("{flag} is for https:// URLs, and {url} is plain HTTP: use https:// or drop {flag}")]
    OptionOverHttp {
        /// The option given.
        flag: &'static str,
        /// The URL.
        url: String,
    },
    /// Only one of `--client-cert` and `--client-key`.
    #[error("--client-cert and --client-key go together: give both or neither")]
    HalfClientCert,
    /// A file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No PEM `CERTIFICATE` in a certificate file.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", .0.display())]
    NoCertificate(PathBuf),
    /// A certificate file's PEM does not parse.
    #[error("{} is not a PEM certificate file: {detail}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// A `--ca-file` certificate rustls cannot use as a trust anchor.
    #[error("{}: certificate {index} cannot be a CA root: {detail}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Its position in the file, from 1.
        index: usize,
        /// What rustls said.
        detail: String,
    },
    /// No usable private key in `--client-key`.
    #[error(
        "{} holds no PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)",
        .0.display()
    )]
    NoKey(PathBuf),
    /// The key cannot sign, or is not the certificate's.
    #[error("--client-key {} does not go with --client-cert {}: {detail}", key.display(), cert.display())]
    ClientCert {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        detail: String,
    },
}

/// Whether `url` is to be spoken over TLS.
pub(crate) fn is_https(url: &str) -> bool {
    url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// The agent the CLI talks to `url` with: HTTP statuses come back as
/// responses, not errors; a request may take [`TIMEOUT`]; an `https://` URL
/// gets the TLS configuration of `opts`.
pub(crate) fn agent(url: &str, opts: &Options<'_>) -> Result<ureq::Agent, ClientTlsError> {
    let builder =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(TIMEOUT));
    if !is_https(url) {
        let given = [
            ("--ca-file", opts.ca_file),
            ("--client-cert", opts.client_cert),
            ("--client-key", opts.client_key),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, p)| p.is_some()) {
            return Err(ClientTlsError::OptionOverHttp { flag, url: url.to_owned() });
        }
        return Ok(builder.build().into());
    }
    Ok(builder.tls_config(tls_config(url, opts)?).build().into())
}

/// An agent for a service that requires mutual TLS (a KME, a peer node):
/// `ca` as the only roots, `cert` and `key` as the client certificate, each
/// request within `timeout`, HTTP statuses as responses.
pub(crate) fn mutual_tls_agent(
    url: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
    timeout: Duration,
) -> Result<ureq::Agent, ClientTlsError> {
    let opts = Options { ca_file: Some(ca), client_cert: Some(cert), client_key: Some(key) };
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .tls_config(tls_config(url, &opts)?)
        .build()
        .into())
}

/// What a TLS failure `err` at `url` most likely means, as ` (…)` to follow
/// "cannot reach qkeyd at URL"; empty for any other error.
pub(crate) fn hint(err: &ureq::Error, url: &str) -> &'static str {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E, InvalidMessage as M};
    if !is_https(url) {
        // A TLS server answers plain HTTP with an alert, not an HTTP status line.
        return match err {
            ureq::Error::Protocol(_) => " (is it serving https://? then use an https:// URL)",
            _ => "",
        };
    }
    let tls = match err {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e.get_ref().and_then(|i| i.downcast_ref::<E>()),
        _ => None,
    };
    match tls {
        Some(E::InvalidCertificate(C::UnknownIssuer | C::BadSignature)) => {
            " (its certificate does not chain to a certificate in --ca-file)"
        }
        Some(E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. })) => {
            " (its certificate does not name the host of --url: use one of its SANs)"
        }
        Some(E::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => {
            " (its certificate has expired)"
        }
        Some(E::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. })) => {
            " (its certificate is not valid yet: check the clocks)"
        }
        Some(E::AlertReceived(
            A::CertificateRequired | A::BadCertificate | A::UnknownCA | A::CertificateUnknown,
        )) => " (it wants a client certificate it trusts: --client-cert and --client-key)",
        Some(E::AlertReceived(A::CertificateExpired)) => {
            " (it refused the client certificate as expired)"
        }
        Some(E::InvalidMessage(M::InvalidContentType)) => {
            " (it does not speak TLS there: a daemon without --tls-cert serves http://)"
        }
        _ => "",
    }
}

/// The provider the CLI speaks TLS with: aws-lc-rs, the hybrid group first.
fn provider() -> Arc<CryptoProvider> {
    use aws_lc_rs::kx_group;
    let mut p = aws_lc_rs::default_provider();
    p.kx_groups =
        vec![kx_group::X25519MLKEM768, kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(p)
}

/// The TLS configuration for `url` with the files of `opts`: the hybrid group
/// first, only the roots of `opts.ca_file`, the client certificate if given.
pub(crate) fn tls_config(url: &str, opts: &Options<'_>) -> Result<TlsConfig, ClientTlsError> {
    let provider = provider();
    let ca_file = opts.ca_file.ok_or_else(|| ClientTlsError::NeedCaFile { url: url.to_owned() })?;
    let roots = certificates(ca_file)?;
    let mut store = RootCertStore::empty();
    for (i, c) in roots.iter().enumerate() {
        store.add(c.clone()).map_err(|e| ClientTlsError::BadCa {
            path: ca_file.to_path_buf(),
            index: i + 1,
            detail: e.to_string(),
        })?;
    }
    let client_cert = match (opts.client_cert, opts.client_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(client_cert(cert, key, &provider)?),
        _ => return Err(ClientTlsError::HalfClientCert),
    };
    let roots: Vec<_> =
        roots.iter().map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()).collect();
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(provider)
        .root_certs(RootCerts::Specific(Arc::new(roots)))
        .client_cert(client_cert)
        .build())
}

/// The PEM certificates in `path`, at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientTlsError> {
    let pem = std::fs::read(path)
        .map_err(|source| ClientTlsError::Read { path: path.to_path_buf(), source })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientTlsError::BadPem { path: path.to_path_buf(), detail: e.to_string() })?;
    if certs.is_empty() {
        return Err(ClientTlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The client certificate chain and key, checked to go together.
fn client_cert(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<ClientCert, ClientTlsError> {
    let chain = certificates(cert)?;
    let pem = Zeroizing::new(
        std::fs::read(key)
            .map_err(|source| ClientTlsError::Read { path: key.to_path_buf(), source })?,
    );
    // The PEM parser's errors are about the file's layout, never its bytes;
    // still, name only the file.
    let mut der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| ClientTlsError::NoKey(key.to_path_buf()))?;
    let checked = CertifiedKey::from_der(chain.clone(), der.clone_key(), provider);
    der.zeroize();
    let mismatch = |detail: String| ClientTlsError::ClientCert {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        detail,
    };
    checked.map_err(|e| mismatch(e.to_string()))?;
    // ureq takes the key as PEM (the same parser, so it finds the same key).
    let ureq_key = ureq::tls::PrivateKey::from_pem(&pem)
        .map_err(|_| ClientTlsError::NoKey(key.to_path_buf()))?;
    let chain: Vec<_> =
        chain.iter().map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()).collect();
    Ok(ClientCert::new_with_certs(&chain, ureq_key))
}

#[cfg(test)]
mod tests;
