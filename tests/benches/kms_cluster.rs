//! The shared-KEK cluster (`[kms.cluster]`): one etcd with client TLS and
//! three qkeyd nodes, each on its own swtpm (n1 sealing with SoftHSM2, n2
//! and n3 with their TPMs), in one run:
//!
//! ```text
//! cargo bench -p qkeyd-e2e --features tpm --bench kms_cluster
//! ```
//!
//! 1. Rotation reach: `POST /v1/kms/rotate` on n1, then the KMS Status of
//!    every node (gRPC through its socket, every 10 ms) until each reports
//!    the new key id. QKEYD_BENCH_ROTATIONS (default 10) rotations, each
//!    after a random pause of up to one poll interval (so that a rotation
//!    does not land at the same point of the other nodes' polls every
//!    time), at `poll_interval_secs` 2 (the default) and 0.5.
//! 2. Admission: a new node (a fresh state dir, its own swtpm, its AK in the
//!    policy before it starts) from its spawn until its Status reports the
//!    cluster's write key, with the steps on the way as the logs show them,
//!    how many of the live KEKs it held at that moment, and when it held
//!    them all; 3 newcomers per poll interval, each stopped and removed
//!    (`DELETE /v1/kms/cluster/nodes/NODE`) after.
//! 3. Encrypt and Decrypt of n1 (clustered, SoftHSM2) and n2 (clustered,
//!    TPM) against single nodes with the same sealers (three SoftHSM2 ones:
//!    two identical, whose difference shows the noise, and one rotated as
//!    often as n1, with as many KEKs in its token), call by call from one
//!    tonic client with the nodes taking turns, and with ghz at c=1;
//!    QKEYD_BENCH_ROUNDS (default 5) rounds, the single node's range over
//!    the rounds being the run-to-run spread the clustered node's
//!    difference is judged against. The clustered nodes poll every 2 s
//!    meanwhile.
//!
//! etcd is the binary tests/k8s/build.sh builds (cached after the first
//! run); the daemon is built in release with the TPM sealer.
#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use qkeyd_e2e::{
    Daemon, HSM_PIN, SoftHsm, Swtpm,
    bench::{
        Target, Turns, cell, cpu_ns, ghz, ghz_bin, ghz_bodies, halt_polling, interleaved,
        kms_proto, spread,
    },
    kms::Client,
    pki::{Ca, Leaf, Usage},
};
use serde_json::Value;

/// How often the harness asks a node's Status while it waits for a change.
const STATUS_EVERY: Duration = Duration::from_millis(10);
/// Longest a rotation or an admission may take before the bench gives up.
const GIVE_UP: Duration = Duration::from_secs(60);
/// Newcomers measured per poll interval.
const NEWCOMERS: usize = 3;
/// Calls per node per call kind in one call-by-call run, and per ghz run.
const CALLS: usize = 5_000;
const GHZ_CALLS: u32 = 3_000;
/// How long the nodes' CPU is read with no calls (several polls).
const IDLE: Duration = Duration::from_secs(8);

