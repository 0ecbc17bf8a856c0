//! KMS KEKs shared by qkeyd nodes through etcd (`[kms.cluster]`): nodes on
//! their own software TPMs (one sealing with SoftHSM2, two with the TPM)
//! admit each other by TPM evidence under a verifier policy, follow one write
//! key, and serve three kube-apiservers that read each other's Secrets. Then
//! the faults: two rotations at once, a node killed and restarted, nodes
//! whose PCRs changed, whose AK is unknown or that have no TPM, envelopes
//! forged or changed in etcd, a node that served alone before it joined, a
//! node removed, etcd gone and back, a KEK retired on every node; and no KEK
//! in the clear anywhere under the prefix.
//!
//! Where the machine allows it (root, iproute2), each node is a separate
//! host: a network namespace of its own, its swtpm on that namespace's
//! loopback, reaching etcd over a private LAN at the address of the root
//! namespace on it (`netns`). Elsewhere, or with `QKEYD_E2E_NO_NETNS=1`,
//! the nodes share this machine's loopback.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use base64::Engine as _;
use qkeyd_e2e::{
    Daemon, HSM_PIN, Options, SoftHsm, Swtpm, kms::Client, kms_proto::EncryptResponse, metric,
    pki::Ca, qkeyd_bin,
};
use serde_json::{Value, json};
use tonic::Code;

