//! One thread per entropy source: read → health-test → condition → pool.
//!
//! Each source's device handle lives on its own OS thread, which blocks on the
//! device and then on the pool. With `[health] monitor_rate` set (the
//! default), the thread reads a quarter-second of samples at that rate per
//! round and offers its seed blocks, waiting for room in the pool's queue
//! until the round's time is up; what still does not fit is dropped. So a pool
//! that takes seeds gets them as fast as the device allows, and on a node that
//! draws nothing every source is still read and scored at the monitor rate:
//! drift and trust stay current. A source with nothing to offer (start-up,
//! quarantine, distrust, samples set aside for a full assessment) keeps the
//! monitor rate too, unless the pool is asking for seeds. With a rate of 0 a
//! source is read only as fast as its seed blocks are taken.

mod full;

use std::{
    io, thread,
    time::{Duration, Instant},
};

use qkeyd_drivers::EntropySource;
use qkeyd_health::{HealthMonitor, HealthParams, MonitorState, Severity, drift::DriftDetector};

use crate::{
    config::Scoring,
    pool::{AssessmentSnapshot, Conditioner, Offer, SeedBlock, SourceHandle, SourceState},
};

/// Samples read per device call.
const READ_CHUNK: usize = 4096;
/// Reads a second at the monitor rate: small enough that a pool wanting seeds
/// again is noticed within a quarter of a second.
const MONITOR_READS_PER_SEC: u32 = 4;
/// First and last pause after a failure or disconnect.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Start the thread for one source. `params` were validated with the config;
/// `scoring` says how drift and trust are judged.
pub(crate) fn spawn(
    source: Box<dyn EntropySource>,
    params: HealthParams,
    scoring: Scoring,
    handle: SourceHandle,
) -> io::Result<thread::JoinHandle<()>> {
    let name = format!("qkeyd-src-{}", source.info().name);
    thread::Builder::new().name(name).spawn(move || run(source, params, scoring, &handle))
}

