//! End-to-end tests: the built `qkeyd` binary, driven over HTTP and its CLI.
// Test code: a panic is how a test fails.
#![allow(missing_docs, clippy::unwrap_used)]

// /v1/random formats, bad input, default config, the other REST routes.
mod random_api;
// Simulated QRNG faults: stuck, biased, vanishing; fail-closed and OS fallback.
mod faults;
// A character-device source fed through a FIFO whose writer goes and comes back.
mod chardev;
// `qkeyd check-config` and start-up failures.
mod cli;
// `qkeyd assess`: SP 800-90B estimates against NIST's reference answers.
mod assess;
// The key vault: soft sealer and SoftHSM2, tampering, tokens, kill -9.
mod keys;
// The KMS v2 plugin: apiserver's rules, rotation, bad input, vanishing backends.
mod kms;
// kube-apiserver and etcd built from the Go module proxy, with qkeyd as their KMS plugin.
mod kube;
// The Helm chart in deploy/helm: lint, render, a real kube-apiserver's server dry-run,
// and its files against deploy/'s (EncryptionConfiguration, Prometheus rules).
mod helm;
// The etcd and kube-apiserver processes `kube` and `kms_cluster` run qkeyd beside
// (etcd's client TLS serves `kms_cluster` only, which needs the tpm feature).
#[cfg_attr(not(feature = "tpm"), allow(dead_code))]
mod k8s_peers;
// Three qkeyd nodes sharing KMS KEKs through etcd, admitted by TPM evidence; three
// kube-apiservers on them; races, node and etcd faults.
#[cfg(feature = "tpm")]
mod kms_cluster;
// Network namespaces on a private bridge: `kms_cluster`'s nodes as separate hosts.
#[cfg(feature = "tpm")]
mod netns;
// The Sealer contract, case by case, on the soft sealer, SoftHSM2 and swtpm.
mod sealers;
// libqkeyd_pkcs11.so through pkcs11-tool, python-pkcs11, ctypes and cryptoki.
mod pkcs11;
mod pkcs11_apps;
// Whom the PKCS#11 module trusts with a PIN: squatters of another uid, the real daemon.
mod module_trust;
// The module socket under a flood: timeouts, per-uid shares, oversized frames.
mod module_socket;
// The state directory on a small tmpfs: full, read-only, and back (root only).
mod state_dir;
// The REST API over TLS: hybrid and pq-only groups, client certificates and rights,
// refused handshakes, certificate rotation, the listen policy.
mod tls;
// `qkeyd tls self-issue`, and the keys/kms CLI over https with --ca-file and client certificates.
#[cfg(feature = "tpm")]
mod attest;
#[cfg(feature = "tpm")]
mod attest_tpm;
mod tls_cli;
// Tampered evidence fails by name; the go-tpm checker, tpm2_checkquote and ours agree.
#[cfg(feature = "tpm")]
mod attest_golden;
// Keys for the gateway: the stand-in takes 100 attested keys; altered answers; the trust bar.
#[cfg(feature = "tpm")]
mod gateway;
// The QKD 014 KME simulator (two KMEs, one key stream, mTLS, fault modes): its self-test.
mod qkd_kme;
// Two qkeyd nodes serving GS QKD 014 hybrid keys to their SAEs over a simulated link.
mod qkd_hybrid;
// Live scoring: an idle daemon keeps sampling and scoring its sources.
mod live;
// systemd: READY only after the first healthy seed, STATUS and WATCHDOG; the unit verifies.
mod systemd;
// [kernel] feed: RNDADDENTROPY credits seen through strace (root only).
mod kernel_feed;
// TPM2_GetRandom (swtpm) and C_GenerateRandom (SoftHSM2) as entropy sources.
mod hw_sources;
// deploy/prometheus and deploy/grafana through promtool: the alert rules and their unit
// tests, every dashboard query; real daemons' scrapes fire the alerts of their state.
mod rules;
// Real /metrics scrapes through the alert rules (promtool): which alerts fire.
mod scrapes;
// Daemons put into the states the alerts are about, and the alerts that fire.
mod alert_states;
// The status page in Debian's Chromium (playwright-core): screenshots, keyboard, drift.
mod status_page;
