//! Harness for end-to-end tests of the `qkeyd` binary: build it once, start it
//! on a free loopback port with a given config, talk HTTP or HTTPS to it, read
//! its log.
//!
//! The binary is found through `QKEYD_BIN`, or built with the same cargo that
//! runs the tests (`cargo build -p qkeyd --bin qkeyd`, with `--release` when the
//! harness itself is optimised, as benches are) on first use.
#![forbid(unsafe_code)]

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod bench;
pub mod kill9;
pub mod kms;
pub mod pki;
pub mod qkd;

/// The KMS v2 API as generated from the daemon's `.proto` (client side).
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod kms_proto {
    tonic::include_proto!("v2");
}

/// Build `args` (a package and target of this workspace) with the cargo that
/// runs the tests, in release if the harness itself is optimised (benches),
/// and return the first artifact of target `name` that `pick` finds.
fn cargo_build(args: &[&str], name: &str, pick: impl Fn(&Value) -> Option<PathBuf>) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.arg("build").args(args).arg("--message-format=json");
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd
        .arg("--manifest-path")
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(out.status.success(), "cargo build {args:?} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == name)
        .find_map(|v| pick(&v))
        .unwrap_or_else(|| panic!("cargo reported no {name} artifact"))
}

/// Path of the `qkeyd` binary under test.
pub fn qkeyd_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("QKEYD_BIN") {
            return PathBuf::from(p);
        }
        let features: &[&str] = if cfg!(feature = "tpm") { &["--features", "tpm"] } else { &[] };
        let args = [&["-p", "qkeyd", "--bin", "qkeyd"][..], features].concat();
        cargo_build(&args, "qkeyd", |v| v["executable"].as_str().map(PathBuf::from))
    })
}

/// Path of `libqkeyd_pkcs11.so`, built like [`qkeyd_bin`] (`QKEYD_PKCS11_MODULE`
/// overrides).
pub fn pkcs11_module() -> &'static Path {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(|| {
        if let Some(p) = std::env::var_os("QKEYD_PKCS11_MODULE") {
            return PathBuf::from(p);
        }
        cargo_build(&["-p", "qkeyd-pkcs11", "--lib"], "qkeyd_pkcs11", |v| {
            v["filenames"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find(|f| f.ends_with(".so"))
                .map(PathBuf::from)
        })
    })
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Content-Type, if any.
    pub content_type: String,
    /// `x-qkeyd-entropy`, if any.
    pub entropy: Option<String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A running daemon, killed on drop.
pub struct Daemon {
    child: Child,
    /// Where its REST API listens (an unspecified listen address such as
    /// `0.0.0.0` is reached over loopback).
    pub addr: SocketAddr,
    /// `"http"` or `"https"`, as the daemon's `listening on` line says.
    pub scheme: &'static str,
    log: Arc<Mutex<String>>,
    agent: ureq::Agent,
    /// Scratch directory (config file; FIFOs of a test may go here too).
    pub dir: tempfile::TempDir,
    /// The daemon's state directory (keys, audit log, API token).
    pub state: PathBuf,
}

