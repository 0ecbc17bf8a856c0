//! The REST API over TLS, from the outside: Go's crypto/tls (tests/tls/probe),
//! curl on OpenSSL 3.0 and rustls (the harness) as clients; the hybrid and
//! pq-only groups, client certificates and their rights, refused handshakes
//! and their counts, certificate rotation with and without load, and which
//! listen addresses plain HTTP may use.

use std::{
    collections::BTreeSet,
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use qkeyd_e2e::{
    Daemon, Options,
    pki::{Ca, Issued, Leaf, Usage, Validity},
    probe, qkeyd_bin, tls_agent,
};
use serde_json::{Value, json};

const SOURCE: &str = "[[source]]\nname = \"os\"\nkind = \"os\"\n";
/// The IANA code points Go reports as `curve_id`.
const X25519MLKEM768: u64 = 4588;
const X25519: u64 = 29;
const WAIT: Duration = Duration::from_secs(20);

/// A daemon serving TLS with a server certificate from a fresh test CA, and
/// the files the tests hand to clients.
struct Tls {
    d: Daemon,
    ca: Ca,
    /// The CA certificate (PEM): trusted by the clients, and the daemon's
    /// `client_ca`.
    ca_pem: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    server: Issued,
}

impl Tls {
    /// Start with `[tls]` cert and key plus `tls_extra` (TOML lines that go in
    /// `[tls]`, then any `[[tls.client]]` tables); `{ca}` in it stands for the
    /// CA file.
    fn start(tls_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("qkeyd test CA");
        let ca_pem = ca.write(dir.path(), "ca");
        let server = ca.server();
        let (cert, key) = server.write(dir.path(), "server");
        let extra = tls_extra.replace("{ca}", &ca_pem.display().to_string());
        let config = format!(
            "{SOURCE}[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n",
            cert.display(),
            key.display()
        );
        let d = Daemon::start_tls(dir, &config, &ca_pem);
        assert_eq!(d.scheme, "https");
        Self { d, ca, ca_pem, cert, key, server }
    }

    fn addr(&self) -> String {
        self.d.addr.to_string()
    }

    fn dir(&self) -> &Path {
        self.d.dir.path()
    }

    /// `tlsprobe dial` to the daemon with `args` after `-addr` and `-ca`.
    fn dial(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, Value) {
        let addr = self.addr();
        let ca = self.ca_pem.to_str().unwrap();
        let all = [&["dial", "-addr", &addr, "-ca", ca][..], args].concat();
        probe(&all, env)
    }

    /// `tlsprobe dial` with a GET of `path`: the probe's JSON line.
    fn get(&self, path: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
        let all = [&["-path", path][..], args].concat();
        self.dial(&all, env).1
    }

    /// The leaf certificate fingerprint a fresh Go handshake sees.
    fn served_sha256(&self) -> String {
        let (ok, r) = self.dial(&[], &[]);
        assert!(ok, "{r}\n{}", self.d.log());
        r["peer_sha256"].as_str().unwrap().to_owned()
    }

    /// A good client is still served: rustls with a certificate if `client`,
    /// else the harness's agent.
    fn assert_served(&self, client: Option<(&Path, &Path)>) {
        let agent = tls_agent(&self.ca_pem, client);
        let (status, _) = self
            .d
            .call_with(&agent, "GET", "/v1/health", None, None)
            .unwrap_or_else(|e| panic!("a good client is refused: {e}\n{}", self.d.log()));
        assert_eq!(status, 200);
        let (ok, r) = self.dial(&["-path", "/v1/random?bytes=16"], &[]);
        assert!(ok && r["status"] == 200, "{r}");
    }

    /// `curl` on OpenSSL with the test CA: `Ok((status, body))`, or
    /// `Err(stderr)` when no HTTP answer came.
    fn curl(&self, path: &str, args: &[&str]) -> Result<(u16, String), String> {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&self.ca_pem)
            .args(args)
            .args(["-w", "\n%{http_code}"])
            .arg(self.d.url(path))
            .stdin(Stdio::null())
            .output()
            .expect("curl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let (body, code) = stdout.rsplit_once('\n').unwrap();
        Ok((code.trim().parse().unwrap(), body.to_owned()))
    }

    /// A client certificate from `ca` written under `name`.
    fn client_files(&self, ca: &Ca, leaf: &Leaf, name: &str) -> (PathBuf, PathBuf) {
        ca.issue(leaf).write(self.dir(), name)
    }
}

/// The value of `qkeyd_tls_handshakes_total` with these labels (0 if absent),
/// whatever order the exposition puts them in.
fn handshakes(metrics: &str, outcome: &str, group: &str, version: &str) -> f64 {
    let want = [
        format!("outcome=\"{outcome}\""),
        format!("group=\"{group}\""),
        format!("version=\"{version}\""),
    ];
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("qkeyd_tls_handshakes_total{"))
        .filter_map(|l| l.split_once("} "))
        .find(|(labels, _)| {
            let labels: Vec<&str> = labels.split(',').collect();
            labels.len() == 3 && want.iter().all(|w| labels.contains(&w.as_str()))
        })
        .map_or(0.0, |(_, v)| v.trim().parse().unwrap())
}

