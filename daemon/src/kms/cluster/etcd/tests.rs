use rcgen::{CertificateParams, IsCa, Issuer, KeyPair};

use super::*;

const T: Duration = Duration::from_millis(500);

fn etcd(endpoints: &[&str]) -> Result<Etcd, EtcdError> {
    Etcd::new(endpoints.iter().map(|e| (*e).to_owned()).collect(), None, T)
}

fn config_error<T: fmt::Debug>(r: Result<T, EtcdError>) -> String {
    match r {
        Err(EtcdError::Config(why)) => why,
        other => panic!("expected a settings error, got {other:?}"),
    }
}

/// A CA and a client certificate it signed, as PEM files in a folder.
struct Pki(tempfile::TempDir);

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(["qkeyd".to_owned()])
            .unwrap()
            .signed_by(&client_key, &issuer)
            .unwrap();
        let put = |name: &str, body: &str| std::fs::write(dir.path().join(name), body).unwrap();
        put("ca.crt", &ca.pem());
        put("client.crt", &client.pem());
        put("client.key", &client_key.serialize_pem());
        put("other.key", &KeyPair::generate().unwrap().serialize_pem());
        put("garbage.pem", "not a pem file\n");
        Self(dir)
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.path().join(name)
    }

    fn load(&self, ca: &str, cert: &str, key: &str) -> Result<Option<Tls>, EtcdError> {
        let (ca, cert, key) = (self.path(ca), self.path(cert), self.path(key));
        load_tls(Some(&ca), Some(&cert), Some(&key))
    }
}

#[test]
fn prefix_end_follows_etcd() {
    assert_eq!(prefix_end(b"a"), b"b");
    assert_eq!(prefix_end(b"/qkeyd/v1/"), b"/qkeyd/v10");
    assert_eq!(prefix_end(b"ab\xff"), b"ac");
    assert_eq!(prefix_end(b"a\xff\xff"), b"b");
    assert_eq!(prefix_end(b"\x01\xff"), b"\x02");
    assert_eq!(prefix_end(b"\xfe"), b"\xff");
    assert_eq!(prefix_end(b"\xff"), b"\x00");
    assert_eq!(prefix_end(b"\xff\xff"), b"\x00");
    assert_eq!(prefix_end(b""), b"\x00");
}

#[test]
fn endpoints_are_scheme_host_and_port() {
    let u = parse_endpoint("HTTPS://etcd-0.example:2379/").unwrap();
    assert_eq!(
        (u.url.as_str(), u.https, u.host.as_str(), u.port),
        ("https://etcd-0.example:2379", true, "etcd-0.example", 2379)
    );
    let u = parse_endpoint("http://[::1]:2379").unwrap();
    assert_eq!((u.url.as_str(), u.https, u.host.as_str()), ("http://[::1]:2379", false, "::1"));
    assert!(parse_endpoint("http://127.0.0.1:2379").is_ok());
    assert!(parse_endpoint("http://localhost:2379").is_ok());
    for (bad, why) in [
        ("127.0.0.1:2379", "is not a URL"),
        ("unix:///run/etcd.sock", "is not http:// or https://"),
        ("ftp://127.0.0.1:2379", "is not http:// or https://"),
        ("https://127.0.0.1", "needs a host and a port"),
        ("https://127.0.0.1:2379/v3/kv", "has a path"),
        ("https://127.0.0.1:2379?x=1", "has a path"),
        ("http://10.0.0.7:2379", "plain http:// to another host"),
        ("http://etcd.example:2379", "plain http:// to another host"),
    ] {
        let got = config_error(parse_endpoint(bad).map(|u| u.url));
        assert!(got.contains(why) && got.contains(bad), "{bad}: {got}");
    }
    for secret in ["https://root:hunter2@127.0.0.1:2379", "ftp://root:hunter2@host:1"] {
        let got = config_error(parse_endpoint(secret).map(|u| u.url));
        assert!(got.contains("user info") && !got.contains("hunter2"), "{got}");
    }
}

#[test]
fn settings_that_cannot_work_are_refused() {
    assert!(config_error(etcd(&[])).contains("no etcd endpoints"));
    let zero = Etcd::new(vec!["http://127.0.0.1:2379".into()], None, Duration::ZERO);
    assert!(config_error(zero).contains("timeout"));
    let got = config_error(etcd(&["http://127.0.0.1:2379", "https://127.0.0.2:2379"]));
    assert!(got.contains("https://127.0.0.2:2379") && got.contains("ca_file"), "{got}");

    let pki = Pki::new();
    let tls = load_tls(Some(&pki.path("ca.crt")), None, None).unwrap();
    let got = config_error(Etcd::new(vec!["http://127.0.0.1:2379".into()], tls, T));
    assert!(got.contains("for https:// endpoints"), "{got}");

    // No runtime is needed to make one, and Debug shows where it goes.
    let e = etcd(&["http://127.0.0.1:2379", "http://localhost:2380"]).unwrap();
    let shown = format!("{e:?}");
    assert!(shown.contains("http://localhost:2380") && shown.contains("500ms"), "{shown}");
}