impl Daemon {
    /// Start `qkeyd serve` with this config text on 127.0.0.1:0.
    pub fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, config)
    }

    /// Like [`Daemon::start`], in a directory the test prepared. The state
    /// directory is `dir/state`.
    pub fn start_in(dir: tempfile::TempDir, config: &str) -> Self {
        let state = dir.path().join("state");
        Self::start_with_state(dir, config, &state)
    }

    /// Like [`Daemon::start_in`] with a state directory of the test's choosing
    /// (one that outlives this daemon, for restart tests).
    pub fn start_with_state(dir: tempfile::TempDir, config: &str, state: &Path) -> Self {
        Self::start_with(dir, config, state, &[])
    }

    /// The general form: also sets environment variables for the daemon.
    pub fn start_with(
        dir: tempfile::TempDir,
        config: &str,
        state: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let path = dir.path().join("qkeyd.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(qkeyd_bin());
        cmd.arg("serve").arg("--config").arg(&path);
        cmd.envs(env.iter().copied());
        Self::spawn(cmd, dir, state)
    }

    /// Like [`Daemon::start_with_state`], with extra `qkeyd serve` arguments.
    pub fn start_with_args(
        dir: tempfile::TempDir,
        config: &str,
        state: &Path,
        args: &[&str],
    ) -> Self {
        Self::start_opts(dir, config, state, &Options { args, ..Options::default() })
    }

    /// Start a daemon whose config has a `[tls]` table, and speak HTTPS to it
    /// trusting the CA certificate in `ca` (PEM). The state directory is
    /// `dir/state`.
    pub fn start_tls(dir: tempfile::TempDir, config: &str, ca: &Path) -> Self {
        let state = dir.path().join("state");
        Self::start_opts(dir, config, &state, &Options { ca: Some(ca), ..Options::default() })
    }

    /// The most general form: everything [`Options`] can say.
    pub fn start_opts(
        dir: tempfile::TempDir,
        config: &str,
        state: &Path,
        opts: &Options<'_>,
    ) -> Self {
        let path = dir.path().join("qkeyd.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = match opts.wrap.split_first() {
            Some((program, args)) => {
                let mut c = command_in(opts.netns, program);
                c.args(args).arg(qkeyd_bin());
                c
            }
            None => command_in(opts.netns, qkeyd_bin()),
        };
        cmd.arg("serve").arg("--config").arg(&path).args(opts.args);
        cmd.envs(opts.env.iter().copied());
        let mut d = Self::spawn_on(cmd, dir, state, opts.listen);
        if let Some(ca) = opts.ca {
            d.trust(ca, None);
        }
        d
    }

    /// From now on speak to the daemon trusting the CA certificate in `ca`
    /// (PEM), presenting `client` (certificate chain and key files, PEM) if
    /// given.
    pub fn trust(&mut self, ca: &Path, client: Option<(&Path, &Path)>) {
        self.agent = tls_agent(ca, client);
    }

    /// The URL of `path` on this daemon, e.g. `https://127.0.0.1:PORT/v1/health`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// `kill -9` the daemon and hand back its directory, to start another on
    /// the same state.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"))
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Start `qkeyd serve` with the embedded default config.
    pub fn start_default() -> Self {
        let mut cmd = Command::new(qkeyd_bin());
        cmd.arg("serve");
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        Self::spawn(cmd, dir, &state)
    }

    fn spawn(cmd: Command, dir: tempfile::TempDir, state: &Path) -> Self {
        Self::spawn_on(cmd, dir, state, None)
    }

    /// Spawn `cmd` with `--listen` (127.0.0.1:0 unless given), wait for its
    /// `listening on http://` or `https://` line.
    fn spawn_on(
        mut cmd: Command,
        dir: tempfile::TempDir,
        state: &Path,
        listen: Option<&str>,
    ) -> Self {
        cmd.arg("--state-dir").arg(state);
        cmd.args(["--listen", listen.unwrap_or("127.0.0.1:0"), "--log", "info"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn qkeyd");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Into the log first: once started, the log has the line.
                {
                    let mut l = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    l.push_str(&line);
                    l.push('\n');
                }
                for scheme in ["http", "https"] {
                    let marker = format!("listening on {scheme}://");
                    if let Some(rest) = line.split(&marker).nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        let _ = tx.send((scheme, addr.to_owned()));
                    }
                }
            }
        });
        let (scheme, mut addr): (&'static str, SocketAddr) =
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok((s, a)) => (s, a.parse().expect("listen address")),
                Err(_) => {
                    let _ = child.kill();
                    let l = log.lock().map(|l| l.clone()).unwrap_or_default();
                    panic!("qkeyd did not start listening; log:\n{l}");
                }
            };
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let agent = plain_agent();
        Self { child, addr, scheme, log, agent, dir, state: state.to_owned() }
    }

    /// The bearer token the daemon generated in its state directory.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state.join("api-token")).expect("api-token").trim().to_owned()
    }

    /// A key-API call with the daemon's token (`token = None`: without one).
    pub fn key_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> (u16, Value) {
        self.call_with(&self.agent, method, path, body, token)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`Daemon::key_call`] through another agent (e.g. one from
    /// [`tls_agent`] with a client certificate); errors (a refused handshake,
    /// a connection closed without an answer) come back instead of panicking.
    pub fn call_with(
        &self,
        agent: &ureq::Agent,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Result<(u16, Value), ureq::Error> {
        let mut b = ureq::http::Request::builder().method(method).uri(self.url(path));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|v| v.to_string()).unwrap_or_default();
        if !body.is_empty() {
            b = b.header("content-type", "application/json");
        }
        let req = b.body(body).expect("request");
        let mut resp = agent.run(req)?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// [`Daemon::key_call`] with the right token.
    pub fn keys(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.key_call(method, path, body, Some(&self.token()))
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path)
    }

    /// Send a body-less request with any method.
    pub fn request(&self, method: &str, path: &str) -> Reply {
        let url = self.url(path);
        let req =
            ureq::http::Request::builder().method(method).uri(&url).body(()).expect("request");
        let mut resp = self.agent.run(req).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let header =
            |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_type = header("content-type").unwrap_or_default();
        let entropy = header("x-qkeyd-entropy");
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap_or_else(|e| panic!("{method} {path} body: {e}"));
        Reply { status: resp.status().as_u16(), content_type, entropy, body }
    }

    /// GET /v1/health as JSON.
    pub fn health(&self) -> Value {
        self.get("/v1/health").json()
    }

    /// The health entry of one source.
    pub fn source(&self, name: &str) -> Value {
        let h = self.health();
        h["pool"]["sources"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no source {name} in {h}"))
    }

    /// Poll /v1/health until `pred` holds; panics with the last answer after `timeout`.
    pub fn wait_health(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let h = self.health();
            if pred(&h) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; health: {h:#}\nlog:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// GET /metrics as text.
    pub fn metrics(&self) -> String {
        self.get("/metrics").text()
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Poll the log until a line satisfies `pred`, and return that line;
    /// panics with the log after `timeout`.
    pub fn wait_log(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| pred(l)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; log:\n{log}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Poll /metrics until the sample `series` satisfies `pred`, and return
    /// its value; panics with the metrics after `timeout`.
    pub fn wait_metric(&self, series: &str, timeout: Duration, pred: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if let Some(v) = metric(&m, series).filter(|v| pred(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {series}; metrics:\n{m}\nlog:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait up to `timeout` for the process to exit on its own; its status
    /// if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log line of the internal failure a client was told about in
    /// `message` ("internal error (incident ID …)"): the client gets the id
    /// only, the log has the detail. Panics if either is missing.
    pub fn incident(&self, message: &str) -> String {
        let id = message
            .split("incident ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no incident id in {message:?}"));
        assert_eq!(id.len(), 16, "{message:?}");
        // The daemon logs before it answers, but its stderr reaches this
        // process through a reader thread: give the line a moment to arrive.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains(id)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "incident {id} is not in the log:\n{log}");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`Daemon::start_opts`] may add to a start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options<'a> {
    /// Extra `qkeyd serve` arguments.
    pub args: &'a [&'a str],
    /// Environment variables for the daemon.
    pub env: &'a [(&'a str, &'a str)],
    /// `--listen` (default `127.0.0.1:0`).
    pub listen: Option<&'a str>,
    /// For a TLS daemon: the CA certificate (PEM file) the harness trusts.
    pub ca: Option<&'a Path>,
    /// The network namespace (made with `ip netns add`) to run the daemon
    /// in. Its `127.0.0.1` is then the namespace's own: have it listen on an
    /// address the harness reaches.
    pub netns: Option<&'a str>,
    /// A command that runs the daemon (its arguments first, then the daemon's
    /// path and arguments), e.g. `setpriv` with capabilities taken away.
    pub wrap: &'a [&'a str],
}

/// A command running `program`, in the network namespace `netns` if given.
/// `ip netns exec` execs the program once in the namespace, so the child's
/// pid is the program's and killing the child kills it.
pub fn command_in(netns: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

fn plain_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A ureq agent speaking TLS through rustls on the aws-lc-rs provider (so
/// X25519MLKEM768 is offered first), trusting only the CA certificates in the
/// PEM file `ca`, presenting `client` (certificate chain file, key file; PEM)
/// if given. HTTP error statuses come back as replies, not errors.
pub fn tls_agent(ca: &Path, client: Option<(&Path, &Path)>) -> ureq::Agent {
    use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let certs = |p: &Path| -> Vec<Certificate<'static>> {
        ureq::tls::parse_pem(&read(p))
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect()
    };
    let roots = certs(ca);
    assert!(!roots.is_empty(), "no certificate in {}", ca.display());
    let client = client.map(|(cert, key)| {
        let key =
            PrivateKey::from_pem(&read(key)).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
        ClientCert::new_with_certs(&certs(cert), key)
    });
    // The workspace's rustls lacks `prefer-post-quantum`, whose default order
    // puts X25519 first: offer (and send a key share for) the hybrid first.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    let hybrid = rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768;
    provider.kx_groups.retain(|g| g.name() != hybrid.name());
    provider.kx_groups.insert(0, hybrid);
    let tls = TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(provider))
        .root_certs(RootCerts::new_with_certs(&roots))
        .client_cert(client)
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .tls_config(tls)
        .build()
        .into()
}

/// A Go program of this crate (`tests/<dir>`), built once per test run into
/// `target/<name>/<name>`; the environment variable `env` names a binary to
/// use instead.
fn go_program(cell: &'static OnceLock<PathBuf>, dir: &str, name: &str, env: &str) -> &'static Path {
    cell.get_or_init(|| {
        if let Some(p) = std::env::var_os(env) {
            return PathBuf::from(p);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("../target"));
        let out = target.join(name).join(name);
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(root.join(dir))
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .unwrap_or_else(|e| panic!("go (Go 1.25 or later builds tests/{dir}): {e}"));
        assert!(status.success(), "go build of tests/{dir} failed");
        out
    })
}

/// The Go TLS client in `tests/tls/probe` (crypto/tls only), built once per
/// test run into `target/tlsprobe/` (`QKEYD_TLSPROBE` overrides).
pub fn tlsprobe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    go_program(&PROBE, "tls/probe", "tlsprobe", "QKEYD_TLSPROBE")
}

/// The independent quote checker in `tests/attest/gochecker` (go-tpm), built
/// once per test run into `target/gochecker/` (`QKEYD_GOCHECKER` overrides).
pub fn gochecker() -> &'static Path {
    static CHECKER: OnceLock<PathBuf> = OnceLock::new();
    go_program(&CHECKER, "attest/gochecker", "gochecker", "QKEYD_GOCHECKER")
}

/// The independent certificate checker in `tests/pkcs11/certcheck` (Go's
/// crypto/x509 and circl's ML-DSA), built once per test run into
/// `target/certcheck/` (`QKEYD_CERTCHECK` overrides).
pub fn certcheck() -> &'static Path {
    static CHECKER: OnceLock<PathBuf> = OnceLock::new();
    go_program(&CHECKER, "pkcs11/certcheck", "certcheck", "QKEYD_CERTCHECK")
}

/// A command-line tool built from the Go module proxy: `go install
/// MODULE/cmd/NAME@VERSION` (`module`) into the tests' tool cache
/// (`QKEYD_K8S_BIN`, else `~/.cache/qkeyd-e2e/tools`) on first use; `name` is
/// the binary `go install` writes. A binary already there is used as it is.
pub fn go_tool(name: &str, module: &str) -> PathBuf {
    // Two tests asking at once must not run two `go install`s into one file.
    static INSTALL: Mutex<()> = Mutex::new(());
    let dir = std::env::var_os("QKEYD_K8S_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME or XDG_CACHE_HOME")).join(".cache")
        });
        cache.join("qkeyd-e2e/tools")
    });
    let bin = dir.join(name);
    let _installing = INSTALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !bin.exists() {
        std::fs::create_dir_all(&dir).expect("the tool cache");
        let ok = Command::new("go")
            .args(["install", "-trimpath", module])
            .env("GOBIN", &dir)
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-buildvcs=false")
            .status()
            .unwrap_or_else(|e| panic!("go (to install {name}): {e}"))
            .success();
        assert!(ok, "go install {module}");
    }
    bin
}

