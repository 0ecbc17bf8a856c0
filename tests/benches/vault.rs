//! Key-vault latency per sealing backend, next to the raw ML-KEM / ML-DSA cost
//! measured in the same run:
//!
//! ```text
//! cargo bench -p qkeyd-e2e --bench vault --features tpm
//! ```
//!
//! For each parameter set: raw keygen (seed → public key) and raw sign or
//! decapsulate; then per backend (soft, SoftHSM2, swtpm) keygen + pairwise test + seal,
//! and unseal + sign/decapsulate. The median of many runs is printed, in µs.
//! SoftHSM2 must be installed (tests/run-all.sh installs it). With
//! `--features tpm`, a swtpm column too. Results go in BENCHMARKS.md.
#![allow(clippy::unwrap_used)]

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use qkeyd_drivers::seal::{
    Sealer,
    pkcs11::{Pkcs11Config, Pkcs11Sealer},
    soft::SoftSealer,
};
use qkeyd_e2e::{HSM_LABEL, HSM_PIN, SoftHsm, softhsm_module};
use qkeyd_pqc::{Algorithm, PrivateKey, encapsulate, pairwise_consistency};
use zeroize::Zeroizing;

const RUN: Duration = Duration::from_millis(1500);

/// Median latency of `f` in µs over about RUN.
fn median(mut f: impl FnMut(u64)) -> f64 {
    let mut samples = Vec::new();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < RUN || samples.len() < 20 {
        let t = Instant::now();
        f(i);
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        i += 1;
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn seed(alg: Algorithm, i: u64) -> Zeroizing<Vec<u8>> {
    let mut s = Zeroizing::new(vec![0u8; alg.seed_len()]);
    getrandom::fill(&mut s).unwrap();
    s[0] ^= i as u8;
    s
}

fn main() {
    // SoftHSM2 reads SOFTHSM2_CONF when the module is initialised, and setting
    // the environment of a running process is unsafe: initialise a token, then
    // run the measurements in a child that inherits the variable.
    if std::env::var_os("SOFTHSM2_CONF").is_none() {
        let hsm = SoftHsm::new();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("SOFTHSM2_CONF", &hsm.conf)
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    let soft_dir = tempfile::tempdir().unwrap();
    let mut soft = SoftSealer::open(&soft_dir.path().join("seal.key")).unwrap();
    let mut p11 = Pkcs11Sealer::open(Pkcs11Config {
        module: softhsm_module(),
        token_label: HSM_LABEL.into(),
        pin: Zeroizing::new(HSM_PIN.into()),
    })
    .unwrap();
    #[cfg(feature = "tpm")]
    let swtpm = qkeyd_e2e::Swtpm::start();
    #[cfg(feature = "tpm")]
    let mut tpm = qkeyd_drivers::seal::tpm::TpmSealer::open(qkeyd_drivers::seal::tpm::TpmConfig {
        tcti: swtpm.tcti(),
        pcrs: vec![],
    })
    .unwrap();
    println!(
        "{:<12} {:>10} {:>10} | {:>14} {:>14} | {:>14} {:>14} | {:>14} {:>14}",
        "alg",
        "keygen",
        "op",
        "soft gen+seal",
        "soft unseal+op",
        "hsm gen+seal",
        "hsm unseal+op",
        "tpm gen+seal",
        "tpm unseal+op"
    );
    for alg in Algorithm::ALL {
        // A fixed key for the operation columns: ML-DSA's signing loop runs a
        // key- and message-dependent number of times, so a fresh random key
        // per run would move the figure from run to run by up to 2x.
        let fixed: Vec<u8> = (0..alg.seed_len() as u8).collect();
        let key = PrivateKey::from_seed(alg, &fixed).unwrap();
        let pk = key.public_key();
        let (ct, _) = if alg.is_kem() {
            encapsulate(alg, &pk, &[7; 32]).unwrap()
        } else {
            (vec![], Zeroizing::new([0; 32]))
        };
        let op = |k: &PrivateKey| {
            if alg.is_kem() {
                black_box(k.decapsulate(&ct).unwrap());
            } else {
                black_box(k.sign(b"benchmark message", b"", &[3; 32]).unwrap());
            }
        };
        let raw_keygen = median(|i| {
            black_box(PrivateKey::from_seed(alg, &seed(alg, i)).unwrap().public_key());
        });
        let raw_op = median(|_| op(&key));
        let backend = |s: &mut dyn Sealer, tag: &str| {
            let gen_seal = median(|i| {
                let k = PrivateKey::from_seed(alg, &seed(alg, i)).unwrap();
                pairwise_consistency(&k, &[1; 32]).unwrap();
                black_box(k.public_key());
                let sealed = s.seal(&format!("bench/{tag}/{alg}/{i}"), b"aad", k.seed()).unwrap();
                s.destroy(&sealed).unwrap();
            });
            let sealed = s.seal(&format!("bench/{tag}/{alg}/use"), b"aad", key.seed()).unwrap();
            let unseal_op = median(|_| {
                let seed = s.unseal(&sealed, b"aad").unwrap();
                op(&PrivateKey::from_seed(alg, seed.expose()).unwrap());
            });
            s.destroy(&sealed).unwrap();
            (gen_seal, unseal_op)
        };
        let (sg, so) = backend(&mut soft, "soft");
        let (hg, ho) = backend(&mut p11, "hsm");
        #[cfg(feature = "tpm")]
        let (tg, to) = backend(&mut tpm, "tpm");
        #[cfg(not(feature = "tpm"))]
        let (tg, to) = (f64::NAN, f64::NAN);
        let what = if alg.is_kem() { "decaps" } else { "sign" };
        println!(
            "{:<12} {raw_keygen:>10.0} {raw_op:>7.0} {what:<2} | {sg:>14.0} {so:>14.0} | {hg:>14.0} {ho:>14.0} | {tg:>14.0} {to:>14.0}",
            alg.name()
        );
    }
}
