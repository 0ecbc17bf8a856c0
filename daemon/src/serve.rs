//! `qkeyd serve`: wire sources, pool and API together and run until SIGTERM.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use qkeyd_drivers::{
    EntropySource,
    seal::{
        Sealer,
        pkcs11::{Pkcs11Config, Pkcs11Sealer},
        soft::SoftSealer,
        worker::SealerWorker,
    },
    source::{
        chardev::CharDevSource,
        os::OsSource,
        pkcs11::{Pkcs11Source, Pkcs11SourceConfig},
        sim::SimSource,
    },
};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    api::{
        self, AppState,
        keys::{KeysState, TokenDigest},
    },
    config::{
        Config, KeysConfig, KmsSettings, ModuleSettings, PinSource, Scoring, SealerConfig,
        SocketSpec, SourceConfig, SourceKind,
    },
    kms,
    metrics::Metrics,
    module_server,
    notify::Notifier,
    pool::{self, Pool, SourceStatus},
    refusals::Refusals,
    sources, unix_socket,
    vault::Vault,
};

/// How long in-flight requests get after SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);

/// Run the daemon.
pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    // SIGHUP's default action ends the process: take it over before anything
    // else, so `systemctl reload` (or a stray HUP) never stops the daemon.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    let vectors = qkeyd_drbg::kat::run_all().context("refusing to start")?;
    tracing::info!(vectors, "CTR_DRBG known-answer tests passed");
    if config.danger.os_fallback {
        tracing::warn!(
            "DANGER: [danger] os_fallback is on: with no healthy source, bytes are seeded \
             from getrandom(2) instead of refusing"
        );
    }
    if config.danger.allow_sim_sources {
        tracing::warn!(
            "DANGER: [danger] allow_sim_sources is on: simulated sources produce \
             predictable samples and must not seed anything that matters"
        );
    }
    let kats = qkeyd_pqc::kat::run().context("ML-KEM/ML-DSA known-answer tests")?;
    tracing::info!(
        keygen = kats.keygen,
        kem = kats.kem,
        sign = kats.sign,
        "ML-KEM/ML-DSA known-answer tests passed"
    );
    let pool = start_pool(&config)?;
    let (dir, sealer) = open_sealer(&config.keys)?;
    let token_serial = sealer.call(|s| Ok(s.token_serial())).ok().flatten();
    let keys = open_vault(&config.keys, &dir, sealer.clone(), &pool)?;
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    metrics.keys.watch_sealer(sealer.clone());
    let kms = match &config.kms.socket {
        Some(socket) => {
            Some(start_kms(&config.kms, socket, &dir, sealer, &pool, metrics.kms.clone())?)
        }
        None => None,
    };
    let attest = match &config.attest {
        Some(settings) => Some(Arc::new(crate::attest::Attestor::open(
            settings,
            &dir,
            &config.keys.sealer,
            token_serial,
            keys.vault.clone(),
            pool.clone(),
        )?)),
        None => None,
    };
    let vault = keys.vault.clone();
    let cluster = match (&config.kms.cluster, &kms, &attest) {
        (Some(settings), Some(k), Some(a)) => {
            let c = crate::kms::cluster::Cluster::open(
                settings,
                &dir,
                k.kms.clone(),
                keys.vault.clone(),
                a.clone(),
                metrics.cluster.clone(),
            )?;
            c.spawn();
            Some(c)
        }
        _ => None,
    };
    let module = match &config.module.socket {
        Some(socket) => {
            Some(start_module_server(&config.module, socket, &dir, &keys, &pool, &metrics)?)
        }
        None => None,
    };
    let state = AppState {
        pool,
        metrics,
        keys: Some(keys),
        kms: kms.as_ref().map(|k| k.kms.clone()),
        max_request_bytes: config.max_request_bytes,
        generate_permits: Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
        )),
        access: config.access.clone(),
        attest,
        cluster,
        tls_on: config.tls.is_some(),
    };
    let tls = match &config.tls {
        Some(settings) => {
            let server = crate::tls::TlsServer::new(settings, state.metrics.tls.clone())?;
            tracing::info!(
                groups = ?settings.groups,
                tls12 = settings.allow_tls12,
                client_ca = ?settings.client_ca,
                clients = settings.clients.len(),
                "TLS on the REST API"
            );
            Some(Arc::new(server))
        }
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    match &tls {
        Some(_) => tracing::info!("listening on https://{addr}"),
        None => {
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    %addr,
                    "DANGER: [danger] plaintext_beyond_loopback is on: the REST API serves \
                     plain HTTP beyond loopback"
                );
            }
            tracing::info!("listening on http://{addr}");
        }
    }
    let reload = tokio::spawn(watch_certificate(
        tls.as_ref().map(|t| (t.store().clone(), t.reload_interval())),
        hup,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let qkd = crate::qkd::server::start(
        &config,
        &dir,
        &state.pool,
        &vault,
        state.attest.clone(),
        &state.metrics,
        stop_rx.clone(),
    )
    .await?;
    let grpc = kms.map(|k| {
        let mut stop = stop_rx.clone();
        let refusals = Refusals::new("kms", state.metrics.connections_refused.clone());
        let incoming = kms::grpc::incoming(k.listener, k.allowed_uids, refusals);
        let server = tonic::transport::Server::builder()
            .add_service(k.service.server())
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.changed().await;
            });
        (tokio::spawn(server), k.socket)
    });
    let module = module.map(|(server, listener, socket)| {
        (tokio::spawn(server.serve(listener, stop_rx.clone())), socket)
    });
    let pool = state.pool.clone();
    let http = tokio::spawn(api::server::serve(listener, api::router(state), tls, stop_rx));
    let notifier = Notifier::start(pool)?;
    shutdown().await;
    if let Some(n) = &notifier {
        n.stopping();
    }
    let _ = stop_tx.send(true);
    reload.abort();
    http.await.context("HTTP server")?;
    if let Some(task) = qkd {
        task.await.context("GS QKD 014 server")?;
    }
    if let Some((task, socket)) = grpc {
        task.await.context("KMS server")?.context("KMS server")?;
        if let SocketSpec::Path { path, .. } = &socket {
            let _ = std::fs::remove_file(path);
        }
    }
    if let Some((task, socket)) = module {
        // Connection threads end with their clients; only the listener stops here.
        task.await.context("PKCS#11 module server")?;
        if let SocketSpec::Path { path, .. } = &socket {
            let _ = std::fs::remove_file(path);
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The PKCS#11 module's server, its bound socket, and where that is.
type ModuleRunning = (Arc<module_server::Server>, tokio::net::UnixListener, SocketSpec);

/// Resolve the token's PINs (generating `STATE_DIR/module-pin` and
/// `module-so-pin` where none is configured), open the token objects, and
/// bind the socket served to the PKCS#11 module.
fn start_module_server(
    settings: &ModuleSettings,
    socket: &SocketSpec,
    dir: &std::path::Path,
    keys: &KeysState,
    pool: &Arc<Pool>,
    metrics: &Metrics,
) -> anyhow::Result<ModuleRunning> {
    use module_server::token_pin;
    use sha3::Digest as _;
    let user = token_pin(settings.pin.as_ref(), &dir.join("module-pin"), "the PKCS#11 token PIN")?;
    let so = token_pin(
        settings.so_pin.as_ref(),
        &dir.join("module-so-pin"),
        "the PKCS#11 security officer PIN",
    )?;
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let digest = sha3::Sha3_256::digest(canonical.as_os_str().as_encoded_bytes());
    let serial = hex::encode(&digest[..8]);
    let own = unix_socket::own_uid().context("reading qkeyd's own uid")?;
    let mut uids = vec![0, own];
    uids.extend(&settings.allowed_uids);
    uids.sort_unstable();
    uids.dedup();
    let listener = unix_socket::bind(socket).with_context(|| {
        format!("cannot listen for the PKCS#11 module on {}", socket.endpoint())
    })?;
    tracing::info!(
        endpoint = %socket.endpoint(), serial, uids = ?uids, gids = ?settings.allowed_gids,
        "PKCS#11 module socket listening"
    );
    let server =
        module_server::Server::new(keys, pool.clone(), [user, so], serial, settings, uids, metrics);
    Ok((Arc::new(server), listener, socket.clone()))
}

/// The KMS plugin, ready to serve.
struct KmsRunning {
    kms: Arc<kms::Kms>,
    service: kms::grpc::Service,
    listener: tokio::net::UnixListener,
    socket: SocketSpec,
    allowed_uids: Vec<u32>,
}

/// Open the KMS plugin over the vault's sealer, make its first KEK if it has
/// none, and bind its socket.
fn start_kms(
    settings: &KmsSettings,
    socket: &SocketSpec,
    dir: &std::path::Path,
    sealer: SealerWorker,
    pool: &Arc<Pool>,
    metrics: crate::metrics::KmsMetrics,
) -> anyhow::Result<KmsRunning> {
    // Calls in progress at once (on the blocking pool or queued at the
    // sealer); the rest wait for a place.
    let permits = std::thread::available_parallelism().map_or(2, |n| n.get()) * 8;
    let k = Arc::new(
        kms::Kms::open(dir, sealer, pool.clone(), settings, permits)
            .context("opening the KMS plugin's KEKs")?,
    );
    // A first KEK needs healthy entropy and the sealer; if either is missing
    // now, Status keeps trying (and answers with an error meanwhile).
    match k.ensure_key() {
        Ok(key_id) => tracing::info!(key_id, backend = k.backend(), "KMS write key"),
        Err(e) => tracing::error!(error = %e, "KMS plugin has no write key yet"),
    }
    let listener = unix_socket::bind(socket)
        .with_context(|| format!("cannot listen for the KMS plugin on {}", socket.endpoint()))?;
    let own = unix_socket::own_uid().context("reading qkeyd's own uid")?;
    let mut allowed_uids = vec![0, own];
    allowed_uids.extend(&settings.allowed_uids);
    allowed_uids.sort_unstable();
    allowed_uids.dedup();
    if settings.mode & 0o077 != 0 {
        tracing::warn!(
            mode = format!("{:o}", settings.mode),
            "the KMS socket is open beyond qkeyd's user; only these uids are served: {allowed_uids:?}"
        );
    }
    tracing::info!(endpoint = %socket.endpoint(), uids = ?allowed_uids, "KMS v2 plugin listening");
    let service = kms::grpc::Service::new(k.clone(), metrics);
    Ok(KmsRunning { kms: k, service, listener, socket: socket.clone(), allowed_uids })
}

/// Where state lives when neither the config nor `--state-dir` says:
/// `$STATE_DIRECTORY` (systemd), else `~/.local/state/qkeyd`, else `./qkeyd-state`.
pub(crate) fn default_state_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        return d.into();
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => std::path::Path::new(&home).join(".local/state/qkeyd"),
        None => "qkeyd-state".into(),
    }
}

