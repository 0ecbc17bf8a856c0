//! `qkeyd serve`: wire sources, pool and API together and run until SIGTERM.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use qkeyd_drivers::{
    EntropySource,
    source::{chardev::CharDevSource, os::OsSource, sim::SimSource},
};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::{
    api::{self, AppState},
    config::{Config, Scoring, SourceConfig, SourceKind},
    metrics::Metrics,
    pool::{self, Pool, SourceStatus},
    sources,
};

/// How long in-flight requests get after SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);

/// Run the daemon.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let vectors = pool::kat::run_all().context("refusing to start")?;
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
    let pool = start_pool(&config)?;
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    let state = AppState {
        pool,
        metrics,
        max_request_bytes: config.max_request_bytes,
        generate_permits: Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
        )),
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "REST API listens beyond loopback");
    }
    tracing::info!("listening on http://{addr}");
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown())
        .await
        .context("HTTP server")?;
    tracing::info!("stopped");
    Ok(())
}

/// Build the sources and the pool, and start one thread per source.
pub fn start_pool(config: &Config) -> anyhow::Result<Arc<Pool>> {
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
        Box::new(|seed| getrandom::fill(&mut seed[..]).map_err(|e| e.to_string()));
    let (pool, handles) = Pool::new(config.pool.clone(), statuses, fallback);
    for ((source, params, scoring), handle) in built.into_iter().zip(handles) {
        sources::spawn(source, params, scoring, handle).context("starting a source thread")?;
    }
    Ok(pool)
}

/// The driver for one configured source.
pub fn build_source(s: &SourceConfig) -> anyhow::Result<Box<dyn EntropySource>> {
    let p = s.params;
    Ok(match &s.kind {
        SourceKind::Os => Box::new(OsSource::new(&s.name, p.claimed_h)),
        SourceKind::CharDev { path } => {
            Box::new(CharDevSource::new(&s.name, path, p.bits_per_sample, p.claimed_h))
        }
        SourceKind::Sim { seed, schedule } => Box::new(
            SimSource::new(&s.name, *seed, p.bits_per_sample, p.claimed_h, schedule.clone())
                .with_context(|| format!("source {:?}", s.name))?,
        ),
    })
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
