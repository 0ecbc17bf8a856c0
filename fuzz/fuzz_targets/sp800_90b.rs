//! The SP 800-90B assessment (`qkeyd assess FILE`) on any sample file. The
//! first byte picks the word size (0: detected, else 1 to 8) and whether the
//! IID track's deterministic tests run too; the rest are the samples, at most
//! `MAX_SAMPLES` of them, so one execution stays well under a second (the
//! estimators are superlinear; files of real size are the unit tests' and
//! benches' job). Every estimate is a real number within [0, word size].
#![no_main]

use qkeyd_health::estimate::{Symbols, iid, non_iid, report};

/// Longest sample file assessed.
const MAX_SAMPLES: usize = 2048;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, samples)) = data.split_first() else { return };
    let samples = &samples[..samples.len().min(MAX_SAMPLES)];
    let bits = match mode & 0x0f {
        0 => None,
        b => Some(u32::from(b).min(9)),
    };
    let Ok(sym) = Symbols::new(samples, bits) else { return };
    let r = non_iid(&sym);
    let ws = f64::from(sym.word_size);
    for h in [r.h_original, r.h_assessed] {
        assert!((0.0..=ws).contains(&h), "an estimate of {h} for {ws}-bit samples");
    }
    assert!((0.0..=1.0).contains(&r.h_bitstring), "a bitstring estimate of {}", r.h_bitstring);
    let _ = report::lines(&r);
    if mode & 0x10 != 0 {
        let _ = iid::deterministic(&sym);
    }
});
