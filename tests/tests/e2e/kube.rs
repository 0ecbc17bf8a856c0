//! The real client: kube-apiserver and etcd, built from the Go module proxy by
//! tests/k8s/build.sh (cached outside the repo), encrypting Secrets through
//! qkeyd's KMS v2 plugin with a SoftHSM2 KEK and the EncryptionConfiguration
//! from deploy/.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use qkeyd_e2e::{HSM_PIN, SoftHsm};

use super::{
    k8s_peers::{Apiserver, Etcd, binaries, contains},
    kms::{Client, start},
    scrapes::alerts_firing_on,
};

/// One etcd (plain HTTP on loopback) and one kube-apiserver.
struct Cluster {
    // Dropped first: the apiserver stops before etcd and the directory go.
    api: Apiserver,
    etcd: Etcd,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(bin: PathBuf, socket: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(&bin, dir.path(), None);
        Apiserver::prepare_common(dir.path());
        let api = Apiserver::start(
            &bin,
            dir.path(),
            &dir.path().join("kube-apiserver"),
            "kube-apiserver",
            &etcd,
            None,
            socket,
        );
        Self { api, etcd, _dir: dir }
    }

    fn restart_apiserver(&mut self) {
        self.api.restart();
    }

    fn logs(&self) -> String {
        format!("{}\n{}", self.etcd.log(), self.api.log())
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.api
            .kubectl_raw(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}\n{}", self.logs()))
    }

    /// A Secret's value as kubectl reads it back.
    fn secret(&self, name: &str) -> Vec<u8> {
        self.api.secret(name)
    }

    /// What etcd stores for a Secret, read straight from etcd (its v3 HTTP gateway).
    fn etcd_value(&self, name: &str) -> Vec<u8> {
        let key = format!("/registry/secrets/default/{name}");
        self.etcd.get(&key).unwrap_or_else(|| panic!("no key {key} in etcd\n{}", self.logs()))
    }
}

/// qkeyd's scrape and kube-apiserver's KMS families, as one Prometheus
/// would have them side by side.
fn both_scrapes(qkeyd: &qkeyd_e2e::Daemon, cluster: &Cluster) -> String {
    let theirs = cluster.kubectl(&["get", "--raw", "/metrics"]);
    let kms: Vec<&str> =
        theirs.lines().filter(|l| l.contains("apiserver_envelope_encryption_")).collect();
    format!("{}\n{}\n", qkeyd.metrics(), kms.join("\n"))
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

    // The dashboard's join: kube-apiserver labels its KMS metrics with the
    // key id's hash, and qkeyd exports its write key hashed the same way.
    let ours = qkeyd.metrics();
    let hash = ours
        .lines()
        .find_map(|l| l.strip_prefix("qkeyd_kms_key_id_info{key_id_hash=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no qkeyd_kms_key_id_info:\n{ours}"))
        .to_owned();
    let theirs = cluster.kubectl(&["get", "--raw", "/metrics"]);
    let label = format!("key_id_hash=\"{hash}\"");
    for family in [
        "apiserver_envelope_encryption_key_id_hash_total{",
        "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{",
    ] {
        assert!(
            theirs.lines().any(|l| l.starts_with(family) && l.contains(&label)),
            "{family}{label}}} in kube-apiserver's metrics:\n{}",
            theirs.lines().filter(|l| l.contains("key_id_hash")).collect::<Vec<_>>().join("\n")
        );
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
    // Until the apiserver's next Status poll, qkeyd's write key is one no
    // apiserver has seen: held so for 15 minutes, the alert about it fires.
    let fired = alerts_firing_on(&[&both_scrapes(&qkeyd, &cluster)]);
    assert!(fired.contains("QkeydKmsWriteKeyNotInUse"), "{fired:?}");
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
    let fired = alerts_firing_on(&[&both_scrapes(&qkeyd, &cluster)]);
    assert!(!fired.contains("QkeydKmsWriteKeyNotInUse"), "{fired:?}");
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
