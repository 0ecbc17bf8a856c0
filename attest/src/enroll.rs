//! Enrollment, the registrar's side: check a node's EK certificate chain
//! against the EK CAs the verifier trusts, and make the TPM2_MakeCredential
//! challenge that only the TPM holding that EK can open, for that AK Name
//! (TPM 2.0 Library Part 1, "Credential Protection"). The node answers with
//! TPM2_ActivateCredential; a matching secret shows the AK lives in the same
//! TPM as the EK, and the verifier may then trust the AK's Name.
//!
//! Only RSA-2048 EKs (the TCG default template; nameAlg SHA-256, AES-128-CFB)
//! and sha256WithRSAEncryption certificates are handled.

use aes::cipher::KeyIvInit as _;
use hmac::{KeyInit as _, Mac as _};
use rsa::{
    Oaep, PublicKey,
    pkcs1v15::{Signature, VerifyingKey},
    pkcs8::DecodePublicKey as _,
    signature::Verifier as _,
};
use sha2::{Digest as _, Sha256};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::Error;

const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";

/// The challenge a node's TPM opens with TPM2_ActivateCredential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// TPM2B_ID_OBJECT (with its size): integrity HMAC and encrypted credential.
    pub credential_blob: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET (with its size): the seed, RSA-OAEP to the EK.
    pub encrypted_secret: Vec<u8>,
}

fn bad(what: impl Into<String>) -> Error {
    Error::Enroll(what.into())
}

/// Check that `chain` (EK certificate first, then intermediates) leads to
/// one of `roots` (DER), every link a sha256WithRSAEncryption signature, and
/// return the EK's RSA public key.
pub fn ek_public(chain: &[Vec<u8>], roots: &[Vec<u8>]) -> Result<PublicKey, Error> {
    let certs = chain.iter().map(|c| parse(c)).collect::<Result<Vec<_>, _>>()?;
    let roots_der: Vec<&[u8]> = roots.iter().map(Vec::as_slice).collect();
    let roots = roots.iter().map(|c| parse(c)).collect::<Result<Vec<_>, _>>()?;
    let first = certs.first().ok_or_else(|| bad("the EK chain is empty"))?;
    for (i, cert) in certs.iter().enumerate() {
        // A trust anchor itself: the chain is trusted from here on. Never
        // the EK certificate: a CA certificate is not an EK.
        if i > 0 && roots_der.contains(&chain[i].as_slice()) {
            break;
        }
        // The next certificate of the chain, else a root with the issuer's name.
        let issuer = match certs.get(i + 1) {
            Some(next) => next,
            None => roots
                .iter()
                .find(|r| r.subject() == cert.issuer())
                .ok_or_else(|| bad(format!("no trusted EK CA is named {}", cert.issuer())))?,
        };
        if cert.issuer() != issuer.subject() {
            return Err(bad(format!(
                "certificate {i} is issued by {}, but the next one is {}",
                cert.issuer(),
                issuer.subject()
            )));
        }
        check_signature(cert, issuer).map_err(|e| bad(format!("certificate {i}: {e}")))?;
    }
    // The chain's top must itself be a trusted root, or be signed by one (checked above).
    PublicKey::from_public_key_der(first.public_key().raw)
        .map_err(|e| bad(format!("the EK certificate's key is not RSA: {e}")))
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| bad(format!("a certificate does not parse: {e}")))
}

