//! The CLI's TLS against real rustls servers.

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    sync::mpsc,
};

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

use super::*;

/// A CA, a server certificate for 127.0.0.1 and localhost signed by it,
/// and a client certificate signed by it, as PEM files in a folder.
struct Pki {
    dir: tempfile::TempDir,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let mut server = CertificateParams::new(["127.0.0.1".into(), "localhost".into()]).unwrap();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();

        let mut client = CertificateParams::new(["client.example".into()]).unwrap();
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();
        let other_key = KeyPair::generate().unwrap();

        let put = |name: &str, body: &str| std::fs::write(dir.path().join(name), body).unwrap();
        put("ca.pem", &ca.pem());
        put("client.crt", &client_cert.pem());
        put("client.key", &client_key.serialize_pem());
        put("other.key", &other_key.serialize_pem());
        put("garbage.pem", "not a pem file\n");
        put("torn.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        Self {
            server_chain: vec![server_cert.der().clone()],
            server_key: PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
            ca: ca.der().clone(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A one-shot TLS 1.3 server on 127.0.0.1 that accepts X25519MLKEM768
    /// only and answers one request with 200 `{"client": <whether a client
    /// certificate came>, "group": …}`, requiring one if `require_client`.
    /// Returns its URL and what the server saw.
    fn serve(&self, require_client: bool) -> (String, mpsc::Receiver<Result<bool, String>>) {
        let mut provider = aws_lc_rs::default_provider();
        provider.kx_groups = vec![aws_lc_rs::kx_group::X25519MLKEM768];
        let provider = Arc::new(provider);
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap();
        let builder = if require_client {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.clone()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = Arc::new(
            builder
                .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            let mut conn = rustls::ServerConnection::new(config).unwrap();
            let result = (|| {
                while conn.is_handshaking() {
                    conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
                }
                let client = conn.peer_certificates().is_some_and(|c| !c.is_empty());
                let group = conn.negotiated_key_exchange_group().map(|g| g.name());
                let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        return Err("closed".to_owned());
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let body = format!("{{\"client\":{client},\"group\":\"{group:?}\"}}");
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .map_err(|e| e.to_string())?;
                stream.flush().map_err(|e| e.to_string())?;
                conn.send_close_notify();
                let _ = conn.complete_io(&mut tcp);
                Ok(client)
            })();
            let _ = tx.send(result);
        });
        (url, rx)
    }
}

fn get(agent: &ureq::Agent, url: &str) -> Result<serde_json::Value, ureq::Error> {
    let mut resp = agent.get(&format!("{url}/")).call()?;
    Ok(serde_json::from_str(&resp.body_mut().read_to_string()?).unwrap())
}

#[test]
fn https_trusts_the_ca_file_and_speaks_the_hybrid_group() {
    let pki = Pki::new();
    let (url, done) = pki.serve(false);
    let ca = pki.path("ca.pem");
    let agent = agent(&url, &Options { ca_file: Some(&ca), ..Options::default() }).unwrap();
    let v = get(&agent, &url).unwrap();
    assert_eq!(v["client"], false);
    assert_eq!(v["group"], "Some(X25519MLKEM768)");
    assert_eq!(done.recv().unwrap(), Ok(false));
}

#[test]
fn a_certificate_that_does_not_chain_to_the_ca_file_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    let (url, done) = pki.serve(false);
    let ca = other.path("ca.pem");
    let agent = agent(&url, &Options { ca_file: Some(&ca), ..Options::default() }).unwrap();
    let err = get(&agent, &url).unwrap_err();
    assert_eq!(
        hint(&err, &url),
        " (its certificate does not chain to a certificate in --ca-file)",
        "{err:?}"
    );
    assert!(done.recv().unwrap().is_err());
}

#[test]
fn a_client_certificate_is_presented_when_given() {
    let pki = Pki::new();
    let (url, done) = pki.serve(true);
    let (ca, cert, key) = (pki.path("ca.pem"), pki.path("client.crt"), pki.path("client.key"));
    let opts = Options { ca_file: Some(&ca), client_cert: Some(&cert), client_key: Some(&key) };
    let v = get(&agent(&url, &opts).unwrap(), &url).unwrap();
    assert_eq!(v["client"], true);
    assert_eq!(done.recv().unwrap(), Ok(true));

    // The same server refuses a client without one.
    let (url, done) = pki.serve(true);
    let agent = agent(&url, &Options { ca_file: Some(&ca), ..Options::default() }).unwrap();
    let err = get(&agent, &url).unwrap_err();
    assert_eq!(
        hint(&err, &url),
        " (it wants a client certificate it trusts: --client-cert and --client-key)",
        "{err:?}"
    );
    let server = done.recv().unwrap().unwrap_err();
    assert!(server.contains("peer sent no certificates"), "{server}");
}

#[test]
fn https_to_a_plain_http_port_says_so() {
    let pki = Pki::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let _ = tcp.read(&mut [0u8; 1024]);
        let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
    });
    let ca = pki.path("ca.pem");
    let agent = agent(&url, &Options { ca_file: Some(&ca), ..Options::default() }).unwrap();
    let err = get(&agent, &url).unwrap_err();
    assert_eq!(
        hint(&err, &url),
        " (it does not speak TLS there: a daemon without --tls-cert serves http://)",
        "{err:?}"
    );
    assert_eq!(hint(&ureq::Error::ConnectionFailed, &url), "");
}