/// Refusals of `outcome` (group and version are `none` for a refusal).
fn refused(d: &Daemon, outcome: &str) -> f64 {
    handshakes(&d.metrics(), outcome, "none", "none")
}

/// Wait until `outcome` was counted `n` times; then it must be exactly `n`.
fn wait_refused(d: &Daemon, outcome: &str, n: f64) {
    let deadline = std::time::Instant::now() + WAIT;
    while refused(d, outcome) < n && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(refused(d, outcome), n, "{outcome}\n{}\n{}", d.metrics(), d.log());
}

/// The WARN line of a refused handshake with this outcome.
fn refusal_line(d: &Daemon, outcome: &str) -> String {
    let line = d.wait_log(outcome, WAIT, |l| {
        l.contains("TLS handshake refused") && l.contains(&format!("\"{outcome}\""))
    });
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("127.0.0.1:"), "the peer address: {line}");
    line
}

fn health_of(probe_answer: &Value) -> Value {
    assert_eq!(probe_answer["status"], 200, "{probe_answer}");
    serde_json::from_str(probe_answer["body"].as_str().unwrap()).unwrap()
}

#[test]
fn hybrid_mode_gives_go_mlkem_and_classical_clients_x25519() {
    let t = Tls::start("groups = \"hybrid\"");

    // Go's defaults offer X25519MLKEM768 first: the hybrid group is chosen.
    let r = t.get("/v1/health", &[], &[]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["version"], "TLS 1.3");
    assert_eq!(r["curve"], "X25519MLKEM768");
    assert_eq!(r["curve_id"], X25519MLKEM768);
    assert_eq!(r["peer_sha256"], t.server.sha256());
    let h = health_of(&r);
    assert_eq!(h["connection"]["tls"], true, "{h}");
    assert_eq!(h["connection"]["version"], "TLSv1.3");
    assert_eq!(h["connection"]["group"], "X25519MLKEM768");
    assert_eq!(h["connection"]["client"], Value::Null);
    assert_eq!(h["connection"]["rights"], json!(["random"]));

    // Go with ML-KEM turned off: classical X25519, still served.
    let r = t.get("/v1/health", &[], &[("GODEBUG", "tlsmlkem=0")]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["curve"], "X25519");
    assert_eq!(r["curve_id"], X25519);
    assert_eq!(health_of(&r)["connection"]["group"], "X25519");

    // curl on OpenSSL 3.0, which has no ML-KEM: served over X25519.
    let (status, body) = t.curl("/v1/health", &[]).unwrap_or_else(|e| panic!("curl: {e}"));
    assert_eq!(status, 200);
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["connection"]["group"], "X25519", "{h}");

    // rustls on aws-lc-rs (the harness) gets the hybrid group too.
    assert_eq!(t.d.health()["connection"]["group"], "X25519MLKEM768");

    // A client that lists X25519 first (and sends only its key share) still
    // gets the hybrid group: the server's preference, through a retry.
    let r = t.get("/v1/health", &["-curves", "X25519,X25519MLKEM768"], &[]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["curve"], "X25519MLKEM768", "{r}");
    assert_eq!(health_of(&r)["connection"]["group"], "X25519MLKEM768");

    let m = t.d.metrics();
    assert!(handshakes(&m, "success", "X25519MLKEM768", "TLSv1.3") >= 3.0, "{m}");
    assert_eq!(handshakes(&m, "success", "X25519", "TLSv1.3"), 2.0, "{m}");
    assert!(m.contains("qkeyd_tls_handshake_duration_seconds_count{group=\"X25519\"} 2"), "{m}");
    assert!(qkeyd_e2e::metric(&m, "qkeyd_tls_certificate_expiry_timestamp_seconds").unwrap() > 0.0);
}