fn run(
    mut source: Box<dyn EntropySource>,
    params: HealthParams,
    scoring: Scoring,
    handle: &SourceHandle,
) {
    let name = source.info().name.clone();
    let Ok(mut monitor) = HealthMonitor::new(params) else {
        // Params are validated when the config is parsed; this cannot happen.
        tracing::error!(source = %name, "invalid health parameters; source disabled");
        return;
    };
    let mut conditioner = Conditioner::new(handle.index, params.claimed_h);
    let mut drift = DriftDetector::new(params.bits_per_sample, params.claimed_h, scoring.min_trust);
    let mut full = scoring.full.map(|policy| {
        drift = drift.clone().require_full_assessment(policy.margin_bits);
        full::Scheduler::new(&name, params.bits_per_sample, policy)
    });
    let mut buf = vec![0u8; READ_CHUNK];
    let mut blocks: Vec<SeedBlock> = Vec::new();
    let mut total: u64 = 0;
    let mut backoff = BACKOFF_MIN;
    let mut quarantined = false;
    let rate = scoring.monitor_rate;
    handle.status.set_scoring(rate, scoring.min_trust);
    let chunk = match rate {
        0 => READ_CHUNK,
        r => (r / MONITOR_READS_PER_SEC).clamp(64, READ_CHUNK as u32) as usize,
    };
    let mut demand = handle.demand();
    loop {
        let round = Instant::now();
        let n = match source.read(&mut buf[..chunk]) {
            Ok(n) => {
                handle.status.sampled();
                n
            }
            Err(e) => {
                if handle.status.state() != SourceState::Unavailable {
                    tracing::warn!(source = %name, error = %e, "entropy source unavailable");
                }
                handle.status.disconnect(e.to_string());
                conditioner.discard();
                drift.discard_window();
                if let Some(f) = &mut full {
                    f.restart_recording(drift.distrusted());
                }
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
            let f = monitor.feed(&chunk[pos..]);
            if !f.usable.is_empty() {
                let first = total + (pos + f.usable.start) as u64;
                let usable = &chunk[pos + f.usable.start..pos + f.usable.end];
                // Score first: samples in the window that shows drift are not used.
                let was = drift.distrusted();
                drift.feed(usable);
                if drift.distrusted() && !was {
                    let at = first + usable.len() as u64 - 1;
                    tracing::warn!(source = %name, trust = drift.trust(), sample = at, "entropy source distrusted: drift from its claim");
                    conditioner.discard();
                    handle.status.distrust(at);
                    if let Some(f) = &mut full {
                        f.lost_trust();
                    }
                } else if was && !drift.distrusted() {
                    tracing::info!(source = %name, "entropy source trusted again after a fresh assessment");
                } else if drift.distrusted() && drift.clean_run() == 0 {
                    // A fresh assessment must cover clean samples only.
                    if let Some(f) = &mut full {
                        f.restart_recording(true);
                    }
                }
                // Samples set aside for a full assessment never seed the DRBG.
                let (aside, rest) = match &mut full {
                    Some(f) => {
                        let was_recording = f.recording();
                        let n = f.offer(usable, drift.awaiting_full_assessment());
                        if f.recording() && !was_recording {
                            conditioner.discard();
                        }
                        (n, &usable[n..])
                    }
                    None => (0, usable),
                };
                if !drift.distrusted() && !rest.is_empty() {
                    let first = first + aside as u64;
                    conditioner.absorb(rest, first, handle.status.epoch(), |b| blocks.push(b));
                }
            }
            if let Some(mut failure) = f.failure {
                conditioner.discard();
                drift.discard_window();
                if let Some(f) = &mut full {
                    f.restart_recording(drift.distrusted());
                }
                if failure.severity == Severity::Permanent {
                    drift.hard_failure();
                }
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
        if let Some(result) = full.as_mut().and_then(full::Scheduler::poll) {
            match result {
                Ok(o) => {
                    let was = drift.distrusted();
                    let passed = drift.full_assessment(o.h_assessed, o.fresh);
                    // H_I = min(H_submitter, assessed), SP 800-90B §3.1.3.
                    let credit = params.claimed_h.min(o.h_assessed);
                    if conditioner.set_credit(credit) {
                        tracing::info!(source = %name, credited_h = credit, "credited min-entropy per sample changed");
                    }
                    if passed {
                        tracing::info!(source = %name, h_assessed = o.h_assessed, samples = o.samples, seconds = o.elapsed.as_secs_f64(), "full entropy assessment passed");
                    } else {
                        tracing::warn!(source = %name, h_assessed = o.h_assessed, floor = drift.full_assessment_floor(), samples = o.samples, "full entropy assessment failed: far below the claim");
                    }
                    if drift.distrusted() && !was {
                        conditioner.discard();
                        handle.status.distrust(total.saturating_sub(1));
                        if let Some(f) = &mut full {
                            f.lost_trust();
                        }
                    } else if was && !drift.distrusted() {
                        tracing::info!(source = %name, "entropy source trusted again after a fresh assessment");
                    }
                    handle.status.set_assessment(AssessmentSnapshot {
                        samples: o.samples,
                        h_original: o.h_original,
                        h_bitstring: o.h_bitstring,
                        h_assessed: o.h_assessed,
                        floor: drift.full_assessment_floor(),
                        passed,
                        fresh: o.fresh,
                        seconds: o.elapsed.as_secs_f64(),
                        credited_h: credit,
                    });
                }
                Err(e) => {
                    tracing::error!(source = %name, error = %e, "full entropy assessment did not run")
                }
            }
        }
        let state = match monitor.state() {
            MonitorState::Healthy => {
                quarantined = false;
                if drift.distrusted() { SourceState::Distrusted } else { SourceState::Healthy }
            }
            MonitorState::Startup { .. } if quarantined => SourceState::Quarantined,
            MonitorState::Startup { .. } => SourceState::Startup,
            MonitorState::Failed => SourceState::Failed,
        };
        handle.status.update(state, monitor.counts());
        handle.status.set_drift(
            drift.drift(),
            drift.trust(),
            drift.last().map(|w| w.h_estimate),
            drift.windows(),
        );
        // A round's samples take n/rate seconds at the monitor rate: offers
        // wait for room until then, and what does not fit is surplus.
        let due = match rate {
            0 => round,
            r => round + Duration::from_secs_f64(n as f64 / f64::from(r)),
        };
        let made = !blocks.is_empty();
        let mut all_taken = true;
        for block in blocks.drain(..) {
            if !all_taken {
                continue;
            }
            let offer = if rate == 0 {
                if handle.send(block) { Offer::Taken } else { Offer::Gone }
            } else {
                handle.offer(block, due)
            };
            match offer {
                Offer::Taken => {}
                Offer::Full => all_taken = false,
                Offer::Gone => return,
            }
        }
        let asked = handle.demand();
        // Read on at once while the pool takes all this source makes, or asks
        // while it makes nothing; otherwise keep to the monitor rate.
        let hurry = if made { all_taken } else { asked != demand };
        demand = asked;
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
        if !hurry {
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use qkeyd_drivers::source::sim::{Fault, Phase, SimSource};

    use super::*;

    /// Run a source through the same health tests and drift detector as the
    /// source thread, without the pool, for `n` samples. Returns the lowest
    /// trust seen, where trust was lost, and where a health test first fired.
    fn run_offline(mut src: SimSource, claimed_h: f64, n: u64) -> (f64, Option<u64>, Option<u64>) {
        let params = HealthParams::new(8, claimed_h);
        let mut monitor = HealthMonitor::new(params).unwrap();
        let mut drift = DriftDetector::new(8, claimed_h, 0.89);
        let mut buf = vec![0u8; 65536];
        let (mut total, mut min_trust, mut lost, mut fired) = (0u64, 1.0f64, None, None);
        while total < n {
            let got = src.read(&mut buf).unwrap();
            let mut pos = 0;
            while pos < got {
                let f = monitor.feed(&buf[pos..got]);
                drift.feed(&buf[pos + f.usable.start..pos + f.usable.end]);
                min_trust = min_trust.min(drift.trust());
                if drift.distrusted() && lost.is_none() {
                    lost = Some(total + (pos + f.usable.end) as u64);
                }
                if let Some(fail) = f.failure {
                    drift.discard_window();
                    fired.get_or_insert(total + (pos + f.consumed) as u64 - 1);
                    let _ = fail;
                }
                if f.consumed == 0 {
                    break;
                }
                pos += f.consumed;
            }
            total += got as u64;
        }
        (min_trust, lost, fired)
    }

    /// A healthy simulated QRNG keeps trust ≥ 0.95 over 10M samples, through
    /// the intermittent failures that α = 2^-20 produces in that many.
    #[test]
    fn healthy_sim_keeps_trust_over_ten_million_samples() {
        let src = SimSource::new("steady", 61, 8, 7.9, vec![]).unwrap();
        let (min_trust, lost, _) = run_offline(src, 7.9, 10_000_000);
        assert!(min_trust >= 0.95, "{min_trust}");
        assert_eq!(lost, None);
    }

    /// P(0) grows from uniform toward 25% over 1M samples: trust falls below
    /// 0.89 before the RCT or APT fires.
    #[test]
    fn slow_drift_loses_trust_before_the_health_tests_fire() {
        let fault = Fault::Drift { value: 0, to_p: 0.25, over_samples: 1_000_000 };
        let src =
            SimSource::new("drifty", 71, 8, 8.0, vec![Phase { after_samples: 0, fault }]).unwrap();
        let (_, lost, fired) = run_offline(src, 8.0, 1_000_000);
        let lost = lost.expect("trust lost");
        let fired = fired.expect("the health tests fire eventually");
        eprintln!("trust lost at sample {lost}, first RCT/APT failure at sample {fired}");
        assert!(lost < fired, "lost {lost}, fired {fired}");
    }
}
