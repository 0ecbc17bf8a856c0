//! The real Kubernetes peers qkeyd runs beside: etcd (plain, or with client
//! TLS as a control plane runs it) and kube-apiserver, built from the Go
//! module proxy by tests/k8s/build.sh (cached outside the repo), each a child
//! process killed on drop with its output in a log file.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use qkeyd_e2e::pki::{Ca, Leaf, Usage};
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A child process killed on drop, its output appended to a log file.
pub(crate) struct Proc {
    child: Child,
    log: PathBuf,
    name: String,
}

impl Proc {
    pub(crate) fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        // Appended: a restarted process keeps what the first one said.
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self { child, log, name: name.to_owned() }
    }

    /// The last lines of its log, under a header naming it.
    pub(crate) fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- {} (last lines) ---\n{}", self.name, tail(&text, 40))
    }

    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The folder with kube-apiserver, kubectl and etcd (built on first use).
pub(crate) fn binaries() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/build.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert!(out.status.success(), "tests/k8s/build.sh failed (needs Go and its module proxy)");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A CA certificate, and a certificate and key issued by it (PEM files).
#[derive(Clone, Debug)]
pub(crate) struct TlsFiles {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl TlsFiles {
    /// A client certificate (clientAuth) of `ca` for `cn`, written to `dir`.
    pub(crate) fn client(ca: &Ca, dir: &Path, cn: &str) -> Self {
        let (cert, key) = ca.client(cn).write(dir, cn);
        Self { ca: ca.write(dir, "etcd-ca"), cert, key }
    }
}

/// An etcd's client TLS: its own certificate, and the client certificate the
/// harness reads and writes with.
#[derive(Clone, Debug)]
pub(crate) struct EtcdTls {
    server: TlsFiles,
    harness: TlsFiles,
}

impl EtcdTls {
    /// Files issued by `ca` into `dir`, the server certificate naming
    /// loopback and `hosts` (the addresses beyond loopback clients dial).
    /// etcd's gRPC gateway dials etcd itself presenting the server
    /// certificate, so with `--client-cert-auth` that certificate needs
    /// clientAuth too.
    pub(crate) fn issue(ca: &Ca, dir: &Path, hosts: &[IpAddr]) -> Self {
        let mut sans = vec!["dns:localhost".to_owned(), "ip:127.0.0.1".to_owned()];
        sans.extend(hosts.iter().map(|h| format!("ip:{h}")));
        let (cert, key) = ca
            .issue(&Leaf { cn: "etcd".into(), sans, usage: Usage::Both, ..Leaf::default() })
            .write(dir, "etcd-server");
        let server = TlsFiles { ca: ca.write(dir, "etcd-ca"), cert, key };
        Self { server, harness: TlsFiles::client(ca, dir, "e2e-harness") }
    }
}

/// One etcd member on loopback (and on more addresses if asked);
/// [`Etcd::stop`] and [`Etcd::restart`] make it vanish and come back on the
/// same ports and data.
pub(crate) struct Etcd {
    proc: Option<Proc>,
    bin: PathBuf,
    dir: PathBuf,
    /// Where clients beyond loopback reach it, on the same port.
    hosts: Vec<IpAddr>,
    port: u16,
    peer_port: u16,
    tls: Option<EtcdTls>,
    agent: ureq::Agent,
}

impl Etcd {
    /// Start etcd with its data and log in `dir`; with `tls`, its client URL
    /// is https and every client must present a certificate of that CA.
    pub(crate) fn start(bin: &Path, dir: &Path, tls: Option<EtcdTls>) -> Self {
        Self::start_on(bin, dir, tls, &[])
    }

    /// [`Etcd::start`], listening for clients on `hosts` too (the harness
    /// stays on loopback).
    pub(crate) fn start_on(bin: &Path, dir: &Path, tls: Option<EtcdTls>, hosts: &[IpAddr]) -> Self {
        let agent = match &tls {
            Some(t) => qkeyd_e2e::tls_agent(&t.harness.ca, Some((&t.harness.cert, &t.harness.key))),
            None => ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into(),
        };
        let mut e = Self {
            proc: None,
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            hosts: hosts.to_vec(),
            port: free_port(),
            peer_port: free_port(),
            tls,
            agent,
        };
        e.restart();
        e
    }

    /// The client URL, e.g. `https://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        self.url_on(IpAddr::from([127, 0, 0, 1]))
    }

