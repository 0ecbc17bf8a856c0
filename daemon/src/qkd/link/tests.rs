//! A link's key stream: healthy, biased, repeated, stuck.

use super::{LinkHealth, Refusal};
use qkeyd_health::FailureKind;

/// Key bytes from a fixed-seed generator (SplitMix64), each bit 1 with
/// probability `p_one`.
struct Stream {
    state: u64,
    p_one: f64,
}

impl Stream {
    fn new(seed: u64, p_one: f64) -> Self {
        Self { state: seed, p_one }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn key(&mut self, len: usize) -> Vec<u8> {
        if (self.p_one - 0.5).abs() < f64::EPSILON {
            return (0..len).map(|_| self.next_u64().to_le_bytes()[0]).collect();
        }
        let threshold = (self.p_one * 2f64.powi(53)) as u64;
        (0..len)
            .map(|_| {
                (0..8).fold(0u8, |b, _| (b << 1) | u8::from((self.next_u64() >> 11) < threshold))
            })
            .collect()
    }
}

const KEY: usize = 32;

#[test]
fn a_healthy_stream_is_used_after_its_start_up_test() {
    let mut link = LinkHealth::new(7.5, 0.89).unwrap();
    let mut s = Stream::new(1, 0.5);
    let mut refused = 0;
    for i in 0..3000 {
        match link.check(&format!("id-{i}"), &s.key(KEY)) {
            Ok(()) => {}
            Err(Refusal::Startup) => refused += 1,
            Err(r) => panic!("key {i}: {r:?}"),
        }
    }
    // 1024 start-up bytes: the first 32 keys of 32 bytes.
    assert_eq!(refused, 1024 / KEY);
    assert_eq!(link.usable(), 3000 - 32);
    assert!(link.trust() > 0.99, "{}", link.trust());
    assert!(!link.out_of_use());
    assert_eq!(link.test_failures(), (0, 0));
}

#[test]
fn a_biased_stream_loses_trust_before_rct_or_apt_fire() {
    let mut link = LinkHealth::new(7.5, 0.89).unwrap();
    let mut s = Stream::new(2, 0.6);
    let mut first_distrusted = None;
    for i in 0..5000 {
        if let Err(Refusal::Distrusted) = link.check(&format!("id-{i}"), &s.key(KEY)) {
            first_distrusted = Some(i);
            break;
        }
    }
    let at = first_distrusted.expect("a 60% bias never took the link out");
    assert!(link.trust() < 0.89, "{}", link.trust());
    assert!(link.out_of_use());
    assert_eq!(link.test_failures(), (0, 0), "RCT/APT fired first (key {at})");
    // 8192-byte windows: a handful of windows of keys, no more.
    assert!(at < 8 * 8192 / KEY, "key {at}");
}

#[test]
fn a_repeated_key_or_key_id_is_refused() {
    let mut link = LinkHealth::new(7.5, 0.89).unwrap();
    let mut s = Stream::new(3, 0.5);
    for i in 0..40 {
        let _ = link.check(&format!("id-{i}"), &s.key(KEY));
    }
    let key = s.key(KEY);
    assert_eq!(link.check("fresh", &key), Ok(()));
    assert_eq!(link.check("another", &key), Err(Refusal::RepeatedKey));
    assert_eq!(link.check("fresh", &s.key(KEY)), Err(Refusal::RepeatedKeyId));
    // The stream goes on.
    assert_eq!(link.check("next", &s.key(KEY)), Ok(()));
}

#[test]
fn a_stuck_stream_fails_its_rct_and_the_link_goes_out() {
    let mut link = LinkHealth::new(7.5, 0.89).unwrap();
    let mut s = Stream::new(4, 0.5);
    for i in 0..40 {
        let _ = link.check(&format!("id-{i}"), &s.key(KEY));
    }
    // Constant bytes, a different constant per key (so no two keys repeat).
    let mut seen = Vec::new();
    for i in 0..200u32 {
        let key: Vec<u8> =
            (0..KEY).map(|j| (i.wrapping_mul(31) as u8) ^ u8::from(j == 0)).collect();
        seen.push(link.check(&format!("stuck-{i}"), &key));
        if link.out_of_use() {
            break;
        }
    }
    assert_eq!(seen[0], Err(Refusal::HealthTest(FailureKind::Rct)), "{seen:?}");
    assert!(seen.iter().all(|r| r.is_err()), "{seen:?}");
    assert!(link.out_of_use(), "{seen:?}");
    assert_eq!(link.trust(), 0.0);
    assert_eq!(link.check("after", &s.key(KEY)), Err(Refusal::Failed));
}
