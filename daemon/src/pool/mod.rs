//! The entropy pool: health-tested samples → conditioning → CTR_DRBG.
//!
//! Source threads (see `crate::sources`) push conditioned [`SeedBlock`]s into a
//! bounded channel; the pool takes one whenever its DRBG must be instantiated or
//! reseeded. A block is used only if its source is healthy *now* and has not
//! failed since the block was made (its epoch is current), so nothing derived
//! from samples at or after a failure ever reaches the DRBG.
//!
//! With no healthy source the pool either refuses (fail-closed) or, if the
//! operator enabled the dangerous OS fallback, seeds from `getrandom(2)` and says
//! so in every answer.
//!
//! This module does no I/O of its own: the fallback is a function it is given.

mod conditioner;
mod handle;
mod kernel;
mod status;

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        mpsc::{Receiver, RecvTimeoutError, sync_channel},
    },
    time::{Duration, Instant},
};

pub(crate) use conditioner::{Conditioner, SeedBlock};
use handle::Demand;
pub(crate) use handle::{Offer, SourceHandle};
#[cfg(test)]
use kernel::Fed;
pub(crate) use kernel::{KernelFeedSnapshot, KernelSink};
use qkeyd_drbg::{CtrDrbg, DrbgError, MAX_REQUEST, SEED_LEN};
pub(crate) use status::{AssessmentSnapshot, SourceSnapshot, SourceState, SourceStatus};
use zeroize::Zeroizing;

use crate::config::{EntropyMode, PoolConfig};

/// Seed blocks buffered between the source threads and the DRBG.
const CHANNEL_BLOCKS: usize = 8;
/// How often a wait for a seed block re-checks that a source is still healthy.
const POLL: Duration = Duration::from_millis(10);
/// Seed records kept for /v1/health.
const SEED_LOG: usize = 64;

/// Where the bytes being served come from.
#[derive(Clone, Copy, Debug, Eq, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Serving {
    /// The DRBG is seeded from health-tested sources.
    Sources,
    /// No source is healthy; the DRBG is seeded from the OS.
    OsFallback,
}

/// Why the pool could not serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum PoolError {
    /// No source is healthy and the pool fails closed.
    #[error("no healthy entropy source (fail-closed)")]
    NoHealthySource,
    /// Healthy sources exist but delivered no seed in time.
    #[error("no seed block arrived within {0:?}")]
    SeedTimeout(Duration),
    /// The OS fallback failed.
    #[error("OS entropy fallback failed")]
    Fallback(#[source] std::io::Error),
    /// The DRBG refused (a bug if it happens: the pool reseeds before that).
    #[error(transparent)]
    Drbg(#[from] DrbgError),
    /// A draw that needs a trusted source got a seed from one below the bar.
    #[error(
        "the fresh seed came from {seed_source:?} with trust {trust:.3}, below the {min:.2} required"
    )]
    BelowTrust {
        /// The source of the seed (`os-fallback` for the OS).
        seed_source: String,
        /// Its trust score then (0 for the OS fallback).
        trust: f64,
        /// The bar.
        min: f64,
    },
}

/// Where a fresh draw's seed came from, captured under the DRBG lock: the
/// seed, the DRBG's reseed counter after it, and every source's state then.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct Provenance {
    /// `sources` or `os-fallback`.
    pub(crate) serving: Serving,
    /// The SP 800-90A reseed counter after the draw.
    pub(crate) reseed_counter: u64,
    /// The source whose block seeded the draw (`os-fallback` for the OS).
    pub(crate) seed_source: String,
    /// Every source at that moment.
    pub(crate) sources: Vec<SourceTrust>,
}

/// A source's health and scores at one moment.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub(crate) struct SourceTrust {
    /// Source name.
    pub(crate) name: String,
    /// Its state (`healthy`, `quarantined`, …).
    pub(crate) state: String,
    /// Trust score 0..1.
    pub(crate) trust: f64,
    /// Drift score 0..1.
    pub(crate) drift: f64,
}