#[test]
fn pq_only_mode_refuses_classical_clients_and_keeps_serving() {
    let t = Tls::start("groups = \"pq-only\"");

    let (ok, r) = t.dial(&[], &[]);
    assert!(ok, "{r}");
    assert_eq!(r["curve_id"], X25519MLKEM768);
    let before = t.d.metrics();

    let (ok, r) = t.dial(&["-path", "/v1/health"], &[("GODEBUG", "tlsmlkem=0")]);
    assert!(!ok, "a classical Go client is served: {r}");
    assert_eq!(r["status"], Value::Null, "{r}");
    let e = t.curl("/v1/health", &[]);
    assert!(e.is_err(), "curl (classical) is served: {e:?}");

    wait_refused(&t.d, "no_shared_group", 2.0);
    refusal_line(&t.d, "no_shared_group");
    // Most handshakes since the first scrape failed: the alert says so.
    let fired = super::scrapes::alerts_firing_on(&[&before, &t.d.metrics()]);
    assert!(fired.contains("QkeydTlsHandshakesFailing"), "{fired:?}");

    // The hybrid client is still served, and only over the hybrid group.
    let r = t.get("/v1/health", &[], &[]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(health_of(&r)["connection"]["group"], "X25519MLKEM768");
    assert_eq!(handshakes(&t.d.metrics(), "success", "X25519", "TLSv1.3"), 0.0);
}

#[test]
fn client_certificates_that_do_not_verify_are_refused_at_the_handshake() {
    let mut t = Tls::start(
        "client_ca = \"{ca}\"\n[[tls.client]]\nidentity = \"cn:gateway-1\"\nrights = [\"random\", \"keys:read\"]",
    );
    let good = t.client_files(&t.ca, &Leaf { cn: "gateway-1".into(), ..Leaf::default() }, "good");
    let wrong_ca = Ca::new("another CA");
    let gw = |validity, usage| Leaf { cn: "gateway-1".into(), validity, usage, ..Leaf::default() };
    let cases: [(&str, &Ca, Leaf); 4] = [
        ("cert_expired", &t.ca, gw(Validity::Expired, Usage::Client)),
        ("cert_not_yet_valid", &t.ca, gw(Validity::NotYetValid, Usage::Client)),
        ("cert_unknown_issuer", &wrong_ca, gw(Validity::Current, Usage::Client)),
        ("cert_bad_usage", &t.ca, gw(Validity::Current, Usage::Server)),
    ];
    for (outcome, ca, leaf) in &cases {
        let (cert, key) = t.client_files(ca, leaf, outcome);
        let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
        // TLS 1.3: the client's side of the handshake ends before the server
        // judges its certificate, so the refusal arrives instead of the answer.
        let (ok, r) = t.dial(&["-cert", c, "-key", k, "-path", "/v1/random?bytes=16"], &[]);
        assert!(!ok, "{outcome}: served: {r}");
        assert_eq!(r["status"], Value::Null, "{outcome}: {r}");
        // rustls (the harness) is refused the same way.
        let agent = tls_agent(&t.ca_pem, Some((&cert, &key)));
        let got = t.d.call_with(&agent, "GET", "/v1/random?bytes=16", None, None);
        assert!(got.is_err(), "{outcome}: rustls client served: {got:?}");
        wait_refused(&t.d, outcome, 2.0);
        refusal_line(&t.d, outcome);
        t.assert_served(Some((&good.0, &good.1)));
    }

    // curl on OpenSSL with an expired certificate: no HTTP answer either.
    let (cert, key) = t.client_files(&t.ca, &gw(Validity::Expired, Usage::Client), "curl");
    let e = t.curl(
        "/v1/random?bytes=16",
        &["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()],
    );
    assert!(e.is_err(), "curl with an expired certificate is served: {e:?}");
    wait_refused(&t.d, "cert_expired", 3.0);

    // The good certificate is named in /v1/health with its rights.
    let agent = tls_agent(&t.ca_pem, Some((&good.0, &good.1)));
    let (status, h) = t.d.call_with(&agent, "GET", "/v1/health", None, None).unwrap();
    assert_eq!(status, 200);
    assert_eq!(h["connection"]["client"], "cn:gateway-1", "{h}");
    assert_eq!(h["connection"]["rights"], json!(["random", "keys:read"]));
    assert!(t.d.alive());
}

/// `POST /v1/keys` through `agent` with an optional token.
fn create_key(d: &Daemon, agent: &ureq::Agent, token: Option<&str>) -> (u16, Value) {
    let body = json!({ "alg": "ml-kem-768", "label": "tls test" });
    d.call_with(agent, "POST", "/v1/keys", Some(body), token).unwrap()
}

#[test]
fn client_certificates_carry_the_rights_their_rule_grants() {
    let t = Tls::start(
        "client_ca = \"{ca}\"\n\
         [[tls.client]]\nidentity = \"cn:random-only\"\nrights = [\"random\"]\n\
         [[tls.client]]\nidentity = \"cn:admin\"\nrights = [\"keys:admin\", \"keys:read\"]\n\
         [[tls.client]]\nidentity = \"uri:spiffe://cluster/ns/gw\"\nrights = [\"keys:read\"]",
    );
    let ca = &t.ca;
    let files = |cn: &str, sans: &[&str]| {
        let leaf = Leaf {
            cn: cn.into(),
            sans: sans.iter().map(|s| (*s).to_owned()).collect(),
            ..Leaf::default()
        };
        t.client_files(ca, &leaf, cn)
    };
    let agent = |f: &(PathBuf, PathBuf)| tls_agent(&t.ca_pem, Some((&f.0, &f.1)));
    let random_only = agent(&files("random-only", &[]));
    let admin = agent(&files("admin", &[]));
    let spiffe = agent(&files("workload", &["uri:spiffe://cluster/ns/gw"]));
    let stranger = agent(&files("stranger", &[]));
    let none = tls_agent(&t.ca_pem, None);
    let token = t.d.token();

    // random only: random yes, key creation forbidden.
    let (s, _) = t.d.call_with(&random_only, "GET", "/v1/random?bytes=16", None, None).unwrap();
    assert_eq!(s, 200);
    let (s, e) = create_key(&t.d, &random_only, None);
    assert_eq!(s, 403, "{e}");
    assert_eq!(e["error"]["code"], "forbidden");
    assert!(e["error"]["message"].as_str().unwrap().contains("keys:admin"), "{e}");
    let (s, h) = t.d.call_with(&random_only, "GET", "/v1/health", None, None).unwrap();
    assert_eq!(s, 200);
    assert_eq!(h["connection"]["client"], "cn:random-only", "{h}");
    assert_eq!(h["connection"]["rights"], json!(["random"]));

    // Neither certificate nor token: 401.
    let (s, e) = create_key(&t.d, &none, None);
    assert_eq!(s, 401, "{e}");
    assert_eq!(e["error"]["code"], "unauthorized");
    // A wrong token: 401, even with a certificate.
    let (s, e) = create_key(&t.d, &random_only, Some("not-the-token"));
    assert_eq!(s, 401, "{e}");

    // The bearer token over TLS still grants every right.
    let (s, k) = create_key(&t.d, &none, Some(&token));
    assert_eq!(s, 201, "{k}");
    // A certificate with keys:admin creates a key; it reads it back.
    let (s, k) = create_key(&t.d, &admin, None);
    assert_eq!(s, 201, "{k}");
    let id = k["id"].as_str().unwrap();
    let (s, _) = t.d.call_with(&admin, "GET", &format!("/v1/keys/{id}"), None, None).unwrap();
    assert_eq!(s, 200);
    let (s, h) = t.d.call_with(&admin, "GET", "/v1/health", None, None).unwrap();
    assert_eq!(s, 200);
    assert_eq!(h["connection"]["client"], "cn:admin");
    assert_eq!(h["connection"]["rights"], json!(["random", "keys:read", "keys:admin"]));
    // But using it needs keys:use.
    let (s, e) =
        t.d.call_with(&admin, "POST", &format!("/v1/keys/{id}/encapsulate"), Some(json!({})), None)
            .unwrap();
    assert_eq!(s, 403, "{e}");

    // A URI subjectAltName names a workload.
    let (s, _) = t.d.call_with(&spiffe, "GET", "/v1/keys", None, None).unwrap();
    assert_eq!(s, 200);
    let (_, h) = t.d.call_with(&spiffe, "GET", "/v1/health", None, None).unwrap();
    assert_eq!(h["connection"]["client"], "uri:spiffe://cluster/ns/gw", "{h}");

    // A verified certificate no rule names has the anonymous rights only,
    // and is forbidden (not unauthorized) the rest.
    let (s, _) = t.d.call_with(&stranger, "GET", "/v1/random?bytes=16", None, None).unwrap();
    assert_eq!(s, 200);
    let (s, e) = t.d.call_with(&stranger, "GET", "/v1/keys", None, None).unwrap();
    assert_eq!(s, 403, "{e}");
    let (_, h) = t.d.call_with(&stranger, "GET", "/v1/health", None, None).unwrap();
    let client = h["connection"]["client"].as_str().unwrap();
    assert!(client.starts_with("subject:") && client.contains("CN=stranger"), "{h}");
    assert_eq!(h["connection"]["rights"], json!(["random"]));

    // Go's client with a certificate is mapped the same way.
    let admin_files = (t.dir().join("admin.crt"), t.dir().join("admin.key"));
    let (ok, r) = t.dial(
        &[
            "-cert",
            admin_files.0.to_str().unwrap(),
            "-key",
            admin_files.1.to_str().unwrap(),
            "-method",
            "POST",
            "-path",
            "/v1/keys",
            "-body",
            r#"{"alg":"ml-dsa-65","label":"from go"}"#,
        ],
        &[],
    );
    assert!(ok, "{r}");
    assert_eq!(r["status"], 201, "{r}");
}

#[test]
fn with_bearer_token_off_only_certificates_grant_key_rights() {
    let t = Tls::start(
        "client_ca = \"{ca}\"\nbearer_token = false\n\
         [[tls.client]]\nidentity = \"cn:admin\"\nrights = [\"keys:admin\"]\n\
         [[tls.client]]\nidentity = \"cn:random-only\"\nrights = [\"random\"]",
    );
    let token = t.d.token();
    let admin = t.client_files(&t.ca, &Leaf { cn: "admin".into(), ..Leaf::default() }, "admin");
    let random =
        t.client_files(&t.ca, &Leaf { cn: "random-only".into(), ..Leaf::default() }, "random");
    let none = tls_agent(&t.ca_pem, None);

    let (s, e) = create_key(&t.d, &none, Some(&token));
    assert_eq!(s, 401, "the token alone: {e}");
    assert_eq!(e["error"]["code"], "unauthorized");
    assert!(e["error"]["message"].as_str().unwrap().contains("bearer_token = false"), "{e}");
    // The token adds nothing to a certificate that lacks the right.
    let (s, e) =
        create_key(&t.d, &tls_agent(&t.ca_pem, Some((&random.0, &random.1))), Some(&token));
    assert_eq!(s, 403, "{e}");
    let (s, k) = create_key(&t.d, &tls_agent(&t.ca_pem, Some((&admin.0, &admin.1))), None);
    assert_eq!(s, 201, "{k}");
}

#[test]
fn old_protocols_garbage_and_stalled_handshakes_are_closed_and_counted() {
    let t = Tls::start("handshake_timeout_secs = 1");

    // TLS 1.2 clients: Go and curl.
    let (ok, r) = t.dial(&["-max-version", "1.2", "-path", "/v1/health"], &[]);
    assert!(!ok, "TLS 1.2 served: {r}");
    let e = t.curl("/v1/health", &["--tls-max", "1.2"]);
    assert!(e.is_err(), "curl over TLS 1.2 served: {e:?}");
    wait_refused(&t.d, "protocol_version", 2.0);
    refusal_line(&t.d, "protocol_version");

    // Bytes that are no ClientHello: plain HTTP, and junk.
    let mut junk = vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0x10];
    junk.extend((0..250).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    for bytes in [&b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\n\r\n"[..], &junk] {
        let mut s = TcpStream::connect(t.d.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(bytes).unwrap();
        let answer = read_until_closed(&mut s);
        assert!(!answer.starts_with(b"HTTP/"), "plain HTTP answered over the TLS port");
    }
    wait_refused(&t.d, "bad_message", 2.0);
    refusal_line(&t.d, "bad_message");

    // Slowloris: the first five bytes of a handshake record, then nothing.
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(t.d.addr).unwrap();
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            s
        })
        .collect();
    // Others are served while they hang.
    t.assert_served(None);
    for mut s in stalled {
        let answer = read_until_closed(&mut s);
        assert!(answer.len() < 64, "{answer:?}");
    }
    wait_refused(&t.d, "timeout", 20.0);
    refusal_line(&t.d, "timeout");
    t.assert_served(None);
}

/// Read until the peer closes (EOF or reset) and return what came; panics if
/// the connection is still open after the read timeout.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

/// Write a new certificate and key beside the served ones and rename them in,
/// the key first (as a certificate manager that renames would).
fn replace_certificate(t: &Tls, new: &Issued) {
    let (cert, key) = new.write(t.dir(), "next");
    fs::rename(key, &t.key).unwrap();
    fs::rename(cert, &t.cert).unwrap();
}

#[test]
fn a_bad_certificate_file_is_refused_and_a_good_one_is_picked_up() {
    let t = Tls::start("reload_interval_secs = 1");
    let old = t.server.sha256();
    assert_eq!(t.served_sha256(), old);
    let before = t.d.metrics();

    fs::write(&t.cert, "not a certificate\n").unwrap();
    let line = t.d.wait_log("the refusal", WAIT, |l| l.contains("TLS certificate refused"));
    assert!(line.contains("WARN") && line.contains("server.crt"), "{line}");
    assert!(!line.contains("PRIVATE KEY"), "{line}");
    t.d.wait_metric("qkeyd_tls_certificate_reloads_total{outcome=\"refused\"}", WAIT, |v| v >= 1.0);
    assert_eq!(t.served_sha256(), old, "the previous certificate stays");
    let fired = super::scrapes::alerts_firing_on(&[&before, &t.d.metrics()]);
    assert!(fired.contains("QkeydTlsCertificateReloadRefused"), "{fired:?}");

    let new = t.ca.server();
    replace_certificate(&t, &new);
    t.d.wait_metric("qkeyd_tls_certificate_reloads_total{outcome=\"loaded\"}", WAIT, |v| v >= 1.0);
    assert_eq!(t.served_sha256(), new.sha256());
    let sha = new.sha256();
    t.d.wait_log("the loaded line", WAIT, |l| {
        l.contains("TLS certificate loaded") && l.contains(&sha)
    });
    t.assert_served(None);
}

/// A certificate that ends in 10 days, then one that ends in 2: the
/// daemon's notAfter gauge fires the warning, then the critical alert.
#[test]
fn a_certificate_near_its_end_fires_the_expiry_alerts() {
    let t = Tls::start("reload_interval_secs = 1");
    let fired = super::scrapes::alerts_firing_on(&[&t.d.metrics()]);
    assert!(fired.is_empty(), "a year-long certificate: {fired:?}");
    for (days, alert) in
        [(10, "QkeydTlsCertificateExpiringSoon"), (2, "QkeydTlsCertificateExpiryCritical")]
    {
        let leaf = t.ca.issue(&Leaf {
            cn: "qkeyd test server".into(),
            sans: vec!["dns:localhost".into(), "ip:127.0.0.1".into()],
            usage: Usage::Server,
            validity: Validity::EndsIn(days),
        });
        replace_certificate(&t, &leaf);
        let sha = leaf.sha256();
        t.d.wait_log("the new certificate", WAIT, |l| {
            l.contains("TLS certificate loaded") && l.contains(&sha)
        });
        let fired = super::scrapes::alerts_firing_on(&[&t.d.metrics()]);
        assert_eq!(fired, BTreeSet::from([alert.to_owned()]), "{days} days left");
    }
}

#[test]
fn sighup_loads_a_new_certificate_at_once() {
    let mut t = Tls::start("reload_interval_secs = 3600");
    let old = t.server.sha256();
    assert_eq!(t.served_sha256(), old);
    let new = t.ca.server();
    replace_certificate(&t, &new);
    // Not checked before the hour is up...
    assert_eq!(t.served_sha256(), old);
    // ...unless told.
    let pid = t.d.pid().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    t.d.wait_metric("qkeyd_tls_certificate_reloads_total{outcome=\"loaded\"}", WAIT, |v| v >= 1.0);
    assert_eq!(t.served_sha256(), new.sha256());
    assert!(t.d.alive());
    t.assert_served(None);
}

#[test]
fn rotation_under_load_fails_no_request() {
    let t = Tls::start("reload_interval_secs = 1");
    let old = t.server.sha256();
    let new = t.ca.server();
    let (cert, key) = new.write(t.dir(), "new");
    let swap =
        format!("{}:{},{}:{}", key.display(), t.key.display(), cert.display(), t.cert.display());
    let url = t.d.url("/v1/random?bytes=32");
    let ca = t.ca_pem.to_str().unwrap();
    let (ok, r) = probe(
        &[
            "load", "-url", &url, "-ca", ca, "-c", "1000", "-d", "6s", "-swap", &swap, "-swap-at",
            "3s",
        ],
        &[],
    );
    assert!(ok, "{r}\n{}", t.d.log());
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["ok"].as_u64().unwrap() >= 1000, "{r}");
    let seen = r["fingerprints"].as_object().unwrap();
    assert_eq!(seen.len(), 2, "{r}");
    assert!(seen.contains_key(&old) && seen.contains_key(&new.sha256()), "{r}");
    let m = t.d.metrics();
    assert!(
        qkeyd_e2e::metric(&m, "qkeyd_tls_certificate_reloads_total{outcome=\"loaded\"}")
            .is_some_and(|v| v >= 1.0)
    );
    eprintln!("rotation under load: {r}");
}

