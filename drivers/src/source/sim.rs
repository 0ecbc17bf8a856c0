//! A simulated QRNG with fault injection.
//!
//! Healthy output is a seeded xoshiro256** stream, so runs are reproducible.
//! Faults come from a schedule (each phase starts after a given number of
//! samples, exactly at that sample) or are switched at run time through a
//! [`SimControl`] handle.

use std::{
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{EntropySource, Error, SourceInfo};

/// A fault mode of the simulated device.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// Healthy: uniform samples.
    #[default]
    None,
    /// Every sample is `value`.
    Stuck {
        /// The stuck value.
        value: u8,
    },
    /// Biased: the high bits are stuck at zero (a saturated detector), so only
    /// 2^`keep_bits` symbols occur and the min-entropy drops to `keep_bits`.
    Bias {
        /// Low bits that stay random.
        keep_bits: u32,
    },
    /// Slow drift toward one value: its probability grows linearly from 0 at
    /// the phase's start to `to_p` after `over_samples` samples, then stays.
    Drift {
        /// The value the source drifts toward.
        value: u8,
        /// Final probability of that value.
        to_p: f64,
        /// Samples over which the drift happens.
        over_samples: u64,
    },
    /// Reads return at most `max` samples (healthy values otherwise).
    ShortReads {
        /// Largest read.
        max: usize,
    },
    /// The device disappears: reads fail for `for_ms` milliseconds after the
    /// phase starts, then it comes back healthy.
    Vanish {
        /// How long it stays away.
        for_ms: u64,
    },
}

/// One step of a fault schedule.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Phase {
    /// The fault starts with this sample (0-based count of samples emitted).
    pub after_samples: u64,
    /// The fault.
    #[serde(flatten)]
    pub fault: Fault,
}

/// Switches a running [`SimSource`]'s fault from another thread.
#[derive(Clone, Debug, Default)]
pub struct SimControl(Arc<Mutex<Option<Fault>>>);

impl SimControl {
    /// Replace the current fault now; it overrides the schedule from here on.
    pub fn set(&self, fault: Fault) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(fault);
    }

    fn take(&self) -> Option<Fault> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The simulated QRNG.
#[derive(Debug)]
pub struct SimSource {
    info: SourceInfo,
    rng: Xoshiro,
    schedule: Vec<Phase>,
    fault: Fault,
    phase_start: u64,
    vanished_at: Option<Instant>,
    emitted: u64,
    control: SimControl,
    mask: u8,
}

impl SimSource {
    /// A simulated source. `schedule` need not be sorted.
    pub fn new(
        name: &str,
        seed: u64,
        bits_per_sample: u32,
        claimed_h: f64,
        mut schedule: Vec<Phase>,
    ) -> Result<Self, Error> {
        if !(1..=8).contains(&bits_per_sample) {
            return Err(Error::Config(format!("bits_per_sample {bits_per_sample} not in 1..=8")));
        }
        for phase in &schedule {
            validate(&phase.fault)?;
        }
        schedule.sort_by_key(|p| p.after_samples);
        let mask = if bits_per_sample == 8 { u8::MAX } else { (1u8 << bits_per_sample) - 1 };
        Ok(Self {
            info: SourceInfo {
                name: name.to_owned(),
                kind: "sim",
                // The seed stays out of the identity: identities are shown in
                // /v1/health and logs, and the seed predicts every sample.
                identity: "simulated".to_owned(),
                bits_per_sample,
                claimed_h,
            },
            rng: Xoshiro::new(seed),
            schedule,
            fault: Fault::None,
            phase_start: 0,
            vanished_at: None,
            emitted: 0,
            control: SimControl::default(),
            mask,
        })
    }

    /// A handle to switch faults at run time.
    pub fn control(&self) -> SimControl {
        self.control.clone()
    }

    /// Samples emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    fn enter(&mut self, fault: Fault) {
        self.fault = fault;
        self.phase_start = self.emitted;
        self.vanished_at = None;
    }

    /// Apply schedule phases that start at or before the current sample, and
    /// return how many samples may be emitted before the next one starts.
    fn apply_schedule(&mut self) -> u64 {
        while let Some(p) = self.schedule.first() {
            if p.after_samples > self.emitted {
                return p.after_samples - self.emitted;
            }
            let p = self.schedule.remove(0);
            self.enter(p.fault);
        }
        u64::MAX
    }

    fn sample(&mut self) -> u8 {
        let r = self.rng.next();
        let x = (r >> 56) as u8 & self.mask;
        match self.fault {
            Fault::Stuck { value } => value & self.mask,
            Fault::Bias { keep_bits } => x & ((1u16 << keep_bits.min(8)) - 1) as u8,
            Fault::Drift { value, to_p, over_samples } => {
                let t = (self.emitted - self.phase_start) as f64 / over_samples.max(1) as f64;
                let p = to_p * t.min(1.0);
                // 53 uniform bits from the low end of the same draw.
                let u = (r & ((1 << 53) - 1)) as f64 / (1u64 << 53) as f64;
                if u < p { value & self.mask } else { x }
            }
            Fault::None | Fault::ShortReads { .. } | Fault::Vanish { .. } => x,
        }
    }
}

