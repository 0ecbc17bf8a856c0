//! Prometheus metrics. Pool and source figures are read from a snapshot at
//! scrape time; request figures are counted as requests are answered. Labels
//! are source names (checked in the config) and fixed words, never request data.

use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

mod operator;

pub(crate) use operator::{KeyMetrics, KmsMetrics, key_id_hash, key_operation, outcome};

use crate::pool::{PoolSnapshot, Serving, SourceState};

/// All of qkeyd's metrics.
pub(crate) struct Metrics {
    registry: Registry,
    /// Serialises `render`: counters catch up by difference, and two scrapes
    /// at once would both add it.
    render: std::sync::Mutex<()>,
    /// Random bytes served, by seed origin.
    pub(crate) bytes_served: IntCounterVec,
    /// /v1/random answers, by HTTP status.
    pub(crate) random_requests: IntCounterVec,
    /// Key requests refused before reaching the vault, by reason.
    pub(crate) key_denied: IntCounterVec,
    /// Connections refused on qkeyd's sockets, by socket and reason.
    pub(crate) connections_refused: IntCounterVec,
    /// Module connections qkeyd closed, by reason.
    pub(crate) module_closed: IntCounterVec,
    /// The REST API's TLS: handshakes, their time, certificate reloads.
    pub(crate) tls: TlsMetrics,
    /// The KMS plugin's KEKs shared through etcd.
    pub(crate) cluster: ClusterMetrics,
    /// QKD links and the GS QKD 014 server.
    pub(crate) qkd: QkdMetrics,
    /// The KMS plugin's calls and write key.
    pub(crate) kms: KmsMetrics,
    /// The vault's keys, their operations, the sealer and module clients.
    pub(crate) keys: KeyMetrics,
    samples: IntCounterVec,
    usable: IntCounterVec,
    failures: IntCounterVec,
    disconnects: IntCounterVec,
    state: IntGaugeVec,
    serving: IntGaugeVec,
    fail_closed: IntGauge,
    seeds: IntCounter,
    trust: prometheus::GaugeVec,
    drift: prometheus::GaugeVec,
    assessments: IntCounterVec,
    assessed_h: prometheus::GaugeVec,
    reseed_counter: IntGauge,
    seed_age: Gauge,
    sample_age: prometheus::GaugeVec,
    kernel_bytes: IntCounter,
    kernel_credited: IntCounter,
    kernel_skipped: IntCounterVec,
}

/// The shared KEKs' metrics (`[kms.cluster]`).
#[derive(Clone)]
pub(crate) struct ClusterMetrics {
    /// Polls of etcd by outcome: ok, etcd_down, failed.
    pub(crate) polls: IntCounterVec,
    /// 1 if the last poll reached etcd.
    pub(crate) etcd_up: IntGauge,
    /// Nodes by state in this node's view: admitted, refused.
    pub(crate) nodes: IntGaugeVec,
    /// KEK envelopes by outcome: wrapped (to another node), received
    /// (opened and sealed here), refused.
    pub(crate) envelopes: IntCounterVec,
}

/// QKD links' and the GS QKD 014 server's metrics. Labels are KME names
/// (checked in the config) and fixed words.
#[derive(Clone)]
pub(crate) struct QkdMetrics {
    /// QKD keys received from a KME, by KME and outcome: usable, or the
    /// link's refusal (repeated_key_id, repeated_key, rct, apt, startup,
    /// distrusted, failed).
    pub(crate) link_keys: IntCounterVec,
    /// A link's trust score.
    pub(crate) link_trust: prometheus::GaugeVec,
    /// 1 while a link is out of use.
    pub(crate) link_out_of_use: IntGaugeVec,
    /// KME calls that failed, by KME and kind: unreachable, refused, bad_answer.
    pub(crate) kme_errors: IntCounterVec,
    /// GS QKD 014 answers of the server, by endpoint and HTTP status.
    pub(crate) requests: IntCounterVec,
    /// Keys delivered to SAEs, by side: enc (to the master), dec (to the slave).
    pub(crate) delivered: IntCounterVec,
    /// Time from a request to its answer, by endpoint, for answers with keys.
    pub(crate) seconds: prometheus::HistogramVec,
}

/// The REST API's TLS metrics.
#[derive(Clone)]
pub(crate) struct TlsMetrics {
    /// Handshakes by outcome, group and version.
    pub(crate) handshakes: IntCounterVec,
    /// Handshake time by group.
    pub(crate) handshake_seconds: prometheus::HistogramVec,
    /// Certificate reloads by outcome.
    pub(crate) reloads: IntCounterVec,
    /// The served certificate's notAfter.
    pub(crate) expiry: IntGauge,
}