use super::{
    attest::attest,
    k8s_peers::{Apiserver, Etcd, EtcdTls, TlsFiles, binaries, contains, tail},
    kms::seed,
    netns::{Host, Lan},
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The default prefix: the nodes' config leaves it out.
const PREFIX: &str = "/qkeyd/v1/";
/// `poll_interval_secs` of every node.
const POLL: Duration = Duration::from_secs(1);
/// How long the nodes may take to agree after a change: many polls, each
/// with TPM quotes, seals and unseals on a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);
/// How kube-apiserver marks a value its `qkeyd` KMS v2 provider encrypted.
const STORED: &[u8] = b"k8s:enc:kms:v2:qkeyd:";
/// ML-KEM-1024 ciphertext and encapsulation key (FIPS 203, Table 3).
const ML_KEM_1024: usize = 1568;
/// ML-DSA-87 signature (FIPS 204, Table 2).
const ML_DSA_87_SIG: usize = 4627;
/// An AES-256 KEK, and what AES-GCM adds to it.
const KEK_LEN: usize = 32;
const GCM_TAG: usize = 16;
const GCM_IV: usize = 12;

#[test]
fn three_apiservers_read_each_others_secrets_and_follow_a_rotation() {
    let mut c = Cluster::start();
    let k1 = c.write_key();
    c.start_apiservers();
    let pid = std::process::id();
    let value = |x: &str| format!("qkeyd-cluster-{x}-{pid}");
    for (i, x) in APISERVERS.iter().enumerate() {
        let (name, literal) = (format!("via-{x}"), format!("--from-literal=value={}", value(x)));
        c.kubectl(i, &["create", "secret", "generic", &name, &literal]);
    }
    // Each apiserver decrypts the DEK seeds the others' nodes encrypted.
    for x in APISERVERS {
        let name = format!("via-{x}");
        for (j, reader) in APISERVERS.iter().enumerate() {
            assert_eq!(c.secret(j, &name), value(x).as_bytes(), "{name} read through {reader}");
        }
        let raw = c.etcd_secret(&name);
        assert!(raw.starts_with(STORED), "{name} in etcd: {:?}", lossy_head(&raw));
        assert!(!contains(&raw, value(x).as_bytes()), "{name} is in the clear in etcd");
        assert!(contains(&raw, k1.as_bytes()), "{name} is not under the cluster key {k1}");
    }

    // Settled, a node's poll is one small read that finds nothing changed;
    // the rotation below still reaches every node.
    for n in ["n1", "n2", "n3"] {
        c.wait(&format!("{n} to find nothing to sync"), SETTLE, || {
            let m = c.node(n).d().metrics();
            let series = "qkeyd_kms_cluster_polls_total{outcome=\"unchanged\"}";
            metric(&m, series).filter(|v| *v >= 1.0).ok_or_else(|| format!("{n}:\n{m}"))
        });
    }

    // A rotation on n1 reaches every node; a restarted apiserver (a fresh
    // Status, no DEK cached) writes under the new key at once.
    let out = c.node("n1").run(&["rotate"]);
    assert_eq!(out.code, Some(0), "qkeyd kms rotate on n1: {out}\n{}", c.logs());
    let k2 = out.stdout.trim().to_owned();
    assert!(k2.starts_with("qkeyd-kek-") && k2 != k1, "{out}");
    c.wait_all_on(&["n1", "n2", "n3"], &k2);
    c.apis[2].restart();
    c.kubectl(
        2,
        &["create", "secret", "generic", "after-rotation", "--from-literal=value=rotated"],
    );
    let raw = c.etcd_secret("after-rotation");
    assert!(raw.starts_with(STORED), "{:?}", lossy_head(&raw));
    assert!(contains(&raw, k2.as_bytes()), "written through c after the rotation, not under {k2}");
    assert!(!contains(&raw, k1.as_bytes()));
    for (j, reader) in APISERVERS.iter().enumerate() {
        assert_eq!(c.secret(j, "after-rotation"), b"rotated", "read through {reader}");
        // The old Secrets still read everywhere (on c through a cold cache:
        // n3 decrypts under the old key).
        for x in APISERVERS {
            let name = format!("via-{x}");
            assert_eq!(c.secret(j, &name), value(x).as_bytes(), "{name} through {reader}");
        }
    }
}

#[test]
fn cluster_keks_survive_races_node_faults_and_an_etcd_outage() {
    let mut c = Cluster::start();
    let k1 = c.write_key();
    let old1 = c.node("n1").encrypt(&seed(1));
    let old3 = c.node("n3").encrypt(&seed(3));
    assert_eq!((old1.key_id.as_str(), old3.key_id.as_str()), (k1.as_str(), k1.as_str()));

    // Two rotations at the same moment on n2 and n3: one wins, one conflicts.
    let status = c.node("n1").cluster();
    let (keys_before, epoch_before) = (key_ids(&status), status["epoch"].as_u64());
    let keks_before: Vec<BTreeSet<String>> = ["n2", "n3"].map(|n| c.node(n).local_keks()).into();
    let a = c.node("n2").cli(&["rotate"]).spawn().unwrap();
    let b = c.node("n3").cli(&["rotate"]).spawn().unwrap();
    let (a, b) = (Out::from(a.wait_with_output()), Out::from(b.wait_with_output()));
    let (winner, loser, won, lost) = match (a.code, b.code) {
        (Some(0), Some(0)) => panic!("both rotations succeeded:\nn2: {a}\nn3: {b}\n{}", c.logs()),
        (Some(0), _) => (1, 2, a, b),
        (_, Some(0)) => (2, 1, b, a),
        _ => panic!("neither rotation succeeded:\nn2: {a}\nn3: {b}\n{}", c.logs()),
    };
    let (winner, loser) = (c.nodes[winner].name, c.nodes[loser].name);
    assert_eq!(lost.code, Some(2), "{loser}: {lost}");
    assert!(
        lost.stderr.contains("409") && lost.stderr.contains("another node rotated first"),
        "{loser} lost the race: {lost}"
    );
    let k2 = won.stdout.trim().to_owned();
    assert!(k2.starts_with("qkeyd-kek-") && !keys_before.contains(&k2), "{winner}: {won}");
    let status = c.wait("the winner's key in n1's view of the cluster", SETTLE, || {
        let s = c.node("n1").cluster();
        if key_ids(&s).contains(&k2) { Ok(s) } else { Err(s.to_string()) }
    });
    let new: Vec<String> =
        key_ids(&status).into_iter().filter(|k| !keys_before.contains(k)).collect();
    assert_eq!(new, std::slice::from_ref(&k2), "exactly one new key: {status:#}");
    assert_eq!(status["write_key_id"], k2.as_str(), "{status:#}");
    let entry = status["keys"].as_array().unwrap().iter().find(|k| k["key_id"] == k2.as_str());
    assert_eq!(entry.unwrap()["by"], winner, "{status:#}");
    if let Some(e) = epoch_before {
        assert_eq!(status["epoch"].as_u64(), Some(e + 1), "one rotation, one epoch: {status:#}");
    }
    c.wait_all_on(&["n1", "n2", "n3"], &k2);
    // The loser's own new KEK was destroyed: it holds what it held, and k2.
    let i = if loser == "n2" { 0 } else { 1 };
    let gained: Vec<String> =
        c.node(loser).local_keks().difference(&keks_before[i]).cloned().collect();
    assert_eq!(gained, std::slice::from_ref(&k2), "{loser} keeps a KEK of its lost rotation");
    c.assert_no_clear_kek(true);
    let under_k2 = c.node("n1").encrypt(&seed(12));
    c.assert_no_kek_opens(&[&old1, &under_k2]);

    // kill -9 n2 and start it again on the same state: it still answers, and
    // decrypts what n1 and n3 encrypted under both keys.
    let new1 = c.node("n1").encrypt(&seed(11));
    let new3 = c.node("n3").encrypt(&seed(13));
    assert_eq!((new1.key_id.as_str(), new3.key_id.as_str()), (k2.as_str(), k2.as_str()));
    let n2_state = c.node("n2").state.clone();
    assert!(
        n2_state.join("kms/cluster-transport").exists(),
        "n2 keeps the id of its transport key in STATE_DIR/kms/cluster-transport"
    );
    let identity = entry_of(&c.node("n1").cluster(), "n2")["identity"].clone();
    c.node_mut("n2").kill9_and_restart();
    c.wait("n2's Status after kill -9 and restart", Duration::from_secs(10), || {
        c.node("n2").status_key().and_then(|k| if k == k2 { Ok(()) } else { Err(k) })
    });
    let n2 = c.node("n2");
    for (e, want, what) in [
        (&old1, seed(1), "n1 under k1"),
        (&old3, seed(3), "n3 under k1"),
        (&new1, seed(11), "n1 under k2"),
        (&new3, seed(13), "n3 under k2"),
    ] {
        let got = n2
            .decrypt(e)
            .unwrap_or_else(|s| panic!("restarted n2 decrypts {what}: {s:?}\n{}", c.logs()));
        assert_eq!(got, want, "{what}");
    }
    let from2 = n2.encrypt(&seed(2));
    for m in ["n1", "n3"] {
        assert_eq!(c.node(m).decrypt(&from2).unwrap(), seed(2), "{m} decrypts the restarted n2");
    }
    let e = entry_of(&c.node("n1").cluster(), "n2").clone();
    assert_eq!(e["state"], "admitted", "{e}");
    assert_eq!(e["identity"], identity, "n2 is the same node after its restart: {e}");

    // Envelopes to n2 while it is down, one claiming a sender that is not a
    // member and one changed after it was signed: each is refused and
    // logged when n2 comes back, and deleted, and a member wraps the KEK
    // again.
    let before_envelopes = c.node("n2").d().metrics();
    for (what, tamper, reason) in [
        ("a non-member's", tamper_sender as fn(&mut Value), "which is not a member"),
        ("a tampered", tamper_wrapped as fn(&mut Value), "signature does not verify"),
    ] {
        let dir = c.node_mut("n2").kill9();
        let out = c.node("n1").run(&["rotate"]);
        assert_eq!(out.code, Some(0), "{out}\n{}", c.logs());
        let key = out.stdout.trim().to_owned();
        let path = format!("{PREFIX}kek/{key}/n2");
        let raw = c.etcd.get(&path).unwrap_or_else(|| panic!("no envelope at {path}"));
        let mut envelope: Value = serde_json::from_slice(&raw).unwrap();
        tamper(&mut envelope);
        c.etcd.put(&path, envelope.to_string().as_bytes());
        c.node_mut("n2").start_again(dir);
        c.node("n2").d().wait_log(&format!("{what} envelope refused"), SETTLE, |l| {
            l.contains("cluster: envelope refused") && l.contains(&key) && l.contains(reason)
        });
        c.wait_all_on(&["n1", "n2", "n3"], &key);
        let again: Value = serde_json::from_slice(&c.etcd.get(&path).unwrap()).unwrap();
        let from = again["from"].as_str().unwrap_or_default();
        assert!(["n1", "n3"].contains(&from), "a member wrapped {key} to n2 again: {again}");
        let under = c.node("n1").encrypt(&seed(40));
        assert_eq!(c.node("n2").decrypt(&under).unwrap(), seed(40), "n2 under {key}");
        let m = c.node("n2").d().metrics();
        for outcome in ["refused", "received"] {
            let series = format!("qkeyd_kms_cluster_envelopes_total{{outcome=\"{outcome}\"}}");
            assert!(metric(&m, &series).is_some_and(|v| v >= 1.0), "{series} on n2:\n{m}");
        }
        let fired = super::scrapes::alerts_firing_on(&[&before_envelopes, &m]);
        assert!(fired.contains("QkeydKmsClusterEnvelopeRefused"), "{what}: {fired:?}");
    }

    // n4's TPM had PCR 7 extended before its daemon started: its AK is in
    // every policy before it joins, its PCRs are not, so it is refused (on
    // the PCR check) and given nothing.
    c.add("n4", Sealing::Tpm, true, Before::Enrol);
    let e = c.wait("n4 refused in n1's view", SETTLE, || {
        let s = c.node("n1").cluster();
        match s["nodes"].as_array().and_then(|a| a.iter().find(|n| n["node"] == "n4")) {
            Some(n) if n["state"] == "refused" => Ok(n.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(e["refusal"].as_str().is_some_and(|r| !r.is_empty()), "{e}");
    c.node("n1").d().wait_log("n4's refusal logged", SETTLE, |l| {
        l.contains("cluster: node")
            && l.contains("refused")
            && l.contains("n4")
            && l.contains("pcr_policy")
    });
    thread::sleep(3 * POLL);
    let e = entry_of(&c.node("n1").cluster(), "n4").clone();
    assert_eq!(e["state"], "refused", "{e}");
    let m = c.node("n1").d().metrics();
    let refused = metric(&m, "qkeyd_kms_cluster_nodes{state=\"refused\"}");
    assert!(refused.is_some_and(|v| v >= 1.0), "n1 counts n4 refused: {refused:?}");
    let fired = super::scrapes::alerts_firing_on(&[&m]);
    assert!(fired.contains("QkeydKmsClusterNodeRefused"), "{fired:?}");
    assert!(e["holds"].as_array().is_none_or(Vec::is_empty), "a refused node holds keys: {e}");
    let keys = c.etcd.list(PREFIX);
    for (k, _) in &keys {
        let rest = &k[PREFIX.len()..];
        assert!(!(rest.starts_with("kek/") && rest.ends_with("/n4")), "an envelope to n4: {k}");
        assert_ne!(rest, "admitted/n4", "n4 is admitted in etcd");
    }
    let n4 = c.node("n4");
    let cluster_keys = key_ids(&c.node("n1").cluster());
    // It holds no cluster key, so its Status reports none of them (or,
    // holding no key at all, fails).
    if let Ok(own) = n4.status_key() {
        assert!(!cluster_keys.contains(&own), "n4 writes under cluster key {own}");
    }
    for (e, what) in [(&old1, "k1"), (&new1, "k2")] {
        let s = n4.decrypt(e).expect_err("a refused node decrypts the cluster's data");
        assert_eq!(s.code(), Code::NotFound, "n4 Decrypt under {what}: {s:?}");
        assert!(s.message().contains("unknown key_id"), "{s:?}");
    }
    let out = c.node("n1").run(&["cluster", "status"]);
    assert_eq!(out.code, Some(0), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    for (node, state) in
        [("n1", "admitted"), ("n2", "admitted"), ("n3", "admitted"), ("n4", "refused")]
    {
        assert!(
            lines.iter().any(|l| words(l).any(|w| w == node) && l.contains(state)),
            "no line for {node} {state} in `qkeyd kms cluster status`:\n{}",
            out.stdout
        );
    }

    // n5 served kube-apiserver alone before it was clustered: once admitted
    // it shares that KEK, and the other nodes read what it wrote then.
    c.add("n5", Sealing::Tpm, false, Before::ServeAlone);
    let alone = c.node("n5").alone.clone().unwrap();
    for m in ["n1", "n2", "n3"] {
        let got = c.wait(&format!("n5's own KEK shared with {m}"), SETTLE, || {
            c.node(m).decrypt(&alone).map_err(|s| format!("{s:?}"))
        });
        assert_eq!(got, seed(50), "{m} reads n5's older data");
    }
    let write = c.write_key();
    c.wait_all_on(&["n5"], &write);
    assert!(
        key_ids(&c.node("n1").cluster()).contains(&alone.key_id),
        "n5's own KEK is one of the cluster's"
    );

    // Added last, so no later policy learns its AK: n6's AK is in no policy; n7 has no TPM to quote its evidence, which
    // every policy here requires: both refused, and given nothing.
    c.add("n6", Sealing::Tpm, false, Before::Nothing);
    c.add("n7", Sealing::HsmWithoutTpm, false, Before::Nothing);
    for (node, check) in [("n6", "ak_trusted"), ("n7", "tpm_missing")] {
        let e = c.wait(&format!("{node} refused in n1's view"), SETTLE, || {
            let s = c.node("n1").cluster();
            match s["nodes"].as_array().and_then(|a| a.iter().find(|n| n["node"] == node)) {
                Some(e) if e["state"] == "refused" => Ok(e.clone()),
                other => Err(format!("{other:?}")),
            }
        });
        assert!(e["refusal"].as_str().is_some_and(|r| r.contains(check)), "{node}: {e}");
    }
    thread::sleep(3 * POLL);
    for node in ["n6", "n7"] {
        c.assert_no_envelopes_to(node);
        assert!(c.etcd.get(&format!("{PREFIX}admitted/{node}")).is_none(), "{node} admitted");
        let s = c.node(node).decrypt(&old1).expect_err("a refused node decrypts cluster data");
        assert_eq!(s.code(), Code::NotFound, "{node}: {s:?}");
        assert!(c.node(node).status_key().is_err(), "{node}'s Status answers without a KEK");
    }

    let n3_key = c.node("n3").status_key().unwrap();
    // n3 removed: its envelopes go, its record says so, and the next key
    // does not reach it (its evidence still passes: the tombstone holds).
    let out = c.node("n1").run(&["cluster", "remove", "n3"]);
    assert_eq!(out.code, Some(0), "{out}\n{}", c.logs());
    assert!(out.stdout.contains("rotate now") && out.stdout.contains("qkeyd kms rotate"), "{out}");
    c.assert_no_envelopes_to("n3");
    assert!(c.etcd.get(&format!("{PREFIX}removed/n3")).is_some(), "no tombstone for n3");
    assert!(c.etcd.get(&format!("{PREFIX}admitted/n3")).is_none(), "n3 still admitted in etcd");
    c.wait("n3 removed in n1's view", SETTLE, || {
        let s = c.node("n1").cluster();
        let e = entry_of(&s, "n3");
        if e["state"] == "removed" { Ok(()) } else { Err(e.to_string()) }
    });
    let out = c.node("n1").run(&["rotate"]);
    assert_eq!(out.code, Some(0), "{out}\n{}", c.logs());
    let k3 = out.stdout.trim().to_owned();
    c.wait_all_on(&["n1", "n2"], &k3);
    thread::sleep(3 * POLL);
    c.assert_no_envelopes_to("n3");
    let n3 = c.node("n3");
    assert_ne!(n3.status_key().unwrap(), k3, "a removed node follows the new key");
    let under_k3 = c.node("n1").encrypt(&seed(21));
    let s = n3.decrypt(&under_k3).expect_err("a removed node decrypts the new key's data");
    assert_eq!(s.code(), Code::NotFound, "{s:?}");
    assert_eq!(entry_of(&c.node("n1").cluster(), "n3")["state"], "removed");

    // etcd gone: every node keeps serving from its own sealed KEKs; a
    // rotation is refused with a clear reason and leaves nothing behind.
    let before_outage = c.node("n1").d().metrics();
    c.etcd.stop();
    for (m, key) in [("n1", &k3), ("n2", &k3), ("n3", &n3_key)] {
        let n = c.node(m);
        assert_eq!(n.status_key().unwrap_or_else(|e| panic!("{e}\n{}", c.logs())), *key, "{m}");
        let e = n.encrypt(&seed(30));
        assert_eq!(n.decrypt(&e).unwrap(), seed(30), "{m} round trip without etcd");
    }
    let (n1, n2) = (c.node("n1"), c.node("n2"));
    assert_eq!(n2.decrypt(&n1.encrypt(&seed(31))).unwrap(), seed(31), "n1 → n2 without etcd");
    assert_eq!(n1.decrypt(&n2.encrypt(&seed(32))).unwrap(), seed(32), "n2 → n1 without etcd");
    assert_eq!(n2.decrypt(&old3).unwrap(), seed(3), "old data without etcd");
    let keks = n1.local_keks();
    let out = n1.run(&["rotate"]);
    assert_eq!(out.code, Some(2), "rotate with etcd down: {out}");
    assert!(out.stderr.contains("503") && out.stderr.contains("etcd is unreachable"), "{out}");
    let (s, v) = n2.d().keys("POST", "/v1/kms/rotate", None);
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["code"], "kms_unavailable", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("etcd is unreachable"), "{v}");
    assert_eq!(n1.status_key().unwrap(), k3, "a refused rotation changed the write key");
    assert_eq!(n1.local_keks(), keks, "a refused rotation left a KEK behind");
    c.wait("n1 to report etcd unreachable", SETTLE, || {
        let s = c.node("n1").cluster();
        let (_, kms) = c.node("n1").d().keys("GET", "/v1/kms", None);
        let up = metric(&c.node("n1").d().metrics(), "qkeyd_kms_cluster_etcd_up");
        if s["etcd"] != "ok"
            && kms["cluster"]["etcd"] != "ok"
            && kms["cluster"]["node"] == "n1"
            && up == Some(0.0)
        {
            Ok(())
        } else {
            Err(format!(
                "/v1/kms/cluster etcd={} /v1/kms cluster={} etcd_up={up:?}",
                s["etcd"], kms["cluster"]
            ))
        }
    });
    let outage = c.node("n1").d().metrics();
    let fired = super::scrapes::alerts_firing_on(&[&before_outage, &outage]);
    assert!(fired.contains("QkeydKmsClusterEtcdDown"), "{fired:?}");

    // etcd back on the same data: a rotation goes through and reaches every
    // live member.
    c.etcd.restart();
    let k4 = c.wait("a rotation once etcd is back", SETTLE, || {
        let out = c.node("n1").run(&["rotate"]);
        match out.code {
            Some(0) => Ok(out.stdout.trim().to_owned()),
            _ if out.stderr.contains("503") => Err(out.to_string()),
            _ => panic!("rotate after etcd came back: {out}\n{}", c.logs()),
        }
    });
    c.wait_all_on(&["n1", "n2"], &k4);
    assert_eq!(c.node("n1").cluster()["etcd"], "ok");

    // Retiring is cluster-wide, with the single-node grace rules: the write
    // key never, a key replaced moments ago only with --force.
    let out = c.node("n2").run(&["retire", &k4]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("409") && out.stderr.contains("is the write key"), "{out}");
    let out = c.node("n2").run(&["retire", &k2]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("409") && out.stderr.contains("after 300s, or force"), "{out}");
    let out = c.node("n2").run(&["retire", &k2, "--force"]);
    assert_eq!(out.code, Some(0), "{out}\n{}", c.logs());
    for m in ["n1", "n2"] {
        let s =
            c.wait(&format!("{k2} retired on {m}"), SETTLE, || match c.node(m).decrypt(&new1) {
                Err(s) if s.code() == Code::NotFound => Ok(s),
                other => Err(format!("{other:?}")),
            });
        assert!(s.message().contains("retired"), "{m}: {s:?}");
    }
    let left: Vec<String> =
        c.etcd.list(&format!("{PREFIX}kek/{k2}/")).into_iter().map(|(k, _)| k).collect();
    assert!(left.is_empty(), "envelopes of a retired KEK: {left:?}");
    let retired = c.node("n1").cluster()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key_id"] == k2.as_str())
        .map(|k| k["retired_unix"].clone());
    assert!(retired.is_some_and(|r| r.is_u64()), "{k2} not retired in the cluster's records");
    assert_eq!(c.node("n1").decrypt(&old1).unwrap(), seed(1), "k1 still decrypts");
    c.assert_no_clear_kek(false);
    let under_k4 = c.node("n1").encrypt(&seed(22));
    c.assert_no_kek_opens(&[&old1, &alone, &under_k3, &under_k4]);
}

/// The apiservers, one per node in order.
const APISERVERS: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Copy)]
enum Sealing {
    /// A SoftHSM2 token seals the node's keys.
    Hsm,
    /// The node's own swtpm.
    Tpm,
    /// A SoftHSM2 token, and no TPM to quote its evidence (`attest.tpm =
    /// false`).
    HsmWithoutTpm,
}

/// What a node did before it joined the cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Before {
    /// Nothing: it starts clustered.
    Nothing,
    /// It started once, unclustered, to show its AK.
    Enrol,
    /// It served its own KMS plugin, unclustered, and encrypted with it.
    ServeAlone,
}

/// One qkeyd node: its daemon, its TPM, its token if it has one.
struct Node {
    name: &'static str,
    // Declared (so dropped) before the TPM and the token the daemon uses.
    daemon: Option<Daemon>,
    config: String,
    env: Vec<(&'static str, String)>,
    socket: PathBuf,
    state: PathBuf,
    policy: PathBuf,
    /// The policy's verifier state file (one per node).
    verifier_state: PathBuf,
    /// Hex AK Name, as `GET /v1/attest/identity` says.
    ak_name: String,
    /// `GET /v1/attest/identity`.
    identity: Value,
    /// The log of the daemons killed before this one.
    earlier_logs: String,
    /// What it encrypted while it served alone, before it joined.
    alone: Option<EncryptResponse>,
    _hsm: Option<SoftHsm>,
    _tpm: Swtpm,
    /// The host it runs on, if not this machine's loopback (last: its
    /// processes stop before it goes).
    host: Option<Host>,
}

impl Node {
    fn d(&self) -> &Daemon {
        self.daemon.as_ref().expect("the node runs")
    }

    fn kms(&self) -> Client {
        Client::connect(self.socket.to_str().unwrap())
    }

    /// The key id Status reports through the KMS socket.
    fn status_key(&self) -> Result<String, String> {
        let s = self.kms().status().map_err(|e| format!("{}: Status: {e:?}", self.name))?;
        if s.healthz == "ok" {
            Ok(s.key_id)
        } else {
            Err(format!("{}: healthz {}", self.name, s.healthz))
        }
    }

    fn encrypt(&self, plaintext: &[u8]) -> EncryptResponse {
        self.kms()
            .encrypt(plaintext)
            .unwrap_or_else(|e| panic!("{}: Encrypt: {e:?}\n{}", self.name, self.log()))
    }

    fn decrypt(&self, e: &EncryptResponse) -> Result<Vec<u8>, tonic::Status> {
        self.kms().decrypt_reply(e)
    }

    /// `GET /v1/kms/cluster`.
    fn cluster(&self) -> Value {
        let (s, v) = self.d().keys("GET", "/v1/kms/cluster", None);
        assert_eq!(s, 200, "{}: GET /v1/kms/cluster: {v}\n{}", self.name, self.log());
        v
    }

    /// The KEK ids `GET /v1/kms` lists (the ones this node holds).
    fn local_keks(&self) -> BTreeSet<String> {
        let (s, v) = self.d().keys("GET", "/v1/kms", None);
        assert_eq!(s, 200, "{}: GET /v1/kms: {v}", self.name);
        v["keks"].as_array().unwrap().iter().map(|k| k["key_id"].as_str().unwrap().into()).collect()
    }

    /// `qkeyd kms ARGS` against this node's REST API.
    fn cli(&self, args: &[&str]) -> Command {
        let d = self.d();
        let mut cmd = Command::new(qkeyd_bin());
        cmd.args(["kms", "--url", &d.url(""), "--token-file"])
            .arg(d.state.join("api-token"))
            .args(args)
            .env_remove("QKEYD_URL")
            .env_remove("QKEYD_TOKEN_FILE")
            .env_remove("QKEYD_CA_FILE")
            .env_remove("QKEYD_CLIENT_CERT")
            .env_remove("QKEYD_CLIENT_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, args: &[&str]) -> Out {
        Out::from(self.cli(args).output())
    }

    fn kill9_and_restart(&mut self) {
        let dir = self.kill9();
        self.start_again(dir);
    }

    /// Kill the daemon (SIGKILL); its state stays.
    fn kill9(&mut self) -> tempfile::TempDir {
        let d = self.daemon.take().expect("the node runs");
        self.earlier_logs.push_str(&d.log());
        self.earlier_logs.push_str("--- killed with SIGKILL ---\n");
        d.kill()
    }

    /// Start the daemon again on its state, after [`Node::kill9`].
    fn start_again(&mut self, dir: tempfile::TempDir) {
        let d = start_daemon(dir, &self.config, &self.state, &self.env, self.host.as_ref());
        wait_for_socket(&self.socket, &d);
        self.daemon = Some(d);
    }

    /// Its log for a failure message: the cluster's lines, then the last
    /// lines, each run of repeated messages as one.
    fn log(&self) -> String {
        let now = self.daemon.as_ref().map(Daemon::log).unwrap_or_default();
        let all = condense(&format!("{}{now}", self.earlier_logs));
        let cluster: Vec<&str> = all.lines().filter(|l| l.contains("cluster")).collect();
        format!(
            "--- qkeyd {0} (cluster lines) ---\n{1}\n--- qkeyd {0} (last lines) ---\n{2}",
            self.name,
            tail(&cluster.join("\n"), 40),
            tail(&all, 25)
        )
    }
}

/// etcd with client TLS, the qkeyd nodes on it, and (for the apiserver test)
/// a kube-apiserver on each of the first three nodes.
struct Cluster {
    // Dropped in this order: apiservers, nodes, etcd, the LAN, then the files.
    apis: Vec<Apiserver>,
    nodes: Vec<Node>,
    etcd: Etcd,
    /// The nodes' LAN, where they run as separate hosts.
    lan: Option<Lan>,
    ca: Ca,
    /// Expected SHA-256 PCRs 0-7 (index → hex), those of a fresh swtpm.
    pcrs: BTreeMap<String, String>,
    bin: PathBuf,
    work: tempfile::TempDir,
}

impl Cluster {
    /// etcd, then n1 alone (it admits itself into the empty cluster), then n2
    /// and n3 joining; returns once all three are admitted and report the
    /// same key.
    fn start() -> Self {
        let bin = binaries();
        let work = tempfile::tempdir().unwrap();
        let ca = Ca::new("qkeyd-e2e etcd CA");
        let lan = Lan::new();
        // etcd in the root namespace: the nodes dial it at its address on
        // their LAN, the harness and the apiservers on loopback.
        let hosts: Vec<IpAddr> = lan.iter().map(|l| l.gateway().into()).collect();
        let tls = EtcdTls::issue(&ca, work.path(), &hosts);
        let etcd = Etcd::start_on(&bin, work.path(), Some(tls), &hosts);
        let mut c = Self {
            apis: Vec::new(),
            nodes: Vec::new(),
            etcd,
            lan,
            ca,
            pcrs: BTreeMap::new(),
            bin,
            work,
        };
        c.add("n1", Sealing::Hsm, false, Before::Nothing);
        c.pcrs = c.fresh_pcrs();
        c.trust_all();
        let k1 = c.wait("n1 to admit itself and publish a write key", SETTLE, || {
            let s = c.node("n1").cluster();
            let admitted = s["nodes"]
                .as_array()
                .is_some_and(|a| a.iter().any(|n| n["node"] == "n1" && n["state"] == "admitted"));
            match s["write_key_id"].as_str() {
                Some(k) if admitted && s["etcd"] == "ok" => Ok(k.to_owned()),
                _ => Err(s.to_string()),
            }
        });
        let s = c.node("n1").cluster();
        assert_eq!((s["node"].as_str(), s["prefix"].as_str()), (Some("n1"), Some(PREFIX)), "{s:#}");
        let (_, kms) = c.node("n1").d().keys("GET", "/v1/kms", None);
        assert_eq!(kms["cluster"], json!({ "node": "n1", "etcd": "ok" }), "GET /v1/kms: {kms:#}");
        c.wait_all_on(&["n1"], &k1);
        c.add("n2", Sealing::Tpm, false, Before::Nothing);
        c.add("n3", Sealing::Tpm, false, Before::Nothing);
        c.trust_all();
        for m in ["n1", "n2", "n3"] {
            c.wait(&format!("n1, n2, n3 admitted in {m}'s view"), SETTLE, || {
                let s = c.node(m).cluster();
                for n in ["n1", "n2", "n3"] {
                    let e = s["nodes"].as_array().and_then(|a| a.iter().find(|e| e["node"] == n));
                    if e.is_none_or(|e| e["state"] != "admitted") {
                        return Err(format!("{n}: {e:?}"));
                    }
                }
                Ok(())
            });
        }
        c.wait_all_on(&["n1", "n2", "n3"], &k1);
        let s = c.node("n1").cluster();
        for n in ["n1", "n2", "n3"] {
            let holds = &entry_of(&s, n)["holds"];
            assert!(
                holds.as_array().is_some_and(|h| h.iter().any(|k| k == k1.as_str())),
                "{n} reports {k1} but does not list it in holds: {s:#}"
            );
        }
        c
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes.iter_mut().find(|n| n.name == name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The cluster write key in n1's view.
    fn write_key(&self) -> String {
        let s = self.node("n1").cluster();
        s["write_key_id"].as_str().unwrap_or_else(|| panic!("no write key: {s:#}")).to_owned()
    }

    /// Start node `name` on a fresh swtpm (PCR 7 extended first if
    /// `extend_pcr7`). Its policy trusts the nodes already there; the others'
    /// policies learn its AK at the next [`Cluster::trust_all`]. With
    /// [`Before::Enrol`] or [`Before::ServeAlone`], its AK is trusted before
    /// it joins instead: a first start without `[kms.cluster]` shows the AK,
    /// every policy is written trusting it, and the node then starts
    /// clustered on the same state and TPM, so no member ever checks it under
    /// a policy that lacks its AK. With [`Before::ServeAlone`] that first
    /// start serves its own KMS plugin and encrypts `seed(50)`
    /// ([`Node::alone`]).
    fn add(&mut self, name: &'static str, sealing: Sealing, extend_pcr7: bool, before: Before) {
        let host = self.lan.as_mut().map(Lan::host);
        let tpm = host.as_ref().map_or_else(Swtpm::start, |h| Swtpm::start_in_netns(&h.ns));
        let etcd_url = match &self.lan {
            Some(lan) => self.etcd.url_on(lan.gateway().into()),
            None => self.etcd.url(),
        };
        if extend_pcr7 {
            tpm.extend_pcr(7);
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("kms.sock");
        let state = dir.path().join("state");
        let w = self.work.path();
        let policy = w.join(format!("cluster-policy-{name}.toml"));
        let verifier_state = w.join(format!("verifier-state-{name}.json"));
        let etcd = TlsFiles::client(&self.ca, w, &format!("qkeyd-{name}"));
        let (keys, hsm, env) = match sealing {
            Sealing::Hsm | Sealing::HsmWithoutTpm => {
                let hsm = SoftHsm::new();
                let pin = w.join(format!("pin-{name}"));
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
        let mut standalone = format!(
            "[[source]]\nname = \"os\"\nkind = \"os\"\n\n{keys}\n\
             [attest]\n{}pcrs = [0, 1, 2, 3, 4, 5, 6, 7]\n",
            match sealing {
                Sealing::HsmWithoutTpm => "tpm = false\n".to_owned(),
                _ => format!("tcti = \"{}\"\n", tpm.tcti()),
            }
        );
        if host.is_some() {
            // The REST API listens on the host's LAN address, where the
            // harness reaches it from the root namespace: plain HTTP on a
            // link private to this test, between namespaces of one machine.
            standalone.push_str("\n[danger]\nplaintext_beyond_loopback = true\n");
        }
        let config = format!(
            "{standalone}\n[kms]\nsocket = \"{socket}\"\n\n\
             [kms.cluster]\nendpoints = [\"{url}\"]\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\n\
             key_file = \"{key}\"\nnode = \"{name}\"\npolicy = \"{policy}\"\n\
             poll_interval_secs = {poll}\ntimeout_secs = 2\n",
            socket = socket.display(),
            url = etcd_url,
            ca = etcd.ca.display(),
            cert = etcd.cert.display(),
            key = etcd.key.display(),
            policy = policy.display(),
            poll = POLL.as_secs(),
        );
        let identity = |d: &Daemon| {
            let (s, identity) = d.keys("GET", "/v1/attest/identity", None);
            assert_eq!(s, 200, "{name}: GET /v1/attest/identity: {identity}\n{}", d.log());
            let ak_name = match sealing {
                Sealing::HsmWithoutTpm => {
                    assert!(identity["tpm"].is_null(), "{name} has a TPM: {identity}");
                    String::new()
                }
                _ => identity["tpm"]["ak_name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} has no AK: {identity}"))
                    .to_owned(),
            };
            (identity, ak_name)
        };
        let mut trusted: Vec<String> =
            self.nodes.iter().map(|n| n.ak_name.clone()).filter(|a| !a.is_empty()).collect();
        let mut alone = None;
        let (dir, enrolled) = if before != Before::Nothing {
            let first = match before {
                Before::ServeAlone => {
                    format!("{standalone}\n[kms]\nsocket = \"{}\"\n", socket.display())
                }
                _ => standalone.clone(),
            };
            let d = start_daemon(dir, &first, &state, &env, host.as_ref());
            if before == Before::ServeAlone {
                wait_for_socket(&socket, &d);
                let e = Client::connect(socket.to_str().unwrap()).encrypt(&seed(50));
                alone =
                    Some(e.unwrap_or_else(|e| panic!("{name} alone: Encrypt: {e:?}\n{}", d.log())));
            }
            let (id, ak) = identity(&d);
            trusted.push(ak.clone());
            for n in &self.nodes {
                write_atomic(&n.policy, &self.policy_text(&trusted, &n.verifier_state));
            }
            (d.kill(), Some((id, ak)))
        } else {
            (dir, None)
        };
        write_atomic(&policy, &self.policy_text(&trusted, &verifier_state));
        let daemon = start_daemon(dir, &config, &state, &env, host.as_ref());
        wait_for_socket(&socket, &daemon);
        let (identity, ak_name) = identity(&daemon);
        if let Some((first, ak)) = enrolled {
            assert_eq!(ak, ak_name, "{name}'s AK changed across its restart");
            assert_eq!(first["identity"], identity["identity"], "{name}'s identity key changed");
        }
        self.nodes.push(Node {
            name,
            daemon: Some(daemon),
            config,
            env,
            socket,
            state,
            policy,
            verifier_state,
            ak_name,
            identity,
            earlier_logs: String::new(),
            alone,
            _hsm: hsm,
            _tpm: tpm,
            host,
        });
    }

    /// SHA-256 PCRs 0-7 of n1's fresh swtpm, from evidence about a new key.
    fn fresh_pcrs(&self) -> BTreeMap<String, String> {
        let d = self.node("n1").d();
        let (s, key) = d.keys("POST", "/v1/keys", Some(json!({ "alg": "ml-kem-768" })));
        assert_eq!(s, 201, "{key}");
        let (s, ev) = attest(d, key["id"].as_str().unwrap(), &[5u8; 32]);
        assert_eq!(s, 200, "{ev}");
        let pcrs: BTreeMap<String, String> = ev["tpm"]["pcrs"]
            .as_object()
            .unwrap_or_else(|| panic!("no PCRs in {ev}"))
            .iter()
            .map(|(i, v)| (i.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let want: Vec<String> = (0..8).map(|i| i.to_string()).collect();
        assert_eq!(pcrs.keys().cloned().collect::<BTreeSet<_>>(), want.into_iter().collect());
        pcrs
    }

    /// A verifier policy trusting these AKs and the fresh-swtpm PCRs.
    fn policy_text(&self, ak_names: &[String], state_file: &Path) -> String {
        let names: Vec<String> = ak_names.iter().map(|n| format!("\"{n}\"")).collect();
        let mut t = format!(
            "trusted_ak_names = [{}]\nstate_file = \"{}\"\n",
            names.join(", "),
            state_file.display()
        );
        if !self.pcrs.is_empty() {
            t.push_str("\n[pcrs]\n");
            for (i, v) in &self.pcrs {
                t.push_str(&format!("\"{i}\" = \"{v}\"\n"));
            }
        }
        qkeyd_attest::Policy::from_toml(&t).unwrap_or_else(|e| panic!("{e}: {t}"));
        t
    }

    /// Every node's policy file now trusts every node's AK (nodes re-read
    /// it at each poll).
    fn trust_all(&self) {
        let names: Vec<String> =
            self.nodes.iter().map(|n| n.ak_name.clone()).filter(|a| !a.is_empty()).collect();
        for n in &self.nodes {
            write_atomic(&n.policy, &self.policy_text(&names, &n.verifier_state));
        }
    }

    /// kube-apiservers a, b, c on the sockets of n1, n2, n3, sharing etcd.
    fn start_apiservers(&mut self) {
        let common = self.work.path();
        Apiserver::prepare_common(common);
        let client = TlsFiles::client(&self.ca, common, "kube-apiserver-etcd-client");
        for (n, x) in self.nodes.iter().zip(APISERVERS) {
            let dir = common.join(format!("kube-apiserver-{x}"));
            let name = format!("kube-apiserver-{x}");
            let a = Apiserver::spawn(
                &self.bin,
                common,
                &dir,
                &name,
                &self.etcd,
                Some(&client),
                &n.socket,
            );
            self.apis.push(a);
        }
        for (i, a) in self.apis.iter().enumerate() {
            a.wait_ready();
            let ok = self.kubectl(i, &["get", "--raw", "/readyz/kms-providers"]);
            assert_eq!(ok.trim(), "ok", "apiserver {}", APISERVERS[i]);
        }
    }

    fn kubectl(&self, i: usize, args: &[&str]) -> String {
        self.apis[i].kubectl_raw(args).unwrap_or_else(|e| {
            panic!("kubectl {args:?} on apiserver {}: {e}\n{}", APISERVERS[i], self.logs())
        })
    }

    fn secret(&self, i: usize, name: &str) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = self.kubectl(i, &["get", "secret", name, "-o", "jsonpath={.data.value}"]);
        base64::engine::general_purpose::STANDARD.decode(b64.trim()).unwrap()
    }

    fn etcd_secret(&self, name: &str) -> Vec<u8> {
        let key = format!("/registry/secrets/default/{name}");
        self.etcd.get(&key).unwrap_or_else(|| panic!("no {key} in etcd\n{}", self.logs()))
    }

    fn logs(&self) -> String {
        let mut out: Vec<String> = self.nodes.iter().map(Node::log).collect();
        out.push(self.etcd.log());
        out.extend(self.apis.iter().map(Apiserver::log));
        out.join("\n")
    }

    /// Poll `check` until it answers `Ok` or `timeout` passes; then panic
    /// with its last `Err` and every log.
    fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            match check() {
                Ok(v) => return v,
                Err(last) => assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}; last: {last}\n{}",
                    self.logs()
                ),
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait until Status on each of `members` reports `key`.
    fn wait_all_on(&self, members: &[&str], key: &str) {
        self.wait(&format!("Status of {members:?} to report {key}"), SETTLE, || {
            for m in members {
                let got = self.node(m).status_key()?;
                if got != key {
                    return Err(format!("{m} reports {got}"));
                }
            }
            Ok(())
        });
    }

    fn assert_no_envelopes_to(&self, node: &str) {
        let suffix = format!("/{node}");
        let left: Vec<String> = self
            .etcd
            .list(&format!("{PREFIX}kek/"))
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.ends_with(&suffix))
            .collect();
        assert!(left.is_empty(), "envelopes to {node} in etcd: {left:?}\n{}", self.logs());
    }

    /// No KEK in the clear under the prefix. The test cannot know a KEK (the
    /// daemon never exports one), so it checks what the records are made of:
    /// an envelope holds only an ML-KEM-1024 ciphertext, an AES-256-GCM
    /// ciphertext of a 32-byte key (with its IV), an ML-DSA-87 signature and
    /// names; the other records hold no key-sized binary beyond public keys
    /// and signatures; and the envelopes of one key to two nodes share no 32
    /// bytes, as they would if either held the KEK in the clear. With
    /// `shared`, at least one key must have envelopes to two nodes.
    fn assert_no_clear_kek(&self, shared: bool) {
        let records = self.etcd.list(PREFIX);
        let public = self.public_values(&records);
        // The transport keys the admissions publish (an envelope may name
        // its recipient's).
        let transport: HashSet<String> = records
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{PREFIX}admitted/")))
            .flat_map(|(_, v)| binaries_of(v, &public))
            .filter(|b| b.bytes.len() == ML_KEM_1024)
            .map(|b| b.text)
            .collect();
        let mut problems = Vec::new();
        // Key id → (recipient, the envelope's binary fields).
        let mut envelopes: BTreeMap<&str, Vec<(&str, Vec<Bin>)>> = BTreeMap::new();
        for (k, v) in &records {
            let rest = &k[PREFIX.len()..];
            let kind = rest.split('/').next().unwrap_or_default();
            let bins: Vec<Bin> = binaries_of(v, &public)
                .into_iter()
                .filter(|b| kind != "kek" || !transport.contains(&b.text))
                .collect();
            if let Some(p) = record_problem(kind, v, &bins) {
                problems.push(format!("{k}: {p}"));
            }
            if kind == "kek" {
                let mut parts = rest.splitn(3, '/').skip(1);
                let (key_id, to) =
                    (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
                envelopes.entry(key_id).or_default().push((to, bins));
            }
        }
        let mut pairs = 0;
        for (key_id, list) in &envelopes {
            for (i, (to_a, a)) in list.iter().enumerate() {
                let windows: HashSet<&[u8]> =
                    a.iter().flat_map(|b| b.bytes.windows(KEK_LEN)).collect();
                for (to_b, b) in &list[i + 1..] {
                    pairs += 1;
                    if b.iter().flat_map(|x| x.bytes.windows(KEK_LEN)).any(|w| windows.contains(w))
                    {
                        problems.push(format!(
                            "the envelopes of {key_id} to {to_a} and to {to_b} share 32 bytes"
                        ));
                    }
                }
            }
        }
        let keys: Vec<&str> = records.iter().map(|(k, _)| k.as_str()).collect();
        assert!(!shared || pairs > 0, "no key has envelopes to two nodes: {keys:?}");
        assert!(problems.is_empty(), "{}\nkeys: {keys:?}", problems.join("\n"));
    }

    /// No 32 bytes anywhere under the prefix (raw, or any JSON string decoded
    /// from hex or base64) are the KEK of `samples`, Encrypt answers under
    /// the keys to look for: each window is tried as the AES-256-GCM key of
    /// each sample, as the plugin's ciphertext format uses it.
    fn assert_no_kek_opens(&self, samples: &[&EncryptResponse]) {
        let mut scanned = 0usize;
        for (k, v) in self.etcd.list(PREFIX) {
            let mut blobs = vec![v.clone()];
            if let Ok(json) = serde_json::from_slice::<Value>(&v) {
                strings(&json, "", &mut |_, s| blobs.extend(decode(s)));
            }
            for b in &blobs {
                scanned += b.len();
                if let Some(e) = kek_in(b, samples) {
                    panic!("{k} holds the KEK of {} in the clear", e.key_id);
                }
            }
        }
        assert!(scanned > 10_000, "the scan read only {scanned} bytes");
    }

    /// What no record needs to hide: node names, key ids, and the nodes'
    /// identity documents (AKs, identity keys and their fingerprints).
    fn public_values(&self, records: &[(String, Vec<u8>)]) -> HashSet<String> {
        let mut public: HashSet<String> = HashSet::new();
        let mut add = |v: &Value| {
            strings(v, "", &mut |_, s| {
                public.insert(s.to_owned());
            })
        };
        for n in &self.nodes {
            add(&json!(n.name));
            add(&n.identity);
        }
        let status = self.node("n1").cluster();
        add(&json!(key_ids(&status)));
        for n in status["nodes"].as_array().into_iter().flatten() {
            add(&n["identity"]);
        }
        for (k, _) in records {
            if let Some(rest) = k.strip_prefix(&format!("{PREFIX}kek/")) {
                add(&json!(rest.split('/').collect::<Vec<_>>()));
            }
        }
        public
    }
}

/// Why a record of `kind` (the first part of its key under the prefix)
/// whose non-public binary fields are `bins` may hold a KEK, if it may.
fn record_problem(kind: &str, value: &[u8], bins: &[Bin]) -> Option<String> {
    let mut sizes: Vec<usize> = bins.iter().map(|b| b.bytes.len()).collect();
    sizes.sort_unstable();
    let found =
        || bins.iter().map(|b| format!("{}: {} bytes", b.path, b.bytes.len())).collect::<Vec<_>>();
    match kind {
        "kek" => {
            if serde_json::from_slice::<Value>(value).is_err() {
                return Some("an envelope that is not JSON".into());
            }
            let gcm_apart = [GCM_IV, KEK_LEN + GCM_TAG, ML_KEM_1024, ML_DSA_87_SIG];
            let gcm_joined = [GCM_IV + KEK_LEN + GCM_TAG, ML_KEM_1024, ML_DSA_87_SIG];
            (sizes != gcm_apart && sizes != gcm_joined).then(|| {
                format!(
                    "the binary fields should be an ML-KEM-1024 ciphertext ({ML_KEM_1024}), a \
                     12-byte IV and AES-256-GCM of a 32-byte KEK (48, or 60 with the IV in \
                     front) and an ML-DSA-87 signature ({ML_DSA_87_SIG}); found {:?}",
                    found()
                )
            })
        }
        "admitted" => (sizes.iter().any(|s| ![ML_KEM_1024, ML_DSA_87_SIG].contains(s))
            || sizes.len() > 2)
            .then(|| {
                format!(
                    "an admission holds at most a transport key ({ML_KEM_1024}) and a signature \
                     ({ML_DSA_87_SIG}); found {:?}",
                    found()
                )
            }),
        "nodes" => {
            // The evidence is the attestation format (digests, a quote, a
            // statement), which the nodes' verifiers check.
            let other: Vec<String> = bins
                .iter()
                .filter(|b| !b.path.starts_with(".evidence") && b.bytes.len() != 16)
                .map(|b| format!("{}: {} bytes", b.path, b.bytes.len()))
                .collect();
            (!other.is_empty()).then(|| format!("binary besides the salt and evidence: {other:?}"))
        }
        "removed" => sizes
            .iter()
            .any(|s| *s != ML_DSA_87_SIG)
            .then(|| format!("binary in a tombstone: {:?}", found())),
        _ => (!bins.is_empty()).then(|| format!("binary in a {kind} record: {:?}", found())),
    }
}

/// What a `qkeyd` CLI run gave.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<std::io::Result<std::process::Output>> for Out {
    fn from(o: std::io::Result<std::process::Output>) -> Self {
        let o = o.expect("run qkeyd");
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        Self { code: o.status.code(), stdout: text(o.stdout), stderr: text(o.stderr) }
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\nstdout: {}\nstderr: {}", self.code, self.stdout, self.stderr)
    }
}

/// An envelope claiming to come from a node that is not a member.
fn tamper_sender(e: &mut Value) {
    e["from"] = json!("n9");
}

/// An envelope whose AES-GCM ciphertext changed after it was signed.
fn tamper_wrapped(e: &mut Value) {
    let mut wrapped = B64.decode(e["wrapped"].as_str().unwrap()).unwrap();
    wrapped[0] ^= 1;
    e["wrapped"] = json!(B64.encode(wrapped));
}

/// Start a node's daemon with `config` on `state`, on `host` if given (in
/// its namespace, the REST API on its LAN address), else on loopback.
fn start_daemon(
    dir: tempfile::TempDir,
    config: &str,
    state: &Path,
    env: &[(&'static str, String)],
    host: Option<&Host>,
) -> Daemon {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let listen = host.map(|h| format!("{}:0", h.addr));
    let opts = Options {
        env: &env,
        listen: listen.as_deref(),
        netns: host.map(|h| h.ns.as_str()),
        ..Options::default()
    };
    Daemon::start_opts(dir, config, state, &opts)
}

fn wait_for_socket(socket: &Path, d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no KMS socket; log:\n{}", d.log());
        thread::sleep(Duration::from_millis(20));
    }
}

/// Write `text` to `path` in one step, so that a node re-reading the file
/// never sees half of it.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The key ids of `GET /v1/kms/cluster`.
fn key_ids(status: &Value) -> Vec<String> {
    status["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["key_id"].as_str().map(str::to_owned))
        .collect()
}

/// A node's entry in `GET /v1/kms/cluster`.
fn entry_of<'a>(status: &'a Value, node: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["node"] == node))
        .unwrap_or_else(|| panic!("no node {node} in {status:#}"))
}

/// `text` with each run of lines that differ only in their timestamp (the
/// first word) written once, with how many there were.
fn condense(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut last: Option<(&str, usize)> = None;
    for line in text.lines() {
        let rest = line.split_once(' ').map_or(line, |(_, r)| r);
        match &mut last {
            Some((prev, n)) if *prev == rest => *n += 1,
            _ => {
                if let Some((_, n)) = last.filter(|(_, n)| *n > 1) {
                    out.push(format!("    (the line above {n} times)"));
                }
                out.push(line.to_owned());
                last = Some((rest, 1));
            }
        }
    }
    if let Some((_, n)) = last.filter(|(_, n)| *n > 1) {
        out.push(format!("    (the line above {n} times)"));
    }
    out.join("\n")
}

/// The words of a line, without the punctuation around them.
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split_whitespace().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
}

fn lossy_head(raw: &[u8]) -> String {
    String::from_utf8_lossy(&raw[..40.min(raw.len())]).into_owned()
}

/// Call `f(path, string)` for every string in `v`, depth first.
fn strings(v: &Value, path: &str, f: &mut dyn FnMut(&str, &str)) {
    match v {
        Value::String(s) => f(path, s),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings(x, &format!("{path}[{i}]"), f);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                strings(x, &format!("{path}.{k}"), f);
            }
        }
        _ => {}
    }
}

/// A string of a record that decodes to bytes.
struct Bin {
    /// Where in the record (`.field[index]…`).
    path: String,
    text: String,
    bytes: Vec<u8>,
}

/// The strings of a record (JSON, else the value itself) that decode (hex,
/// then base64 in its usual forms) to 12 bytes or more and are neither
/// public nor key ids. Anything shorter cannot carry a KEK.
fn binaries_of(value: &[u8], public: &HashSet<String>) -> Vec<Bin> {
    let v = serde_json::from_slice::<Value>(value)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(value).into_owned()));
    let mut out = Vec::new();
    strings(&v, "", &mut |path, s| {
        if public.contains(s) || s.starts_with("qkeyd-kek-") {
            return;
        }
        if let Some(bytes) = decode(s).filter(|b| b.len() >= GCM_IV) {
            out.push(Bin { path: path.to_owned(), text: s.to_owned(), bytes });
        }
    });
    if std::str::from_utf8(value).is_err() && value.len() >= GCM_IV {
        out.push(Bin { path: String::new(), text: String::new(), bytes: value.to_vec() });
    }
    out
}

/// `s` as bytes if it is hex or base64 of 16 characters or more.
/// The sample whose KEK is some 32-byte window of `bytes`: the window opens
/// its ciphertext (`format ‖ iv ‖ body ‖ tag`, the key id and format as
/// associated data).
fn kek_in<'a>(bytes: &[u8], samples: &[&'a EncryptResponse]) -> Option<&'a EncryptResponse> {
    use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce, aead::Aead as _, aead::Payload};
    let opened = |kek: &[u8], e: &EncryptResponse| {
        let (format, rest) = e.ciphertext.split_first()?;
        let (iv, body) = rest.split_at_checked(12)?;
        let mut aad = b"qkeyd kms v2\0".to_vec();
        aad.extend_from_slice(e.key_id.as_bytes());
        aad.extend_from_slice(&[0, *format]);
        let iv: [u8; 12] = iv.try_into().ok()?;
        Aes256Gcm::new_from_slice(kek)
            .ok()?
            .decrypt(&Nonce::from(iv), Payload { msg: body, aad: &aad })
            .ok()
    };
    bytes.windows(KEK_LEN).find_map(|w| samples.iter().copied().find(|e| opened(w, e).is_some()))
}

