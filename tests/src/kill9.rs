//! The kill -9 campaign: start `qkeyd serve` on one state directory, fire key
//! and KEK lifecycle requests at it (create, rotate, destroy keys; rotate and
//! retire KMS KEKs; KMS Encrypt), SIGKILL it after a random delay, start it
//! again, and check the state against what was acknowledged, round after
//! round. The e2e suite runs a short campaign (`keys::kill_minus_nine_*`);
//! `tests/campaigns/kill9.sh` (`src/bin/kill9_campaign.rs`) runs a long one.
//!
//! After every restart:
//! - the daemon started (within the harness's 60 s);
//! - every key whose create was acknowledged, and not its destroy, is listed,
//!   at least at the version last acknowledged, and works at that version;
//!   every key whose destroy was acknowledged is gone;
//! - every key version the API lists has its `create`/`rotate` line in
//!   `audit.log` as the last word on it (outcome `ok`), every
//!   version the log says is stored is listed, and every line of the log is
//!   whole JSON; the only lines start-up had to add (`"recovered": true`)
//!   close versions whose line was written but whose rename the kill
//!   prevented (`aborted`): no version ever reached the disk before its line;
//! - a rotated ML-KEM key refuses decapsulation without a version;
//! - every acknowledged KEK rotation is listed (or retired, if its retirement
//!   was asked for), every acknowledged retirement is in `retired`, the write
//!   key is the last acknowledged rotation unless a later one was cut short,
//!   and every acknowledged Encrypt under a KEK that was not retired decrypts.

use std::{
    collections::{HashMap, HashSet},
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{Daemon, kms::Client};

/// What a campaign does.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Kill-and-restart rounds.
    pub rounds: usize,
    /// Seed of the random choices (operations, delays).
    pub seed: u64,
    /// The kill comes after a delay drawn from `0..max_delay`.
    pub max_delay: Duration,
    /// Print one line per round on standard error.
    pub verbose: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            rounds: 25,
            seed: 0x9e37_79b9_7f4a_7c15,
            max_delay: Duration::from_millis(120),
            verbose: false,
        }
    }
}

/// One failed check.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The round (0-based; `rounds` is the final check).
    pub round: usize,
    /// What was wrong.
    pub what: String,
}

/// What a campaign found.
#[derive(Debug, Default)]
pub struct Report {
    /// Rounds run.
    pub rounds: usize,
    /// Every failed check; empty if all held.
    pub failures: Vec<Failure>,
    /// From spawning `qkeyd serve` to its "listening" line, per start.
    pub restarts: Vec<Duration>,
    /// Acknowledged operations, by name.
    pub acked: HashMap<&'static str, usize>,
    /// Operations cut short by the kill (no answer), by name.
    pub cut: HashMap<&'static str, usize>,
    /// Lines start-up added to `audit.log` (`"recovered": true`), at the end.
    pub recovered_lines: usize,
    /// The state directories kept after a failure, for a look.
    pub kept: Vec<PathBuf>,
}

