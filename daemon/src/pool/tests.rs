//! Pool tests that need to see inside: which seed blocks the DRBG took.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use qkeyd_drivers::{
    EntropySource,
    source::sim::{Fault, Phase, SimSource},
};
use qkeyd_health::{HealthParams, Severity};
use sha3::{Digest, Sha3_384};

use super::*;
use crate::{config::Scoring, sources};

const NO_FULL: Scoring = Scoring { min_trust: 0.89, full: None, monitor_rate: 0 };

/// What the pool fed its DRBG, recorded in test builds only.
#[derive(Clone, Debug)]
pub(super) enum Tapped {
    Personalization(Vec<u8>),
    Seed(Vec<u8>, SeedRecord),
}

fn config(mode: EntropyMode, reseed_interval_requests: u64) -> PoolConfig {
    PoolConfig {
        reseed_interval_requests,
        reseed_interval: Duration::from_secs(3600),
        seed_timeout: Duration::from_secs(5),
        mode,
        kernel_feed: None,
    }
}

fn no_fallback() -> Fallback {
    Box::new(|_| Err(std::io::Error::other("no fallback in this test")))
}

fn status_for(src: &dyn EntropySource, params: HealthParams) -> Arc<SourceStatus> {
    let (i, p) = params.cutoffs().unwrap();
    Arc::new(SourceStatus::new(src.info().clone(), i, p))
}

/// A simulated QRNG gets stuck at sample STUCK_AT. Every byte the pool served
/// is recomputed here from nothing but the seed blocks it took, each block is
/// recomputed from the simulator's own (fault-free) stream over the sample
/// range it claims, and every range ends before the fault began. So no output
/// byte depends on a sample at or after the failure. Both when the source is
/// read only for seeds and when it is also sampled at the monitor rate.
#[test]
fn output_derives_only_from_samples_before_the_failure() {
    output_derives_only_from_samples_before_the_failure_at(0);
}

#[test]
fn output_derives_only_from_samples_before_the_failure_when_monitored() {
    output_derives_only_from_samples_before_the_failure_at(4096);
}

fn output_derives_only_from_samples_before_the_failure_at(monitor_rate: u32) {
    const STUCK_AT: u64 = 30_000;
    let mut reference = vec![0u8; STUCK_AT as usize];
    let mut twin = SimSource::new("twin", 42, 8, 8.0, vec![]).unwrap();
    let mut at = 0;
    while at < reference.len() {
        at += twin.read(&mut reference[at..]).unwrap();
    }
    let stuck = reference[STUCK_AT as usize - 1].wrapping_add(1);
    let phase = Phase { after_samples: STUCK_AT, fault: Fault::Stuck { value: stuck } };
    let sim = SimSource::new("sim", 42, 8, 8.0, vec![phase]).unwrap();
    let params = HealthParams::new(8, 8.0);
    let status = status_for(&sim, params);
    let (pool, handles) =
        Pool::new(config(EntropyMode::FailClosed, 1), vec![status.clone()], no_fallback());
    let scoring = Scoring { monitor_rate, ..NO_FULL };
    sources::spawn(Box::new(sim), params, scoring, handles[0].clone()).unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut outputs = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "source never failed: {:?}", status.snapshot());
        let mut out = [0u8; 32];
        match pool.fill(&mut out) {
            Ok(serving) => {
                assert_eq!(serving, Serving::Sources);
                outputs.push(out);
            }
            Err(PoolError::NoHealthySource) if status.state() == SourceState::Failed => break,
            Err(PoolError::NoHealthySource) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("unexpected pool error: {e}"),
        }
    }
    // The RCT (cutoff 4 at H = 8) tripped on the 4th stuck sample.
    let snap = status.snapshot();
    // Intermittent at the 4th stuck sample; each further one fails the re-run
    // start-up, and the third failed start-up in a row is permanent.
    assert_eq!(snap.rct_failures, 4, "{snap:?}");
    let failure = snap.last_failure.unwrap();
    assert_eq!(failure.severity, "permanent");
    assert!(outputs.len() > 100, "the pool served before the fault: {}", outputs.len());

    let tapped = lock(&pool.tap).clone();
    let Tapped::Personalization(perso) = &tapped[0] else { panic!("instantiate first") };
    let seeds: Vec<_> = tapped[1..]
        .iter()
        .map(|t| match t {
            Tapped::Seed(bytes, record) => (bytes.clone(), record.clone()),
            Tapped::Personalization(_) => panic!("one instantiation only"),
        })
        .collect();
    assert_eq!(seeds.len(), outputs.len(), "one seed per request at reseed interval 1");
    for (bytes, record) in &seeds {
        let (first, last) = (record.first_sample.unwrap(), record.last_sample.unwrap());
        assert!(last < STUCK_AT, "seed from samples {first}..={last} at or after the fault");
        let expect = Sha3_384::digest(&reference[first as usize..=last as usize]);
        assert_eq!(bytes[..], expect[..], "seed is SHA3-384 of exactly its claimed samples");
    }
    // Replay the DRBG from those seeds alone: it gives every byte served.
    let seed = |i: usize| -> [u8; SEED_LEN] { seeds[i].0[..].try_into().unwrap() };
    let mut replay = CtrDrbg::new(&seed(0), perso, 1).unwrap();
    for (i, served) in outputs.iter().enumerate() {
        if i > 0 {
            replay.reseed(&seed(i), &[]).unwrap();
        }
        let mut out = [0u8; 32];
        replay.generate(&mut out, &[]).unwrap();
        assert_eq!(&out, served, "request {i}");
    }
}

