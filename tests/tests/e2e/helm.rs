//! The Helm chart in deploy/helm/qkeyd, with helm built from the Go module
//! proxy (`qkeyd_e2e::helm_bin`) and kube-apiserver, kubectl and etcd from
//! tests/k8s/build.sh: the chart lints with its defaults and every values set
//! in its ci/ folder; a real kube-apiserver accepts every rendering (server
//! dry-run, strict field validation, the Prometheus Operator's two kinds from
//! tests/k8s/crds/); the static pod it renders for control-plane nodes is a
//! Pod the API accepts too; its EncryptionConfiguration is
//! deploy/kubernetes/encryption-config.yaml (the file `kube::` runs a real
//! kube-apiserver with); its PrometheusRule carries
//! deploy/prometheus/qkeyd-rules.yaml; and every qkeyd.toml it writes loads
//! in `qkeyd check-config`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use qkeyd_e2e::{helm_bin, qkeyd_bin};
use serde_json::Value;

use super::k8s_peers::{Apiserver, Etcd, binaries};

/// The release name and namespace the chart is rendered for.
const RELEASE: &str = "qkeyd";
const NAMESPACE: &str = "qkeyd-system";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/qkeyd")
}

/// The values sets: the defaults (no file), then each `ci/*.yaml` by name.
fn value_sets() -> Vec<(String, Option<PathBuf>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "deploy/helm/qkeyd/ci/ should hold three values sets: {files:?}");
    let named =
        files.into_iter().map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), Some(p)));
    std::iter::once(("default".to_owned(), None)).chain(named).collect()
}

/// The objects (kind, name) a values set must render, beyond the five every
/// set renders.
fn expected_objects(set: &str) -> BTreeSet<(String, String)> {
    let mut want: BTreeSet<(String, String)> =
        ["ConfigMap", "DaemonSet", "NetworkPolicy", "Service", "ServiceAccount"]
            .iter()
            .map(|k| ((*k).to_owned(), RELEASE.to_owned()))
            .collect();
    let extra: &[(&str, &str)] = match set {
        "kms-control-plane-values" => &[("ConfigMap", "qkeyd-control-plane-files")],
        "monitoring-values" => &[("PrometheusRule", RELEASE), ("ServiceMonitor", RELEASE)],
        _ => &[],
    };
    want.extend(extra.iter().map(|(k, n)| ((*k).to_owned(), (*n).to_owned())));
    want
}

/// helm with config, cache and data folders of its own: nothing is read from
/// or written to the user's.
struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    fn new() -> Self {
        Self { bin: helm_bin(), home: tempfile::tempdir().unwrap() }
    }

    fn run(&self, args: &[&str], values: Option<&Path>) -> Result<String, String> {
        let h = self.home.path();
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_DATA_HOME", h.join("data"));
        if let Some(v) = values {
            cmd.arg("--values").arg(v);
        }
        let out = cmd.output().map_err(|e| format!("run {}: {e}", self.bin.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(text)
        }
    }

    /// `helm template` of the chart as release `qkeyd` in `qkeyd-system`,
    /// with `values` and more of helm's arguments (`--set`, `--show-only`).
    fn template(&self, values: Option<&Path>, more: &[&str]) -> String {
        let chart = chart();
        let mut args = vec!["template", RELEASE, chart.to_str().unwrap(), "--namespace", NAMESPACE];
        args.extend(more);
        self.run(&args, values).unwrap_or_else(|e| panic!("helm {args:?} {values:?}: {e}"))
    }
}

/// How many manifests a `helm template` output holds (helm heads each with
/// its source template, and leaves out templates that render nothing).
fn manifests(rendered: &str) -> usize {
    rendered.lines().filter(|l| l.starts_with("# Source: ")).count()
}