fn main() {
    if !cfg!(feature = "tpm") {
        eprintln!("the cluster bench needs --features tpm (a qkeyd with the TPM sealer, swtpm)");
        return;
    }
    let rotations: usize =
        std::env::var("QKEYD_BENCH_ROTATIONS").ok().and_then(|r| r.parse().ok()).unwrap_or(10);
    let rounds: usize =
        std::env::var("QKEYD_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let started = Instant::now();
    println!("load average at start: {}", load());
    let mut c = Cluster::start(2.0);
    println!("cluster up in {:.1} s; write key {}", started.elapsed().as_secs_f64(), c.write_key());

    let mut reach = BTreeMap::new();
    let mut admission = BTreeMap::new();
    reach.insert("2", c.rotations(rotations));
    admission.insert("2", c.admissions());
    let latency = c.latency(rounds);
    c.set_poll(0.5);
    admission.insert("0.5", c.admissions());
    reach.insert("0.5", c.rotations(rotations));

    println!();
    println!("## Rotation reach ({rotations} rotations per poll interval, Status every 10 ms)");
    println!(
        "| poll_interval_secs | all 3 nodes p50 / max ms | n1 (rotating) | n2 | n3 | POST /v1/kms/rotate p50 / max ms |"
    );
    println!("|---|---|---|---|---|---|");
    for (poll, r) in &reach {
        let col = |f: &dyn Fn(&Reach) -> f64| {
            let (p50, max) = p50_max(r.iter().map(f).collect());
            format!("{p50:.0} / {max:.0}")
        };
        println!(
            "| {poll} | {} | {} | {} | {} | {} |",
            col(&|x| x.nodes.iter().copied().fold(0.0, f64::max)),
            col(&|x| x.nodes[0]),
            col(&|x| x.nodes[1]),
            col(&|x| x.nodes[2]),
            col(&|x| x.call),
        );
    }
    println!();
    println!("## Admission of a new node (ms from its spawn; KEKs it received)");
    println!(
        "| poll_interval_secs | newcomer | listening | evidence published | passes a member's policy | first KEK sealed | Status on the write key | KEKs held then / live | all live KEKs held |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (poll, runs) in &admission {
        for a in runs {
            let ms = |d: Option<Duration>| {
                d.map_or_else(|| "not seen".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e3))
            };
            println!(
                "| {poll} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
                a.node,
                ms(Some(a.up)),
                ms(a.published),
                ms(a.passes),
                ms(a.first_kek),
                ms(Some(a.done)),
                a.received,
                a.live,
                ms(Some(a.all))
            );
        }
    }
    println!();
    latency.print(rounds);
    println!();
    println!(
        "load average at end: {}; {:.0} s in all; this machine: {}",
        load(),
        started.elapsed().as_secs_f64(),
        halt_polling()
    );
}

/// The 1, 5 and 15 minute load averages.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The median and the maximum of `x` (not empty).
fn p50_max(mut x: Vec<f64>) -> (f64, f64) {
    x.sort_by(f64::total_cmp);
    (x[x.len() / 2], x[x.len() - 1])
}

/// A uniformly random duration below `max`.
fn random_below(max: Duration) -> Duration {
    let mut r = [0u8; 4];
    getrandom::fill(&mut r).unwrap();
    max.mul_f64(f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX))
}

/// One rotation: ms from sending the request until each node's Status
/// reported the new key, and the request's own time.
struct Reach {
    nodes: [f64; 3],
    call: f64,
}

/// One newcomer's admission, each step from its spawn.
struct Admission {
    node: String,
    up: Duration,
    published: Option<Duration>,
    passes: Option<Duration>,
    first_kek: Option<Duration>,
    done: Duration,
    /// KEKs it held when its Status first named the write key.
    received: usize,
    /// When it held every live KEK.
    all: Duration,
    live: usize,
}

/// How a node seals its keys.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sealing {
    Hsm,
    Tpm,
}

/// One qkeyd: its TPM (for quotes, and its sealer unless a SoftHSM2 token
/// is), its files, and its daemon when it runs.
struct Node {
    name: String,
    // Dropped first: the daemon and its client, then its TPM and token.
    kms: Option<Client>,
    daemon: Option<Daemon>,
    dir: Option<tempfile::TempDir>,
    socket: PathBuf,
    state: PathBuf,
    keys: String,
    env: Vec<(&'static str, String)>,
    /// etcd client certificate and key.
    client: (PathBuf, PathBuf),
    ak_name: String,
    tpm: Swtpm,
    _hsm: Option<SoftHsm>,
}

impl Node {
    fn new(name: &str, sealing: Sealing, ca: &Ca, work: &Path) -> Self {
        let tpm = Swtpm::start();
        let dir = tempfile::tempdir().unwrap();
        let (keys, hsm, env) = match sealing {
            Sealing::Hsm => {
                let hsm = SoftHsm::new();
                let pin = dir.path().join("pin");
                std::fs::write(&pin, HSM_PIN).unwrap();
                let conf = hsm.conf.to_str().unwrap().to_owned();
                (hsm.keys_config(&pin), Some(hsm), vec![("SOFTHSM2_CONF", conf)])
            }
            Sealing::Tpm => {
                let keys =
                    format!("[keys]\nsealer = \"tpm\"\n[keys.tpm]\ntcti = \"{}\"\n", tpm.tcti());
                (keys, None, Vec::new())
            }
        };
        let client = ca.client(&format!("qkeyd-{name}")).write(work, &format!("etcd-{name}"));
        Self {
            name: name.to_owned(),
            kms: None,
            daemon: None,
            socket: dir.path().join("kms.sock"),
            state: dir.path().join("state"),
            dir: Some(dir),
            keys,
            env,
            client,
            ak_name: String::new(),
            tpm,
            _hsm: hsm,
        }
    }

