//! The TPM structure parsers against golden quotes a real TPM stack made
//! (swtpm with tpm2-tools, `tests/attest/golden/`, see its README): the
//! AK's Name and key, the quote's signature, magic, type, extraData, PCR
//! selection and pcrDigest, and TPM2_Certify by the same AK.

use std::collections::BTreeMap;
use std::path::PathBuf;

use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::pkcs8::DecodePublicKey as _;
use qkeyd_attest::tpm::{
    Attest, Attested, EccPublic, EcdsaSignature, TPM_ALG_SHA256, TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY, TPM_ST_ATTEST_QUOTE,
};
use sha2::{Digest as _, Sha256};

fn golden(name: &str) -> Vec<u8> {
    let path: PathBuf =
        [env!("CARGO_MANIFEST_DIR"), "..", "tests", "attest", "golden", name].iter().collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ak() -> EccPublic {
    EccPublic::parse(&golden("ak.pub")).expect("ak.pub parses")
}

/// ECDSA-SHA256 over the raw bytes with the AK.
fn signed_by_ak(message: &[u8], signature: &[u8]) -> bool {
    let sig = EcdsaSignature::parse(signature).expect("the signature parses");
    assert_eq!(sig.hash, TPM_ALG_SHA256);
    let Some(sig) = sig.to_p256() else { return false };
    ak().verifying_key()
        .expect("the AK is a P-256 point")
        .verify_prehash(&Sha256::digest(message), &sig)
        .is_ok()
}

#[test]
fn the_ak_parses_to_its_name_and_pem() {
    let ak = ak();
    assert_eq!(ak.name(), golden("ak.name"));
    let hex_name = String::from_utf8(golden("ak.name.hex")).unwrap();
    assert_eq!(hex::encode(ak.name()), hex_name.trim());
    assert_eq!(ak.object_attributes, 0x0005_0072, "restricted signing key of tpm2_createak");
    assert_eq!(ak.scheme_hash, Some(TPM_ALG_SHA256));
    let pem = String::from_utf8(golden("ak.pem")).unwrap();
    let from_pem = p256::PublicKey::from_public_key_pem(&pem).unwrap();
    assert_eq!(from_pem, p256::PublicKey::from(&ak.verifying_key().unwrap()));
}

#[test]
fn the_quote_is_signed_by_the_ak_and_says_what_the_readme_says() {
    let bytes = golden("attest.bin");
    assert!(signed_by_ak(&bytes, &golden("sig.bin")));
    let attest = Attest::parse(&bytes).unwrap();
    assert_eq!(attest.magic, TPM_GENERATED_VALUE);
    assert_eq!(attest.st, TPM_ST_ATTEST_QUOTE);
    let statement = golden("statement.bin");
    let extra = qkeyd_attest::extra_data(&golden("nonce.bin"), &statement);
    assert_eq!(attest.extra_data, extra);
    assert_eq!(attest.extra_data, golden("extra_data.bin"));
    assert_eq!(attest.clock_info.reset_count, 2);
    assert_eq!(attest.clock_info.restart_count, 0);
    assert_eq!(attest.clock_info.safe, 1);
    assert_eq!(attest.firmware_version, 0x2019_1023_0016_3636);

    let Attested::Quote(quote) = &attest.attested else { panic!("not a quote") };
    assert_eq!(quote.pcr_select.len(), 1);
    assert_eq!(quote.pcr_select[0].hash, TPM_ALG_SHA256);
    assert_eq!(quote.pcr_select[0].indices(), [0, 1, 2, 3, 4, 5, 6, 7]);
    let pcrs: BTreeMap<u32, String> = serde_json::from_slice(&golden("pcrs.json")).unwrap();
    assert_eq!(pcrs.keys().copied().collect::<Vec<_>>(), quote.pcr_select[0].indices());
    let mut h = Sha256::new();
    for value in pcrs.values() {
        h.update(hex::decode(value).unwrap());
    }
    assert_eq!(h.finalize().as_slice(), quote.pcr_digest.as_slice());
}

#[test]
fn a_flipped_byte_of_the_quote_or_its_signature_fails_the_signature() {
    let bytes = golden("attest.bin");
    let sig = golden("sig.bin");
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(!signed_by_ak(&b, &sig), "attest byte {i}");
    }
    // The r and s bytes (after sigAlg, hash and r's size).
    for i in (6..38).chain(40..72) {
        let mut s = sig.clone();
        s[i] ^= 0x01;
        assert!(!signed_by_ak(&bytes, &s), "signature byte {i}");
    }
}

#[test]
fn the_certify_by_the_same_ak_has_the_certify_type_and_the_keys_name() {
    let bytes = golden("certify_attest.bin");
    assert!(signed_by_ak(&bytes, &golden("certify_sig.bin")));
    let attest = Attest::parse(&bytes).unwrap();
    assert_eq!(attest.magic, TPM_GENERATED_VALUE);
    assert_eq!(attest.st, TPM_ST_ATTEST_CERTIFY);
    let Attested::Certify(info) = &attest.attested else { panic!("not a certify") };
    assert_eq!(info.name, golden("certified.name"));
    let certified = EccPublic::parse(&golden("certified.pub")).unwrap();
    assert_eq!(certified.name(), golden("certified.name"));
}

#[test]
fn check_quote_accepts_the_golden_quote_and_names_what_breaks() {
    use qkeyd_attest::{Check, check_quote};
    type Pcrs = BTreeMap<u32, Vec<u8>>;
    let pcrs: BTreeMap<u32, String> = serde_json::from_slice(&golden("pcrs.json")).unwrap();
    let pcrs: Pcrs = pcrs.into_iter().map(|(i, v)| (i, hex::decode(v).unwrap())).collect();
    let (attest, sig, ak) = (golden("attest.bin"), golden("sig.bin"), golden("ak.pub"));
    let extra = golden("extra_data.bin");
    let facts = check_quote(&attest, &sig, &ak, &extra, &pcrs).expect("the golden quote holds");
    assert_eq!(facts.ak_name, golden("ak.name"));
    assert_eq!((facts.clock_info.reset_count, facts.clock_info.restart_count), (2, 0));
    assert_eq!(facts.firmware_version, 0x2019_1023_0016_3636);
    assert_eq!(facts.pcrs, pcrs);

    fn check(attest: &[u8], sig: &[u8], ak: &[u8], extra: &[u8], pcrs: &Pcrs) -> Check {
        check_quote(attest, sig, ak, extra, pcrs).unwrap_err().check
    }
    let mut bad = attest.clone();
    bad[0x30] ^= 1;
    assert_eq!(check(&bad, &sig, &ak, &extra, &pcrs), Check::QuoteSignature);
    assert_eq!(check(&attest, &sig, &ak, &[0; 32], &pcrs), Check::ExtraData);
    let mut other = pcrs.clone();
    other.get_mut(&7).unwrap()[0] ^= 1;
    assert_eq!(check(&attest, &sig, &ak, &extra, &other), Check::PcrDigest);
    other.remove(&7);
    assert_eq!(check(&attest, &sig, &ak, &extra, &other), Check::PcrSelect);
    assert_eq!(check(&attest, &sig, &golden("certified.pub"), &extra, &pcrs), Check::AkPublic);
    let certify = golden("certify_attest.bin");
    let certify_sig = golden("certify_sig.bin");
    assert_eq!(check(&certify, &certify_sig, &ak, &extra, &pcrs), Check::QuoteType);
}
