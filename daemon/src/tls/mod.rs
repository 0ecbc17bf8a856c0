//! TLS for the REST API: rustls on the aws-lc-rs provider, TLS 1.3 with the
//! hybrid X25519MLKEM768 group (or it alone, `pq-only`), client certificates
//! mapped to rights, and certificate files reloaded without a restart.
//!
//! Invariants: no handshake outlives `handshake_timeout`; every handshake is
//! counted once in `qkeyd_tls_handshakes_total` with its outcome; a refused
//! handshake never reaches the router.

mod certs;
pub(crate) mod client;
mod handshake;
mod identity;
pub(crate) mod issue;

use std::{net::SocketAddr, sync::Arc, time::Instant};

use anyhow::Context as _;
use rustls::{
    RootCertStore, ServerConfig,
    crypto::{CryptoProvider, aws_lc_rs},
    pki_types::{CertificateDer, pem::PemObject as _},
    server::{Acceptor, WebPkiClientVerifier, danger::ClientCertVerifier},
};
use tokio::net::TcpStream;
use tokio_rustls::{LazyConfigAcceptor, server::TlsStream};

pub(crate) use certs::CertStore;
pub(crate) use identity::Client;

use crate::{
    config::{ClientRule, Groups, TlsSettings},
    metrics::TlsMetrics,
};

/// What the REST API knows about the connection a request came on.
#[derive(Clone, Debug, Default)]
pub(crate) struct Connection {
    /// `None`: plain HTTP.
    pub(crate) tls: Option<Negotiated>,
}

/// What a TLS handshake settled.
#[derive(Clone, Debug)]
pub(crate) struct Negotiated {
    /// `TLSv1.3` or `TLSv1.2`.
    pub(crate) version: &'static str,
    /// The key exchange group, e.g. `X25519MLKEM768`.
    pub(crate) group: &'static str,
    /// The client, if it presented a certificate (verified against `client_ca`).
    pub(crate) client: Option<Client>,
}