    /// Sources, sealer and attestation, without the KMS plugin.
    fn standalone(&self) -> String {
        format!(
            "[[source]]\nname = \"os\"\nkind = \"os\"\n\n{}\n[attest]\ntcti = \"{}\"\n\
             pcrs = [0, 1, 2, 3, 4, 5, 6, 7]\n",
            self.keys,
            self.tpm.tcti()
        )
    }

    /// [`Node::standalone`] with the KMS plugin on its socket.
    fn single(&self) -> String {
        format!("{}\n[kms]\nsocket = \"{}\"\n", self.standalone(), self.socket.display())
    }

    fn start(&mut self, config: &str) {
        let dir = self.dir.take().expect("the node is stopped");
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let d = Daemon::start_with(dir, config, &self.state, &env);
        self.daemon = Some(d);
    }

    fn stop(&mut self) {
        self.kms = None;
        if let Some(d) = self.daemon.take() {
            self.dir = Some(d.kill());
        }
    }

    fn d(&self) -> &Daemon {
        self.daemon.as_ref().expect("the node runs")
    }

    /// Start it without the KMS plugin, read its AK Name, stop it: the AK
    /// stays in its TPM, so an operator can trust it before the node joins.
    /// With `fresh`, on a state dir thrown away after, so that the node
    /// joins on a fresh one.
    fn enrol(&mut self, fresh: bool) {
        let throwaway = self.socket.with_file_name("enrol-state");
        let state = if fresh { throwaway } else { self.state.clone() };
        let state = std::mem::replace(&mut self.state, state);
        let config = self.standalone();
        self.start(&config);
        let (s, id) = self.d().keys("GET", "/v1/attest/identity", None);
        assert_eq!(s, 200, "{}: GET /v1/attest/identity: {id}", self.name);
        self.ak_name = id["tpm"]["ak_name"]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no AK: {id}", self.name))
            .to_owned();
        self.stop();
        if fresh {
            std::fs::remove_dir_all(&self.state).unwrap();
        }
        self.state = state;
    }

    /// Its KMS client, once its socket is there.
    fn kms(&mut self) -> &mut Client {
        if self.kms.is_none() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !self.socket.exists() {
                assert!(Instant::now() < deadline, "{}: no KMS socket\n{}", self.name, self.log());
                thread::sleep(Duration::from_millis(5));
            }
            self.kms = Some(Client::connect(self.socket.to_str().unwrap()));
        }
        self.kms.as_mut().unwrap()
    }

    /// The key id its Status reports, if it answers ok.
    fn status_key(&mut self) -> Option<String> {
        self.kms().status().ok().filter(|s| s.healthz == "ok").map(|s| s.key_id)
    }

