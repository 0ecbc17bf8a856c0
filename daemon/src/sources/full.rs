//! Periodic full SP 800-90B §6.3 assessments of a live source.
//!
//! The drift windows ask one cheap question per 8192 samples. Every
//! `interval`, and whenever a distrusted source needs a fresh verdict, the
//! source thread instead sets the next `samples` usable samples aside and a
//! worker thread runs every non-IID estimator on them. The samples set aside
//! are health-tested and drift-scored like any others but never reach the
//! conditioner: no copy of seed material is kept for the assessment.

use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use qkeyd_health::estimate::{Symbols, non_iid};

use crate::config::FullAssessment;

/// Why a full assessment gave no result.
#[derive(Debug, thiserror::Error)]
pub(super) enum AssessError {
    /// The samples cannot be assessed (wider than the source's bits).
    #[error("the samples cannot be assessed")]
    Input(#[source] qkeyd_health::Error),
    /// The assessment thread ended without an answer (it panicked).
    #[error("the assessment thread stopped")]
    ThreadStopped,
}

/// The first assessment waits this long after start (or one interval, if shorter).
pub(crate) const FIRST_DELAY: Duration = Duration::from_secs(60);
/// Shortest pause between attempts while a distrusted source waits to come back.
const RETRY_MIN: Duration = Duration::from_secs(30);

/// A finished assessment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Outcome {
    /// Samples assessed.
    pub(super) samples: usize,
    /// H_original (§3.1.3).
    pub(super) h_original: f64,
    /// H_bitstring per bit (1 for binary data).
    pub(super) h_bitstring: f64,
    /// Final min(H) per sample.
    pub(super) h_assessed: f64,
    /// CPU time of the estimators.
    pub(super) elapsed: Duration,
    /// Whether every sample was taken after the source last lost trust.
    pub(super) fresh: bool,
}

enum Phase {
    /// Next periodic assessment at `due`; a distrusted source may try again at `retry`.
    Idle {
        due: Instant,
        retry: Instant,
    },
    Recording {
        buf: Vec<u8>,
        fresh: bool,
        generation: u64,
    },
    Running {
        rx: mpsc::Receiver<Result<Outcome, AssessError>>,
        generation: u64,
    },
}

/// The assessment schedule of one source.
pub(super) struct Scheduler {
    policy: FullAssessment,
    bits: u32,
    name: String,
    phase: Phase,
    /// Bumped whenever the source loses trust: results of samples taken
    /// before that are not fresh.
    generation: u64,
}

impl Scheduler {
    /// A schedule for source `name` with `bits`-bit samples.
    pub(super) fn new(name: &str, bits: u32, policy: FullAssessment) -> Self {
        let now = Instant::now();
        let phase = Phase::Idle { due: now + policy.interval.min(FIRST_DELAY), retry: now };
        Self { policy, bits, name: name.to_owned(), phase, generation: 0 }
    }

    /// The source lost trust: what is being recorded is dropped, and only
    /// results on samples from now on count as fresh.
    pub(super) fn lost_trust(&mut self) {
        self.generation += 1;
        self.restart_recording(true);
    }

    /// The stream was interrupted (a health failure, a disconnect, or a
    /// window that is not clean while distrusted): an assessment must cover
    /// contiguous samples, so a recording in progress starts over. Results
    /// already running stay valid.
    pub(super) fn restart_recording(&mut self, distrusted: bool) {
        if let Phase::Recording { buf, fresh, generation } = &mut self.phase {
            buf.clear();
            *fresh = distrusted;
            *generation = self.generation;
        }
    }

    /// Whether samples are being set aside now.
    pub(super) fn recording(&self) -> bool {
        matches!(self.phase, Phase::Recording { .. })
    }

    /// Offer usable samples; returns how many (from the front) were set aside
    /// for the assessment. `awaiting`: the source is distrusted and needs a
    /// fresh assessment to come back.
    pub(super) fn offer(&mut self, samples: &[u8], awaiting: bool) -> usize {
        if let Phase::Idle { due, retry } = self.phase
            && (Instant::now() >= due || (awaiting && Instant::now() >= retry))
        {
            self.phase = Phase::Recording {
                buf: Vec::with_capacity(self.policy.samples),
                fresh: awaiting,
                generation: self.generation,
            };
        }
        let Phase::Recording { buf, fresh, generation } = &mut self.phase else {
            return 0;
        };
        let take = (self.policy.samples - buf.len()).min(samples.len());
        buf.extend_from_slice(&samples[..take]);
        if buf.len() == self.policy.samples {
            let (data, fresh, generation) = (std::mem::take(buf), *fresh, *generation);
            self.phase = match self.spawn(data, fresh) {
                Ok(rx) => Phase::Running { rx, generation },
                Err(e) => {
                    tracing::error!(source = %self.name, error = %e, "cannot start a full assessment");
                    self.idle()
                }
            };
        }
        take
    }

