//! The ciphertext format and every check a request gets before a KEK is
//! touched. Format 1: `1 ‖ IV (12) ‖ AES-256-GCM(seed) ‖ tag (16)`, with the
//! key id and the format bound as associated data.

use std::collections::BTreeMap;

use aes_gcm::{
    Aes256Gcm, KeyInit as _, Nonce,
    aead::{Aead as _, Payload},
};
use zeroize::Zeroizing;

use super::KmsError;

/// The only ciphertext format so far.
pub(crate) const FORMAT: u8 = 1;
/// AES-GCM's 96-bit IV.
pub(crate) const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a ciphertext adds to its plaintext.
pub(crate) const OVERHEAD: usize = 1 + IV_LEN + TAG_LEN;
/// kube-apiserver refuses Encrypt ciphertexts over 1 KiB.
pub(crate) const MAX_CIPHERTEXT: usize = 1024;
/// So the largest plaintext is the rest.
pub(crate) const MAX_PLAINTEXT: usize = MAX_CIPHERTEXT - OVERHEAD;
/// Longest key id kube-apiserver accepts.
pub(crate) const MAX_KEY_ID: usize = 1024;
/// The annotation naming the ciphertext format (stored in clear in etcd).
pub(crate) const FORMAT_ANNOTATION: &str = "format.kms.qkeyd.io";

/// Associated data of a ciphertext: what it is, under which key, which format.
pub(crate) fn aad(key_id: &str) -> Vec<u8> {
    let mut a = b"qkeyd kms v2\0".to_vec();
    a.extend_from_slice(key_id.as_bytes());
    a.push(0);
    a.push(FORMAT);
    a
}

/// Associated data when a KEK's value is sealed.
pub(crate) fn kek_aad(key_id: &str) -> Vec<u8> {
    let mut a = b"qkeyd kms kek\0".to_vec();
    a.extend_from_slice(key_id.as_bytes());
    a
}

/// The token label of a KEK held in the HSM.
pub(crate) fn label(key_id: &str) -> String {
    format!("qkeyd-kms/{key_id}")
}

/// Encrypt's plaintext: 1 to [`MAX_PLAINTEXT`] bytes.
pub(crate) fn check_plaintext(plaintext: &[u8]) -> Result<(), KmsError> {
    if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
        return Err(KmsError::PlaintextLength(plaintext.len()));
    }
    Ok(())
}

/// The annotations stored beside every ciphertext.
pub(crate) fn annotations() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([(FORMAT_ANNOTATION.to_owned(), b"1".to_vec())])
}

/// A ciphertext of this plugin's format, split.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    /// The IV.
    pub(crate) iv: [u8; IV_LEN],
    /// AES-GCM ciphertext ‖ tag.
    pub(crate) body: &'a [u8],
}

/// A Decrypt request's key id: present, and no longer than kube-apiserver's.
pub(crate) fn check_key_id(key_id: &str) -> Result<(), KmsError> {
    if key_id.is_empty() {
        return Err(KmsError::EmptyKeyId);
    }
    if key_id.len() > MAX_KEY_ID {
        return Err(KmsError::KeyIdLength(key_id.len()));
    }
    Ok(())
}

/// Check a Decrypt request's annotations and ciphertext shape (not yet its
/// authenticity, which needs the KEK) and split the ciphertext.
pub(crate) fn check_ciphertext<'a>(
    ciphertext: &'a [u8],
    annotations: &BTreeMap<String, Vec<u8>>,
) -> Result<Parsed<'a>, KmsError> {
    match annotations.get(FORMAT_ANNOTATION) {
        Some(v) if v.as_slice() == b"1" => {}
        Some(v) => return Err(KmsError::OtherFormat(String::from_utf8_lossy(v).into_owned())),
        None => return Err(KmsError::MissingFormat),
    }
    if let Some(other) = annotations.keys().find(|k| *k != FORMAT_ANNOTATION) {
        return Err(KmsError::UnexpectedAnnotation(other.clone()));
    }
    if ciphertext.len() <= OVERHEAD || ciphertext.len() > MAX_CIPHERTEXT {
        return Err(KmsError::CiphertextLength(ciphertext.len()));
    }
    let (&format, rest) = ciphertext.split_first().ok_or(KmsError::CiphertextLength(0))?;
    if format != FORMAT {
        return Err(KmsError::UnknownCiphertextFormat(format));
    }
    let (iv, body) = rest.split_at(IV_LEN);
    let mut parsed = Parsed { iv: [0; IV_LEN], body };
    parsed.iv.copy_from_slice(iv);
    Ok(parsed)
}