#[test]
fn plain_http_beyond_loopback_needs_the_danger_flag_and_tls_does_not() {
    // Plain HTTP on 0.0.0.0: refused at start, naming the way out.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("qkeyd.toml");
    fs::write(&config, SOURCE).unwrap();
    let out = Command::new(qkeyd_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--listen", "0.0.0.0:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("[danger] plaintext_beyond_loopback"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");

    // With the danger flag it starts, and says so.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = format!("{SOURCE}[danger]\nplaintext_beyond_loopback = true\n");
    let opts = Options { listen: Some("0.0.0.0:0"), ..Options::default() };
    let d = Daemon::start_opts(dir, &config, &state, &opts);
    assert_eq!(d.scheme, "http");
    assert!(d.log().contains("listening on http://0.0.0.0:"), "{}", d.log());
    let warn = d.wait_log("the DANGER line", WAIT, |l| l.contains("plaintext_beyond_loopback"));
    assert!(warn.contains("WARN"), "{warn}");
    assert_eq!(d.health()["connection"], json!({ "tls": false, "rights": ["random"] }));
    drop(d);

    // With TLS no flag is needed.
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("qkeyd test CA");
    let ca_pem = ca.write(dir.path(), "ca");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let config =
        format!("{SOURCE}[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display());
    let state = dir.path().join("state");
    let opts = Options { listen: Some("0.0.0.0:0"), ca: Some(&ca_pem), ..Options::default() };
    let d = Daemon::start_opts(dir, &config, &state, &opts);
    assert_eq!(d.scheme, "https");
    assert!(d.log().contains("listening on https://0.0.0.0:"), "{}", d.log());
    assert!(!d.log().contains("plaintext_beyond_loopback"), "{}", d.log());
    assert_eq!(d.health()["connection"]["tls"], true);
}
