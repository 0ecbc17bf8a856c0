//! Known answers for every combiner, computed outside this code: Python's
//! `hashlib` and `hmac` (HKDF written out from RFC 5869), on
//! secret = 00..1f, QKD key = 20..3f, key_ID
//! 0b5f5a0c-3a7e-4f6b-9d2e-6c1b8a4f2e10, SAEs sae-a → sae-b, ciphertext
//! 1568 × 0xaa. The end-to-end test recomputes real keys the same way.

use super::*;

const KEY_ID: &str = "0b5f5a0c-3a7e-4f6b-9d2e-6c1b8a4f2e10";

fn parts() -> ([u8; 32], [u8; 32]) {
    let mut s = [0u8; 32];
    let mut q = [0u8; 32];
    for i in 0..32u8 {
        s[usize::from(i)] = i;
        q[usize::from(i)] = 32 + i;
    }
    (s, q)
}

fn ctx(size_bits: u32, ciphertext: &[u8]) -> Context<'_> {
    Context { key_id: KEY_ID, master: "sae-a", slave: "sae-b", size_bits, ciphertext }
}

fn run(c: Combiner, secret: Option<&[u8; 32]>, size: u32, ct: &[u8]) -> String {
    let (_, q) = parts();
    hex::encode(&combine(c, secret, &q, &ctx(size, ct)).unwrap()[..])
}

#[test]
fn hkdf_sha256_matches_an_independent_computation() {
    let (s, _) = parts();
    let ct = [0xaa; 1568];
    assert_eq!(
        run(Combiner::Hkdf, Some(&s), 256, &ct),
        "8049cf34fc4115c905920b9b9c1dad9df43331f7a9ede133ed411944907ab06a"
    );
    assert_eq!(
        run(Combiner::Hkdf, Some(&s), 512, &ct),
        "3b1dd0e5414d38ca90f22e8ba2a7b3d0c927dcbc614c6ab8f3e9fbd1e0fd26db\
         c9367338c56feadd06dec2652f5f9f3895d5ef04cfbb8eb4c97b24ad5b2f017d"
    );
    assert_eq!(
        run(Combiner::Hkdf, None, 256, &[]),
        "5769e220ecb0bccea5a53454a71cbb67284f8950c27d08e120b55083cda30ea8"
    );
}

#[test]
fn qubip_compat_combiners_match_an_independent_computation() {
    let (s, _) = parts();
    assert_eq!(
        run(Combiner::QubipXor, Some(&s), 256, &[]),
        "2020202020202020202020202020202020202020202020202020202020202020"
    );
    assert_eq!(
        run(Combiner::QubipHmac, Some(&s), 256, &[]),
        "a27b86e7a70a029cba778d6f738d952696d6d8361b95103dd84ae9df6af063af"
    );
    assert_eq!(
        run(Combiner::QubipXorHmac, Some(&s), 256, &[]),
        "c3fa478228d000e2bf83f3c9494cde49d75eb20552003e80fc91dd317d881c85"
    );
}

#[test]
fn every_part_of_the_context_changes_the_key() {
    let (s, q) = parts();
    let ct = [0xaa; 1568];
    let base = combine(Combiner::Hkdf, Some(&s), &q, &ctx(256, &ct)).unwrap();
    let mut other_ct = ct;
    other_ct[1567] ^= 1;
    let changed = [
        Context { key_id: "0b5f5a0c-3a7e-4f6b-9d2e-6c1b8a4f2e11", ..ctx(256, &ct) },
        Context { master: "sae-x", ..ctx(256, &ct) },
        Context { slave: "sae-x", ..ctx(256, &ct) },
        ctx(256, &other_ct),
    ];
    for c in changed {
        assert_ne!(combine(Combiner::Hkdf, Some(&s), &q, &c).unwrap()[..], base[..], "{c:?}");
    }
    // Each secret matters.
    let mut s2 = s;
    s2[0] ^= 1;
    assert_ne!(combine(Combiner::Hkdf, Some(&s2), &q, &ctx(256, &ct)).unwrap()[..], base[..]);
    let mut q2 = q;
    q2[31] ^= 1;
    assert_ne!(combine(Combiner::Hkdf, Some(&s), &q2, &ctx(256, &ct)).unwrap()[..], base[..]);
}

#[test]
fn size_limits_are_refused() {
    let (s, q) = parts();
    assert_eq!(
        combine(Combiner::QubipXor, Some(&s), &q, &ctx(512, &[])).unwrap_err(),
        CombineError::Size { combiner: "qubip-xor" }
    );
    assert_eq!(
        combine(Combiner::QubipXorHmac, None, &q, &ctx(256, &[])).unwrap_err(),
        CombineError::NoSecret { combiner: "qubip-xor-hmac-sha256" }
    );
    assert_eq!(
        combine(Combiner::Hkdf, Some(&s), &q, &ctx(255 * 256 + 8, &[])).unwrap_err(),
        CombineError::TooLong(255 * 256 + 8)
    );
}

#[test]
fn uuids_are_version_4() {
    let id = uuid([0xff; 16]);
    assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
    assert_eq!(uuid([0; 16]), "00000000-0000-4000-8000-000000000000");
}

#[test]
fn the_key_confirmation_matches_an_independent_computation() {
    let (s, _) = parts();
    // Python: hmac.new(secret, b"qkeyd-qkd-confirm/1" + sha256(ct), sha256)[:16]
    assert_eq!(hex::encode(confirmation(&s, &[0xaa; 1568])), "d63b87f6ca4457db41da5c096a308667");
    let mut other = s;
    other[0] ^= 1;
    assert_ne!(confirmation(&other, &[0xaa; 1568]), confirmation(&s, &[0xaa; 1568]));
    assert_ne!(confirmation(&s, &[0xab; 1568]), confirmation(&s, &[0xaa; 1568]));
}