/// The Helm release the chart's test runs.
const HELM: &str = "helm.sh/helm/v4/cmd/helm@v4.3.2";

/// helm (helm.sh/helm/v4), for the chart in `deploy/helm/qkeyd` (see [`go_tool`]).
pub fn helm_bin() -> PathBuf {
    go_tool("helm", HELM)
}

/// Run the probe with `args` (and `env`), return its exit success and its
/// JSON line (`Value::Null` if it printed none).
pub fn probe(args: &[&str], env: &[(&str, &str)]) -> (bool, Value) {
    let out = Command::new(tlsprobe())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run tlsprobe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    if json.is_null() {
        let mut err = std::io::stderr();
        let _ = writeln!(err, "tlsprobe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), json)
}

/// The value of a Prometheus sample line `name{labels} value`, if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// A SoftHSM2 token initialised in a temporary directory: the real PKCS#11
/// implementation, with its own config file (`SOFTHSM2_CONF`).
pub struct SoftHsm {
    /// The directory holding the config and the token files.
    pub dir: tempfile::TempDir,
    /// Path of the softhsm2.conf to pass as `SOFTHSM2_CONF`.
    pub conf: PathBuf,
    /// The module to load.
    pub module: PathBuf,
}

/// The token label and PINs [`SoftHsm::new`] uses.
pub const HSM_LABEL: &str = "qkeyd-test";
/// User PIN of the test token.
pub const HSM_PIN: &str = "1234-test-pin";
/// Security officer PIN of the test token.
pub const HSM_SO_PIN: &str = "5678-so-pin";

impl SoftHsm {
    /// Initialise a fresh token, or panic with what is missing.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                HSM_LABEL,
                "--pin",
                HSM_PIN,
                "--so-pin",
                HSM_SO_PIN,
            ])
            .output()
            .expect("softhsm2-util (tests/run-all.sh installs softhsm2)");
        assert!(out.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&out.stderr));
        let module = softhsm_module();
        Self { dir, conf, module }
    }

    /// The token directory (remove or move it to make the token disappear).
    pub fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// `SOFTHSM2_CONF=...` for the daemon.
    pub fn env(&self) -> (&'static str, &str) {
        ("SOFTHSM2_CONF", self.conf.to_str().expect("utf-8 path"))
    }

    /// A `[keys]` config section using this token, the PIN in `pin_file`.
    pub fn keys_config(&self, pin_file: &Path) -> String {
        format!(
            "[keys]\nsealer = \"hsm\"\n[keys.hsm]\nmodule = \"{}\"\ntoken_label = \"{HSM_LABEL}\"\npin_file = \"{}\"\n",
            self.module.display(),
            pin_file.display()
        )
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}