/// The function the pool calls for an OS-fallback seed.
pub(crate) type Fallback =
    Box<dyn Fn(&mut [u8; SEED_LEN]) -> Result<(), std::io::Error> + Send + Sync>;

/// One (re)seed of the DRBG, for /v1/health.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct SeedRecord {
    /// Source name, or `os-fallback`.
    pub(crate) source: String,
    /// First and last sample of the source's stream hashed into the seed.
    pub(crate) first_sample: Option<u64>,
    /// Last sample.
    pub(crate) last_sample: Option<u64>,
    /// Samples hashed in (`None` for the OS fallback).
    pub(crate) samples_hashed: Option<u64>,
    /// Min-entropy credited to the samples hashed in (`None` for the OS fallback).
    pub(crate) input_entropy_bits: Option<f64>,
    /// Seconds since the pool started.
    pub(crate) at_secs: f64,
}

/// The DRBG's state, for /v1/health and metrics.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct DrbgSnapshot {
    /// Whether the DRBG has been instantiated.
    pub(crate) instantiated: bool,
    /// The SP 800-90A reseed counter (generate calls since the last reseed, + 1).
    pub(crate) reseed_counter: u64,
    /// Seconds since the last (re)seed.
    pub(crate) seed_age_secs: Option<f64>,
    /// Instantiations plus reseeds.
    pub(crate) seeds: u64,
    /// Where the current seed came from.
    pub(crate) seeded_by: Option<Serving>,
    /// The most recent seeds, oldest first.
    pub(crate) seed_log: Vec<SeedRecord>,
}

/// Everything /v1/health shows about the pool.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct PoolSnapshot {
    /// Configured behaviour with no healthy source.
    pub(crate) mode: EntropyMode,
    /// Where bytes come from right now, if anywhere.
    pub(crate) serving: Option<Serving>,
    /// Per-source state.
    pub(crate) sources: Vec<SourceSnapshot>,
    /// DRBG state.
    pub(crate) drbg: DrbgSnapshot,
    /// Kernel feeding, if on.
    pub(crate) kernel_feed: Option<KernelFeedSnapshot>,
}

struct DrbgSlot {
    drbg: Option<CtrDrbg>,
    seeded_by: Option<Serving>,
    last_seed: Option<Instant>,
}

/// What /v1/health shows of the DRBG, kept apart from it so that a health or
/// metrics request never waits behind a reseed that is waiting for entropy.
#[derive(Default)]
struct SeedStats {
    instantiated: bool,
    reseed_counter: u64,
    seeded_by: Option<Serving>,
    last_seed: Option<Instant>,
    seeds: u64,
    log: VecDeque<SeedRecord>,
    /// Seeds taken from each source. Kept here, beside the log, so that a
    /// snapshot never shows a seed counted but not yet logged.
    seeds_used: Vec<u64>,
}

/// The pool.
pub(crate) struct Pool {
    config: PoolConfig,
    sources: Vec<Arc<SourceStatus>>,
    rx: Mutex<Receiver<SeedBlock>>,
    demand: Arc<Demand>,
    drbg: Mutex<DrbgSlot>,
    stats: Mutex<SeedStats>,
    kernel: Mutex<KernelFeedSnapshot>,
    fallback: Fallback,
    started: Instant,
    #[cfg(test)]
    tap: Mutex<Vec<tests::Tapped>>,
}

impl Pool {
    /// A pool over `sources`, returning a handle per source for its thread.
    pub(crate) fn new(
        config: PoolConfig,
        sources: Vec<Arc<SourceStatus>>,
        fallback: Fallback,
    ) -> (Arc<Self>, Vec<SourceHandle>) {
        let (tx, rx) = sync_channel(CHANNEL_BLOCKS);
        let demand = Arc::new(Demand::default());
        let handles: Vec<SourceHandle> = sources
            .iter()
            .enumerate()
            .map(|(index, status)| SourceHandle {
                index,
                status: status.clone(),
                tx: tx.clone(),
                demand: demand.clone(),
            })
            .collect();
        let pool = Arc::new(Self {
            config,
            sources,
            rx: Mutex::new(rx),
            demand,
            drbg: Mutex::new(DrbgSlot { drbg: None, seeded_by: None, last_seed: None }),
            stats: Mutex::new(SeedStats {
                seeds_used: vec![0; handles.len()],
                ..SeedStats::default()
            }),
            kernel: Mutex::default(),
            fallback,
            started: Instant::now(),
            #[cfg(test)]
            tap: Mutex::new(Vec::new()),
        });
        (pool, handles)
    }