/// aws-lc-rs with only the key exchange groups `groups`.
fn provider(groups: &[&'static dyn rustls::crypto::SupportedKxGroup]) -> CryptoProvider {
    CryptoProvider { kx_groups: groups.to_vec(), ..aws_lc_rs::default_provider() }
}

/// The REST API's TLS side: accepts connections and runs their handshakes.
///
/// rustls picks the first group in the *client's* list that the server has,
/// so a client that lists X25519 before X25519MLKEM768 would get X25519. To
/// make the hybrid group the server's choice whenever the client has it, the
/// ClientHello is read first: a client that offers X25519MLKEM768 is served
/// by a config with that group alone (a HelloRetryRequest asks for its key
/// share if the client sent none), any other by the classical one (X25519),
/// which `pq-only` does not have.
pub(crate) struct TlsServer {
    /// X25519MLKEM768 alone.
    pq: Arc<ServerConfig>,
    /// X25519, for clients without X25519MLKEM768 (`None` in `pq-only`).
    classical: Option<Arc<ServerConfig>>,
    store: Arc<CertStore>,
    settings: TlsSettings,
    metrics: TlsMetrics,
    gate: handshake::LogGate,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Load the certificate (and client CAs) and build the server configs.
    pub(crate) fn new(settings: &TlsSettings, metrics: TlsMetrics) -> anyhow::Result<Self> {
        let pq = Arc::new(provider(&[aws_lc_rs::kx_group::X25519MLKEM768]));
        let store = Arc::new(
            CertStore::open(&settings.cert, &settings.key, pq.clone(), metrics.clone())
                .context("the TLS certificate")?,
        );
        let verifier = match &settings.client_ca {
            Some(path) => Some(client_verifier(path, pq.clone())?),
            None => None,
        };
        let config = |provider: Arc<CryptoProvider>| -> anyhow::Result<Arc<ServerConfig>> {
            let versions: &[&'static rustls::SupportedProtocolVersion] = if settings.allow_tls12 {
                &[&rustls::version::TLS13, &rustls::version::TLS12]
            } else {
                &[&rustls::version::TLS13]
            };
            let builder = ServerConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .context("TLS versions")?;
            let builder = match &verifier {
                Some(v) => builder.with_client_cert_verifier(v.clone()),
                None => builder.with_no_client_auth(),
            };
            let mut config = builder.with_cert_resolver(store.clone());
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        };
        let classical = match settings.groups {
            Groups::Hybrid => Some(config(Arc::new(provider(&[aws_lc_rs::kx_group::X25519])))?),
            Groups::PqOnly => None,
        };
        Ok(Self {
            pq: config(pq)?,
            classical,
            store,
            settings: settings.clone(),
            metrics,
            gate: handshake::LogGate::default(),
        })
    }

    /// The certificate store (for reloads).
    pub(crate) fn store(&self) -> &Arc<CertStore> {
        &self.store
    }

    /// How often the certificate files are checked for a change.
    pub(crate) fn reload_interval(&self) -> std::time::Duration {
        self.settings.reload_interval
    }

    /// Run the handshake on an accepted connection: the stream and what was
    /// negotiated, or `None` (counted and logged) when it fails or times out.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TlsStream<TcpStream>, Connection)> {
        let started = Instant::now();
        let handshake = async {
            let start = LazyConfigAcceptor::new(Acceptor::default(), tcp).await?;
            let offers_pq = start
                .client_hello()
                .named_groups()
                .is_some_and(|g| g.contains(&rustls::NamedGroup::X25519MLKEM768));
            let config = match (&self.classical, offers_pq) {
                (Some(classical), false) => classical.clone(),
                _ => self.pq.clone(),
            };
            start.into_stream(config).await
        };
        let result = tokio::time::timeout(self.settings.handshake_timeout, handshake).await;
        let (outcome, detail) = match result {
            Ok(Ok(stream)) => {
                let negotiated = negotiated(&stream, &self.settings.clients);
                self.metrics
                    .handshakes
                    .with_label_values(&["success", negotiated.group, negotiated.version])
                    .inc();
                self.metrics
                    .handshake_seconds
                    .with_label_values(&[negotiated.group])
                    .observe(started.elapsed().as_secs_f64());
                return Some((stream, Connection { tls: Some(negotiated) }));
            }
            Ok(Err(e)) => (handshake::outcome(&e), e.to_string()),
            Err(_) => ("timeout", "no finished handshake in time".to_owned()),
        };
        self.metrics.handshakes.with_label_values(&[outcome, "none", "none"]).inc();
        self.gate.refused(outcome, peer, &detail);
        None
    }
}

/// Client certificates must chain to a CA in `path`. A certificate is asked
/// for, not required: routes that need one answer 401 without it, and open
/// routes stay open.
fn client_verifier(
    path: &std::path::Path,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read tls.client_ca {}", path.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| {
            format!("tls.client_ca {} is not a PEM certificate list", path.display())
        })?;
        roots.add(cert).with_context(|| {
            format!("tls.client_ca {}: a certificate is not a usable CA", path.display())
        })?;
    }
    anyhow::ensure!(!roots.is_empty(), "tls.client_ca {} holds no certificate", path.display());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .context("the client certificate verifier")
}

fn negotiated(stream: &TlsStream<TcpStream>, rules: &[ClientRule]) -> Negotiated {
    let (_, conn) = stream.get_ref();
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "other",
    };
    let group = match conn.negotiated_key_exchange_group().map(|g| g.name()) {
        Some(rustls::NamedGroup::X25519MLKEM768) => "X25519MLKEM768",
        Some(rustls::NamedGroup::X25519) => "X25519",
        _ => "other",
    };
    let client = conn
        .peer_certificates()
        .and_then(<[_]>::first)
        .map(|leaf| identity::client(leaf.as_ref(), rules));
    Negotiated { version, group, client }
}