/// One YAML document (a mapping or a list, comments and all) as JSON, parsed
/// by kubectl, the YAML reader Kubernetes itself uses: the document goes under
/// a key of an object kubectl can read without a server (`patch --local` with
/// an empty patch prints what it read).
fn parse_yaml(kubectl_dir: &Path, text: &str) -> Value {
    let body: String = text
        .strip_prefix("---\n")
        .unwrap_or(text)
        .lines()
        .map(|l| if l.is_empty() { "\n".to_owned() } else { format!("  {l}\n") })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("document.yaml");
    std::fs::write(&file, format!("apiVersion: e2e.invalid/v1\nkind: Document\ndocument:\n{body}"))
        .unwrap();
    let out = Command::new(kubectl_dir.join("kubectl"))
        .args(["patch", "--local", "--type=merge", "--patch={}", "--output=json", "--filename"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl patch --local: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["document"].take()
}

/// [`parse_yaml`] of a file.
fn parse_yaml_file(kubectl_dir: &Path, file: &Path) -> Value {
    parse_yaml(kubectl_dir, &std::fs::read_to_string(file).unwrap())
}

/// The objects in kubectl's JSON output: one object, a `List`, or several
/// objects one after another.
fn objects(json: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(json)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .flat_map(|v| {
            if v["kind"] == "List" {
                v["items"].as_array().cloned().unwrap_or_default()
            } else {
                vec![v]
            }
        })
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {} objects", objects.len()))
}

/// etcd and a kube-apiserver without encryption at rest, in a temporary folder.
struct Cluster {
    // Dropped first: the apiserver stops before etcd and the folder go.
    api: Apiserver,
    _etcd: Etcd,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(bin: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start(bin, dir.path(), None);
        Apiserver::prepare_common(dir.path());
        let api = Apiserver::start_plain(
            bin,
            dir.path(),
            &dir.path().join("kube-apiserver"),
            "kube-apiserver",
            &etcd,
        );
        Self { api, _etcd: etcd, dir }
    }

    /// `kubectl apply --dry-run=server` of `file`, with kubectl's strict field
    /// validation (an unknown or duplicated field is an error); the objects
    /// the server would have stored.
    fn dry_run(&self, file: &Path) -> Vec<Value> {
        let out = self.api.kubectl(&[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "--output=json",
            "--filename",
            file.to_str().unwrap(),
        ]);
        objects(&out)
    }
}

#[test]
fn the_chart_lints_with_its_defaults_and_every_ci_values_set() {
    let helm = Helm::new();
    let chart = chart();
    for (name, values) in value_sets() {
        let out = helm
            .run(&["lint", "--strict", chart.to_str().unwrap()], values.as_deref())
            .unwrap_or_else(|e| panic!("helm lint --strict with {name}: {e}"));
        assert!(out.contains("0 chart(s) failed"), "helm lint with {name}: {out}");
    }
}

#[test]
fn a_real_apiserver_accepts_every_rendering_of_the_chart() {
    let bin = binaries();
    let helm = Helm::new();
    let cluster = Cluster::start(&bin);
    let api = &cluster.api;
    // What a cluster with the Prometheus Operator has, and the namespace the
    // chart installs into.
    let crds = repo().join("tests/k8s/crds");
    api.kubectl(&["apply", "--filename", crds.to_str().unwrap()]);
    api.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/servicemonitors.monitoring.coreos.com",
        "crd/prometheusrules.monitoring.coreos.com",
    ]);
    api.kubectl(&["create", "namespace", NAMESPACE]);
    // A static pod is the kubelet's; a Pod sent to the API needs its
    // namespace's default ServiceAccount, which the controller-manager (not
    // run here) would have made.
    api.kubectl(&["create", "serviceaccount", "default", "--namespace", "kube-system"]);

    for (name, values) in value_sets() {
        let rendered = helm.template(values.as_deref(), &[]);
        let file = cluster.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &rendered).unwrap();
        let accepted = cluster.dry_run(&file);
        assert_eq!(
            accepted.len(),
            manifests(&rendered),
            "{name}: the server dry-run returned another number of objects than were rendered"
        );
        let got: BTreeSet<(String, String)> = accepted
            .iter()
            .map(|o| {
                assert_eq!(o["metadata"]["namespace"], NAMESPACE, "{name}: {}", o["metadata"]);
                let kind = o["kind"].as_str().unwrap().to_owned();
                (kind, o["metadata"]["name"].as_str().unwrap().to_owned())
            })
            .collect();
        let want = expected_objects(&name);
        assert!(want.is_subset(&got), "{name}: rendered {got:?}, expected at least {want:?}");

        let ds = find(&accepted, "DaemonSet", RELEASE);
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        let qkeyd = &pod["containers"][0];
        let sc = &qkeyd["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["capabilities"]["drop"][0], "ALL", "{name}");
        assert_eq!(qkeyd["livenessProbe"]["httpGet"]["path"], "/healthz", "{name}");
        assert_eq!(qkeyd["readinessProbe"]["httpGet"]["path"], "/readyz", "{name}");
        // Non-root unless a device without a group is on (the hsm-tpm set's hwrng).
        let root = name == "hsm-tpm-devices-values";
        assert_eq!(pod["securityContext"]["runAsNonRoot"], !root, "{name}");

        // The files for control-plane nodes: the static pod is a Pod the API takes.
        if let Some(files) = accepted.iter().find(|o| {
            o["kind"] == "ConfigMap" && o["metadata"]["name"] == "qkeyd-control-plane-files"
        }) {
            let manifest = files["data"]["qkeyd-kms.yaml"].as_str().unwrap();
            let file = cluster.dir.path().join(format!("{name}-static-pod.yaml"));
            std::fs::write(&file, manifest).unwrap();
            let pods = cluster.dry_run(&file);
            assert_eq!(pods.len(), 1, "{name}: the static pod file holds one object");
            let p = find(&pods, "Pod", "qkeyd-kms");
            assert_eq!(p["metadata"]["namespace"], "kube-system", "{name}");
            assert_eq!(p["spec"]["hostNetwork"], true, "{name}");
            let args = p["spec"]["containers"][0]["args"].to_string();
            assert!(args.contains("--kms-socket=/var/run/qkeyd/kms.sock"), "{name}: {args}");
        }
    }
}