    /// Where bytes would come from now; `None` means the pool cannot serve.
    pub(crate) fn serving(&self) -> Option<Serving> {
        if self.sources.iter().any(|s| s.state() == SourceState::Healthy) {
            Some(Serving::Sources)
        } else if self.config.mode == EntropyMode::OsFallback {
            Some(Serving::OsFallback)
        } else {
            None
        }
    }

    /// [`Pool::serving`], but a source still in its first start-up test is
    /// waited for (up to the seed timeout): a request that arrives just after
    /// the daemon started gets bytes once the test passes, not a refusal.
    fn wait_serving(&self) -> Result<Serving, PoolError> {
        let deadline = Instant::now()
            .checked_add(self.config.seed_timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        loop {
            if let Some(serving) = self.serving() {
                return Ok(serving);
            }
            let starting = self.sources.iter().any(|s| s.state() == SourceState::Startup);
            if !starting || Instant::now() >= deadline {
                return Err(PoolError::NoHealthySource);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Fill `out` with DRBG output, reseeding first if due. Returns where the
    /// seed came from.
    pub(crate) fn fill(&self, out: &mut [u8]) -> Result<Serving, PoolError> {
        self.fill_inner(out, false)
    }

    /// [`Pool::fill`] with prediction resistance: the DRBG is reseeded from a
    /// fresh seed block before generating (SP 800-90A §9.3.1), so the output
    /// depends on entropy gathered after any earlier compromise. For key seeds.
    pub(crate) fn fill_fresh(&self, out: &mut [u8]) -> Result<Serving, PoolError> {
        self.fill_inner(out, true)
    }

    /// [`Pool::fill_fresh`], and where its seed came from. With `min_trust`,
    /// a seed from a source below it (or from the OS fallback) is refused
    /// before anything is generated from it.
    pub(crate) fn fill_fresh_traced(
        &self,
        out: &mut [u8],
        min_trust: Option<f64>,
    ) -> Result<Provenance, PoolError> {
        let serving = self.wait_serving()?;
        let mut slot = self.lock_drbg();
        let serving = self.reseed(&mut slot, serving)?;
        let seed_source =
            lock(&self.stats).log.back().map(|r| r.source.clone()).unwrap_or_default();
        let sources: Vec<SourceTrust> = self
            .sources
            .iter()
            .map(|s| {
                let snap = s.snapshot();
                SourceTrust {
                    name: snap.name,
                    state: serde_json::to_value(snap.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    trust: snap.trust_score,
                    drift: snap.drift_score,
                }
            })
            .collect();
        if let Some(min) = min_trust {
            let trust = sources.iter().find(|s| s.name == seed_source).map_or(0.0, |s| s.trust);
            if serving != Serving::Sources || trust < min {
                return Err(PoolError::BelowTrust { seed_source, trust, min });
            }
        }
        if let Some(drbg) = slot.drbg.as_mut() {
            for chunk in out.chunks_mut(MAX_REQUEST) {
                drbg.generate(chunk, &[])?;
            }
        }
        let reseed_counter = slot.drbg.as_ref().map_or(0, CtrDrbg::reseed_counter);
        lock(&self.stats).reseed_counter = reseed_counter;
        Ok(Provenance { serving, reseed_counter, seed_source, sources })
    }

    /// [`Pool::fill`], if that needs no waiting: the pool is serving, no
    /// reseed is due, the DRBG is free this instant and `out` is at most one
    /// DRBG request. `None`: nothing was drawn; call [`Pool::fill`] where
    /// blocking is allowed. An async handler serves small draws inline with
    /// this instead of hopping to a blocking thread.
    pub(crate) fn fill_now(&self, out: &mut [u8]) -> Option<Result<Serving, PoolError>> {
        if out.len() > MAX_REQUEST {
            return None;
        }
        let serving = self.serving()?;
        // Never wait: a reseed holds this lock while it waits for a seed block.
        let mut slot = self.drbg.try_lock().ok()?;
        let fresh = slot.seeded_by == Some(serving)
            && slot.last_seed.is_some_and(|at| at.elapsed() < self.config.reseed_interval);
        let drbg = slot.drbg.as_mut().filter(|d| fresh && !d.needs_reseed())?;
        let r = drbg.generate(out, &[]).map(|()| serving).map_err(PoolError::from);
        let counter = drbg.reseed_counter();
        drop(slot);
        lock(&self.stats).reseed_counter = counter;
        Some(r)
    }

    fn fill_inner(&self, out: &mut [u8], fresh: bool) -> Result<Serving, PoolError> {
        let mut serving = self.wait_serving()?;
        let mut slot = self.lock_drbg();
        let due = fresh
            || match (&slot.drbg, slot.last_seed) {
                (Some(d), Some(at)) => {
                    d.needs_reseed()
                        || at.elapsed() >= self.config.reseed_interval
                        || slot.seeded_by != Some(serving)
                }
                _ => true,
            };
        if due {
            serving = self.reseed(&mut slot, serving)?;
        }
        for chunk in out.chunks_mut(MAX_REQUEST) {
            if slot.drbg.as_ref().is_none_or(CtrDrbg::needs_reseed) {
                serving = self.reseed(&mut slot, serving)?;
            }
            if let Some(drbg) = slot.drbg.as_mut() {
                drbg.generate(chunk, &[])?;
            }
        }
        lock(&self.stats).reseed_counter = slot.drbg.as_ref().map_or(0, CtrDrbg::reseed_counter);
        Ok(serving)
    }

    /// (Re)seed from the sources, or from the OS when that is where bytes come
    /// from; returns where the seed came from. If the last healthy source fails
    /// while waiting for a block, fall back or refuse as the mode says.
    fn reseed(&self, slot: &mut DrbgSlot, serving: Serving) -> Result<Serving, PoolError> {
        let (seed, record, serving, from) = match serving {
            Serving::Sources => match self.take_block() {
                Ok((seed, record, index)) => (seed, record, Serving::Sources, Some(index)),
                Err(PoolError::NoHealthySource) if self.config.mode == EntropyMode::OsFallback => {
                    let (seed, record) = self.fallback_seed()?;
                    (seed, record, Serving::OsFallback, None)
                }
                Err(e) => return Err(e),
            },
            Serving::OsFallback => {
                let (seed, record) = self.fallback_seed()?;
                (seed, record, Serving::OsFallback, None)
            }
        };
        match slot.drbg.as_mut() {
            Some(d) => d.reseed(&seed, &[])?,
            None => {
                let perso = personalization();
                slot.drbg =
                    Some(CtrDrbg::new(&seed, &perso, self.config.reseed_interval_requests)?);
                #[cfg(test)]
                lock(&self.tap).push(tests::Tapped::Personalization(perso.to_vec()));
            }
        }
        #[cfg(test)]
        lock(&self.tap).push(tests::Tapped::Seed(seed.to_vec(), record.clone()));
        let now = Instant::now();
        slot.seeded_by = Some(serving);
        slot.last_seed = Some(now);
        let mut stats = lock(&self.stats);
        stats.instantiated = true;
        stats.reseed_counter = slot.drbg.as_ref().map_or(0, CtrDrbg::reseed_counter);
        stats.seeded_by = Some(serving);
        stats.last_seed = Some(now);
        stats.seeds += 1;
        if stats.log.len() == SEED_LOG {
            stats.log.pop_front();
        }
        stats.log.push_back(record);
        if let Some(count) = from.and_then(|i| stats.seeds_used.get_mut(i)) {
            *count += 1;
        }
        Ok(serving)
    }

    fn fallback_seed(&self) -> Result<(Zeroizing<[u8; SEED_LEN]>, SeedRecord), PoolError> {
        let mut seed = Zeroizing::new([0u8; SEED_LEN]);
        (self.fallback)(&mut seed).map_err(PoolError::Fallback)?;
        let record = SeedRecord {
            source: "os-fallback".into(),
            first_sample: None,
            last_sample: None,
            samples_hashed: None,
            input_entropy_bits: None,
            at_secs: self.started.elapsed().as_secs_f64(),
        };
        Ok((seed, record))
    }

    /// The next block from a source that is healthy and has not failed since
    /// the block was made; stale blocks are dropped (and zeroized).
    fn take_block(&self) -> Result<(Zeroizing<[u8; SEED_LEN]>, SeedRecord, usize), PoolError> {
        // The config bounds seed_timeout to a minute, so this cannot overflow;
        // saturate anyway rather than panic.
        let deadline = Instant::now()
            .checked_add(self.config.seed_timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        let rx = lock(&self.rx);
        loop {
            self.demand.bump();
            let left = deadline.saturating_duration_since(Instant::now());
            let block = match rx.recv_timeout(left.min(POLL)) {
                Ok(b) => {
                    // Room in the queue now: a source waiting to offer may go on.
                    self.demand.bump();
                    b
                }
                Err(RecvTimeoutError::Timeout) if !left.is_zero() => {
                    // The last healthy source may have failed while we waited.
                    if !self.sources.iter().any(|s| s.state() == SourceState::Healthy) {
                        return Err(PoolError::NoHealthySource);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    return Err(PoolError::SeedTimeout(self.config.seed_timeout));
                }
            };
            let p = &block.provenance;
            let Some(status) = self.sources.get(p.source) else {
                continue;
            };
            if !status.accepts(p.epoch) {
                continue;
            }
            let record = SeedRecord {
                source: status.info().name.clone(),
                first_sample: Some(*p.samples.start()),
                last_sample: Some(*p.samples.end()),
                samples_hashed: Some(p.count),
                input_entropy_bits: Some(p.input_entropy_bits),
                at_secs: self.started.elapsed().as_secs_f64(),
            };
            return Ok((block.bytes, record, p.source));
        }
    }

    /// The DRBG, dropped if a panic poisoned its lock: a generate that stopped
    /// half-way may not have advanced V, and reusing it could repeat output.
    fn lock_drbg(&self) -> MutexGuard<'_, DrbgSlot> {
        match self.drbg.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                g.drbg = None;
                lock(&self.stats).instantiated = false;
                self.drbg.clear_poison();
                g
            }
        }
    }

    /// Each source's recent drift windows, by name, for the status page.
    pub(crate) fn trust_history(&self) -> Vec<(String, Vec<status::TrustPoint>)> {
        self.sources.iter().map(|s| (s.info().name.clone(), s.history())).collect()
    }

    /// State for /v1/health and metrics.
    pub(crate) fn snapshot(&self) -> PoolSnapshot {
        let stats = lock(&self.stats);
        PoolSnapshot {
            mode: self.config.mode,
            serving: self.serving(),
            sources: self
                .sources
                .iter()
                .zip(&stats.seeds_used)
                .map(|(s, &used)| SourceSnapshot { seeds_used: used, ..s.snapshot() })
                .collect(),
            drbg: DrbgSnapshot {
                instantiated: stats.instantiated,
                reseed_counter: stats.reseed_counter,
                seed_age_secs: stats.last_seed.map(|t| t.elapsed().as_secs_f64()),
                seeds: stats.seeds,
                seeded_by: stats.seeded_by,
                seed_log: stats.log.iter().cloned().collect(),
            },
            kernel_feed: self.kernel_feed(),
        }
    }
}

/// Not secret, only unique: process id and start time make instances differ.
fn personalization() -> [u8; 32] {
    let mut p = [0u8; 32];
    p[..16].copy_from_slice(b"qkeyd-pool-v1\0\0\0");
    p[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    p[20..28].copy_from_slice(&now.to_le_bytes());
    p
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // For the channel and status locks a panic leaves nothing half-done.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