#[test]
fn the_kek_scan_finds_a_kek_where_there_is_one() {
    use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce, aead::Aead as _, aead::Payload};
    let kek = [0x5au8; 32];
    let mut aad = b"qkeyd kms v2\0qkeyd-kek-test".to_vec();
    aad.extend_from_slice(&[0, 1]);
    let body = Aes256Gcm::new_from_slice(&kek)
        .unwrap()
        .encrypt(&Nonce::from([7u8; 12]), Payload { msg: &seed(1)[..], aad: &aad })
        .unwrap();
    let mut ciphertext = vec![1u8];
    ciphertext.extend_from_slice(&[7u8; 12]);
    ciphertext.extend_from_slice(&body);
    let e = EncryptResponse { ciphertext, key_id: "qkeyd-kek-test".into(), ..Default::default() };
    let mut record = b"{\"x\":\"".to_vec();
    record.extend_from_slice(&[1, 2, 3]);
    record.extend_from_slice(&kek);
    assert!(kek_in(&record, &[&e]).is_some(), "a KEK at an odd offset");
    record[10] ^= 1;
    assert!(kek_in(&record, &[&e]).is_none(), "one bit off is not the KEK");
}

fn decode(s: &str) -> Option<Vec<u8>> {
    use base64::{
        Engine as _,
        engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD},
    };
    if s.len() < 16 {
        return None;
    }
    if s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(s).ok();
    }
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].iter().find_map(|e| e.decode(s).ok())
}