#[test]
fn the_rendered_encryption_config_is_the_one_in_deploy_kubernetes() {
    let bin = binaries();
    let helm = Helm::new();
    let rendered = helm.template(
        None,
        &[
            "--set",
            "kms.staticPod.enabled=true",
            "--show-only",
            "templates/control-plane-files.yaml",
        ],
    );
    let cm = parse_yaml(&bin, &rendered);
    assert_eq!(cm["kind"], "ConfigMap");
    let config = cm["data"]["encryption-config.yaml"].as_str().expect("encryption-config.yaml");
    let ours = parse_yaml(&bin, config);
    let deploy = parse_yaml_file(&bin, &repo().join("deploy/kubernetes/encryption-config.yaml"));
    assert_eq!(ours, deploy, "the chart's EncryptionConfiguration differs from deploy/'s");
    // And it is the socket the rendered static pod serves.
    let pod = cm["data"]["qkeyd-kms.yaml"].as_str().unwrap();
    assert!(pod.contains("--kms-socket=/var/run/qkeyd/kms.sock"), "{pod}");
    assert_eq!(
        ours["resources"][0]["providers"][0]["kms"]["endpoint"],
        "unix:///var/run/qkeyd/kms.sock"
    );
}

#[test]
fn the_prometheus_rule_carries_the_rules_in_deploy_prometheus() {
    // A copy (the chart README says why not a symlink), kept equal to the original.
    let original = repo().join("deploy/prometheus/qkeyd-rules.yaml");
    let copy = chart().join("files/qkeyd-rules.yaml");
    assert!(
        std::fs::read(&original).unwrap() == std::fs::read(&copy).unwrap(),
        "{} differs from {}: cp deploy/prometheus/qkeyd-rules.yaml deploy/helm/qkeyd/files/",
        copy.display(),
        original.display()
    );
    // And the PrometheusRule's spec is the rule file, parsed.
    let bin = binaries();
    let helm = Helm::new();
    let rendered = helm.template(
        None,
        &["--set", "prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml"],
    );
    let rule = parse_yaml(&bin, &rendered);
    assert_eq!(rule["kind"], "PrometheusRule");
    let groups = parse_yaml_file(&bin, &original);
    assert!(groups["groups"].as_array().is_some_and(|g| !g.is_empty()), "{groups}");
    assert_eq!(rule["spec"], groups, "the PrometheusRule's spec is not the rule file");
}

#[test]
fn every_qkeyd_toml_the_chart_writes_loads_in_check_config() {
    let bin = binaries();
    let helm = Helm::new();
    let dir = tempfile::tempdir().unwrap();
    for (name, values) in value_sets() {
        let rendered = helm.template(
            values.as_deref(),
            &[
                "--set",
                "kms.staticPod.enabled=true",
                "--show-only",
                "templates/configmap.yaml",
                "--show-only",
                "templates/control-plane-files.yaml",
            ],
        );
        for doc in rendered.split("\n---\n").filter(|d| d.contains("kind: ConfigMap")) {
            let cm = parse_yaml(&bin, doc);
            for key in ["qkeyd.toml", "qkeyd-kms.toml"] {
                let Some(text) = cm["data"][key].as_str() else { continue };
                let toml = dir.path().join(format!("{name}-{key}"));
                std::fs::write(&toml, text).unwrap();
                let out =
                    Command::new(qkeyd_bin()).arg("check-config").arg(&toml).output().unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                // "config loads, but N problem(s) on this machine": a device
                // of the values set that this machine lacks.
                assert!(
                    stdout.starts_with("config OK") || stdout.starts_with("config loads"),
                    "{name}: {key} does not load:\n{text}\n{stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}