/// One sample of a metric, as [`Metrics::samples`] gives it.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    /// The series' name.
    pub(crate) name: String,
    /// Its labels, by name.
    pub(crate) labels: Vec<(String, String)>,
    /// Its value.
    pub(crate) value: f64,
}

impl Sample {
    fn new(name: &str, labels: Vec<(String, String)>, value: f64) -> Self {
        Self { name: name.to_owned(), labels, value }
    }
}

const STATES: [(SourceState, &str); 6] = [
    (SourceState::Startup, "startup"),
    (SourceState::Healthy, "healthy"),
    (SourceState::Quarantined, "quarantined"),
    (SourceState::Failed, "failed"),
    (SourceState::Unavailable, "unavailable"),
    (SourceState::Distrusted, "distrusted"),
];

impl Metrics {
    /// Create and register every metric.
    pub(crate) fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let bytes_served =
            counter("qkeyd_random_bytes_served_total", "Random bytes served.", &["serving"])?;
        let random_requests =
            counter("qkeyd_random_requests_total", "/v1/random requests by status.", &["status"])?;
        let key_denied = counter(
            "qkeyd_key_requests_denied_total",
            "REST requests refused before a handler (reason: missing, invalid, token_off, forbidden, disabled).",
            &["reason"],
        )?;
        let connections_refused = counter(
            "qkeyd_connections_refused_total",
            "Connections refused on the module and KMS sockets, by socket and reason.",
            &["socket", "reason"],
        )?;
        let module_closed = counter(
            "qkeyd_module_connections_closed_total",
            "Module connections qkeyd closed: idle, slow (a request not whole in time) or bad_frame (over its limit, unknown or empty).",
            &["reason"],
        )?;
        let samples =
            counter("qkeyd_source_samples_total", "Raw samples read and tested.", &["source"])?;
        let usable = counter(
            "qkeyd_source_usable_samples_total",
            "Samples that passed health tests and were conditioned.",
            &["source"],
        )?;
        let failures = counter(
            "qkeyd_health_failures_total",
            "SP 800-90B health-test failures.",
            &["source", "test"],
        )?;
        let disconnects =
            counter("qkeyd_source_disconnects_total", "Times a device went away.", &["source"])?;
        let state = IntGaugeVec::new(
            Opts::new("qkeyd_source_state", "1 for the source's current state."),
            &["source", "state"],
        )?;
        registry.register(Box::new(state.clone()))?;
        let serving = IntGaugeVec::new(
            Opts::new(
                "qkeyd_entropy_serving",
                "1 for where served bytes come from now: sources, os-fallback or none.",
            ),
            &["mode"],
        )?;
        registry.register(Box::new(serving.clone()))?;
        let fail_closed = IntGauge::new(
            "qkeyd_entropy_fail_closed",
            "1 if the pool refuses to serve without a healthy source.",
        )?;
        registry.register(Box::new(fail_closed.clone()))?;
        let trust = prometheus::GaugeVec::new(
            Opts::new("qkeyd_source_trust", "Trust score of the source, 0..1 (1 = fully trusted)."),
            &["source"],
        )?;
        registry.register(Box::new(trust.clone()))?;
        let drift = prometheus::GaugeVec::new(
            Opts::new("qkeyd_source_drift", "Drift score of the source, 0..1 (0 = as claimed)."),
            &["source"],
        )?;
        registry.register(Box::new(drift.clone()))?;
        let assessments = counter(
            "qkeyd_source_full_assessments_total",
            "Full SP 800-90B non-IID assessments of live sources, by result.",
            &["source", "result"],
        )?;
        let assessed_h = prometheus::GaugeVec::new(
            Opts::new(
                "qkeyd_source_assessed_min_entropy_bits",
                "Final min(H) per sample of the last full assessment.",
            ),
            &["source"],
        )?;
        registry.register(Box::new(assessed_h.clone()))?;
        let tls = TlsMetrics {
            handshakes: counter(
                "qkeyd_tls_handshakes_total",
                "TLS handshakes on the REST API, by outcome (success or why it failed), \
                 negotiated key exchange group and TLS version.",
                &["outcome", "group", "version"],
            )?,
            handshake_seconds: {
                let h = prometheus::HistogramVec::new(
                    prometheus::HistogramOpts::new(
                        "qkeyd_tls_handshake_duration_seconds",
                        "Time from accepting a connection to a finished TLS handshake, by group.",
                    )
                    .buckets(vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0]),
                    &["group"],
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            reloads: counter(
                "qkeyd_tls_certificate_reloads_total",
                "TLS certificate and key files read after a change: loaded or refused.",
                &["outcome"],
            )?,
            expiry: {
                let g = IntGauge::new(
                    "qkeyd_tls_certificate_expiry_timestamp_seconds",
                    "notAfter of the TLS certificate being served, in Unix seconds.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
        };
        let cluster = ClusterMetrics {
            polls: counter(
                "qkeyd_kms_cluster_polls_total",
                "Polls of the cluster's state in etcd, by outcome: ok (a sync), unchanged (nothing to sync), etcd_down, failed.",
                &["outcome"],
            )?,
            etcd_up: {
                let g =
                    IntGauge::new("qkeyd_kms_cluster_etcd_up", "1 if the last poll reached etcd.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            nodes: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "qkeyd_kms_cluster_nodes",
                        "Nodes whose evidence passes this node's policy (admitted) or fails it (refused).",
                    ),
                    &["state"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            envelopes: counter(
                "qkeyd_kms_cluster_envelopes_total",
                "KEK envelopes: wrapped to another node, received and sealed here, or refused.",
                &["outcome"],
            )?,
        };
        let qkd = QkdMetrics {
            link_keys: counter(
                "qkeyd_qkd_link_keys_total",
                "QKD keys received from a KME, by outcome: usable, or why the link refused it.",
                &["kme", "outcome"],
            )?,
            link_trust: {
                let g = prometheus::GaugeVec::new(
                    Opts::new("qkeyd_qkd_link_trust", "A QKD link's trust score (0..1)."),
                    &["kme"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            link_out_of_use: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "qkeyd_qkd_link_out_of_use",
                        "1 while a QKD link is out of use (distrusted or failed).",
                    ),
                    &["kme"],
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            kme_errors: counter(
                "qkeyd_qkd_kme_errors_total",
                "KME calls that failed: unreachable, refused, bad_answer.",
                &["kme", "kind"],
            )?,
            requests: counter(
                "qkeyd_qkd_requests_total",
                "GS QKD 014 requests answered by the server, by endpoint and HTTP status.",
                &["endpoint", "status"],
            )?,
            delivered: counter(
                "qkeyd_qkd_keys_delivered_total",
                "Keys delivered to SAEs: enc (to the master SAE), dec (to the slave SAE).",
                &["side"],
            )?,
            seconds: {
                let h = prometheus::HistogramVec::new(
                    prometheus::HistogramOpts::new(
                        "qkeyd_qkd_request_duration_seconds",
                        "Time to answer a GS QKD 014 key request that delivered keys.",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                    ]),
                    &["endpoint"],
                )?;
                registry.register(Box::new(h.clone()))?;
                h
            },
        };
        let kms = KmsMetrics::new(&registry)?;
        let keys = KeyMetrics::new(&registry)?;
        let seeds = IntCounter::new("qkeyd_drbg_seeds_total", "DRBG instantiations and reseeds.")?;
        registry.register(Box::new(seeds.clone()))?;
        let reseed_counter =
            IntGauge::new("qkeyd_drbg_reseed_counter", "SP 800-90A reseed counter of the DRBG.")?;
        registry.register(Box::new(reseed_counter.clone()))?;
        let seed_age =
            Gauge::new("qkeyd_drbg_seed_age_seconds", "Seconds since the last (re)seed.")?;
        registry.register(Box::new(seed_age.clone()))?;
        let sample_age = prometheus::GaugeVec::new(
            Opts::new(
                "qkeyd_source_sample_age_seconds",
                "Seconds since samples were last read from the source.",
            ),
            &["source"],
        )?;
        registry.register(Box::new(sample_age.clone()))?;
        let kernel_bytes = IntCounter::new(
            "qkeyd_kernel_feed_bytes_total",
            "Bytes written to the kernel's entropy pool (RNDADDENTROPY).",
        )?;
        registry.register(Box::new(kernel_bytes.clone()))?;
        let kernel_credited = IntCounter::new(
            "qkeyd_kernel_feed_credited_bits_total",
            "Entropy bits credited to the kernel: the configured fraction of assessed entropy.",
        )?;
        registry.register(Box::new(kernel_credited.clone()))?;
        let kernel_skipped = counter(
            "qkeyd_kernel_feeds_skipped_total",
            "Kernel feeds not made: unhealthy (the pool cannot serve from its sources), \
             unassessed (the source is not measured yet), refused (by the kernel).",
            &["reason"],
        )?;
        Ok(Self {
            registry,
            render: std::sync::Mutex::new(()),
            bytes_served,
            random_requests,
            key_denied,
            connections_refused,
            module_closed,
            tls,
            cluster,
            qkd,
            kms,
            keys,
            samples,
            usable,
            failures,
            disconnects,
            state,
            serving,
            fail_closed,
            seeds,
            trust,
            drift,
            assessments,
            assessed_h,
            reseed_counter,
            seed_age,
            sample_age,
            kernel_bytes,
            kernel_credited,
            kernel_skipped,
        })
    }

    /// Bring the KMS write key, its Status and the vault's key counts up to
    /// date (before [`Metrics::render`]).
    pub(crate) fn catch_up_services(
        &self,
        kms: Option<&crate::kms::KmsInfo>,
        keys: Option<&[(String, String)]>,
    ) {
        if let Some(k) = kms {
            self.kms.catch_up(k.write_key_id.as_deref(), k.last_check.map(|c| c.ok));
        }
        if let Some(keys) = keys {
            self.keys.catch_up(keys);
        }
    }

    /// Every sample of the families named in `names` (a histogram as its
    /// `_count` and `_sum`): for the status page, which shows some counters
    /// without parsing text.
    pub(crate) fn samples(&self, names: &[&str]) -> Vec<Sample> {
        let mut out = Vec::new();
        for family in self.registry.gather() {
            if !names.contains(&family.name()) {
                continue;
            }
            use prometheus::proto::MetricType;
            let kind = family.get_field_type();
            for m in family.get_metric() {
                let labels: Vec<(String, String)> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name().to_owned(), l.value().to_owned()))
                    .collect();
                let name = family.name();
                match kind {
                    MetricType::COUNTER => {
                        out.push(Sample::new(name, labels, m.get_counter().get_value()));
                    }
                    MetricType::GAUGE => {
                        out.push(Sample::new(name, labels, m.get_gauge().get_value()));
                    }
                    MetricType::HISTOGRAM => {
                        let h = m.get_histogram();
                        // Counts are far below 2^53: exact as f64.
                        #[allow(clippy::cast_precision_loss)]
                        let count = h.get_sample_count() as f64;
                        out.push(Sample::new(&format!("{name}_count"), labels.clone(), count));
                        out.push(Sample::new(&format!("{name}_sum"), labels, h.get_sample_sum()));
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Bring pool figures up to date and render the text exposition format.
    pub(crate) fn render(&self, snap: &PoolSnapshot) -> Result<String, prometheus::Error> {
        let _serial = self.render.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fn catch_up(c: &IntCounter, value: u64) {
            c.inc_by(value.saturating_sub(c.get()));
        }
        for s in &snap.sources {
            let name = s.name.as_str();
            catch_up(&self.samples.with_label_values(&[name]), s.samples);
            catch_up(&self.usable.with_label_values(&[name]), s.usable_samples);
            catch_up(&self.failures.with_label_values(&[name, "rct"]), s.rct_failures);
            catch_up(&self.failures.with_label_values(&[name, "apt"]), s.apt_failures);
            catch_up(&self.disconnects.with_label_values(&[name]), s.disconnects);
            self.trust.with_label_values(&[name]).set(s.trust_score);
            self.drift.with_label_values(&[name]).set(s.drift_score);
            if let Some(age) = s.sample_age_secs {
                self.sample_age.with_label_values(&[name]).set(age);
            }
            let failed = s.full_assessments_failed;
            catch_up(&self.assessments.with_label_values(&[name, "fail"]), failed);
            catch_up(
                &self.assessments.with_label_values(&[name, "pass"]),
                s.full_assessments - failed,
            );
            if let Some(a) = &s.last_full_assessment {
                self.assessed_h.with_label_values(&[name]).set(a.h_assessed);
            }
            for (state, label) in STATES {
                self.state.with_label_values(&[name, label]).set(i64::from(s.state == state));
            }
        }
        for (mode, label) in [
            (Some(Serving::Sources), "sources"),
            (Some(Serving::OsFallback), "os-fallback"),
            (None, "none"),
        ] {
            self.serving.with_label_values(&[label]).set(i64::from(snap.serving == mode));
        }
        self.fail_closed.set(i64::from(snap.mode == crate::config::EntropyMode::FailClosed));
        catch_up(&self.seeds, snap.drbg.seeds);
        self.reseed_counter.set(i64::try_from(snap.drbg.reseed_counter).unwrap_or(i64::MAX));
        self.seed_age.set(snap.drbg.seed_age_secs.unwrap_or(0.0));
        if let Some(k) = &snap.kernel_feed {
            catch_up(&self.kernel_bytes, k.bytes);
            catch_up(&self.kernel_credited, k.credited_bits);
            for (reason, n) in [
                ("unhealthy", k.skipped_unhealthy),
                ("unassessed", k.skipped_unassessed),
                ("refused", k.errors),
            ] {
                catch_up(&self.kernel_skipped.with_label_values(&[reason]), n);
            }
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}