fn validate(fault: &Fault) -> Result<(), Error> {
    match fault {
        Fault::Bias { keep_bits } if *keep_bits > 8 => {
            Err(Error::Config(format!("bias keep_bits {keep_bits} > 8")))
        }
        Fault::Drift { to_p, .. } if !(0.0..=1.0).contains(to_p) => {
            Err(Error::Config(format!("drift to_p {to_p} not in [0, 1]")))
        }
        Fault::ShortReads { max: 0 } => Err(Error::Config("short-reads max must be ≥ 1".into())),
        _ => Ok(()),
    }
}

impl EntropySource for SimSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if let Some(fault) = self.control.take() {
            validate(&fault)?;
            self.schedule.clear();
            self.enter(fault);
        }
        let until_next = self.apply_schedule();
        if let Fault::Vanish { for_ms } = self.fault {
            let since = *self.vanished_at.get_or_insert_with(Instant::now);
            if since.elapsed() < Duration::from_millis(for_ms) {
                // A real vanished device fails fast; do the same, with a short
                // pause so a caller that ignores back-off does not spin.
                thread::sleep(Duration::from_millis(1));
                return Err(Error::Vanished { name: self.info.name.clone() });
            }
            self.enter(Fault::None);
        }
        let mut n = buf.len().min(usize::try_from(until_next).unwrap_or(usize::MAX));
        if let Fault::ShortReads { max } = self.fault {
            n = n.min(max);
        }
        for b in &mut buf[..n] {
            *b = self.sample();
            self.emitted += 1;
        }
        Ok(n)
    }
}

/// xoshiro256** (Blackman and Vigna), seeded through splitmix64. Not for keys:
/// it only drives the simulation.
#[derive(Debug)]
struct Xoshiro([u64; 4]);

impl Xoshiro {
    fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    fn next(&mut self) -> u64 {
        let s = &mut self.0;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_n(src: &mut SimSource, n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        let mut at = 0;
        while at < n {
            at += src.read(&mut out[at..]).unwrap();
        }
        out
    }

    #[test]
    fn stuck_starts_exactly_at_scheduled_sample() {
        let phase = Phase { after_samples: 1000, fault: Fault::Stuck { value: 0xaa } };
        let mut src = SimSource::new("s", 1, 8, 8.0, vec![phase]).unwrap();
        let s = read_n(&mut src, 2000);
        assert!(s[1000..].iter().all(|&b| b == 0xaa));
        let distinct: std::collections::BTreeSet<u8> = s[..1000].iter().copied().collect();
        assert!(distinct.len() > 200, "healthy part looks uniform");
    }

    #[test]
    fn bias_narrows_the_alphabet() {
        let phase = Phase { after_samples: 0, fault: Fault::Bias { keep_bits: 5 } };
        let mut src = SimSource::new("s", 2, 8, 8.0, vec![phase]).unwrap();
        let s = read_n(&mut src, 10_000);
        assert!(s.iter().all(|&b| b < 32));
        let distinct: std::collections::BTreeSet<u8> = s.iter().copied().collect();
        assert_eq!(distinct.len(), 32);
    }

    #[test]
    fn drift_grows_toward_target() {
        let fault = Fault::Drift { value: 0, to_p: 0.5, over_samples: 100_000 };
        let mut src =
            SimSource::new("s", 3, 8, 8.0, vec![Phase { after_samples: 0, fault }]).unwrap();
        let s = read_n(&mut src, 200_000);
        let zeros = |r: &[u8]| r.iter().filter(|&&b| b == 0).count() as f64 / r.len() as f64;
        assert!(zeros(&s[..10_000]) < 0.05);
        assert!((zeros(&s[45_000..55_000]) - 0.25).abs() < 0.03);
        assert!((zeros(&s[150_000..]) - 0.5).abs() < 0.02);
    }

    #[test]
    fn short_reads_and_vanish_and_control() {
        let mut src = SimSource::new("s", 4, 8, 8.0, vec![]).unwrap();
        let ctl = src.control();
        ctl.set(Fault::ShortReads { max: 3 });
        let mut buf = [0u8; 64];
        assert_eq!(src.read(&mut buf).unwrap(), 3);
        ctl.set(Fault::Vanish { for_ms: 50 });
        let e = src.read(&mut buf).unwrap_err();
        assert!(e.is_transient());
        thread::sleep(Duration::from_millis(60));
        assert_eq!(src.read(&mut buf).unwrap(), 64, "back and healthy");
    }

    #[test]
    fn same_seed_same_stream() {
        let a = read_n(&mut SimSource::new("a", 9, 8, 8.0, vec![]).unwrap(), 100);
        let b = read_n(&mut SimSource::new("b", 9, 8, 8.0, vec![]).unwrap(), 100);
        assert_eq!(a, b);
    }

    #[test]
    fn bad_faults_are_config_errors() {
        let bad = Phase { after_samples: 0, fault: Fault::ShortReads { max: 0 } };
        assert!(matches!(SimSource::new("s", 0, 8, 8.0, vec![bad]), Err(Error::Config(_))));
        assert!(matches!(SimSource::new("s", 0, 9, 8.0, vec![]), Err(Error::Config(_))));
    }
}