    /// The client URL on `host`, one of loopback and the `hosts` of
    /// [`Etcd::start_on`].
    pub(crate) fn url_on(&self, host: IpAddr) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{host}:{}", self.port)
    }

    /// Kill etcd (its data stays).
    pub(crate) fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }

    /// (Re)start etcd on the same ports and data, and wait until it is healthy.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let client = self.url();
        let listen: Vec<String> = std::iter::once(client.clone())
            .chain(self.hosts.iter().map(|h| self.url_on(*h)))
            .collect();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(self.bin.join("etcd"));
        cmd.arg("--name=e2e")
            .arg(format!("--data-dir={}", self.dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={}", listen.join(",")))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=e2e={peer}"))
            .arg("--log-level=warn");
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cert-file={}", t.server.cert.display()))
                .arg(format!("--key-file={}", t.server.key.display()))
                .arg(format!("--trusted-ca-file={}", t.server.ca.display()))
                .arg("--client-cert-auth");
        }
        self.proc = Some(Proc::spawn("etcd", &mut cmd, &self.dir));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.healthy() {
            assert!(Instant::now() < deadline, "etcd did not start\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn healthy(&self) -> bool {
        let Ok(mut r) = self.agent.get(format!("{}/health", self.url())).call() else {
            return false;
        };
        r.status() == 200 && r.body_mut().read_to_string().is_ok_and(|b| b.contains("true"))
    }

    pub(crate) fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_else(|| "--- etcd (stopped) ---".into())
    }

    /// A v3 range request through etcd's HTTP gateway: the keys from `key`
    /// up to `range_end` (`None`: `key` alone).
    fn range(&self, key: &[u8], range_end: Option<&[u8]>) -> Value {
        let mut body = json!({ "key": B64.encode(key) });
        if let Some(end) = range_end {
            body["range_end"] = json!(B64.encode(end));
        }
        self.gateway("range", &body)
    }

    /// Store `value` under `key`, as anyone with write access to etcd could.
    pub(crate) fn put(&self, key: &str, value: &[u8]) {
        self.gateway("put", &json!({ "key": B64.encode(key), "value": B64.encode(value) }));
    }

    /// POST `body` to the gateway's `/v3/kv/{call}`; its JSON answer.
    fn gateway(&self, call: &str, body: &Value) -> Value {
        let url = format!("{}/v3/kv/{call}", self.url());
        let mut r = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("etcd {call}: {e}\n{}", self.log()));
        let text = r.body_mut().read_to_string().unwrap();
        assert_eq!(r.status(), 200, "etcd {call}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// The value etcd stores under `key`, if any.
    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        let v = self.range(key.as_bytes(), None);
        v["kvs"][0]["value"].as_str().map(|b| B64.decode(b).unwrap())
    }

    /// Every key under `prefix` and its value, in key order.
    pub(crate) fn list(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let mut end = prefix.as_bytes().to_vec();
        let last = end.last_mut().expect("a non-empty prefix");
        *last += 1;
        let v = self.range(prefix.as_bytes(), Some(&end));
        v["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let key = B64.decode(kv["key"].as_str().unwrap()).unwrap();
                let value = kv["value"].as_str().map(|b| B64.decode(b).unwrap());
                (String::from_utf8(key).unwrap(), value.unwrap_or_default())
            })
            .collect()
    }
}

/// One kube-apiserver with the deploy/ EncryptionConfiguration pointed at a
/// qkeyd KMS socket (or, from [`Apiserver::start_plain`], with no encryption).
pub(crate) struct Apiserver {
    proc: Option<Proc>,
    bin: PathBuf,
    common: PathBuf,
    dir: PathBuf,
    name: String,
    port: u16,
    etcd_url: String,
    etcd_tls: Option<TlsFiles>,
    /// Whether `dir/encryption.yaml` is its --encryption-provider-config.
    encrypted: bool,
}

impl Apiserver {
    /// Write what every apiserver of a test shares into `dir`: the token file
    /// (`e2e-token` is in system:masters) and the service-account key.
    pub(crate) fn prepare_common(dir: &Path) {
        std::fs::write(dir.join("tokens.csv"), "e2e-token,e2e-admin,uid-1,\"system:masters\"\n")
            .unwrap();
        let out = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(dir.join("sa.key"))
            .arg("2048")
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl genrsa");
    }