/// `FORMAT ‖ IV ‖ body`.
pub(crate) fn assemble(iv: &[u8; IV_LEN], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + IV_LEN + body.len());
    out.push(FORMAT);
    out.extend_from_slice(iv);
    out.extend_from_slice(body);
    out
}

/// AES-256-GCM under an unsealed KEK: ciphertext ‖ tag.
pub(crate) fn gcm_seal(
    key: &[u8; 32],
    iv: &[u8; IV_LEN],
    aad: &[u8],
    pt: &[u8],
) -> Result<Vec<u8>, KmsError> {
    Aes256Gcm::new(key.into())
        .encrypt(&Nonce::from(*iv), Payload { msg: pt, aad })
        .map_err(|_| KmsError::Aead)
}

/// The inverse of [`gcm_seal`]; `None` when the tag does not verify.
pub(crate) fn gcm_open(
    key: &[u8; 32],
    iv: &[u8; IV_LEN],
    aad: &[u8],
    body: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    Aes256Gcm::new(key.into())
        .decrypt(&Nonce::from(*iv), Payload { msg: body, aad })
        .ok()
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_annotations() -> BTreeMap<String, Vec<u8>> {
        annotations()
    }

    #[test]
    fn plaintext_lengths() {
        assert!(check_plaintext(&[0; 32]).is_ok());
        assert!(check_plaintext(&[0; MAX_PLAINTEXT]).is_ok());
        assert!(matches!(check_plaintext(&[]), Err(KmsError::PlaintextLength(0))));
        assert!(matches!(
            check_plaintext(&[0; MAX_PLAINTEXT + 1]),
            Err(KmsError::PlaintextLength(n)) if n == MAX_PLAINTEXT + 1
        ));
    }

    #[test]
    fn a_sealed_ciphertext_parses_and_opens_only_with_its_key_and_aad() {
        let (key, iv) = ([7; 32], [9; IV_LEN]);
        let ct = assemble(&iv, &gcm_seal(&key, &iv, &aad("k1"), b"seed").unwrap());
        assert_eq!(ct.len(), 4 + OVERHEAD);
        let p = check_ciphertext(&ct, &ok_annotations()).unwrap();
        assert_eq!(p.iv, iv);
        assert_eq!(&gcm_open(&key, &p.iv, &aad("k1"), p.body).unwrap()[..], b"seed");
        assert!(gcm_open(&key, &p.iv, &aad("k2"), p.body).is_none(), "bound to the key id");
        assert!(gcm_open(&[8; 32], &p.iv, &aad("k1"), p.body).is_none());
    }

    #[test]
    fn every_malformed_request_is_refused_before_a_kek_is_touched() {
        let ct = assemble(&[0; IV_LEN], &[0; 20]);
        let other = BTreeMap::from([(FORMAT_ANNOTATION.to_owned(), b"2".to_vec())]);
        let mut extra = annotations();
        extra.insert("x".into(), vec![]);
        let mut bad_format = ct.clone();
        bad_format[0] = 2;
        assert!(matches!(check_key_id(""), Err(KmsError::EmptyKeyId)));
        let long_id = "k".repeat(MAX_KEY_ID + 1);
        assert!(matches!(check_key_id(&long_id), Err(KmsError::KeyIdLength(_))));
        type Case<'a> = (&'a [u8], BTreeMap<String, Vec<u8>>, fn(&KmsError) -> bool);
        let cases: [Case<'_>; 5] = [
            (&ct, BTreeMap::new(), |e| matches!(e, KmsError::MissingFormat)),
            (&ct, other, |e| matches!(e, KmsError::OtherFormat(f) if f == "2")),
            (&ct, extra, |e| matches!(e, KmsError::UnexpectedAnnotation(a) if a == "x")),
            (
                &ct[..OVERHEAD],
                annotations(),
                |e| matches!(e, KmsError::CiphertextLength(n) if *n == OVERHEAD),
            ),
            (&bad_format, annotations(), |e| matches!(e, KmsError::UnknownCiphertextFormat(2))),
        ];
        for (ciphertext, annotations, want) in cases {
            let e = check_ciphertext(ciphertext, &annotations).unwrap_err();
            assert!(want(&e), "{} bytes: {e}", ciphertext.len());
            assert_eq!(e.kind(), super::super::Kind::InvalidArgument);
        }
        let long = vec![1; MAX_CIPHERTEXT + 1];
        assert!(matches!(
            check_ciphertext(&long, &annotations()),
            Err(KmsError::CiphertextLength(_))
        ));
    }
}