    fn idle(&self) -> Phase {
        let now = Instant::now();
        Phase::Idle {
            due: now + self.policy.interval,
            retry: now + RETRY_MIN.min(self.policy.interval),
        }
    }

    fn spawn(
        &self,
        mut data: Vec<u8>,
        fresh: bool,
    ) -> std::io::Result<mpsc::Receiver<Result<Outcome, AssessError>>> {
        let (tx, rx) = mpsc::sync_channel(1);
        let bits = self.bits;
        // As the health tests see them: the low `bits` bits of each byte.
        let mask = if bits >= 8 { 0xff } else { (1u8 << bits) - 1 };
        data.iter_mut().for_each(|b| *b &= mask);
        thread::Builder::new().name(format!("qkeyd-assess-{}", self.name)).spawn(move || {
            let started = Instant::now();
            // One symbol repeated has no entropy; the estimators need two.
            if data.iter().all(|&b| b == data[0]) {
                let zero = Outcome {
                    samples: data.len(),
                    h_original: 0.0,
                    h_bitstring: 0.0,
                    h_assessed: 0.0,
                    elapsed: started.elapsed(),
                    fresh,
                };
                let _ = tx.send(Ok(zero));
                return;
            }
            let result = Symbols::new(&data, Some(bits)).map_err(AssessError::Input).map(|sym| {
                let r = non_iid(&sym);
                Outcome {
                    samples: r.samples,
                    h_original: r.h_original,
                    h_bitstring: r.h_bitstring,
                    h_assessed: r.h_assessed,
                    elapsed: started.elapsed(),
                    fresh,
                }
            });
            // The source thread may have gone; nothing to do then.
            let _ = tx.send(result);
        })?;
        Ok(rx)
    }

    /// A finished assessment, if one is ready. A result whose samples predate
    /// the last loss of trust is reported with `fresh = false`.
    pub(super) fn poll(&mut self) -> Option<Result<Outcome, AssessError>> {
        let Phase::Running { rx, generation } = &self.phase else {
            return None;
        };
        let got = match rx.try_recv() {
            Ok(r) => r.map(|o| Outcome { fresh: o.fresh && *generation == self.generation, ..o }),
            Err(mpsc::TryRecvError::Empty) => return None,
            Err(mpsc::TryRecvError::Disconnected) => Err(AssessError::ThreadStopped),
        };
        self.phase = self.idle();
        Some(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(samples: usize) -> FullAssessment {
        FullAssessment { samples, interval: Duration::from_millis(1), margin_bits: 2.0 }
    }

    fn wait(s: &mut Scheduler) -> Outcome {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(r) = s.poll() {
                return r.unwrap();
            }
            assert!(Instant::now() < until, "no assessment result");
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn uniform(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn records_exactly_the_configured_samples_then_assesses_them() {
        let mut s = Scheduler::new("t", 8, policy(65_536));
        thread::sleep(Duration::from_millis(2));
        let data = uniform(100_000, 9);
        assert_eq!(s.offer(&data[..50_000], false), 50_000);
        assert!(s.recording());
        // Only what is still needed is taken; the rest may seed the pool.
        assert_eq!(s.offer(&data[50_000..], false), 15_536);
        assert!(!s.recording());
        let o = wait(&mut s);
        assert_eq!(o.samples, 65_536);
        assert!(!o.fresh);
        assert!(o.h_assessed > 6.0 && o.h_assessed <= 8.0, "{o:?}");
        // Same answer as the library on the same samples.
        let sym = Symbols::new(&data[..65_536], Some(8)).unwrap();
        assert_eq!(o.h_assessed, non_iid(&sym).h_assessed);
    }

    #[test]
    fn a_loss_of_trust_makes_earlier_samples_stale() {
        let mut s = Scheduler::new("t", 8, policy(65_536));
        let data = uniform(65_536, 10);
        // A distrusted source may start at once; trust is lost again midway.
        assert_eq!(s.offer(&data[..30_000], true), 30_000);
        s.lost_trust();
        assert_eq!(s.offer(&data, true), 65_536);
        assert!(wait(&mut s).fresh, "every sample came after the loss");
        // An interruption while one runs leaves it valid ...
        thread::sleep(Duration::from_millis(2));
        assert_eq!(s.offer(&data, true), 65_536);
        s.restart_recording(true);
        assert!(wait(&mut s).fresh);
        // ... but a result still running when trust is lost is not fresh.
        thread::sleep(Duration::from_millis(2));
        assert_eq!(s.offer(&data, true), 65_536);
        s.lost_trust();
        assert!(!wait(&mut s).fresh);
    }

    #[test]
    fn a_stuck_source_assesses_near_zero() {
        // 4-bit samples are masked as the health tests mask them.
        let mut s = Scheduler::new("t", 4, policy(65_536));
        thread::sleep(Duration::from_millis(2));
        assert_eq!(s.offer(&[0xf7; 65_536], false), 65_536);
        let o = wait(&mut s);
        assert_eq!(o.h_assessed, 0.0, "{o:?}");
    }
}