/// Create the state directory (0700) and open the configured sealer on a
/// thread of its own. The vault and the KMS plugin share it.
pub(crate) fn open_sealer(keys: &KeysConfig) -> anyhow::Result<(std::path::PathBuf, SealerWorker)> {
    use std::os::unix::fs::DirBuilderExt as _;
    let dir = keys.state_dir.clone().unwrap_or_else(default_state_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    let sealer: Box<dyn Sealer> = match &keys.sealer {
        SealerConfig::Soft { key_file } => {
            let path = key_file.clone().unwrap_or_else(|| dir.join("soft-seal.key"));
            tracing::warn!(
                key_file = %path.display(),
                "DANGER: keys are sealed by the soft sealer, under a key file on disk; \
                 use the hsm or tpm sealer for keys that matter"
            );
            Box::new(SoftSealer::open(&path)?)
        }
        SealerConfig::Hsm { module, token_label, pin } => {
            let config = Pkcs11Config {
                module: module.clone(),
                token_label: token_label.clone(),
                pin: pin.read()?,
            };
            let sealer = Pkcs11Sealer::open(config).with_context(|| {
                format!("PKCS#11 token {token_label:?} via {}", module.display())
            })?;
            tracing::info!(module = %module.display(), token = %token_label, "keys are sealed in an HSM token");
            Box::new(sealer)
        }
        #[cfg(feature = "tpm")]
        SealerConfig::Tpm { tcti, pcrs } => {
            use qkeyd_drivers::seal::tpm::{TpmConfig, TpmSealer};
            let sealer = TpmSealer::open(TpmConfig { tcti: tcti.clone(), pcrs: pcrs.clone() })
                .with_context(|| format!("TPM at {tcti:?}"))?;
            tracing::info!(tcti = %tcti, pcrs = ?pcrs, "keys are sealed by a TPM 2.0");
            Box::new(sealer)
        }
        #[cfg(not(feature = "tpm"))]
        SealerConfig::Tpm { .. } => anyhow::bail!(
            "keys.sealer = \"tpm\", but this qkeyd was built without TPM support; \
             build it with `--features tpm` (needs libtss2-dev)"
        ),
    };
    let worker =
        SealerWorker::spawn(sealer, keys.seal_timeout).context("starting the sealer thread")?;
    Ok((dir, worker))
}

/// Open the vault in `dir` over `worker`, and load (or create) the API token.
pub(crate) fn open_vault(
    keys: &KeysConfig,
    dir: &std::path::Path,
    worker: SealerWorker,
    pool: &Arc<Pool>,
) -> anyhow::Result<KeysState> {
    use std::os::unix::fs::PermissionsExt as _;
    let vault = Vault::open(dir, worker, pool.clone())
        .with_context(|| format!("opening the key vault in {}", dir.display()))?;
    let token_path = keys.token_file.clone().unwrap_or_else(|| dir.join("api-token"));
    let token = match std::fs::read_to_string(&token_path) {
        Ok(t) => t.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && keys.token_file.is_none() => {
            // An access credential, not key material: the OS generator is
            // right here, and start-up must not wait for a healthy source.
            let mut raw = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(&mut raw[..]).context("generating the API token")?;
            let t = hex::encode(&raw[..]);
            std::fs::write(&token_path, format!("{t}\n"))
                .and_then(|()| {
                    std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600))
                })
                .with_context(|| format!("writing {}", token_path.display()))?;
            t
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read the API token {}", token_path.display()));
        }
    };
    anyhow::ensure!(
        token.len() >= 16,
        "the API token in {} is shorter than 16 characters",
        token_path.display()
    );
    tracing::info!(token_file = %token_path.display(), state_dir = %dir.display(), sealer = vault.sealer_kind(), "key vault ready; key routes need the bearer token in token_file");
    let vault = Arc::new(vault);
    let objects = crate::objects::TokenObjects::open(dir, vault.clone()).with_context(|| {
        format!("opening the token objects in {}", dir.join("objects").display())
    })?;
    Ok(KeysState { vault, objects: Arc::new(objects), token: TokenDigest::of(&token) })
}