#[test]
fn fail_closed_refuses_and_fallback_serves_from_os() {
    let sim = SimSource::new("dead", 1, 8, 8.0, vec![]).unwrap();
    let params = HealthParams::new(8, 8.0);
    let status = status_for(&sim, params);
    status.fail(qkeyd_health::Failure {
        kind: qkeyd_health::FailureKind::Rct,
        severity: Severity::Permanent,
        sample: 0,
    });
    let (closed, _) =
        Pool::new(config(EntropyMode::FailClosed, 10), vec![status.clone()], no_fallback());
    assert_eq!(closed.serving(), None);
    assert!(matches!(closed.fill(&mut [0u8; 8]), Err(PoolError::NoHealthySource)));

    let fallback: Fallback = Box::new(|seed| {
        seed.fill(0x5a);
        Ok(())
    });
    let (open, _) = Pool::new(config(EntropyMode::OsFallback, 10), vec![status], fallback);
    let mut out = [0u8; 64];
    assert_eq!(open.fill(&mut out).unwrap(), Serving::OsFallback);
    let snap = open.snapshot();
    assert_eq!(snap.serving, Some(Serving::OsFallback));
    assert_eq!(snap.drbg.seeded_by, Some(Serving::OsFallback));
    assert_eq!(snap.drbg.seed_log[0].source, "os-fallback");
    // The bytes are the DRBG's output over the fallback seed, not the seed itself.
    assert_ne!(out, [0x5a; 64]);
}

#[test]
fn reseeds_by_count_and_large_requests_span_chunks() {
    let sim = SimSource::new("ok", 5, 8, 8.0, vec![]).unwrap();
    let params = HealthParams::new(8, 8.0);
    let status = status_for(&sim, params);
    let (pool, handles) =
        Pool::new(config(EntropyMode::FailClosed, 4), vec![status.clone()], no_fallback());
    sources::spawn(Box::new(sim), params, NO_FULL, handles[0].clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.serving().is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    // 1 MiB = 16 generate calls of 64 KiB: instantiate + 3 reseeds at interval 4.
    let mut big = vec![0u8; 1 << 20];
    pool.fill(&mut big).unwrap();
    let snap = pool.snapshot();
    assert_eq!(snap.drbg.seeds, 4);
    assert_eq!(snap.sources[0].seeds_used, 4);
    assert!(big.chunks(1 << 16).collect::<std::collections::HashSet<_>>().len() == 16);
}

/// A request that arrives while the only source is still in its first
/// start-up test waits for it and is served, instead of being refused.
#[test]
fn a_request_during_start_up_waits_for_the_source() {
    let sim = SimSource::new("slow start", 9, 8, 8.0, vec![]).unwrap();
    let params = HealthParams::new(8, 8.0);
    let status = status_for(&sim, params);
    let (pool, handles) =
        Pool::new(config(EntropyMode::FailClosed, 10), vec![status.clone()], no_fallback());
    assert_eq!(status.state(), SourceState::Startup);
    assert_eq!(pool.serving(), None);
    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.fill_fresh(&mut [0u8; 32]))
    };
    std::thread::sleep(Duration::from_millis(50));
    sources::spawn(Box::new(sim), params, NO_FULL, handles[0].clone()).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), Serving::Sources);

    // A source that failed (not starting) is not waited for.
    status.fail(qkeyd_health::Failure {
        kind: qkeyd_health::FailureKind::Rct,
        severity: Severity::Permanent,
        sample: 0,
    });
    let t = Instant::now();
    assert!(matches!(pool.fill(&mut [0u8; 8]), Err(PoolError::NoHealthySource)));
    assert!(t.elapsed() < Duration::from_secs(1));
}

