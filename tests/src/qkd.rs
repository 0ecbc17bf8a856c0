//! The QKD harness shared by the end-to-end tests and the bench: the KME
//! simulator pair (`tests/qkd/kme_sim.py`) with its certificates, and two
//! qkeyd nodes serving GS QKD 014 (`[qkd.serve]`) at the two ends of its
//! link, each with its own SAE.

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::{Daemon, tls_agent};

/// `tests/qkd/`: the simulator, its certificate script and self-test.
pub fn qkd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("qkd")
}

/// A running KME pair and the certificates of its SAEs.
pub struct KmeSim {
    child: Child,
    /// The CA (`ca.pem`) and a certificate and key per SAE (`<sae>.pem`, `.key`).
    pub certs: tempfile::TempDir,
    /// KME_A's port.
    pub kme_a: u16,
    /// KME_B's port.
    pub kme_b: u16,
    /// The plain-HTTP control port (faults, counters, issued keys).
    pub control: u16,
}

impl KmeSim {
    /// A KME pair with certificates for sae-a, sae-b and sae-other.
    pub fn start() -> Self {
        Self::start_for(&["sae-a", "sae-b", "sae-other"])
    }

    /// A KME pair with certificates for `saes`.
    pub fn start_for(saes: &[&str]) -> Self {
        let certs = tempfile::tempdir().expect("temp dir");
        make_certs(certs.path(), saes);
        let mut child = Command::new("python3")
            .arg(qkd_dir().join("kme_sim.py"))
            .arg("--certs")
            .arg(certs.path())
            .args(["--seed", "7"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kme_sim.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("kme_sim.py's first line");
        let ports: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("kme_sim.py's first line {line:?}: {e}"));
        let port = |k: &str| {
            ports[k].as_u64().and_then(|p| u16::try_from(p).ok()).expect("a port in the first line")
        };
        Self { kme_a: port("kme_a"), kme_b: port("kme_b"), control: port("control"), child, certs }
    }

    /// Set a fault (`POST /fault` with `body`).
    pub fn fault(&self, body: &str) {
        let url = format!("http://127.0.0.1:{}/fault", self.control);
        let resp = ureq::post(&url).header("content-type", "application/json").send(body);
        assert!(resp.is_ok(), "POST {url} {body}: {resp:?}");
    }

    /// A `[qkd.kme.NAME]` table for `sae` at `port`, certificates from `certs`.
    pub fn table(
        &self,
        name: &str,
        port: u16,
        sae: &str,
        cert_of: &str,
        peers: &str,
        ca: &Path,
    ) -> String {
        let c = self.certs.path();
        format!(
            "[qkd.kme.{name}]\nurl = \"https://127.0.0.1:{port}\"\nca_file = \"{}\"\n\
             cert_file = \"{}\"\nkey_file = \"{}\"\nsae_id = \"{sae}\"\npeers = [{peers}]\n\
             timeout_secs = 1\n",
            ca.display(),
            c.join(format!("{cert_of}.pem")).display(),
            c.join(format!("{cert_of}.key")).display(),
        )
    }

    /// The CA certificate of every KME and SAE.
    pub fn ca(&self) -> PathBuf {
        self.certs.path().join("ca.pem")
    }
}

impl Drop for KmeSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/qkd/make_certs.sh DIR SAE...`: the CA (kept if there), both KMEs, the SAEs.
pub fn make_certs(dir: &Path, saes: &[&str]) {
    let out = Command::new("bash")
        .arg(qkd_dir().join("make_certs.sh"))
        .arg(dir)
        .args(saes)
        .output()
        .expect("run make_certs.sh");
    assert!(out.status.success(), "make_certs.sh: {}", String::from_utf8_lossy(&out.stderr));
}

/// A free loopback port (free when asked).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// One node: its daemon, its `[qkd.serve]` port and its state directory.
pub struct Node {
    /// The daemon.
    pub daemon: Daemon,
    /// Its `[qkd.serve]` port.
    pub port: u16,
    /// Its state directory.
    pub state: PathBuf,
}

/// Both nodes, the KMEs, and an SAE client per side.
pub struct Pair {
    /// The KMEs.
    pub sim: KmeSim,
    /// Node A (SAE sae-a).
    pub a: Node,
    /// Node B (SAEs sae-b and sae-b2).
    pub b: Node,
    /// sae-a's client.
    pub sae_a: ureq::Agent,
    /// sae-b's client.
    pub sae_b: ureq::Agent,
}

/// The OS source and `[attest]`, which every node has.
pub const SOURCE: &str = "[[source]]\nname = \"os\"\nkind = \"os\"\n\n[attest]\n";

/// A node's identity fingerprint: started once with `[attest]` alone.
fn first_start() -> (tempfile::TempDir, String) {
    let d = Daemon::start(SOURCE);
    let (s, id) = d.keys("GET", "/v1/attest/identity", None);
    assert_eq!(s, 200, "{id}");
    let fp = id["identity"]["fingerprint"].as_str().expect("a fingerprint").to_owned();
    (d.kill(), fp)
}

impl Pair {
    /// Both nodes, `extra` at the end of each config.
    pub fn start(extra: &str) -> Self {
        Self::start_each(extra, extra)
    }

    /// With `extra_a` and `extra_b` at the end of A's and B's configs.
    pub fn start_each(extra_a: &str, extra_b: &str) -> Self {
        let sim = KmeSim::start_for(&["qkeyd-a", "qkeyd-b", "sae-a", "sae-b", "sae-b2", "sae-x"]);
        let (dir_a, fp_a) = first_start();
        let (dir_b, fp_b) = first_start();
        let (port_a, port_b) = (free_port(), free_port());
        let a = node(&sim, dir_a, "a", sim.kme_a, port_a, "b", port_b, &fp_b, extra_a);
        let b = node(&sim, dir_b, "b", sim.kme_b, port_b, "a", port_a, &fp_a, extra_b);
        let c = sim.certs.path();
        let agent = |sae: &str| {
            tls_agent(
                &sim.ca(),
                Some((&c.join(format!("{sae}.pem")), &c.join(format!("{sae}.key")))),
            )
        };
        Self { sae_a: agent("sae-a"), sae_b: agent("sae-b"), a, b, sim }
    }

    /// The URL of `path` on `node`'s `[qkd.serve]` listener.
    pub fn url(node: &Node, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", node.port)
    }

    /// `POST enc_keys` at A for sae-b.
    pub fn enc(&self, body: Value) -> (u16, Value) {
        call(&self.sae_a, "POST", &Self::url(&self.a, "/api/v1/keys/sae-b/enc_keys"), Some(body))
    }

    /// `POST dec_keys` at B from sae-a.
    pub fn dec(&self, ids: &[&str]) -> (u16, Value) {
        let body =
            json!({ "key_IDs": ids.iter().map(|i| json!({ "key_ID": i })).collect::<Vec<_>>() });
        call(&self.sae_b, "POST", &Self::url(&self.b, "/api/v1/keys/sae-a/dec_keys"), Some(body))
    }
}

#[allow(clippy::too_many_arguments)]
fn node(
    sim: &KmeSim,
    dir: tempfile::TempDir,
    me: &str,
    kme: u16,
    port: u16,
    peer: &str,
    peer_port: u16,
    peer_fp: &str,
    extra: &str,
) -> Node {
    let c = sim.certs.path();
    let ca = sim.ca();
    let state = dir.path().join("state");
    let policy = dir.path().join("peer-policy.toml");
    std::fs::write(
        &policy,
        format!(
            "require_tpm = false\nsealers = [\"soft\"]\nstate_file = \"{}\"\n",
            dir.path().join("verifier.json").display()
        ),
    )
    .expect("write the peer policy");
    let config = format!(
        "{SOURCE}\n[qkd.kme.link]\nurl = \"https://127.0.0.1:{kme}\"\nca_file = \"{ca}\"\n\
         cert_file = \"{c}/qkeyd-{me}.pem\"\nkey_file = \"{c}/qkeyd-{me}.key\"\n\
         sae_id = \"qkeyd-{me}\"\npeers = [\"qkeyd-{peer}\"]\ntimeout_secs = 2\n\n\
         [qkd.serve]\nlisten = \"127.0.0.1:{port}\"\ncert_file = \"{c}/qkeyd-{me}.pem\"\n\
         key_file = \"{c}/qkeyd-{me}.key\"\nclient_ca = \"{ca}\"\nsaes = [{mine}]\n\n\
         [qkd.peer.{peer}]\nurl = \"https://127.0.0.1:{peer_port}\"\nca_file = \"{ca}\"\n\
         identity = \"cn:qkeyd-{peer}\"\npolicy = \"{policy}\"\nnode_fingerprint = \"{peer_fp}\"\n\
         kme = \"link\"\nkme_sae_id = \"qkeyd-{peer}\"\nsaes = [{theirs}]\ntimeout_secs = 2\n\
         {extra}",
        ca = ca.display(),
        c = c.display(),
        policy = policy.display(),
        mine = saes(me),
        theirs = saes(peer),
    );
    let daemon = Daemon::start_in(dir, &config);
    daemon.wait_log("the GS QKD 014 server", Duration::from_secs(30), |l| {
        l.contains("GS QKD 014 server listening")
    });
    Node { daemon, port, state }
}

/// A node's SAEs: sae-a at A; sae-b and sae-b2 at B.
fn saes(node: &str) -> &'static str {
    if node == "a" { "\"sae-a\"" } else { "\"sae-b\", \"sae-b2\"" }
}

/// One HTTP call; the status and the JSON answer (or its text).
pub fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let req = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(body.map(|b| b.to_string()).unwrap_or_default())
        .expect("a request");
    let mut resp = agent.run(req).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("a text answer");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The key_IDs of a key container.
pub fn ids(container: &Value) -> Vec<String> {
    container["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys: {container}"))
        .iter()
        .map(|k| k["key_ID"].as_str().expect("a key_ID").to_owned())
        .collect()
}