#[test]
fn http_to_a_tls_port_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let _ = tcp.read(&mut [0u8; 1024]);
        // What rustls sends to a client that does not speak TLS: a
        // fatal protocol_version alert.
        let _ = tcp.write_all(b"\x15\x03\x03\x00\x02\x02\x46");
    });
    let err = get(&agent(&url, &Options::default()).unwrap(), &url).unwrap_err();
    assert_eq!(hint(&err, &url), " (is it serving https://? then use an https:// URL)");
    assert_eq!(hint(&ureq::Error::ConnectionFailed, &url), "");
}

#[test]
fn https_without_a_ca_file_is_refused_before_connecting() {
    let err = agent("https://127.0.0.1:1", &Options::default()).unwrap_err();
    assert!(matches!(err, ClientTlsError::NeedCaFile { .. }));
    let msg = err.to_string();
    assert!(msg.contains("--ca-file") && msg.contains("QKEYD_CA_FILE"), "{msg}");
    assert!(agent("HTTPS://h:1", &Options::default()).is_err(), "the scheme's case");
}

#[test]
fn plain_http_refuses_tls_options_and_needs_none() {
    let f = Path::new("/nonexistent");
    agent("http://127.0.0.1:8437", &Options::default()).unwrap();
    for (opts, flag) in [
        (
            Options { client_cert: Some(f), client_key: Some(f), ..Options::default() },
            "--client-cert",
        ),
        (Options { ca_file: Some(f), ..Options::default() }, "--ca-file"),
        (Options { client_key: Some(f), ..Options::default() }, "--client-key"),
    ] {
        let err = agent("http://127.0.0.1:8437", &opts).unwrap_err();
        assert!(matches!(err, ClientTlsError::OptionOverHttp { flag: f, .. } if f == flag));
        assert!(err.to_string().contains("plain HTTP"), "{err}");
    }
}

#[test]
fn unusable_files_are_named_in_the_error() {
    let pki = Pki::new();
    let url = "https://127.0.0.1:1";
    let p = |n: &str| pki.path(n);
    let (ca, cert, key) = (p("ca.pem"), p("client.crt"), p("client.key"));
    let (missing, garbage, torn, other) =
        (p("missing.pem"), p("garbage.pem"), p("torn.pem"), p("other.key"));
    let cases: Vec<(Options<'_>, &Path, &str)> = vec![
        (Options { ca_file: Some(&missing), ..Options::default() }, &missing, "cannot read"),
        (Options { ca_file: Some(&garbage), ..Options::default() }, &garbage, "no PEM certificate"),
        (
            Options { ca_file: Some(&torn), ..Options::default() },
            &torn,
            "not a PEM certificate file",
        ),
        (Options { ca_file: Some(&key), ..Options::default() }, &key, "no PEM certificate"),
        (
            Options { ca_file: Some(&ca), client_cert: Some(&cert), client_key: Some(&cert) },
            &cert,
            "no PEM private key",
        ),
        (
            Options { ca_file: Some(&ca), client_cert: Some(&cert), client_key: Some(&other) },
            &other,
            "does not go with --client-cert",
        ),
        (
            Options { ca_file: Some(&ca), client_cert: Some(&garbage), client_key: Some(&key) },
            &garbage,
            "no PEM certificate",
        ),
        (
            Options { ca_file: Some(&ca), client_cert: Some(&cert), ..Options::default() },
            &cert,
            "go together",
        ),
    ];
    for (opts, file, want) in cases {
        let err = agent(url, &opts).unwrap_err();
        let msg = format!("{err}");
        assert!(msg.contains(want), "{opts:?}: {msg}");
        if !want.contains("together") {
            assert!(msg.contains(&file.display().to_string()), "{opts:?}: {msg}");
        }
    }
    // A key's bytes never reach the message.
    let key_pem = std::fs::read_to_string(&other).unwrap();
    let opts = Options { ca_file: Some(&ca), client_cert: Some(&cert), client_key: Some(&other) };
    let msg = format!("{:?} {}", agent(url, &opts).unwrap_err(), agent(url, &opts).unwrap_err());
    for line in key_pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!msg.contains(line), "{msg}");
    }
    let mut f = std::fs::File::open(&other).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, key_pem);
}

#[test]
fn the_self_issued_certificate_is_its_own_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let issued = crate::tls::issue::run(&crate::tls::issue::Request {
        sans: vec!["DNS:localhost".into(), "IP:127.0.0.1".into()],
        state_dir: dir.path().to_path_buf(),
        days: 1,
        force: false,
    })
    .unwrap();
    let chain = certificates(&issued.cert).unwrap();
    let key = PrivateKeyDer::from_pem_file(&issued.key).unwrap();
    let pki = Pki {
        dir,
        server_chain: chain,
        server_key: key,
        ca: certificates(&issued.cert).unwrap()[0].clone(),
    };
    let (url, done) = pki.serve(false);
    let agent =
        agent(&url, &Options { ca_file: Some(&issued.cert), ..Options::default() }).unwrap();
    assert_eq!(get(&agent, &url).unwrap()["client"], false);
    assert_eq!(done.recv().unwrap(), Ok(false));
}
