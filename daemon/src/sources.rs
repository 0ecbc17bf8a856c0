//! One thread per entropy source: read → health-test → condition → pool.
//!
//! Each source's device handle lives on its own OS thread, which blocks on the
//! device and, through the bounded seed channel, on the pool: a source is read
//! only as fast as seed blocks are taken.

use std::{io, thread, time::Duration};

use qkeyd_drivers::EntropySource;
use qkeyd_health::{HealthMonitor, HealthParams, MonitorState, Severity};

use crate::pool::{Conditioner, SeedBlock, SourceHandle, SourceState};

/// Samples read per device call.
const READ_CHUNK: usize = 4096;
/// First and last pause after a failure or disconnect.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Start the thread for one source. `params` were validated with the config.
pub fn spawn(
    source: Box<dyn EntropySource>,
    params: HealthParams,
    handle: SourceHandle,
) -> io::Result<thread::JoinHandle<()>> {
    let name = format!("qkeyd-src-{}", source.info().name);
    thread::Builder::new().name(name).spawn(move || run(source, params, &handle))
}

fn run(mut source: Box<dyn EntropySource>, params: HealthParams, handle: &SourceHandle) {
    let name = source.info().name.clone();
    let Ok(mut monitor) = HealthMonitor::new(params) else {
        // Params are validated when the config is parsed; this cannot happen.
        tracing::error!(source = %name, "invalid health parameters; source disabled");
        return;
    };
    let mut conditioner = Conditioner::new(handle.index, params.claimed_h);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut blocks: Vec<SeedBlock> = Vec::new();
    let mut total: u64 = 0;
    let mut backoff = BACKOFF_MIN;
    let mut quarantined = false;
    loop {
        let n = match source.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                if handle.status.state() != SourceState::Unavailable {
                    tracing::warn!(source = %name, error = %e, "entropy source unavailable");
                }
                handle.status.disconnect(e.to_string());
                conditioner.discard();
                // A device that comes back must pass start-up again; failed
                // start-ups still count toward a permanent failure.
                monitor.restart();
                thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let chunk = &buf[..n];
        let mut pos = 0;
        let mut failed = false;
        while pos < n {
            let epoch = handle.status.epoch();
            let f = monitor.feed(&chunk[pos..]);
            if !f.usable.is_empty() {
                let first = total + (pos + f.usable.start) as u64;
                let usable = &chunk[pos + f.usable.start..pos + f.usable.end];
                conditioner.absorb(usable, first, epoch, |b| blocks.push(b));
            }
            if let Some(mut failure) = f.failure {
                conditioner.discard();
                failure.sample = total + (pos + f.consumed - 1) as u64;
                tracing::warn!(
                    source = %name,
                    test = ?failure.kind,
                    severity = ?failure.severity,
                    sample = failure.sample,
                    "health test failure"
                );
                handle.status.fail(failure);
                quarantined = failure.severity == Severity::Intermittent;
                failed = true;
            }
            if f.consumed == 0 {
                break;
            }
            pos += f.consumed;
        }
        total += n as u64;
        let state = match monitor.state() {
            MonitorState::Healthy => {
                quarantined = false;
                SourceState::Healthy
            }
            MonitorState::Startup { .. } if quarantined => SourceState::Quarantined,
            MonitorState::Startup { .. } => SourceState::Startup,
            MonitorState::Failed => SourceState::Failed,
        };
        handle.status.update(state, monitor.counts());
        for block in blocks.drain(..) {
            if !handle.send(block) {
                return;
            }
        }
        if state == SourceState::Failed {
            tracing::error!(source = %name, "entropy source failed permanently; restart to re-enable");
            return;
        }
        if failed {
            thread::sleep(backoff);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        } else if state == SourceState::Healthy {
            backoff = BACKOFF_MIN;
        }
    }
}