/// Build the sources and the pool, and start one thread per source.
pub(crate) fn start_pool(config: &Config) -> anyhow::Result<Arc<Pool>> {
    let mut built: Vec<(Box<dyn EntropySource>, qkeyd_health::HealthParams, Scoring)> = Vec::new();
    for s in &config.sources {
        built.push((build_source(s)?, s.params, s.scoring));
    }
    let statuses = built
        .iter()
        .map(|(src, p, _)| {
            let (i, perm) = p.cutoffs()?;
            tracing::info!(
                source = %src.info().name,
                kind = src.info().kind,
                identity = %src.info().identity,
                claimed_h = p.claimed_h,
                rct_cutoff = i.rct,
                apt_cutoff = i.apt,
                "entropy source configured"
            );
            Ok(Arc::new(SourceStatus::new(src.info().clone(), i, perm)))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let fallback: pool::Fallback =
        Box::new(|seed| getrandom::fill(&mut seed[..]).map_err(std::io::Error::other));
    let (pool, handles) = Pool::new(config.pool.clone(), statuses, fallback);
    for ((source, params, scoring), handle) in built.into_iter().zip(handles) {
        sources::spawn(source, params, scoring, handle).context("starting a source thread")?;
    }
    if let Some(feed) = config.pool.kernel_feed {
        tracing::info!(
            credit_fraction = feed.credit_fraction,
            interval_secs = feed.interval.as_secs_f64(),
            "feeding the kernel's entropy pool (RNDADDENTROPY)"
        );
        let sink: pool::KernelSink = Box::new(|bytes, bits| {
            linux_crng_ioctl::ioctl::add_randomness_to_kernel(bytes, bits)
                .map_err(|e| std::io::Error::other(format!("{e:#}")))
        });
        let feeder = pool.clone();
        std::thread::Builder::new()
            .name("qkeyd-kernel-feed".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(feed.interval);
                    let _ = feeder.feed_kernel(&sink);
                }
            })
            .context("starting the kernel feed thread")?;
    }
    Ok(pool)
}