    /// Start an apiserver named `name` (its certificates, encryption config
    /// and log in `dir`, created if missing) on `etcd`, presenting
    /// `etcd_client` to it, encrypting Secrets through the KMS plugin at
    /// `socket`. Returns at once: see [`Apiserver::wait_ready`].
    pub(crate) fn spawn(
        bin: &Path,
        common: &Path,
        dir: &Path,
        name: &str,
        etcd: &Etcd,
        etcd_client: Option<&TlsFiles>,
        socket: &Path,
    ) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        // The deploy/ EncryptionConfiguration, pointed at this test's socket.
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/kubernetes/encryption-config.yaml");
        let config = std::fs::read_to_string(deploy).unwrap();
        assert!(config.contains("unix:///var/run/qkeyd/kms.sock"));
        let config = config.replace("/var/run/qkeyd/kms.sock", socket.to_str().unwrap());
        std::fs::write(dir.join("encryption.yaml"), config).unwrap();
        Self::launch(bin, common, dir, name, etcd, etcd_client, true)
    }

    /// Run the apiserver process; with `encrypted`, Secrets go through
    /// `dir/encryption.yaml`.
    fn launch(
        bin: &Path,
        common: &Path,
        dir: &Path,
        name: &str,
        etcd: &Etcd,
        etcd_client: Option<&TlsFiles>,
        encrypted: bool,
    ) -> Self {
        let mut a = Self {
            proc: None,
            bin: bin.to_owned(),
            common: common.to_owned(),
            dir: dir.to_owned(),
            name: name.to_owned(),
            port: free_port(),
            etcd_url: etcd.url(),
            etcd_tls: etcd_client.cloned(),
            encrypted,
        };
        a.spawn_process();
        a
    }

    /// Start an apiserver named `name` (its certificates and log in `dir`) on
    /// plain `etcd` with no encryption at rest, hence no KMS plugin to wait
    /// for, and wait until it is ready: for tests that need only the API.
    pub(crate) fn start_plain(
        bin: &Path,
        common: &Path,
        dir: &Path,
        name: &str,
        etcd: &Etcd,
    ) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let a = Self::launch(bin, common, dir, name, etcd, None, false);
        a.wait_ready();
        a
    }

    /// [`Apiserver::spawn`], then [`Apiserver::wait_ready`].
    pub(crate) fn start(
        bin: &Path,
        common: &Path,
        dir: &Path,
        name: &str,
        etcd: &Etcd,
        etcd_client: Option<&TlsFiles>,
        socket: &Path,
    ) -> Self {
        let a = Self::spawn(bin, common, dir, name, etcd, etcd_client, socket);
        a.wait_ready();
        a
    }

    fn spawn_process(&mut self) {
        let (c, d) = (&self.common, &self.dir);
        let mut cmd = Command::new(self.bin.join("kube-apiserver"));
        cmd.arg(format!("--etcd-servers={}", self.etcd_url))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={}", self.port))
            .arg(format!("--cert-dir={}", d.join("certs").display()))
            .args(["--endpoint-reconciler-type=none", "--service-cluster-ip-range=10.0.0.0/24"])
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", c.join("sa.key").display()))
            .arg(format!("--service-account-signing-key-file={}", c.join("sa.key").display()))
            .arg(format!("--token-auth-file={}", c.join("tokens.csv").display()))
            .arg("--authorization-mode=RBAC");
        if self.encrypted {
            cmd.arg(format!(
                "--encryption-provider-config={}",
                d.join("encryption.yaml").display()
            ));
        }
        if let Some(t) = &self.etcd_tls {
            cmd.arg(format!("--etcd-cafile={}", t.ca.display()))
                .arg(format!("--etcd-certfile={}", t.cert.display()))
                .arg(format!("--etcd-keyfile={}", t.key.display()));
        }
        self.proc = Some(Proc::spawn(&self.name, &mut cmd, d));
    }

    /// Wait (up to two minutes) until `/readyz` answers `ok`.
    pub(crate) fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(out) = self.kubectl_raw(&["get", "--raw", "/readyz"])
                && out.trim() == "ok"
            {
                return;
            }
            assert!(Instant::now() < deadline, "{} not ready\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stop and start again (an empty DEK cache), and wait until ready.
    pub(crate) fn restart(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
        self.spawn_process();
        self.wait_ready();
    }

    pub(crate) fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }

    pub(crate) fn kubectl_raw(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.bin.join("kubectl"))
            .arg(format!("--server=https://127.0.0.1:{}", self.port))
            .args(["--token=e2e-token", "--insecure-skip-tls-verify", "--request-timeout=10s"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub(crate) fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_raw(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?} on {}: {e}\n{}", self.name, self.log()))
    }

    /// A Secret's `value` as kubectl reads it back.
    pub(crate) fn secret(&self, name: &str) -> Vec<u8> {
        let b64 = self.kubectl(&["get", "secret", name, "-o", "jsonpath={.data.value}"]);
        B64.decode(b64.trim()).unwrap()
    }
}
