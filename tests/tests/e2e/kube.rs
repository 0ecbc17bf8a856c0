//! The real client: kube-apiserver and etcd, built from the Go module proxy by
//! tests/k8s/build.sh (cached outside the repo), encrypting Secrets through
//! qkeyd's KMS v2 plugin with a SoftHSM2 KEK and the EncryptionConfiguration
//! from deploy/.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use qkeyd_e2e::{HSM_PIN, SoftHsm};
use serde_json::{Value, json};

use super::kms::{Client, start};

/// A child process killed on drop, its output in a log file.
struct Proc {
    child: Child,
    log: PathBuf,
    name: &'static str,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self { child, log, name }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        format!(
            "--- {} (last lines) ---\n{}",
            self.name,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The folder with kube-apiserver, kubectl and etcd (built on first use).
fn binaries() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/build.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    assert!(out.status.success(), "tests/k8s/build.sh failed (needs Go and its module proxy)");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    etcd_port: u16,
    api_port: u16,
    etcd: Proc,
    apiserver: Option<Proc>,
}

impl Cluster {
    fn start(bin: PathBuf, socket: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd = Proc::spawn(
            "etcd",
            Command::new(bin.join("etcd"))
                .arg("--name=e2e")
                .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
                .arg(format!("--initial-cluster=e2e=http://127.0.0.1:{peer_port}"))
                .arg("--log-level=warn"),
            dir.path(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while http_get(&format!("http://127.0.0.1:{etcd_port}/health")).is_none() {
            assert!(Instant::now() < deadline, "etcd did not start\n{}", etcd.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        // The deploy/ EncryptionConfiguration, pointed at this test's socket.
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/kubernetes/encryption-config.yaml");
        let config = std::fs::read_to_string(deploy).unwrap();
        assert!(config.contains("unix:///var/run/qkeyd/kms.sock"));
        let config = config.replace("/var/run/qkeyd/kms.sock", socket.to_str().unwrap());
        std::fs::write(dir.path().join("encryption.yaml"), config).unwrap();
        std::fs::write(
            dir.path().join("tokens.csv"),
            "e2e-token,e2e-admin,uid-1,\"system:masters\"\n",
        )
        .unwrap();
        let key = dir.path().join("sa.key");
        let out = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl genrsa");
        let mut c = Self { bin, dir, etcd_port, api_port, etcd, apiserver: None };
        c.start_apiserver();
        c
    }

    fn start_apiserver(&mut self) {
        let d = self.dir.path();
        let p = Proc::spawn(
            "kube-apiserver",
            Command::new(self.bin.join("kube-apiserver"))
                .arg(format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port))
                .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
                .arg(format!("--secure-port={}", self.api_port))
                .arg(format!("--cert-dir={}", d.join("certs").display()))
                .args(["--endpoint-reconciler-type=none", "--service-cluster-ip-range=10.0.0.0/24"])
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!("--service-account-key-file={}", d.join("sa.key").display()))
                .arg(format!("--service-account-signing-key-file={}", d.join("sa.key").display()))
                .arg(format!("--token-auth-file={}", d.join("tokens.csv").display()))
                .arg("--authorization-mode=RBAC")
                .arg(format!(
                    "--encryption-provider-config={}",
                    d.join("encryption.yaml").display()
                )),
            d,
        );
        self.apiserver = Some(p);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(out) = self.kubectl_raw(&["get", "--raw", "/readyz"])
                && out.trim() == "ok"
            {
                break;
            }
            assert!(Instant::now() < deadline, "kube-apiserver not ready\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn restart_apiserver(&mut self) {
        if let Some(mut p) = self.apiserver.take() {
            p.stop();
        }
        self.start_apiserver();
    }

    fn logs(&self) -> String {
        format!(
            "{}\n{}",
            self.etcd.log(),
            self.apiserver.as_ref().map(Proc::log).unwrap_or_default()
        )
    }

    fn kubectl_raw(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(self.bin.join("kubectl"))
            .arg(format!("--server=https://127.0.0.1:{}", self.api_port))
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

    fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_raw(args).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}\n{}", self.logs()))
    }

    /// A Secret's value as kubectl reads it back.
    fn secret(&self, name: &str) -> Vec<u8> {
        let b64 = self.kubectl(&["get", "secret", name, "-o", "jsonpath={.data.value}"]);
        base64::engine::general_purpose::STANDARD.decode(b64.trim()).unwrap()
    }

    /// What etcd stores for a Secret, read straight from etcd (its v3 HTTP gateway).
    fn etcd_value(&self, name: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = b64.encode(format!("/registry/secrets/default/{name}"));
        let body = http_post(
            &format!("http://127.0.0.1:{}/v3/kv/range", self.etcd_port),
            &json!({ "key": key }),
        )
        .expect("etcd range");
        let v = body["kvs"][0]["value"].as_str().unwrap_or_else(|| panic!("no key {name}: {body}"));
        b64.decode(v).unwrap()
    }
}

fn http_get(url: &str) -> Option<String> {
    ureq::get(url).call().ok().and_then(|mut r| r.body_mut().read_to_string().ok())
}

fn http_post(url: &str, body: &Value) -> Option<Value> {
    let mut r =
        ureq::post(url).header("content-type", "application/json").send(body.to_string()).ok()?;
    serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn kube_apiserver_stores_secrets_encrypted_by_qkeyd_and_follows_rotation() {
    let bin = binaries();
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, HSM_PIN).unwrap();
    let (qkeyd, socket) = start(dir, &hsm.keys_config(&pin), &[hsm.env()]);
    let mut kms = Client::connect(socket.to_str().unwrap());
    let key1 = kms.status().unwrap().key_id;
    let mut cluster = Cluster::start(bin, &socket);
    assert_eq!(cluster.kubectl(&["get", "--raw", "/readyz/kms-providers"]).trim(), "ok");

    let values: Vec<String> =
        (0..3).map(|i| format!("qkeyd-e2e-secret-{i}-{}", std::process::id())).collect();
    for (i, v) in values.iter().enumerate() {
        cluster.kubectl(&[
            "create",
            "secret",
            "generic",
            &format!("s{i}"),
            &format!("--from-literal=value={v}"),
        ]);
    }
    let prefix = b"k8s:enc:kms:v2:qkeyd:";
    for (i, v) in values.iter().enumerate() {
        let raw = cluster.etcd_value(&format!("s{i}"));
        assert!(
            raw.starts_with(prefix),
            "s{i} in etcd: {:?}",
            String::from_utf8_lossy(&raw[..40.min(raw.len())])
        );
        assert!(!contains(&raw, v.as_bytes()), "s{i} is in clear in etcd");
        assert!(contains(&raw, key1.as_bytes()), "s{i} names the KEK it is under");
        assert_eq!(cluster.secret(&format!("s{i}")), v.as_bytes());
    }

    // A restarted apiserver decrypts what it stored (Decrypt of the DEK seeds).
    cluster.restart_apiserver();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(cluster.secret(&format!("s{i}")), v.as_bytes(), "s{i} after restart");
    }

    // Rotate: the apiserver sees the new key id at its next Status poll (once
    // a minute) and new writes go under it; old Secrets still read.
    let (s, v) = qkeyd.keys("POST", "/v1/kms/rotate", None);
    assert_eq!(s, 201, "{v}");
    let key2 = v["key_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut n = 0;
    let newest = loop {
        let name = format!("after-rotate-{n}");
        cluster.kubectl(&["create", "secret", "generic", &name, "--from-literal=value=rotated"]);
        let raw = cluster.etcd_value(&name);
        assert!(raw.starts_with(prefix));
        if contains(&raw, key2.as_bytes()) {
            break name;
        }
        assert!(contains(&raw, key1.as_bytes()));
        assert!(
            Instant::now() < deadline,
            "the apiserver never used the new KEK\n{}",
            cluster.logs()
        );
        n += 1;
        std::thread::sleep(Duration::from_secs(5));
    };
    assert_eq!(cluster.secret(&newest), b"rotated");
    for (i, v) in values.iter().enumerate() {
        assert_eq!(cluster.secret(&format!("s{i}")), v.as_bytes(), "old s{i} under key 1");
        assert!(contains(&cluster.etcd_value(&format!("s{i}")), key1.as_bytes()));
    }
    // And after another restart both generations still read.
    cluster.restart_apiserver();
    assert_eq!(cluster.secret(&newest), b"rotated");
    assert_eq!(cluster.secret("s0"), values[0].as_bytes());
    drop(qkeyd);
}