#[test]
fn tls_files_are_checked_and_named() {
    let pki = Pki::new();
    assert!(load_tls(None, None, None).unwrap().is_none());
    let tls = load_tls(Some(&pki.path("ca.crt")), None, None).unwrap().unwrap();
    assert!(tls.client.is_none());
    let tls = pki.load("ca.crt", "client.crt", "client.key").unwrap().unwrap();
    let key_pem = std::fs::read_to_string(pki.path("client.key")).unwrap();
    let body = key_pem.lines().nth(1).unwrap();
    assert!(!format!("{tls:?}").contains(body));
    let e = Etcd::new(vec!["https://127.0.0.1:2379".into()], Some(tls), T);
    assert!(e.is_ok(), "{e:?}");

    let ca = pki.path("ca.crt");
    let cert = pki.path("client.crt");
    let got = config_error(load_tls(None, Some(&cert), Some(&cert)));
    assert!(got.contains("need ca_file"), "{got}");
    let got = config_error(load_tls(Some(&ca), Some(&cert), None));
    assert!(got.contains("go together"), "{got}");

    let missing = pki.path("missing.crt");
    let got = config_error(load_tls(Some(&missing), None, None));
    assert!(got.contains("cannot read etcd ca_file") && got.contains("missing.crt"), "{got}");
    let got = config_error(pki.load("garbage.pem", "client.crt", "client.key"));
    assert!(got.contains("ca_file") && got.contains("garbage.pem"), "{got}");
    assert!(got.contains("holds no PEM certificate"), "{got}");
    let got = config_error(pki.load("ca.crt", "garbage.pem", "client.key"));
    assert!(got.contains("cert_file") && got.contains("garbage.pem"), "{got}");
    let got = config_error(pki.load("ca.crt", "client.crt", "garbage.pem"));
    assert!(got.contains("key_file") && got.contains("holds no PEM private key"), "{got}");
    let got = config_error(pki.load("ca.crt", "client.crt", "other.key"));
    assert!(got.contains("other.key does not go with cert_file"), "{got}");
    assert!(got.contains("client.crt"), "{got}");
    let other = std::fs::read_to_string(pki.path("other.key")).unwrap();
    assert!(!got.contains(other.lines().nth(1).unwrap()));
}

#[test]
fn compares_and_ops_are_etcds() {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let c = pb::Compare::from(Cmp::Absent(b"k".to_vec()));
    assert_eq!(c.result(), CompareResult::Equal);
    assert_eq!(c.target(), CompareTarget::Create);
    assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(0)));
    let c = pb::Compare::from(Cmp::ModRevision(b"k".to_vec(), 42));
    assert_eq!((c.target(), c.key.as_slice()), (CompareTarget::Mod, &b"k"[..]));
    assert_eq!(c.target_union, Some(TargetUnion::ModRevision(42)));

    let Some(pb::request_op::Request::RequestDeleteRange(d)) =
        request_op(Op::DeletePrefix(b"/p/".to_vec())).unwrap().request
    else {
        panic!("not a delete");
    };
    assert_eq!((d.key.as_slice(), d.range_end.as_slice()), (&b"/p/"[..], &b"/p0"[..]));
    let Some(pb::request_op::Request::RequestDeleteRange(d)) =
        request_op(Op::Delete(b"/p/k".to_vec())).unwrap().request
    else {
        panic!("not a delete");
    };
    assert_eq!((d.key.as_slice(), d.range_end.as_slice()), (&b"/p/k"[..], &b""[..]));
    let Some(pb::request_op::Request::RequestPut(put)) =
        request_op(Op::Put(b"k".to_vec(), b"v".to_vec())).unwrap().request
    else {
        panic!("not a put");
    };
    assert_eq!((put.key.as_slice(), put.value.as_slice()), (&b"k"[..], &b"v"[..]));
    assert!(matches!(request_op(Op::DeletePrefix(Vec::new())), Err(EtcdError::Config(_))));
}

#[tokio::test]
async fn an_empty_prefix_is_refused() {
    let e = etcd(&["http://127.0.0.1:9"]).unwrap();
    assert!(config_error(e.list(b"").await).contains("every key"));
    let txn = e.txn(Vec::new(), vec![Op::DeletePrefix(Vec::new())]).await;
    assert!(config_error(txn).contains("every key"));
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn no_etcd_is_unreachable_at_each_endpoint() {
    let (a, b) = (closed_port(), closed_port());
    let e = etcd(&[&format!("http://127.0.0.1:{a}"), &format!("http://127.0.0.1:{b}")]).unwrap();
    let started = std::time::Instant::now();
    // A write is tried on the second endpoint too: nothing was sent.
    let err = e.put(b"k", b"v").await.unwrap_err();
    assert!(started.elapsed() < T, "{:?}", started.elapsed());
    let EtcdError::Unreachable(why) = &err else { panic!("{err:?}") };
    assert_eq!(
        why,
        &format!(
            "http://127.0.0.1:{a}: connection refused; http://127.0.0.1:{b}: connection refused"
        )
    );
    assert!(err.to_string().starts_with("etcd is unreachable at http://127.0.0.1:"));
    assert!(matches!(
        e.txn(vec![], vec![Op::Delete(b"k".to_vec())]).await,
        Err(EtcdError::Unreachable(_))
    ));
}

#[tokio::test]
async fn a_silent_etcd_is_unreachable_within_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds connections, and never says a word.
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let e = etcd(&[&format!("http://127.0.0.1:{port}")]).unwrap();
    let started = std::time::Instant::now();
    let err = e.get(b"k").await.unwrap_err();
    let took = started.elapsed();
    assert!(took >= T && took < T * 3, "{took:?}");
    assert!(
        matches!(&err, EtcdError::Unreachable(why) if why.ends_with("no answer within 500ms")),
        "{err:?}"
    );
    held.abort();
}