/// A draw that needs no reseed is served inline; one that does is left to
/// `fill`, and nothing is drawn.
#[test]
fn fill_now_serves_only_what_needs_no_reseed() {
    let sim = SimSource::new("ok", 5, 8, 8.0, vec![]).unwrap();
    let params = HealthParams::new(8, 8.0);
    let status = status_for(&sim, params);
    let (pool, handles) =
        Pool::new(config(EntropyMode::FailClosed, 3), vec![status.clone()], no_fallback());
    let mut out = [0u8; 32];
    assert!(pool.fill_now(&mut out).is_none(), "not serving yet");
    sources::spawn(Box::new(sim), params, NO_FULL, handles[0].clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.serving().is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(pool.fill_now(&mut out).is_none(), "never seeded: fill must instantiate");
    pool.fill(&mut out).unwrap();
    let mut draws = vec![out];
    // Interval 3: two more generate calls fit before the reseed is due.
    for _ in 0..2 {
        assert_eq!(pool.fill_now(&mut out).unwrap().unwrap(), Serving::Sources);
        draws.push(out);
    }
    assert!(pool.fill_now(&mut out).is_none(), "a reseed is due");
    assert!(pool.fill_now(&mut [0u8; MAX_REQUEST + 1]).is_none(), "too big for one request");
    assert_eq!(pool.snapshot().drbg.seeds, 1);
    pool.fill(&mut out).unwrap();
    draws.push(out);
    assert_eq!(pool.snapshot().drbg.seeds, 2);
    draws.sort_unstable();
    draws.dedup();
    assert_eq!(draws.len(), 4);
}

/// A traced fresh draw names the source of its own reseed and every
/// source's scores; with a trust bar, an OS-fallback seed is refused before
/// anything is generated from it.
#[test]
fn traced_draws_name_their_seed_and_refuse_below_the_bar() {
    let sim = SimSource::new("qrng", 9, 8, 8.0, vec![]).unwrap();
    let params = HealthParams::new(8, 8.0);
    let status = status_for(&sim, params);
    let (pool, handles) =
        Pool::new(config(EntropyMode::FailClosed, 1000), vec![status.clone()], no_fallback());
    sources::spawn(Box::new(sim), params, NO_FULL, handles[0].clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.serving().is_none() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut seed = [0u8; 32];
    let p = pool.fill_fresh_traced(&mut seed, Some(0.89)).unwrap();
    assert_eq!(p.serving, Serving::Sources);
    assert_eq!(p.seed_source, "qrng");
    assert_eq!(p.sources.len(), 1);
    assert_eq!((p.sources[0].name.as_str(), p.sources[0].state.as_str()), ("qrng", "healthy"));
    assert!(p.sources[0].trust >= 0.89);
    let seeds = pool.snapshot().drbg.seeds;
    let again = pool.fill_fresh_traced(&mut seed, None).unwrap();
    assert_eq!(pool.snapshot().drbg.seeds, seeds + 1, "every traced draw reseeds");
    assert_eq!(again.reseed_counter, p.reseed_counter);

    // The only source gone, the pool serves from the OS: no trusted seed.
    status.fail(qkeyd_health::Failure {
        kind: qkeyd_health::FailureKind::Rct,
        severity: Severity::Permanent,
        sample: 0,
    });
    let fallback: Fallback = Box::new(|seed| {
        seed.fill(0x11);
        Ok(())
    });
    let (open, _) = Pool::new(config(EntropyMode::OsFallback, 10), vec![status], fallback);
    let mut out = [0u8; 32];
    match open.fill_fresh_traced(&mut out, Some(0.89)) {
        Err(PoolError::BelowTrust { seed_source, trust, .. }) => {
            assert_eq!((seed_source.as_str(), trust), ("os-fallback", 0.0));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out, [0u8; 32], "nothing was generated");
    let p = open.fill_fresh_traced(&mut out, None).unwrap();
    assert_eq!((p.serving, p.seed_source.as_str()), (Serving::OsFallback, "os-fallback"));
}

/// A source's offer into a full queue waits for room until its deadline: it
/// goes in when the pool takes a block meanwhile, and is dropped otherwise.
#[test]
fn an_offer_waits_for_room_until_its_deadline() {
    let sim = SimSource::new("s", 1, 8, 8.0, vec![]).unwrap();
    let params = HealthParams::new(8, 8.0);
    let status = status_for(&sim, params);
    status.update(SourceState::Healthy, qkeyd_health::TestCounts::default());
    let (pool, handles) =
        Pool::new(config(EntropyMode::FailClosed, 1), vec![status], no_fallback());
    let handle = &handles[0];
    let block = |i: u64| SeedBlock {
        bytes: Zeroizing::new([0x11; SEED_LEN]),
        provenance: conditioner::Provenance {
            source: 0,
            epoch: 0,
            samples: i..=i,
            count: 56,
            input_entropy_bits: 448.0,
        },
    };
    let soon = || Instant::now() + Duration::from_millis(50);
    for i in 0..CHANNEL_BLOCKS as u64 {
        assert_eq!(handle.offer(block(i), soon()), Offer::Taken);
    }
    let t = Instant::now();
    assert_eq!(handle.offer(block(100), soon()), Offer::Full);
    assert!(t.elapsed() >= Duration::from_millis(45), "{:?}", t.elapsed());

    let before = handle.demand();
    let taker = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            pool.take_block().map(|(_, record, _)| record.first_sample)
        })
    };
    let t = Instant::now();
    let offer = handle.offer(block(200), Instant::now() + Duration::from_secs(10));
    assert_eq!(offer, Offer::Taken);
    assert!(t.elapsed() < Duration::from_secs(5), "woken by the take: {:?}", t.elapsed());
    assert_eq!(taker.join().unwrap().unwrap(), Some(0), "the oldest block went first");
    assert!(handle.demand() > before, "taking moves the demand counter");
}

