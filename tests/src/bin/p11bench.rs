//! Load any PKCS#11 module and time C_GenerateRandom (32-byte calls/s and
//! MB/s at 1 MiB), next to qkeyd's raw CTR_DRBG in the same process; SHA-256
//! and SHA-512 digests and AES-256-GCM encryption (1 KiB calls/s, MB/s at
//! 1 MiB); and, where the token has CKM_ML_DSA, ML-DSA-65 signatures (session
//! and token keys). Prints one JSON object. Used by
//! `cargo bench -p qkeyd-e2e --bench pkcs11`, which runs it for qkeyd's module
//! and SoftHSM2 side by side.
//!
//! ```text
//! p11bench MODULE [--pin PIN] [--label TOKEN_LABEL] [--seconds S]
//! ```
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11},
    mechanism::{
        Mechanism, MechanismType,
        aead::GcmParams,
        dsa::{HedgeType, SignAdditionalContext},
    },
    object::{Attribute, MlDsaParameterSetType},
    session::{Session, UserType},
    types::AuthPin,
};

/// Calls of `f` per second, over about `secs` seconds (after a short warm-up).
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The raw CTR_DRBG (qkeyd-drbg, as the module runs it): 32-byte generate
/// calls per second in this process.
fn raw_drbg32(secs: f64) -> f64 {
    let mut seed = [0u8; qkeyd_drbg::SEED_LEN];
    getrandom::fill(&mut seed).unwrap();
    let mut d = qkeyd_drbg::CtrDrbg::new(&seed, b"p11bench", 1 << 16).unwrap();
    let mut out = [0u8; 32];
    rate(secs, || {
        if d.needs_reseed() {
            d.reseed(&seed, b"").unwrap();
        }
        d.generate(&mut out, &[]).unwrap();
        std::hint::black_box(&out);
    })
}

/// AES-256-GCM encryptions per second of `len` bytes with a key the token made.
fn gcm_rate(s: &Session, len: usize, secs: f64) -> f64 {
    let key = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Encrypt(true),
                Attribute::Sensitive(true),
            ],
        )
        .unwrap();
    let msg = vec![0x5a_u8; len];
    let mut iv = [7u8; 12];
    let r = rate(secs, || {
        let m = Mechanism::AesGcm(GcmParams::new(&mut iv, b"aad", 128.into()).unwrap());
        std::hint::black_box(s.encrypt(&m, key, &msg).unwrap());
    });
    s.destroy_object(key).unwrap();
    r
}

fn sign_rate(s: &Session, token: bool, secs: f64) -> f64 {
    let (_, private) = s
        .generate_key_pair(
            &Mechanism::MlDsaKeyPairGen,
            &[
                Attribute::Token(token),
                Attribute::ParameterSet(MlDsaParameterSetType::ML_DSA_65.into()),
            ],
            &[Attribute::Token(token), Attribute::Sign(true)],
        )
        .unwrap();
    let ctx = SignAdditionalContext::new(HedgeType::Preferred, None);
    let msg = [0x5a_u8; 64];
    let r = rate(secs, || {
        s.sign(&Mechanism::MlDsa(ctx), private, &msg).unwrap();
    });
    s.destroy_object(private).unwrap();
    r
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let module =
        args.first().expect("usage: p11bench MODULE [--pin PIN] [--label L] [--seconds S]");
    let secs: f64 = opt("--seconds").map_or(2.0, |s| s.parse().unwrap());
    let p = Pkcs11::new(module).unwrap();
    p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)).unwrap();
    let slots = p.get_slots_with_token().unwrap();
    let slot = match opt("--label") {
        Some(l) => *slots
            .iter()
            .find(|s| p.get_token_info(**s).unwrap().label() == l)
            .expect("no token with that label"),
        None => slots[0],
    };
    let s = p.open_rw_session(slot).unwrap();
    if let Some(pin) = opt("--pin") {
        s.login(UserType::User, Some(&AuthPin::new(pin.into()))).unwrap();
    }
    let mut small = [0u8; 32];
    let random32 = rate(secs, || s.generate_random_slice(&mut small).unwrap());
    let mut big = vec![0u8; 1 << 20];
    let mib = rate(secs, || s.generate_random_slice(&mut big).unwrap()) * 1.048_576;
    let raw32 = raw_drbg32(secs);
    let kib = [0x33_u8; 1024];
    let sha256_1k = rate(secs, || drop(s.digest(&Mechanism::Sha256, &kib).unwrap()));
    let sha512_1k = rate(secs, || drop(s.digest(&Mechanism::Sha512, &kib).unwrap()));
    let sha256_mib = rate(secs, || drop(s.digest(&Mechanism::Sha256, &big).unwrap())) * 1.048_576;
    let sha512_mib = rate(secs, || drop(s.digest(&Mechanism::Sha512, &big).unwrap())) * 1.048_576;
    let gcm_1k = gcm_rate(&s, 1024, secs);
    let gcm_mib = gcm_rate(&s, 1 << 20, secs) * 1.048_576;
    let has_dsa = p.get_mechanism_list(slot).unwrap().contains(&MechanismType::ML_DSA);
    let (session_sign, token_sign) = if has_dsa {
        (Some(sign_rate(&s, false, secs)), Some(sign_rate(&s, true, secs)))
    } else {
        (None, None)
    };
    println!(
        "{}",
        serde_json::json!({
            "random32_calls_per_s": random32,
            "raw_drbg32_calls_per_s": raw32,
            "random_1mib_mb_per_s": mib,
            "sha256_1kib_per_s": sha256_1k,
            "sha512_1kib_per_s": sha512_1k,
            "sha256_1mib_mb_per_s": sha256_mib,
            "sha512_1mib_mb_per_s": sha512_mib,
            "aes256_gcm_1kib_per_s": gcm_1k,
            "aes256_gcm_1mib_mb_per_s": gcm_mib,
            "mldsa65_sign_session_per_s": session_sign,
            "mldsa65_sign_token_per_s": token_sign,
        })
    );
}