/// Where Debian and Ubuntu put the SoftHSM2 module.
pub fn softhsm_module() -> PathBuf {
    let candidates = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libsofthsm2.so not found in {candidates:?}"))
}

/// A software TPM (swtpm) on free loopback ports (or in a network namespace
/// of its own: [`Swtpm::start_in_netns`]), with its state in a temporary
/// directory; stopped on drop. [`Swtpm::stop`] and
/// [`Swtpm::restart`] make it vanish and come back with the same state.
pub struct Swtpm {
    child: Option<Child>,
    /// The state directory.
    pub dir: tempfile::TempDir,
    /// The TPM command port.
    pub port: u16,
    ctrl: u16,
    /// The network namespace it runs in, if not this process's.
    netns: Option<String>,
}

/// The ports swtpm and the TPM simulators listen on by default.
const SWTPM_PORTS: (u16, u16) = (2321, 2322);

impl Swtpm {
    /// Start a fresh TPM.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // The swtpm TCTI expects the control channel on the next port. The
        // pair comes from below the kernel's ephemeral range (32768 and up on
        // Linux), so that while this TPM is stopped no port the OS hands out
        // (a daemon's listener on :0, an outgoing connection) can take it.
        let port = loop {
            let mut r = [0u8; 2];
            getrandom::fill(&mut r).expect("getrandom");
            let p = 20_000 + u16::from_le_bytes(r) % 12_000;
            let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
            if free(p) && free(p + 1) {
                break p;
            }
        };
        let ctrl = port + 1;
        let mut t = Self { child: None, dir, port, ctrl, netns: None };
        t.restart();
        t
    }

    /// Start a fresh TPM in the network namespace `netns` (made with `ip
    /// netns add`), on that namespace's loopback at swtpm's usual ports:
    /// the namespace is a host of its own, and nothing else listens there.
    /// Its clients ([`Swtpm::tcti`]) run in that namespace too.
    pub fn start_in_netns(netns: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, ctrl) = SWTPM_PORTS;
        let mut t = Self { child: None, dir, port, ctrl, netns: Some(netns.to_owned()) };
        t.restart();
        t
    }

    /// The TCTI string for tss-esapi / tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Stop the TPM process (its state stays on disk).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// (Re)start the TPM on the same ports and state, and wait until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = command_in(self.netns.as_deref(), "swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", self.dir.path().display()))
            .arg("--server")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.ctrl))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm (tests/run-all.sh installs it)");
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.listening(pid) {
            assert!(Instant::now() < deadline, "swtpm did not open port {}", self.port);
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether swtpm (process `pid`) listens on its command port. In another
    /// namespace this process cannot connect to it, so ask the kernel for
    /// that namespace's sockets: once `ip` has entered the namespace (the
    /// pid's namespace is the named one), `/proc/PID/net/tcp` lists them.
    fn listening(&self, pid: u32) -> bool {
        let Some(ns) = &self.netns else {
            return std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        };
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let inside = id(&proc.join("ns/net"))
            .is_some_and(|n| Some(n) == id(&Path::new("/run/netns").join(ns)));
        // As the kernel prints it: the address as a native-endian u32, the
        // port, and state 0A (LISTEN).
        let local = format!("{:08X}:{:04X}", u32::from_ne_bytes([127, 0, 0, 1]), self.port);
        inside
            && std::fs::read_to_string(proc.join("net/tcp")).is_ok_and(|t| {
                t.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.get(1) == Some(&local.as_str()) && f.get(3) == Some(&"0A")
                })
            })
    }

    /// Extend a SHA-256 PCR with tpm2-tools, as another TPM client would.
    pub fn extend_pcr(&self, pcr: u8) {
        let out = command_in(self.netns.as_deref(), "tpm2_pcrextend")
            .args(["-T", &self.tcti()])
            .arg(format!("{pcr}:sha256={}", "ab".repeat(32)))
            .output()
            .expect("tpm2_pcrextend (tests/run-all.sh installs tpm2-tools)");
        assert!(out.status.success(), "tpm2_pcrextend: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}