/// Kernel feeding credits the configured fraction of the block's assessed
/// entropy, only once its source has been measured, and never while the pool
/// cannot serve from its sources.
#[test]
fn kernel_feeding_credits_assessed_entropy_and_stops_when_unhealthy() {
    let sim = SimSource::new("sim", 7, 8, 8.0, vec![]).unwrap();
    let params = HealthParams::new(8, 8.0);
    let status = status_for(&sim, params);
    let feed =
        crate::config::KernelFeed { credit_fraction: 0.25, interval: Duration::from_secs(1) };
    let (pool, handles) = Pool::new(
        PoolConfig { kernel_feed: Some(feed), ..config(EntropyMode::FailClosed, 1) },
        vec![status.clone()],
        no_fallback(),
    );
    /// What the kernel was given: bytes and credit.
    type Given = Arc<Mutex<Vec<(Vec<u8>, u32)>>>;
    let fed: Given = Arc::default();
    let record = fed.clone();
    let sink: KernelSink = Box::new(move |bytes, bits| {
        lock(&record).push((bytes.to_vec(), bits));
        Ok(())
    });
    // Before the source is up: unhealthy, nothing written.
    assert_eq!(pool.feed_kernel(&sink), Fed::Unhealthy);
    let scoring = Scoring { monitor_rate: 1 << 20, ..NO_FULL };
    sources::spawn(Box::new(sim), params, scoring, handles[0].clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let credit = loop {
        assert!(Instant::now() < deadline, "never fed: {:?}", pool.kernel_feed());
        match pool.feed_kernel(&sink) {
            Fed::Credited(bits) => break bits,
            Fed::Unhealthy | Fed::Unassessed => std::thread::sleep(Duration::from_millis(20)),
            Fed::Refused => panic!("the recorder refuses nothing"),
        }
    };
    let snap = pool.kernel_feed().unwrap();
    let last = snap.log.back().cloned().unwrap();
    let h = status.snapshot().window_h_estimate.unwrap();
    assert!(h < 8.0, "the MCV estimate, not the claim: {h}");
    assert_eq!(last.samples, 56);
    assert_eq!(credit, kernel::credit_bits(0.25, 56, last.assessed_h));
    assert_eq!(credit, (0.25 * 56.0 * last.assessed_h).floor() as u32, "{last:?}");
    assert_eq!(lock(&fed).len(), 1);
    assert_eq!(lock(&fed)[0].0.len(), SEED_LEN);
    assert_eq!(lock(&fed)[0].1, credit);
    assert_eq!((snap.feeds, snap.bytes, snap.credited_bits), (1, 48, u64::from(credit)));

    // The source fails: no more feeds.
    status.fail(qkeyd_health::Failure {
        kind: qkeyd_health::FailureKind::Rct,
        severity: Severity::Permanent,
        sample: 0,
    });
    assert_eq!(pool.feed_kernel(&sink), Fed::Unhealthy);
    assert_eq!(lock(&fed).len(), 1, "nothing fed while fail-closed");
    assert!(pool.kernel_feed().unwrap().skipped_unhealthy >= 2);
}
