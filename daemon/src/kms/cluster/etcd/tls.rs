//! TLS to etcd: the files of `[kms.cluster]`, the client configuration
//! (aws-lc-rs, X25519MLKEM768 first) and the dialler of `https://` endpoints.

use std::{fmt, io, path::Path, sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore, SignatureScheme,
    client::ResolvesClientCert,
    crypto::{CryptoProvider, aws_lc_rs},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    sign::CertifiedKey,
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use zeroize::{Zeroize as _, Zeroizing};

use super::EtcdError;

/// The TLS material for `https://` endpoints, read by [`load_tls`].
pub(crate) struct Tls {
    /// CA certificates (PEM) etcd's server certificate must chain to.
    pub(crate) ca_pem: Vec<u8>,
    /// The client certificate to present, if any.
    pub(crate) client: Option<ClientCert>,
}

/// A client certificate chain and its key.
pub(crate) struct ClientCert {
    /// The chain (PEM), leaf first.
    pub(crate) cert_pem: Vec<u8>,
    /// The private key (PEM).
    pub(crate) key_pem: Zeroizing<Vec<u8>>,
}

/// Read the TLS files of `[kms.cluster]`: `None` if none is set. The CA is
/// needed with a client certificate; the certificate and key go together.
/// Every file is checked here, with an error that names it.
pub(crate) fn load_tls(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<Tls>, EtcdError> {
    let Some(ca) = ca else {
        if cert.is_some() || key.is_some() {
            return Err(EtcdError::Config(
                "etcd cert_file and key_file need ca_file: the CA that signed etcd's server \
                 certificate (as kube-apiserver's --etcd-cafile)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    let read = |what: &str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            EtcdError::Config(format!("cannot read etcd {what} {}: {e}", path.display()))
        })
    };
    let client = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(ClientCert {
            cert_pem: read("cert_file", cert)?,
            key_pem: Zeroizing::new(read("key_file", key)?),
        }),
        _ => {
            return Err(EtcdError::Config(
                "etcd cert_file and key_file go together: give both or neither".into(),
            ));
        }
    };
    let tls = Tls { ca_pem: read("ca_file", ca)?, client };
    client_config(&tls).map_err(|p| {
        let path = |f: Option<&Path>| f.map_or_else(String::new, |p| p.display().to_string());
        EtcdError::Config(match p {
            Problem::Ca(why) => format!("etcd ca_file {} {why}", ca.display()),
            Problem::Cert(why) => format!("etcd cert_file {} {why}", path(cert)),
            Problem::Key(why) => format!("etcd key_file {} {why}", path(key)),
            Problem::Pair(why) => format!(
                "etcd key_file {} does not go with cert_file {}: {why}",
                path(key),
                path(cert)
            ),
        })
    })?;
    Ok(Some(tls))
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca_pem_len", &self.ca_pem.len())
            .field("client", &self.client)
            .finish()
    }
}

impl fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCert")
            .field("cert_pem_len", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

/// How an `https://` endpoint is dialled: TCP, then TLS.
#[derive(Clone)]
pub(super) struct Dial {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) name: ServerName<'static>,
    pub(super) tls: TlsConnector,
    pub(super) timeout: Duration,
}

impl Dial {
    pub(super) async fn connect(self) -> io::Result<TokioIo<TlsStream<TcpStream>>> {
        let timeout = self.timeout;
        let connect = async move {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
            tcp.set_nodelay(true)?;
            self.tls.connect(self.name, tcp).await.map_err(handshake_error)
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(stream) => Ok(TokioIo::new(stream?)),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no TLS connection within {timeout:?}"),
            )),
        }
    }
}

/// The provider etcd is spoken to with: aws-lc-rs, the hybrid group first.
fn provider() -> Arc<CryptoProvider> {
    use aws_lc_rs::kx_group;
    let mut p = aws_lc_rs::default_provider();
    p.kx_groups =
        vec![kx_group::X25519MLKEM768, kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
    Arc::new(p)
}

/// What is wrong with a [`Tls`], per file; the text follows the file's name.
pub(super) enum Problem {
    Ca(String),
    Cert(String),
    Key(String),
    Pair(String),
}

impl Problem {
    /// The message without file paths (for [`super::Etcd::new`], which has
    /// none).
    pub(super) fn anonymous(self) -> String {
        match self {
            Self::Ca(why) => format!("etcd ca_file {why}"),
            Self::Cert(why) => format!("etcd cert_file {why}"),
            Self::Key(why) => format!("etcd key_file {why}"),
            Self::Pair(why) => format!("etcd key_file does not go with cert_file: {why}"),
        }
    }
}

pub(super) fn client_config(tls: &Tls) -> Result<ClientConfig, Problem> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    for (i, c) in certificates(&tls.ca_pem).map_err(Problem::Ca)?.into_iter().enumerate() {
        roots.add(c).map_err(|e| {
            Problem::Ca(format!("has certificate {} that cannot be a CA: {e}", i + 1))
        })?;
    }
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Problem::Ca(format!("cannot be used: {e}")))?
        .with_root_certificates(roots);
    let mut config = match &tls.client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let chain = certificates(&client.cert_pem).map_err(Problem::Cert)?;
            // The PEM parser's errors describe the file's layout, not its
            // bytes; still, say nothing of them.
            let mut der = PrivateKeyDer::from_pem_slice(&client.key_pem).map_err(|_| {
                Problem::Key(
                    "holds no PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)"
                        .into(),
                )
            })?;
            // Loaded from a borrow (rustls' own loaders take the DER by
            // value and drop it uncleared), then cleared.
            let signer = aws_lc_rs::sign::any_supported_type(&der);
            der.zeroize();
            let signer = signer.map_err(|e| Problem::Key(format!("cannot sign: {e}")))?;
            let certified = CertifiedKey::new(chain, signer);
            match certified.keys_match() {
                Ok(())
                | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
                Err(e) => return Err(Problem::Pair(e.to_string())),
            }
            builder.with_client_cert_resolver(Arc::new(OneCert(Arc::new(certified))))
        }
    };
    // etcd's gRPC server requires HTTP/2 negotiated by ALPN.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The PEM certificates in `pem`, at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The client certificate, whatever the server asks.
struct OneCert(Arc<CertifiedKey>);

impl fmt::Debug for OneCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneCert").finish_non_exhaustive()
    }
}

impl ResolvesClientCert for OneCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A failed TLS handshake, with what it most likely means.
fn handshake_error(e: io::Error) -> io::Error {
    let hint = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()).map_or("", tls_hint);
    io::Error::new(e.kind(), format!("TLS handshake: {e}{hint}"))
}

/// What a TLS error most likely means, as ` (…)`; empty if nothing useful.
pub(super) fn tls_hint(e: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E, InvalidMessage as M};
    match e {
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            " (its certificate does not chain to ca_file)"
        }
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            " (its certificate does not name the endpoint's host)"
        }
        E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            " (its certificate has expired)"
        }
        E::AlertReceived(
            A::CertificateRequired | A::BadCertificate | A::UnknownCA | A::CertificateUnknown,
        ) => " (it wants a client certificate it trusts: cert_file and key_file)",
        E::AlertReceived(A::CertificateExpired) => {
            " (it refused the client certificate as expired)"
        }
        E::InvalidMessage(M::InvalidContentType) => " (is it serving http://?)",
        _ => "",
    }
}
