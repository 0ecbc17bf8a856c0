//! Load any PKCS#11 module and time C_GenerateRandom (32-byte calls/s and
//! MB/s at 1 MiB) and, where the token has CKM_ML_DSA, ML-DSA-65 signatures
//! (session and token keys). Prints one JSON object. Used by
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
            "random_1mib_mb_per_s": mib,
            "mldsa65_sign_session_per_s": session_sign,
            "mldsa65_sign_token_per_s": token_sign,
        })
    );
}