fn check_signature(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Result<(), String> {
    let alg = cert.signature_algorithm.algorithm.to_id_string();
    if alg != SHA256_WITH_RSA {
        return Err(format!("signature algorithm {alg} is not sha256WithRSAEncryption"));
    }
    let key = PublicKey::from_public_key_der(issuer.public_key().raw)
        .map_err(|e| format!("the issuer's key is not RSA: {e}"))?;
    let sig = Signature::try_from(cert.signature_value.data.as_ref())
        .map_err(|e| format!("signature: {e}"))?;
    VerifyingKey::<Sha256>::new(key)
        .verify(cert.tbs_certificate.as_ref(), &sig)
        .map_err(|_| "the signature does not verify".to_owned())
}

/// KDFa (SP 800-108 counter mode with HMAC), as the TPM defines it.
fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = (bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(bytes + 32);
    let mut counter = 1u32;
    while out.len() < bytes {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

fn tpm2b(body: &[u8]) -> Result<Vec<u8>, Error> {
    let len = u16::try_from(body.len()).map_err(|_| bad("a TPM2B body over 64 KiB"))?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(body);
    Ok(out)
}

/// TPM2_MakeCredential in software: `secret` (at most 32 bytes) for the AK
/// named `ak_name`, to the EK `ek`. `seed` is the 32-byte random seed; `rng`
/// pads the RSA-OAEP encryption.
pub fn make_credential<R: rsa::rand_core::TryCryptoRng + ?Sized>(
    ek: &PublicKey,
    ak_name: &[u8],
    secret: &[u8],
    seed: &[u8; 32],
    rng: &mut R,
) -> Result<Challenge, Error> {
    if secret.is_empty() || secret.len() > 32 {
        return Err(bad("the credential must be 1 to 32 bytes"));
    }
    let encrypted = ek
        .encrypt(rng, Oaep::<Sha256>::new_with_label(&b"IDENTITY\0"[..]), seed)
        .map_err(|e| bad(format!("RSA-OAEP to the EK: {e}")))?;
    let sym_key = kdfa(seed, "STORAGE", ak_name, &[], 128);
    let mut enc_identity = tpm2b(secret)?;
    cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym_key, &[0u8; 16])
        .map_err(|_| bad("AES-128-CFB key"))?
        .encrypt(&mut enc_identity);
    let hmac_key = kdfa(seed, "INTEGRITY", &[], &[], 256);
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&hmac_key).expect("HMAC takes any key");
    mac.update(&enc_identity);
    mac.update(ak_name);
    let integrity = mac.finalize().into_bytes();
    let mut id_object = tpm2b(&integrity)?;
    id_object.extend_from_slice(&enc_identity);
    Ok(Challenge { credential_blob: tpm2b(&id_object)?, encrypted_secret: tpm2b(&encrypted)? })
}

/// A challenge with a fresh random 32-byte secret (and seed) from the OS;
/// returns it with the secret the node must give back.
pub fn new_challenge(
    ek: &PublicKey,
    ak_name: &[u8],
) -> Result<(Challenge, zeroize::Zeroizing<[u8; 32]>), Error> {
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut secret[..]).map_err(|e| bad(format!("OS random: {e}")))?;
    getrandom::fill(&mut seed[..]).map_err(|e| bad(format!("OS random: {e}")))?;
    let challenge = make_credential(ek, ak_name, &secret[..], &seed, &mut getrandom::SysRng)?;
    Ok((challenge, secret))
}

/// SHA-256 of an activated secret, as the registrar keeps it while it waits.
pub fn secret_digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/attest/golden")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn the_golden_ek_chain_leads_to_its_root_and_nowhere_else() {
        let chain = [golden("ek_cert.der"), golden("ek_issuer.der")];
        let root = golden("ek_root.der");
        let ek = ek_public(&chain, std::slice::from_ref(&root)).unwrap();
        assert_eq!(rsa::traits::PublicKeyParts::size(&ek), 256);
        // The issuer alone is not the root it needs.
        assert!(ek_public(&chain[..1], std::slice::from_ref(&root)).is_err());
        // Without the intermediate, the issuer given as a root works, and
        // so does the whole chain with it as the anchor.
        ek_public(&chain[..1], &[chain[1].clone()]).unwrap();
        ek_public(&chain, &[chain[1].clone()]).unwrap();
        // A changed byte in the EK certificate's signed part fails.
        let mut bad_cert = chain[0].clone();
        let at = bad_cert.len() / 3;
        bad_cert[at] ^= 1;
        assert!(ek_public(&[bad_cert, chain[1].clone()], std::slice::from_ref(&root)).is_err());
        // No roots: nothing is trusted.
        assert!(ek_public(&chain, &[]).is_err());
    }

    #[test]
    fn kdfa_matches_its_definition_on_a_known_answer() {
        // Two blocks, truncated: the counter runs 1, 2.
        let k = kdfa(b"key", "STORAGE", b"u", b"v", 264);
        assert_eq!(k.len(), 33);
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(&1u32.to_be_bytes());
        mac.update(b"STORAGE\0uv");
        mac.update(&264u32.to_be_bytes());
        assert_eq!(k[..32], mac.finalize().into_bytes()[..]);
    }
}