    fn log(&self) -> String {
        let log = self.daemon.as_ref().map(Daemon::log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("--- {} ---\n{}", self.name, lines[lines.len().saturating_sub(40)..].join("\n"))
    }

    fn target(&self, name: &'static str) -> Target {
        Target { name, socket: self.socket.clone(), pid: self.d().pid() }
    }
}

/// etcd on loopback with client TLS, killed on drop.
struct Etcd {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Etcd {
    fn start(ca: &Ca, work: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/build.sh");
        let out = Command::new(&script).stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "tests/k8s/build.sh failed (needs Go and its module proxy)");
        let bin = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("etcd");
        // etcd's gRPC gateway dials etcd itself with the server certificate,
        // so with client certificates required that certificate needs
        // clientAuth too.
        let (cert, key) = ca
            .issue(&Leaf {
                cn: "etcd".into(),
                sans: vec!["dns:localhost".into(), "ip:127.0.0.1".into()],
                usage: Usage::Both,
                ..Leaf::default()
            })
            .write(work, "etcd-server");
        let ca_file = ca.write(work, "etcd-ca");
        let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (client, peer) = (port(), port());
        let url = format!("https://{client}");
        let log = work.join("etcd.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("--name=bench")
            .arg(format!("--data-dir={}", work.join("etcd").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls=http://{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
            .arg(format!("--initial-cluster=bench=http://{peer}"))
            .arg("--log-level=warn")
            .arg(format!("--cert-file={}", cert.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!("--trusted-ca-file={}", ca_file.display()))
            .arg("--client-cert-auth")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start etcd");
        let e = Self { child, url, log };
        let agent = qkeyd_e2e::tls_agent(&ca_file, Some((&cert, &key)));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let healthy = agent.get(format!("{}/health", e.url)).call().is_ok_and(|mut r| {
                r.status() == 200 && r.body_mut().read_to_string().is_ok_and(|b| b.contains("true"))
            });
            if healthy {
                return e;
            }
            let log = std::fs::read_to_string(&e.log).unwrap_or_default();
            assert!(Instant::now() < deadline, "etcd did not start:\n{log}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nodes, etcd, and the policy file every node reads.
struct Cluster {
    // Dropped first: the nodes, then etcd, then the files.
    nodes: Vec<Node>,
    etcd: Etcd,
    ca: Ca,
    ca_file: PathBuf,
    policy: PathBuf,
    poll: f64,
    /// Nodes started so far (a removed node's name is never used again).
    started: usize,
    work: tempfile::TempDir,
}

impl Cluster {
    /// etcd, then n1 (SoftHSM2) alone until it has made the first KEK, then
    /// n2 and n3 (TPM); returns once all three report the same key. Every
    /// AK is in the policy before its node joins.
    fn start(poll: f64) -> Self {
        let work = tempfile::tempdir().unwrap();
        let ca = Ca::new("qkeyd bench etcd CA");
        let etcd = Etcd::start(&ca, work.path());
        let ca_file = ca.write(work.path(), "etcd-ca");
        let policy = work.path().join("cluster-policy.toml");
        let mut c = Self { nodes: Vec::new(), etcd, ca, ca_file, policy, poll, started: 3, work };
        let t0 = Instant::now();
        let at = |what: &str| println!("  {:6.1} s  {what}", t0.elapsed().as_secs_f64());
        at("etcd up");
        for (name, sealing) in [("n1", Sealing::Hsm), ("n2", Sealing::Tpm), ("n3", Sealing::Tpm)] {
            let mut n = Node::new(name, sealing, &c.ca, c.work.path());
            n.enrol(false);
            c.nodes.push(n);
            at(&format!("{name}'s AK read"));
        }
        c.write_policy();
        let config = c.config(&c.nodes[0]);
        c.nodes[0].start(&config);
        at("n1 listening");
        let k1 = c.wait("n1 to make the first KEK", |c| c.nodes[0].status_key());
        at("n1 reports the first KEK");
        for i in 1..3 {
            let config = c.config(&c.nodes[i]);
            c.nodes[i].start(&config);
        }
        at("n2 and n3 listening");
        c.wait_all(&k1);
        at("n1, n2 and n3 report the first KEK");
        c
    }

    /// A node's config at the current poll interval.
    fn config(&self, n: &Node) -> String {
        format!(
            "{}\n[kms.cluster]\nendpoints = [\"{}\"]\nca_file = \"{}\"\ncert_file = \"{}\"\n\
             key_file = \"{}\"\nnode = \"{}\"\npolicy = \"{}\"\npoll_interval_secs = {}\n",
            n.single(),
            self.etcd.url,
            self.ca_file.display(),
            n.client.0.display(),
            n.client.1.display(),
            n.name,
            self.policy.display(),
            self.poll
        )
    }

    /// The policy: every node's AK, and the PCRs 0-7 of a fresh swtpm (all
    /// zero). Written in one step: the nodes read it every poll.
    fn write_policy(&self) {
        let names: Vec<String> = self.nodes.iter().map(|n| format!("\"{}\"", n.ak_name)).collect();
        let mut t = format!(
            "trusted_ak_names = [{}]\nstate_file = \"{}\"\n\n[pcrs]\n",
            names.join(", "),
            self.work.path().join("verifier-state.json").display()
        );
        for i in 0..8 {
            t.push_str(&format!("\"{i}\" = \"{}\"\n", "0".repeat(64)));
        }
        qkeyd_attest::Policy::from_toml(&t).unwrap_or_else(|e| panic!("{e}: {t}"));
        let tmp = self.policy.with_extension("tmp");
        std::fs::write(&tmp, t).unwrap();
        std::fs::rename(&tmp, &self.policy).unwrap();
    }

    fn logs(&self) -> String {
        let etcd = std::fs::read_to_string(&self.etcd.log).unwrap_or_default();
        let mut out: Vec<String> = self.nodes.iter().map(Node::log).collect();
        out.push(format!("--- etcd ---\n{etcd}"));
        out.join("\n")
    }

    /// Poll `check` every [`STATUS_EVERY`] until it answers, or panic with
    /// the logs after [`GIVE_UP`].
    fn wait<T>(&mut self, what: &str, mut check: impl FnMut(&mut Self) -> Option<T>) -> T {
        let deadline = Instant::now() + GIVE_UP;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", self.logs());
            thread::sleep(STATUS_EVERY);
        }
    }

    fn wait_all(&mut self, key: &str) {
        self.wait(&format!("n1, n2, n3 on {key}"), |c| {
            c.nodes[..3].iter_mut().all(|n| n.status_key().as_deref() == Some(key)).then_some(())
        });
    }

    /// The cluster's write key and its live KEKs, in n1's view.
    fn cluster_keys(&self) -> (String, usize) {
        let (s, v) = self.nodes[0].d().keys("GET", "/v1/kms/cluster", None);
        assert_eq!(s, 200, "GET /v1/kms/cluster: {v}");
        let live = v["keys"]
            .as_array()
            .map_or(0, |k| k.iter().filter(|k| k["retired_unix"].is_null()).count());
        (v["write_key_id"].as_str().unwrap_or_default().to_owned(), live)
    }

    fn write_key(&self) -> String {
        self.cluster_keys().0
    }

    /// Restart n1-n3 on their state with another poll interval.
    fn set_poll(&mut self, poll: f64) {
        self.poll = poll;
        let key = self.write_key();
        for i in 0..3 {
            self.nodes[i].stop();
            let config = self.config(&self.nodes[i]);
            self.nodes[i].start(&config);
        }
        self.wait_all(&key);
    }

    /// `n` rotations on n1, each timed until every node's Status has the
    /// new key.
    fn rotations(&mut self, n: usize) -> Vec<Reach> {
        let poll = Duration::from_secs_f64(self.poll);
        println!("rotations at poll_interval_secs {}; load average {}", self.poll, load());
        (0..n)
            .map(|i| {
                thread::sleep(random_below(poll));
                let t0 = Instant::now();
                let (s, v) = self.nodes[0].d().keys("POST", "/v1/kms/rotate", None);
                let call = t0.elapsed().as_secs_f64() * 1e3;
                assert_eq!(s, 201, "POST /v1/kms/rotate: {v}\n{}", self.logs());
                let key = v["key_id"].as_str().unwrap().to_owned();
                let mut nodes = [None; 3];
                self.wait(&format!("rotation {i} ({key}) to reach every node"), |c| {
                    for (j, n) in c.nodes[..3].iter_mut().enumerate() {
                        if nodes[j].is_none() && n.status_key().as_deref() == Some(key.as_str()) {
                            nodes[j] = Some(t0.elapsed().as_secs_f64() * 1e3);
                        }
                    }
                    nodes.iter().all(Option::is_some).then_some(())
                });
                let nodes = nodes.map(Option::unwrap);
                println!(
                    "  rotation {i}: call {call:.0} ms; n1 {:.0}, n2 {:.0}, n3 {:.0} ms",
                    nodes[0], nodes[1], nodes[2]
                );
                Reach { nodes, call }
            })
            .collect()
    }

    /// [`NEWCOMERS`] new TPM nodes, one at a time, each timed from its spawn
    /// until its Status reports the cluster's write key; then stopped and
    /// removed.
    fn admissions(&mut self) -> Vec<Admission> {
        println!("admissions at poll_interval_secs {}; load average {}", self.poll, load());
        (0..NEWCOMERS).map(|_| self.admit()).collect()
    }

    fn admit(&mut self) -> Admission {
        self.started += 1;
        let name = format!("n{}", self.started);
        let mut n = Node::new(&name, Sealing::Tpm, &self.ca, self.work.path());
        n.enrol(true);
        self.nodes.push(n);
        self.write_policy();
        let (key, live) = self.cluster_keys();
        let config = self.config(self.nodes.last().unwrap());
        let on = format!("node={name}");
        let t0 = Instant::now();
        self.nodes.last_mut().unwrap().start(&config);
        let up = t0.elapsed();
        let (mut published, mut passes, mut first_kek) = (None, None, None);
        let (mut done, mut all) = (None, None);
        let mut received = 0;
        let what = format!("{name} to be admitted, report {key} and hold all {live} KEKs");
        self.wait(&what, |c| {
            let (members, rest) = c.nodes.split_at_mut(3);
            let me = rest.last_mut().unwrap();
            let log = me.d().log();
            if published.is_none() && log.contains("cluster: published this node's evidence") {
                published = Some(t0.elapsed());
            }
            if passes.is_none()
                && members.iter().any(|m| {
                    m.d()
                        .log()
                        .lines()
                        .any(|l| l.contains("cluster: node's evidence passes") && l.contains(&on))
                })
            {
                passes = Some(t0.elapsed());
            }
            let sealed = log.matches("cluster: KEK received and sealed here").count();
            if first_kek.is_none() && sealed > 0 {
                first_kek = Some(t0.elapsed());
            }
            if all.is_none() && sealed >= live {
                all = Some(t0.elapsed());
            }
            if done.is_none() && me.status_key().as_deref() == Some(key.as_str()) {
                done = Some(t0.elapsed());
                // What it held when its Status first named the write key.
                received = sealed;
            }
            (done.is_some() && all.is_some()).then_some(())
        });
        let me = self.nodes.pop().unwrap();
        let (done, all) = (done.unwrap(), all.unwrap());
        let a = Admission {
            node: name.clone(),
            up,
            published,
            passes,
            first_kek,
            done,
            received,
            all,
            live,
        };
        println!(
            "  {name}: Status on {key} {:.0} ms after its spawn, holding {received} of the {live} \
             KEKs; all {live} by {:.0} ms",
            done.as_secs_f64() * 1e3,
            all.as_secs_f64() * 1e3
        );
        drop(me);
        let (s, v) =
            self.nodes[0].d().keys("DELETE", &format!("/v1/kms/cluster/nodes/{name}"), None);
        assert_eq!(s, 200, "DELETE /v1/kms/cluster/nodes/{name}: {v}");
        a
    }

    /// Encrypt and Decrypt of n1 and n2 against single nodes with the same
    /// sealers, `rounds` times.
    fn latency(&mut self, rounds: usize) -> Latency {
        println!("Encrypt/Decrypt, {rounds} rounds; load average {}", load());
        let w = self.work.path().to_owned();
        let singles = [
            ("single-a", Sealing::Hsm),
            ("single-b", Sealing::Hsm),
            ("single-c", Sealing::Hsm),
            ("single-t", Sealing::Tpm),
        ];
        let mut singles: Vec<Node> = singles
            .into_iter()
            .map(|(name, s)| {
                let mut n = Node::new(name, s, &self.ca, &w);
                let config = n.single();
                n.start(&config);
                n
            })
            .collect();
        for n in &mut singles {
            let deadline = Instant::now() + GIVE_UP;
            while n.status_key().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "{} does not answer Status\n{}",
                    n.name,
                    n.log()
                );
                thread::sleep(STATUS_EVERY);
            }
        }
        // C rotated as often as n1 was: as many KEKs in its token.
        let (s, v) = self.nodes[0].d().keys("GET", "/v1/kms", None);
        assert_eq!(s, 200, "n1: GET /v1/kms: {v}");
        for _ in 1..v["keks"].as_array().map_or(1, Vec::len) {
            let (s, v) = singles[2].d().keys("POST", "/v1/kms/rotate", None);
            assert_eq!(s, 201, "single node C: POST /v1/kms/rotate: {v}");
        }
        let targets = vec![
            self.nodes[0].target(HSM_CLUSTERED),
            singles[0].target(HSM_SINGLE_A),
            singles[1].target(HSM_SINGLE_B),
            singles[2].target(HSM_SINGLE_C),
            self.nodes[1].target(TPM_CLUSTERED),
            singles[3].target(TPM_SINGLE),
        ];
        // The nodes' own CPU with no calls: what a clustered node's polls
        // cost in the background.
        let idle: Vec<u64> = targets.iter().map(|t| cpu_ns(t.pid)).collect();
        thread::sleep(IDLE);
        for (t, c0) in targets.iter().zip(idle) {
            let ms = cpu_ns(t.pid).saturating_sub(c0) as f64 / 1e6 / IDLE.as_secs_f64();
            println!("  {}: {ms:.2} ms of CPU per second idle", t.name);
        }
        let (ghz_bin, proto) = (ghz_bin(), kms_proto());
        let bodies: Vec<[Value; 3]> = targets.iter().map(|t| ghz_bodies(&t.socket)).collect();
        let mut l = Latency { targets: targets.clone(), runs: BTreeMap::new() };
        for round in 0..rounds {
            for (ci, call) in [(1, "Encrypt"), (2, "Decrypt")] {
                let (turns, _) = interleaved(&targets, call, CALLS, || {});
                for k in 0..targets.len() {
                    // Take turns, the first place rotating from round to round.
                    let i = (k + round) % targets.len();
                    let t = &targets[i];
                    let cpu = cpu_ns(t.pid);
                    let mut f =
                        ghz(&ghz_bin, &proto, &t.socket, call, 1, GHZ_CALLS, &bodies[i][ci]);
                    f.cpu_us =
                        cpu_ns(t.pid).saturating_sub(cpu) as f64 / 1e3 / f64::from(GHZ_CALLS);
                    l.runs.entry((t.name, call)).or_default().push(Run {
                        turns: turns[i],
                        ghz_p50: f.p50_us,
                        ghz_p99: f.p99_us,
                        ghz_ops: f.rps,
                    });
                }
            }
            println!("  round {round} done; load average {}", load());
        }
        // What each node's KEKs are and how its token calls ran.
        for (name, n) in [
            (HSM_CLUSTERED, &self.nodes[0]),
            (HSM_SINGLE_A, &singles[0]),
            (HSM_SINGLE_B, &singles[1]),
            (HSM_SINGLE_C, &singles[2]),
            (TPM_CLUSTERED, &self.nodes[1]),
            (TPM_SINGLE, &singles[3]),
        ] {
            let (s, v) = n.d().keys("GET", "/v1/kms", None);
            assert_eq!(s, 200, "{name}: GET /v1/kms: {v}");
            let keks = v["keks"].as_array().map_or(0, Vec::len);
            let write = v["keks"]
                .as_array()
                .and_then(|k| k.iter().find(|k| k["state"] == "write"))
                .map_or(Value::Null, |k| k["location"].clone());
            println!("  {name}: {keks} KEKs, the write key {write}; token ops {}", v["token_ops"]);
        }
        l
    }
}

const HSM_CLUSTERED: &str = "n1, clustered (SoftHSM2)";
const HSM_SINGLE_A: &str = "single node A (SoftHSM2)";
const HSM_SINGLE_B: &str = "single node B (SoftHSM2)";
const HSM_SINGLE_C: &str = "single node C (SoftHSM2, as many KEKs as n1)";
const TPM_CLUSTERED: &str = "n2, clustered (TPM)";
const TPM_SINGLE: &str = "single node (TPM)";

/// One round's figures of one node and call.
struct Run {
    turns: Turns,
    ghz_p50: f64,
    ghz_p99: f64,
    ghz_ops: f64,
}

/// A figure the verdict judges: its name, how to read it off a round, and
/// whether higher is better.
type Figure = (&'static str, fn(&Run) -> f64, bool);

/// Every round's figures, by (node, call).
struct Latency {
    targets: Vec<Target>,
    runs: BTreeMap<(&'static str, &'static str), Vec<Run>>,
}

impl Latency {
    fn print(&self, rounds: usize) {
        println!(
            "## Encrypt/Decrypt, c=1: {rounds} rounds; call by call ({CALLS} calls per node per \
             round, the nodes taking turns from one tonic client) and ghz (-n {GHZ_CALLS}); \
             median round (range)"
        );
        println!(
            "| node | call | call by call p50 / p99 µs | call by call ops/s | ghz p50 / p99 µs | ghz ops/s | CPU µs/call (call by call) |"
        );
        println!("|---|---|---|---|---|---|---|");
        for call in ["Encrypt", "Decrypt"] {
            for t in &self.targets {
                let v = &self.runs[&(t.name, call)];
                let col = |f: fn(&Run) -> f64| cell(v.iter().map(f).collect());
                println!(
                    "| {} | {call} | {} / {} | {} | {} / {} | {} | {} |",
                    t.name,
                    col(|r| r.turns.p50_us),
                    col(|r| r.turns.p99_us),
                    col(|r| r.turns.ops),
                    col(|r| r.ghz_p50),
                    col(|r| r.ghz_p99),
                    col(|r| r.ghz_ops),
                    col(|r| r.turns.cpu_us),
                );
            }
        }
        println!();
        println!(
            "clustered minus single, round by round (median, range), against the single node's \
             run-to-run spread (its highest round minus its lowest); for SoftHSM2 also two \
             identical single nodes' difference (A−B) and that of a single node with as many \
             KEKs as n1 (C−A), median rounds:"
        );
        let figures: [Figure; 5] = [
            ("call-by-call p50 µs", |r| r.turns.p50_us, false),
            ("call-by-call p99 µs", |r| r.turns.p99_us, false),
            ("ghz p50 µs", |r| r.ghz_p50, false),
            ("ghz p99 µs", |r| r.ghz_p99, false),
            ("ghz ops/s", |r| r.ghz_ops, true),
        ];
        for call in ["Encrypt", "Decrypt"] {
            let hsm = [("A−B", HSM_SINGLE_A, HSM_SINGLE_B), ("C−A", HSM_SINGLE_C, HSM_SINGLE_A)];
            for (clustered, single, others) in
                [(HSM_CLUSTERED, HSM_SINGLE_A, &hsm[..]), (TPM_CLUSTERED, TPM_SINGLE, &[])]
            {
                let (c, s) = (&self.runs[&(clustered, call)], &self.runs[&(single, call)]);
                for (what, f, higher_better) in figures {
                    let diff: Vec<f64> = c.iter().zip(s).map(|(c, s)| f(c) - f(s)).collect();
                    let (d, lo, hi) = spread(diff);
                    let (_, s_lo, s_hi) = spread(s.iter().map(f).collect());
                    let noise = s_hi - s_lo;
                    let others: String = others
                        .iter()
                        .map(|(label, x, y)| {
                            let (x, y) = (&self.runs[&(*x, call)], &self.runs[&(*y, call)]);
                            let d = spread(x.iter().zip(y).map(|(x, y)| f(x) - f(y)).collect()).0;
                            format!("; {label} {d:+.0}")
                        })
                        .collect();
                    // Worse is higher latency, or fewer ops/s.
                    let worse = if higher_better { -d } else { d };
                    let verdict = if worse <= noise { "within" } else { "OUTSIDE" };
                    println!(
                        "  {call} {clustered} vs {single}, {what}: {d:+.0} ({lo:+.0} to {hi:+.0}); \
                         spread {noise:.0}{others}: {verdict}"
                    );
                }
            }
        }
    }
}
