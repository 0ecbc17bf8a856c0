//! Tests of the TPM structure parsers: round trips through the test
//! marshaller, bounds, trailing bytes and refused selectors.

use p256::ecdsa::SigningKey;
use sha2::{Digest as _, Sha256};

use super::marshal::PublicSpec;
use super::*;

fn quote() -> Attest {
    Attest {
        magic: TPM_GENERATED_VALUE,
        st: TPM_ST_ATTEST_QUOTE,
        qualified_signer: vec![0x00, 0x0b, 1, 2, 3],
        extra_data: vec![0xee; 32],
        clock_info: ClockInfo {
            clock: 0x0102_0304_0506,
            reset_count: 7,
            restart_count: 2,
            safe: 1,
        },
        firmware_version: 0x2019_1023_0016_3636,
        attested: Attested::Quote(QuoteInfo {
            pcr_select: vec![PcrSelection { hash: TPM_ALG_SHA256, select: vec![0x81, 0x00, 0x01] }],
            pcr_digest: vec![0xdd; 32],
        }),
    }
}

fn ak() -> SigningKey {
    SigningKey::from_slice(&[2u8; 32]).unwrap()
}

#[test]
fn a_quote_round_trips() {
    let q = quote();
    let bytes = q.marshal();
    assert_eq!(Attest::parse(&bytes).unwrap(), q);
    assert_eq!(peek_magic(&bytes), Some(TPM_GENERATED_VALUE));
    assert_eq!(peek_type(&bytes), Some(TPM_ST_ATTEST_QUOTE));
}

#[test]
fn a_certify_and_an_unknown_type_parse_with_their_type() {
    let mut c = quote();
    c.st = TPM_ST_ATTEST_CERTIFY;
    c.attested = Attested::Certify(CertifyInfo { name: vec![1; 34], qualified_name: vec![2; 34] });
    assert_eq!(Attest::parse(&c.marshal()).unwrap(), c);
    let mut other = quote();
    other.st = 0x8019;
    other.attested = Attested::Other(vec![9; 20]);
    assert_eq!(Attest::parse(&other.marshal()).unwrap(), other);
}

#[test]
fn every_truncation_and_any_trailing_byte_is_refused() {
    let bytes = quote().marshal();
    for len in 0..bytes.len() {
        assert!(Attest::parse(&bytes[..len]).is_err(), "truncated to {len}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(Attest::parse(&long), Err(Error::Trailing { what: "TPMS_ATTEST", extra: 1 })));
}

#[test]
fn pcr_selection_sizes_are_bounded() {
    let mut q = quote();
    q.attested = Attested::Quote(QuoteInfo {
        pcr_select: vec![PcrSelection { hash: TPM_ALG_SHA256, select: vec![0xff; 33] }],
        pcr_digest: vec![0; 32],
    });
    assert!(matches!(Attest::parse(&q.marshal()), Err(Error::TooLarge { .. })));
    // A count of banks far above any TPM's.
    let mut bytes = quote().marshal();
    let at = 4 + 2 + (2 + 5) + (2 + 32) + 17 + 8;
    bytes[at..at + 4].copy_from_slice(&1000u32.to_be_bytes());
    assert!(matches!(
        Attest::parse(&bytes),
        Err(Error::TooLarge { what: "TPML_PCR_SELECTION.count", .. })
    ));
}

#[test]
fn oversized_tpm2b_fields_are_refused() {
    let mut q = quote();
    q.extra_data = vec![0; 67];
    assert!(matches!(
        Attest::parse(&q.marshal()),
        Err(Error::TooLarge { what: "TPMS_ATTEST.extraData", size: 67, max: 66 })
    ));
}

#[test]
fn pcr_indices_come_in_ascending_order() {
    let sel = PcrSelection { hash: TPM_ALG_SHA256, select: vec![0x81, 0x00, 0x01] };
    assert_eq!(sel.indices(), [0, 7, 16]);
    assert!(PcrSelection { hash: TPM_ALG_SHA256, select: vec![] }.indices().is_empty());
}

#[test]
fn an_ecdsa_signature_round_trips_and_verifies() {
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    let msg = quote().marshal();
    let sig: p256::ecdsa::Signature = ak().sign(&msg);
    let tpm_sig = EcdsaSignature::from_p256(&sig);
    let bytes = tpm_sig.marshal();
    assert_eq!(bytes.len(), 2 + 2 + 34 + 34);
    let parsed = EcdsaSignature::parse(&bytes).unwrap();
    assert_eq!(parsed, tpm_sig);
    let back = parsed.to_p256().unwrap();
    ak().verifying_key().verify_prehash(&Sha256::digest(&msg), &back).unwrap();
    for len in 0..bytes.len() {
        assert!(EcdsaSignature::parse(&bytes[..len]).is_err());
    }
    let mut long = bytes;
    long.push(0);
    assert!(matches!(EcdsaSignature::parse(&long), Err(Error::Trailing { .. })));
}

#[test]
fn a_short_r_is_left_padded() {
    let sig = EcdsaSignature { hash: TPM_ALG_SHA256, r: vec![1], s: vec![0, 0, 2] };
    let p = sig.to_p256().unwrap();
    let (r, s) = p.split_bytes();
    assert_eq!(r[31], 1);
    assert_eq!(s[31], 2);
    assert!(r[..31].iter().chain(&s[..31]).all(|b| *b == 0));
    assert!(EcdsaSignature { hash: TPM_ALG_SHA256, r: vec![0], s: vec![1] }.to_p256().is_none());
}

#[test]
fn other_signature_schemes_are_refused_by_name() {
    // TPM_ALG_RSASSA.
    let mut bytes = 0x0014u16.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0, 0x0b, 0, 0]);
    let err = EcdsaSignature::parse(&bytes).unwrap_err();
    assert!(matches!(err, Error::Unsupported { what: "TPMT_SIGNATURE.sigAlg", value: 0x14, .. }));
    assert!(err.to_string().contains("TPM_ALG_ECDSA"), "{err}");
    let mut big = TPM_ALG_ECDSA.to_be_bytes().to_vec();
    big.extend_from_slice(&[0, 0x0b, 0, 33]);
    big.extend_from_slice(&[1; 33]);
    assert!(matches!(EcdsaSignature::parse(&big), Err(Error::TooLarge { .. })));
}

