//! One contract, every sealer: the same cases run against the soft sealer,
//! SoftHSM2 (the PKCS#11 sealer) and swtpm (the TPM sealer).
//!
//! SoftHSM2 reads `SOFTHSM2_CONF` when its library is initialised, and a
//! running process's environment is not ours to change, so each SoftHSM2 case
//! runs this test binary again, as a child that filters to that one case,
//! with the variable set.

use std::process::Command;

use qkeyd_drivers::{
    Error as SealError,
    seal::{
        Sealer,
        pkcs11::{Pkcs11Config, Pkcs11Sealer},
        soft::SoftSealer,
    },
};
use qkeyd_e2e::{HSM_LABEL, HSM_PIN, SoftHsm, softhsm_module};
use zeroize::Zeroizing;

/// Set in the child that runs a SoftHSM2 case.
const CHILD: &str = "QKEYD_SEALER_CASE_CHILD";

/// What a sealer promises, case by case.
mod cases {
    use super::*;

    const AAD: &[u8] = b"qkeyd key 0123 v1 ml-dsa-65";

    pub(super) fn seals_and_unseals_with_the_same_aad(s: &mut dyn Sealer) {
        s.check().unwrap();
        let secret = [0x5a; 32];
        let sealed = s.seal("conformance-1", AAD, &secret).unwrap();
        assert_eq!(sealed.backend, s.kind());
        assert!(!sealed.blob.windows(secret.len()).any(|w| w == secret), "the secret in clear");
        assert_eq!(s.unseal(&sealed, AAD).unwrap().expose(), &secret[..]);
        // Again, after the first: nothing is consumed.
        assert_eq!(s.unseal(&sealed, AAD).unwrap().expose(), &secret[..]);
    }

    pub(super) fn two_seals_of_one_secret_differ(s: &mut dyn Sealer) {
        let a = s.seal("conformance-2a", AAD, &[7; 64]).unwrap();
        let b = s.seal("conformance-2b", AAD, &[7; 64]).unwrap();
        assert_ne!(a.blob, b.blob);
        assert_eq!(s.unseal(&b, AAD).unwrap().expose(), &[7; 64][..]);
    }

    pub(super) fn another_aad_is_an_integrity_error(s: &mut dyn Sealer) {
        let sealed = s.seal("conformance-3", AAD, &[1; 32]).unwrap();
        let e = s.unseal(&sealed, b"qkeyd key 0123 v2 ml-dsa-65").unwrap_err();
        assert!(matches!(e, SealError::Integrity), "{e:?}");
    }

    pub(super) fn a_damaged_blob_never_unseals_to_other_bytes(s: &mut dyn Sealer) {
        let sealed = s.seal("conformance-4", AAD, &[2; 32]).unwrap();
        for i in [0, sealed.blob.len() / 2, sealed.blob.len() - 1] {
            let mut bad = sealed.clone();
            bad.blob[i] ^= 0x01;
            match s.unseal(&bad, AAD) {
                Err(e) => assert!(!e.is_transient(), "byte {i}: {e:?}"),
                Ok(got) => assert_eq!(got.expose(), &[2; 32][..], "byte {i} gave other bytes"),
            }
        }
        let mut short = sealed.clone();
        short.blob.truncate(3);
        assert!(s.unseal(&short, AAD).is_err());
    }

    pub(super) fn destroy_is_final_and_idempotent(s: &mut dyn Sealer) {
        let sealed = s.seal("conformance-5", AAD, &[3; 32]).unwrap();
        s.destroy(&sealed).unwrap();
        s.destroy(&sealed).unwrap();
        if sealed.object.is_some() {
            // A backend object per seal: once destroyed, it is gone.
            let e = s.unseal(&sealed, AAD).unwrap_err();
            assert!(matches!(e, SealError::ObjectGone { .. }), "{e:?}");
        }
    }

    pub(super) fn held_keys_encrypt_inside_or_are_unsupported(s: &mut dyn Sealer) {
        let iv = [9; 12];
        if !s.holds_keys() {
            let e = s.key_create("conformance-kek", &[4; 32]).unwrap_err();
            assert!(matches!(e, SealError::Unsupported(_)), "{e:?}");
            let e = s.key_encrypt("conformance-kek", &iv, AAD, b"x").unwrap_err();
            assert!(matches!(e, SealError::Unsupported(_)), "{e:?}");
            return;
        }
        s.key_create("conformance-kek", &[4; 32]).unwrap();
        let ct = s.key_encrypt("conformance-kek", &iv, AAD, b"dek seed").unwrap();
        assert_eq!(ct.len(), b"dek seed".len() + 16);
        assert_eq!(s.key_decrypt("conformance-kek", &iv, AAD, &ct).unwrap().expose(), b"dek seed");
        let e = s.key_decrypt("conformance-kek", &iv, b"other", &ct).unwrap_err();
        assert!(matches!(e, SealError::Integrity), "{e:?}");
        s.key_destroy("conformance-kek").unwrap();
        let e = s.key_encrypt("conformance-kek", &iv, AAD, b"x").unwrap_err();
        assert!(matches!(e, SealError::ObjectGone { .. }), "{e:?}");
    }
}

/// Run `case` against the soft sealer.
fn soft(case: fn(&mut dyn Sealer)) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = SoftSealer::open(&dir.path().join("seal.key")).unwrap();
    case(&mut s);
}

/// Run `case` against SoftHSM2, in a child with `SOFTHSM2_CONF` set; `test`
/// is the case's test name (its module path in this binary).
fn hsm(test: &str, case: fn(&mut dyn Sealer)) {
    if std::env::var_os(CHILD).is_some() {
        let mut s = Pkcs11Sealer::open(Pkcs11Config {
            module: softhsm_module(),
            token_label: HSM_LABEL.into(),
            pin: Zeroizing::new(HSM_PIN.into()),
        })
        .unwrap();
        case(&mut s);
        return;
    }
    let token = SoftHsm::new();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &token.conf)
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} under SoftHSM2:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `case` against a fresh swtpm.
#[cfg(feature = "tpm")]
fn tpm(case: fn(&mut dyn Sealer)) {
    use qkeyd_drivers::seal::tpm::{TpmConfig, TpmSealer};
    let swtpm = qkeyd_e2e::Swtpm::start();
    let mut s = TpmSealer::open(TpmConfig { tcti: swtpm.tcti(), pcrs: vec![] }).unwrap();
    case(&mut s);
}

/// The test name of `case` under backend module `backend`, as the harness
/// knows it (without the binary's crate name).
fn name(backend: &str, case: &str) -> String {
    let here = module_path!();
    let here = here.split_once("::").map_or(here, |(_, rest)| rest);
    format!("{here}::{backend}::{case}")
}

macro_rules! every_case {
    ($run:expr) => {
        every_case!(
            @each $run;
            seals_and_unseals_with_the_same_aad,
            two_seals_of_one_secret_differ,
            another_aad_is_an_integrity_error,
            a_damaged_blob_never_unseals_to_other_bytes,
            destroy_is_final_and_idempotent,
            held_keys_encrypt_inside_or_are_unsupported
        );
    };
    (@each $run:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                ($run)(stringify!($case), super::cases::$case);
            }
        )*
    };
}

mod soft_sealer {
    every_case!(|_: &str, case| super::soft(case));
}

mod softhsm2 {
    every_case!(|test: &str, case| super::hsm(&super::name("softhsm2", test), case));
}

#[cfg(feature = "tpm")]
mod swtpm {
    every_case!(|_: &str, case| super::tpm(case));
}