impl Report {
    /// A few lines: rounds, failures, operations, restart times.
    pub fn summary(&self) -> String {
        let mut r = self.restarts.clone();
        r.sort();
        let pct = |p: f64| {
            r.get(((r.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let mut ops: Vec<_> = self.acked.iter().collect();
        ops.sort();
        let ops: Vec<_> = ops
            .iter()
            .map(|(k, n)| format!("{k} {n} acked/{} cut", self.cut.get(*k).unwrap_or(&0)))
            .collect();
        format!(
            "rounds: {}\nfailures: {}\nrestarts: {} (ms: p50 {:.0}, p95 {:.0}, max {:.0})\noperations: {}\nrecovered audit lines (aborted versions): {}",
            self.rounds,
            self.failures.len(),
            r.len(),
            pct(0.5),
            pct(0.95),
            pct(1.0),
            ops.join(", "),
            self.recovered_lines
        )
    }
}

/// What was acknowledged about one key.
#[derive(Clone, Debug)]
struct Key {
    alg: &'static str,
    /// Highest version acknowledged (by create or rotate).
    version: u32,
    /// A destroy was sent (acknowledged or not).
    destroy_sent: bool,
    /// A destroy was acknowledged.
    destroyed: bool,
}

/// What was acknowledged, across rounds.
#[derive(Debug, Default)]
struct Book {
    keys: HashMap<String, Key>,
    /// Acknowledged KEK rotations, in order.
    keks: Vec<String>,
    /// KEKs whose retirement was sent / acknowledged.
    retire_sent: HashSet<String>,
    retired: HashSet<String>,
    /// A rotation was sent after the last acknowledged one and not answered.
    kek_rotation_cut: bool,
    /// Acknowledged Encrypt answers.
    sealed: Vec<Sealed>,
    /// Keys the last round sent something about.
    touched: HashSet<String>,
    /// `sealed` before the last round.
    sealed_before: usize,
}

/// An acknowledged KMS Encrypt.
#[derive(Debug)]
struct Sealed {
    key_id: String,
    ciphertext: Vec<u8>,
    annotations: HashMap<String, Vec<u8>>,
    plaintext: Vec<u8>,
}

/// An operation the worker sent, and its answer if one came.
enum Sent {
    Create { alg: &'static str, id: Option<String> },
    Rotate { id: String, version: Option<u32> },
    Destroy { id: String, done: bool },
    KekRotate { key_id: Option<String> },
    KekRetire { key_id: String, done: bool },
    Encrypt { sealed: Option<Sealed> },
}

impl Sent {
    fn name(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create",
            Self::Rotate { .. } => "rotate",
            Self::Destroy { .. } => "destroy",
            Self::KekRotate { .. } => "kek-rotate",
            Self::KekRetire { .. } => "kek-retire",
            Self::Encrypt { .. } => "kms-encrypt",
        }
    }

    fn acked(&self) -> bool {
        match self {
            Self::Create { id, .. } => id.is_some(),
            Self::Rotate { version, .. } => version.is_some(),
            Self::Destroy { done, .. } | Self::KekRetire { done, .. } => *done,
            Self::KekRotate { key_id } => key_id.is_some(),
            Self::Encrypt { sealed } => sealed.is_some(),
        }
    }
}

/// xorshift64: the campaign's choices, reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A REST call that never panics: `None` if no answer came.
fn try_call(
    agent: &ureq::Agent,
    addr: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut b = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let req = b.body(body.map(|v| v.to_string()).unwrap_or_default()).ok()?;
    let mut resp = agent.run(req).ok()?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

const CONFIG: &str = "[[source]]\nname = \"os\"\nkind = \"os\"\n";

/// Run a campaign in a fresh directory.
pub fn run(settings: &Settings) -> Report {
    let mut report = Report::default();
    let mut rng = Rng(settings.seed | 1);
    let mut root = tempfile::tempdir().expect("temp dir");
    let mut book = Book::default();
    let mut round = 0;
    while round <= settings.rounds {
        let last = round == settings.rounds;
        let state = root.path().join("state");
        let socket = root.path().join("kms.sock");
        let started = Instant::now();
        let daemon = catch_unwind(AssertUnwindSafe(|| {
            Daemon::start_with_args(
                tempfile::tempdir().expect("temp dir"),
                CONFIG,
                &state,
                &["--kms-socket", socket.to_str().expect("utf-8 path")],
            )
        }));
        let daemon = match daemon {
            Ok(d) => d,
            Err(e) => {
                let what = format!("the daemon did not start: {}", panic_text(&e));
                fail(&mut report, &mut root, &mut book, round, what);
                round += 1;
                continue;
            }
        };
        report.restarts.push(started.elapsed());
        let checked = catch_unwind(AssertUnwindSafe(|| check(&daemon, &socket, &book, &mut rng)));
        if let Err(e) = checked {
            let log = daemon.log();
            drop(daemon);
            let what = format!("{}\n--- daemon log (tail) ---\n{}", panic_text(&e), tail(&log, 30));
            fail(&mut report, &mut root, &mut book, round, what);
            round += 1;
            continue;
        }
        if last {
            report.recovered_lines =
                audit_lines(&state).iter().filter(|l| l["recovered"] == true).count();
            break;
        }
        let sent = fire_and_kill(daemon, &socket, &book, &mut rng, settings.max_delay);
        for s in &sent {
            let counts = if s.acked() { &mut report.acked } else { &mut report.cut };
            *counts.entry(s.name()).or_default() += 1;
        }
        book.apply(sent);
        if settings.verbose {
            eprintln!(
                "round {round}: {} keys, {} KEKs, restart {:?}, {} failures",
                book.keys.values().filter(|k| !k.destroyed).count(),
                book.keks.len(),
                report.restarts.last().copied().unwrap_or_default(),
                report.failures.len()
            );
        }
        round += 1;
    }
    report.rounds = settings.rounds;
    report
}

/// Record a failure, keep the state directory for a look, and go on with a
/// fresh one (what was acknowledged there no longer applies).
fn fail(
    report: &mut Report,
    root: &mut tempfile::TempDir,
    book: &mut Book,
    round: usize,
    what: String,
) {
    eprintln!("kill9: round {round} FAILED: {what}");
    report.failures.push(Failure { round, what });
    let fresh = tempfile::tempdir().expect("temp dir");
    let old = std::mem::replace(root, fresh);
    report.kept.push(old.keep());
    *book = Book::default();
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".into())
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<_> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Book {
    fn apply(&mut self, sent: Vec<Sent>) {
        self.touched.clear();
        self.sealed_before = self.sealed.len();
        for s in sent {
            match s {
                Sent::Create { alg, id: Some(id) } => {
                    self.touched.insert(id.clone());
                    self.keys
                        .insert(id, Key { alg, version: 1, destroy_sent: false, destroyed: false });
                }
                Sent::Create { id: None, .. } => {}
                Sent::Rotate { id, version } => {
                    if let (Some(v), Some(k)) = (version, self.keys.get_mut(&id)) {
                        k.version = k.version.max(v);
                    }
                    self.touched.insert(id);
                }
                Sent::Destroy { id, done } => {
                    if let Some(k) = self.keys.get_mut(&id) {
                        k.destroy_sent = true;
                        k.destroyed |= done;
                    }
                    self.touched.insert(id);
                }
                Sent::KekRotate { key_id: Some(k) } => {
                    self.keks.push(k);
                    self.kek_rotation_cut = false;
                }
                Sent::KekRotate { key_id: None } => self.kek_rotation_cut = true,
                Sent::KekRetire { key_id, done } => {
                    self.retire_sent.insert(key_id.clone());
                    if done {
                        self.retired.insert(key_id);
                    }
                }
                Sent::Encrypt { sealed: Some(s) } => self.sealed.push(s),
                Sent::Encrypt { sealed: None } => {}
            }
        }
    }

    /// Keys that may be used for rotate/destroy: created, no destroy sent.
    fn live(&self) -> Vec<String> {
        let mut v: Vec<_> =
            self.keys.iter().filter(|(_, k)| !k.destroy_sent).map(|(id, _)| id.clone()).collect();
        v.sort();
        v
    }
}

/// Start a worker that sends lifecycle requests one after another; SIGKILL
/// the daemon after a random delay; hand back what was sent and answered.
fn fire_and_kill(
    daemon: Daemon,
    socket: &Path,
    book: &Book,
    rng: &mut Rng,
    max_delay: Duration,
) -> Vec<Sent> {
    let addr = daemon.addr.to_string();
    let token = daemon.token();
    let mut live = book.live();
    let mut keks: Vec<String> =
        book.keks.iter().filter(|k| !book.retire_sent.contains(*k)).cloned().collect();
    let socket = socket.to_str().expect("utf-8 path").to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let mut worker_rng = Rng(rng.next() | 1);
    let stop_w = stop.clone();
    let worker = thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut kms = catch_unwind(|| Client::connect(&socket)).ok();
        let mut sent = Vec::new();
        let call = |m: &str, p: &str, b: Option<Value>| try_call(&agent, &addr, &token, m, p, b);
        while !stop_w.load(Ordering::Relaxed) {
            let pick = worker_rng.below(100);
            // Keep the number of keys bounded: past 30, a create becomes a destroy.
            let pick = if live.len() > 30 && pick < 30 { 60 } else { pick };
            // Whether an answer came (a refusal is an answer too).
            let answered;
            let s = match pick {
                0..30 => {
                    let alg = if pick % 2 == 0 { "ml-kem-512" } else { "ml-dsa-44" };
                    let r = call("POST", "/v1/keys", Some(json!({ "alg": alg, "label": "kill9" })));
                    answered = r.is_some();
                    let id = r
                        .filter(|(s, _)| *s == 201)
                        .and_then(|(_, k)| k["id"].as_str().map(str::to_owned));
                    if let Some(id) = &id {
                        live.push(id.clone());
                    }
                    Sent::Create { alg, id }
                }
                30..55 if !live.is_empty() => {
                    let id = live[worker_rng.below(live.len() as u64) as usize].clone();
                    let r = call("POST", &format!("/v1/keys/{id}/rotate"), None);
                    answered = r.is_some();
                    let version = r
                        .filter(|(s, _)| *s == 200)
                        .and_then(|(_, k)| k["current_version"].as_u64())
                        .map(|v| v as u32);
                    Sent::Rotate { id, version }
                }
                55..68 if !live.is_empty() => {
                    let id = live.swap_remove(worker_rng.below(live.len() as u64) as usize);
                    let r = call("DELETE", &format!("/v1/keys/{id}"), None);
                    answered = r.is_some();
                    Sent::Destroy { id, done: r.is_some_and(|(s, _)| s == 204) }
                }
                68..78 => {
                    let r = call("POST", "/v1/kms/rotate", None);
                    answered = r.is_some();
                    let key_id = r
                        .filter(|(s, _)| *s == 201)
                        .and_then(|(_, k)| k["key_id"].as_str().map(str::to_owned));
                    if let Some(k) = &key_id {
                        keks.push(k.clone());
                    }
                    Sent::KekRotate { key_id }
                }
                78..85 if keks.len() > 1 => {
                    // Never the newest: it may be the write key.
                    let i = worker_rng.below(keks.len() as u64 - 1) as usize;
                    let key_id = keks.remove(i);
                    let r = call("DELETE", &format!("/v1/kms/keks/{key_id}?force=true"), None);
                    answered = r.is_some();
                    Sent::KekRetire { key_id, done: r.is_some_and(|(s, _)| s == 204) }
                }
                85.. => {
                    let plaintext = worker_rng.next().to_le_bytes().repeat(4);
                    let sealed =
                        kms.as_mut().and_then(|c| c.encrypt(&plaintext).ok()).map(|r| Sealed {
                            key_id: r.key_id,
                            ciphertext: r.ciphertext,
                            annotations: r.annotations,
                            plaintext,
                        });
                    answered = sealed.is_some();
                    Sent::Encrypt { sealed }
                }
                _ => continue,
            };
            sent.push(s);
            if !answered {
                break;
            }
        }
        sent
    });
    thread::sleep(Duration::from_micros(rng.below(max_delay.as_micros() as u64)));
    let _dir = daemon.kill();
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap_or_default()
}

/// Every line of the audit log, as JSON; panics on a line that is not whole.
fn audit_lines(state: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(state.join("audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("audit.log line is not whole JSON ({e}): {l}"))
        })
        .collect()
}

/// The checks after a restart (panics on the first that fails).
fn check(d: &Daemon, socket: &Path, book: &Book, rng: &mut Rng) {
    let (s, list) = d.keys("GET", "/v1/keys", None);
    assert_eq!(s, 200, "GET /v1/keys: {list}");
    let listed: HashMap<String, Value> = list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| (k["id"].as_str().expect("id").to_owned(), k.clone()))
        .collect();

    // The audit log: whole lines, and the last lifecycle word per version.
    let lines = audit_lines(&d.state);
    let mut last: HashMap<(String, u64), (String, String)> = HashMap::new();
    for l in &lines {
        let op = l["op"].as_str().unwrap_or_default();
        if matches!(op, "create" | "rotate" | "destroy")
            && let (Some(k), Some(v)) = (l["key"].as_str(), l["version"].as_u64())
        {
            let outcome = l["outcome"].as_str().unwrap_or_default().to_owned();
            last.insert((k.to_owned(), v), (op.to_owned(), outcome));
        }
    }
    for l in lines.iter().filter(|l| l["recovered"] == true) {
        assert!(
            l["outcome"].as_str().is_some_and(|o| o.starts_with("aborted")),
            "start-up had to add this line: a change took effect before its audit line: {l}"
        );
    }
    let stored = |(op, outcome): &(String, String)| op != "destroy" && outcome == "ok";
    for (id, k) in &listed {
        for v in k["versions"].as_array().expect("versions") {
            let v = v["version"].as_u64().expect("version");
            let word = last.get(&(id.clone(), v));
            assert!(
                word.is_some_and(stored),
                "key {id} version {v} is listed, but audit.log's last word on it is {word:?}"
            );
        }
    }
    for ((id, v), word) in &last {
        if stored(word) {
            let listed_v = listed.get(id).and_then(|k| {
                k["versions"].as_array().map(|vs| vs.iter().any(|x| x["version"] == *v))
            });
            assert_eq!(
                listed_v,
                Some(true),
                "audit.log says key {id} version {v} is stored, but the API does not list it"
            );
        }
    }

    // Nothing half-written or half-destroyed is left after a start.
    for f in walk(&d.state.join("keys")) {
        assert!(!f.ends_with(".tmp") && !f.contains(".destroy-"), "left after start-up: {f}");
    }

    // What was acknowledged.
    let mut to_use = Vec::new();
    for (id, k) in &book.keys {
        if k.destroyed {
            assert!(
                !listed.contains_key(id),
                "key {id} was destroyed (acknowledged) but is listed"
            );
            assert!(
                last.iter().any(|((i, _), (op, o))| i == id && op == "destroy" && o == "ok"),
                "key {id} was destroyed (acknowledged) but audit.log has no destroy line"
            );
            continue;
        }
        let Some(entry) = listed.get(id) else {
            assert!(k.destroy_sent, "key {id} (create acknowledged) is lost");
            continue;
        };
        let current = entry["current_version"].as_u64().expect("current_version");
        assert!(
            current >= u64::from(k.version),
            "key {id}: version {} was acknowledged, the API lists {current}",
            k.version
        );
        to_use.push((id.clone(), k.alg, k.version));
    }
    // Keys nobody was told of (a create cut short) are used too.
    for (id, k) in &listed {
        if !book.keys.contains_key(id) {
            let alg = k["alg"].as_str().expect("alg");
            let alg = if alg.starts_with("ml-kem") { "ml-kem-512" } else { "ml-dsa-44" };
            to_use.push((id.clone(), alg, 1));
        }
    }
    // Every key the last round touched, or nobody was told of, is used; of
    // the others, a few at random.
    to_use.sort();
    let (now, rest): (Vec<_>, Vec<_>) = to_use
        .into_iter()
        .partition(|(id, _, _)| !book.keys.contains_key(id) || book.touched.contains(id));
    for (id, alg, v) in now.iter().chain(sample(rest.iter(), SAMPLE, rng)) {
        use_key(d, id, alg, *v);
    }

    // KMS.
    let (s, kms) = d.keys("GET", "/v1/kms", None);
    assert_eq!(s, 200, "GET /v1/kms: {kms}");
    let ids = |field: &str| -> HashSet<String> {
        kms[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["key_id"].as_str().map(str::to_owned))
            .collect()
    };
    let (keks, retired) = (ids("keks"), ids("retired"));
    for k in &book.keks {
        if book.retired.contains(k) {
            assert!(
                retired.contains(k) && !keks.contains(k),
                "KEK {k}: retirement acknowledged, but {kms}"
            );
        } else if !book.retire_sent.contains(k) {
            assert!(
                keks.contains(k),
                "KEK {k}: rotation acknowledged, but it is not listed: {kms}"
            );
        }
    }
    // Every KEK that decrypts, and every retired one, has its audit line,
    // and none had to be added at start.
    let kek_word =
        |op: &str, k: &str| {
            lines.iter().rev().find(|l| l["op"] == op && l["key"] == k).map(|l| {
                (l["outcome"].as_str().unwrap_or_default().to_owned(), l["recovered"] == true)
            })
        };
    for k in &keks {
        assert_eq!(
            kek_word("kek-create", k),
            Some(("ok".to_owned(), false)),
            "KEK {k} is listed, but audit.log's last kek-create word on it is not ok"
        );
    }
    for k in &retired {
        assert_eq!(
            kek_word("kek-retire", k),
            Some(("ok".to_owned(), false)),
            "KEK {k} is retired, but audit.log's last kek-retire word on it is not ok"
        );
    }
    let write = kms["write_key_id"].as_str().unwrap_or_default().to_owned();
    assert!(keks.contains(&write), "the write key {write} is not among the KEKs: {kms}");
    if let Some(newest) = book.keks.last()
        && !book.kek_rotation_cut
    {
        assert_eq!(&write, newest, "the write key is not the last acknowledged rotation");
    }
    let mut client = Client::connect(socket.to_str().expect("utf-8 path"));
    let fresh = book.sealed_before..book.sealed.len();
    let (now, rest): (Vec<_>, Vec<_>) = book
        .sealed
        .iter()
        .enumerate()
        .filter(|(_, s)| !book.retire_sent.contains(&s.key_id))
        .partition(|(i, _)| fresh.contains(i));
    for (_, s) in now.iter().chain(sample(rest.iter(), SAMPLE, rng)) {
        let out = client.decrypt(&s.key_id, &s.ciphertext, &s.annotations);
        assert_eq!(
            out.as_deref().ok(),
            Some(&s.plaintext[..]),
            "Encrypt under {} was acknowledged: {out:?}",
            s.key_id
        );
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read the keystore").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p.display().to_string());
    }
    out
}

/// How many of the keys and ciphertexts not touched in the last round are
/// checked after each restart (all of them at the end would make a long
/// campaign quadratic).
const SAMPLE: usize = 6;

/// Up to `n` items of `items`, at random.
fn sample<'a, T>(items: impl Iterator<Item = &'a T>, n: usize, rng: &mut Rng) -> Vec<&'a T> {
    let mut all: Vec<_> = items.collect();
    let mut out = Vec::new();
    while out.len() < n && !all.is_empty() {
        out.push(all.swap_remove(rng.below(all.len() as u64) as usize));
    }
    out
}

/// Use a key at `version` through the REST API and check the answers.
fn use_key(d: &Daemon, id: &str, alg: &str, version: u32) {
    if alg.starts_with("ml-kem") {
        let (s, e) = d.keys(
            "POST",
            &format!("/v1/keys/{id}/encapsulate"),
            Some(json!({ "version": version })),
        );
        assert_eq!(s, 200, "key {id} v{version}: encapsulate: {e}");
        let (s, k) = d.keys(
            "POST",
            &format!("/v1/keys/{id}/decapsulate"),
            Some(json!({ "ciphertext": e["ciphertext"], "version": e["version"] })),
        );
        assert_eq!(s, 200, "key {id} v{version}: decapsulate: {k}");
        assert_eq!(k["shared_secret"], e["shared_secret"], "key {id} v{version}: another secret");
        let (s, v) = d.keys("GET", &format!("/v1/keys/{id}"), None);
        if s == 200 && v["versions"].as_array().is_some_and(|a| a.len() > 1) {
            let (s, r) = d.keys(
                "POST",
                &format!("/v1/keys/{id}/decapsulate"),
                Some(json!({ "ciphertext": e["ciphertext"] })),
            );
            assert_eq!(s, 409, "key {id}: decapsulate without a version after a rotation: {r}");
        }
    } else {
        let msg = "a2lsbCAtOQ==";
        let (s, sig) = d.keys(
            "POST",
            &format!("/v1/keys/{id}/sign"),
            Some(json!({ "message": msg, "version": version })),
        );
        assert_eq!(
            (s, sig["version"].as_u64()),
            (200, Some(u64::from(version))),
            "key {id}: sign: {sig}"
        );
        let (s, r) = d.keys(
            "POST",
            &format!("/v1/keys/{id}/verify"),
            Some(json!({ "message": msg, "signature": sig["signature"] })),
        );
        assert_eq!(s, 200, "key {id}: verify: {r}");
        assert_eq!(
            (r["valid"].as_bool(), r["version"].as_u64()),
            (Some(true), Some(u64::from(version))),
            "key {id}: {r}"
        );
    }
}