#[test]
fn an_ak_public_parses_with_its_name_and_key() {
    let vk = *ak().verifying_key();
    let bytes = PublicSpec::ak(&vk).marshal();
    let p = EccPublic::parse(&bytes).unwrap();
    assert_eq!(p.name_alg, TPM_ALG_SHA256);
    assert_eq!(p.scheme_hash, Some(TPM_ALG_SHA256));
    assert_eq!(p.object_attributes, marshal::AK_ATTRIBUTES);
    assert_eq!(p.public_area(), &bytes[2..]);
    let mut name = vec![0x00, 0x0b];
    name.extend_from_slice(&Sha256::digest(&bytes[2..]));
    assert_eq!(p.name(), name);
    assert_eq!(p.verifying_key().unwrap(), vk);
    for len in 0..bytes.len() {
        assert!(EccPublic::parse(&bytes[..len]).is_err(), "truncated to {len}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(EccPublic::parse(&long), Err(Error::Trailing { what: "TPM2B_PUBLIC", .. })));
    // The inner size one larger: the area has a byte TPMT_PUBLIC does not use.
    let mut inner = bytes;
    inner.push(0);
    let size = u16::from_be_bytes([inner[0], inner[1]]) + 1;
    inner[..2].copy_from_slice(&size.to_be_bytes());
    assert!(matches!(EccPublic::parse(&inner), Err(Error::Trailing { what: "TPMT_PUBLIC", .. })));
}

#[test]
fn other_keys_are_refused_by_field() {
    let vk = *ak().verifying_key();
    type Change = fn(&mut PublicSpec);
    let cases: [(Change, &str); 3] = [
        (|s| s.curve = 0x0004, "TPMS_ECC_PARMS.curveID"),
        (|s| s.name_alg = 0x000c, "TPMT_PUBLIC.nameAlg"),
        (|s| s.scheme = 0x001a, "TPMS_ECC_PARMS.scheme"),
    ];
    for (change, field) in cases {
        let mut spec = PublicSpec::ak(&vk);
        change(&mut spec);
        match EccPublic::parse(&spec.marshal()) {
            Err(Error::Unsupported { what, .. }) => assert_eq!(what, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    // An RSA key's type.
    let mut rsa = PublicSpec::ak(&vk).marshal();
    rsa[2..4].copy_from_slice(&0x0001u16.to_be_bytes());
    assert!(matches!(
        EccPublic::parse(&rsa),
        Err(Error::Unsupported { what: "TPMT_PUBLIC.type", value: 1, .. })
    ));
    // A point off the curve parses, but is no key.
    let mut off = PublicSpec::ak(&vk);
    off.y[31] ^= 1;
    let parsed = EccPublic::parse(&off.marshal()).unwrap();
    assert!(matches!(parsed.verifying_key(), Err(Error::NotOnCurve { .. })));
}

proptest::proptest! {
    /// The parsers answer any input with a value or an error, never a panic,
    /// and what they accept has the one encoding they read.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        if let Ok(a) = Attest::parse(&bytes) {
            proptest::prop_assert_eq!(a.marshal(), bytes.clone());
        }
        if let Ok(s) = EcdsaSignature::parse(&bytes) {
            proptest::prop_assert_eq!(s.marshal(), bytes.clone());
            let _ = s.to_p256();
        }
        if let Ok(p) = EccPublic::parse(&bytes) {
            let _ = p.verifying_key();
        }
    }
}