/// The driver for one configured source.
pub(crate) fn build_source(s: &SourceConfig) -> anyhow::Result<Box<dyn EntropySource>> {
    let p = s.params;
    Ok(match &s.kind {
        SourceKind::Os => Box::new(OsSource::new(&s.name, p.claimed_h)),
        SourceKind::CharDev { path } => {
            Box::new(CharDevSource::new(&s.name, path, p.bits_per_sample, p.claimed_h))
        }
        SourceKind::Tpm { tcti } => tpm_source(&s.name, tcti, p.claimed_h)?,
        SourceKind::Pkcs11 { module, token_label, pin } => {
            let pin = pin.as_ref().map(PinSource::read).transpose()?;
            let config = Pkcs11SourceConfig {
                module: module.clone(),
                token_label: token_label.clone(),
                pin,
            };
            Box::new(Pkcs11Source::new(&s.name, config, p.claimed_h))
        }
        SourceKind::Sim { seed, schedule } => Box::new(
            SimSource::new(&s.name, *seed, p.bits_per_sample, p.claimed_h, schedule.clone())
                .with_context(|| format!("source {:?}", s.name))?,
        ),
    })
}

#[cfg(feature = "tpm")]
fn tpm_source(name: &str, tcti: &str, claimed_h: f64) -> anyhow::Result<Box<dyn EntropySource>> {
    let source = qkeyd_drivers::source::tpm::TpmSource::new(name, tcti, claimed_h)
        .with_context(|| format!("source {name:?}"))?;
    Ok(Box::new(source))
}

#[cfg(not(feature = "tpm"))]
fn tpm_source(name: &str, _: &str, _: f64) -> anyhow::Result<Box<dyn EntropySource>> {
    anyhow::bail!("source {name:?}: kind = \"tpm\" needs qkeyd built with the tpm feature")
}

/// Check the TLS certificate and key files every `interval`, and at once on
/// SIGHUP; a changed pair is loaded for new handshakes. Without TLS, a
/// SIGHUP is only logged.
async fn watch_certificate(
    tls: Option<(Arc<crate::tls::CertStore>, Duration)>,
    mut hup: tokio::signal::unix::Signal,
) {
    let Some((store, interval)) = tls else {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: nothing to reload (no TLS certificate)");
        }
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let force = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = hup.recv() => {
                tracing::info!("SIGHUP: reading the TLS certificate and key again");
                true
            }
        };
        let store = store.clone();
        // Small files, but still file I/O: off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || store.check(force)).await;
    }
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!(drain_secs = DRAIN.as_secs(), "shutting down");
    tokio::spawn(async {
        tokio::time::sleep(DRAIN).await;
        tracing::warn!("drain timeout; exiting");
        std::process::exit(0);
    });
}
