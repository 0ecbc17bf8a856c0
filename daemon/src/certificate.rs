//! X.509 certificates and PKCS#10 requests for ML-DSA vault keys, in DER,
//! with the algorithm identifiers of RFC 9881: id-ml-dsa-44, -65 and -87
//! (2.16.840.1.101.3.4.3.17–19), parameters absent, the public key's bytes
//! as the subjectPublicKey, and a pure ML-DSA signature with an empty context
//! over the DER of the to-be-signed part.
//!
//! The encoder is small on purpose: a name is a handful of attributes, the
//! extensions are fixed, and every length is computed here, so nothing of a
//! caller's input reaches the encoding unchecked.

use qkeyd_pqc::Algorithm;

/// A certificate's or request's subject: `CN=…,O=…` with CN, O, OU, L, ST
/// and C (two letters); no escapes, each value 1..=64 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Name {
    der: Vec<u8>,
    text: String,
}

/// Why a subject was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum NameError {
    #[error("subject is empty")]
    Empty,
    #[error("subject part {0:?} is not KEY=VALUE with KEY one of CN, O, OU, L, ST, C")]
    Part(String),
    #[error("subject value of {0} must be 1..=64 bytes without '\\\\', '+', '\"', '=' or ','")]
    Value(&'static str),
    #[error("subject C must be two letters")]
    Country,
}

impl Name {
    /// Parse `CN=node-1,O=Example`.
    pub(crate) fn parse(s: &str) -> Result<Self, NameError> {
        if s.trim().is_empty() {
            return Err(NameError::Empty);
        }
        let mut rdns = Vec::new();
        for part in s.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| NameError::Part(part.to_owned()))?;
            let (k, v) = (k.trim(), v.trim());
            let (oid, key): (&[u8], &'static str) = match k.to_ascii_uppercase().as_str() {
                "CN" => (&[0x55, 0x04, 0x03], "CN"),
                "C" => (&[0x55, 0x04, 0x06], "C"),
                "L" => (&[0x55, 0x04, 0x07], "L"),
                "ST" => (&[0x55, 0x04, 0x08], "ST"),
                "O" => (&[0x55, 0x04, 0x0a], "O"),
                "OU" => (&[0x55, 0x04, 0x0b], "OU"),
                _ => return Err(NameError::Part(part.to_owned())),
            };
            if v.is_empty() || v.len() > 64 || v.contains(['\\', '+', '"', '=']) {
                return Err(NameError::Value(key));
            }
            let value = if key == "C" {
                if v.len() != 2 || !v.bytes().all(|b| b.is_ascii_alphabetic()) {
                    return Err(NameError::Country);
                }
                tlv(0x13, v.as_bytes()) // PrintableString
            } else {
                tlv(0x0c, v.as_bytes()) // UTF8String
            };
            rdns.push(tlv(0x31, &tlv(0x30, &[tlv(0x06, oid), value].concat())));
        }
        Ok(Self { der: tlv(0x30, &rdns.concat()), text: s.trim().to_owned() })
    }

    /// The DER of the Name (CKA_SUBJECT, CKA_ISSUER).
    pub(crate) fn der(&self) -> &[u8] {
        &self.der
    }

    /// As given.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

/// A tag, the DER length of `content`, and `content`.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = vec![tag];
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A BIT STRING with no unused bits.
fn bits(b: &[u8]) -> Vec<u8> {
    tlv(0x03, &[&[0u8][..], b].concat())
}

/// The AlgorithmIdentifier of an ML-DSA parameter set (RFC 9881 §2:
/// parameters absent), or `None` for a KEM.
fn alg_id(alg: Algorithm) -> Option<Vec<u8>> {
    let last = match alg {
        Algorithm::MlDsa44 => 0x11,
        Algorithm::MlDsa65 => 0x12,
        Algorithm::MlDsa87 => 0x13,
        _ => return None,
    };
    Some(seq(&[&tlv(0x06, &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x03, last])]))
}

/// The SubjectPublicKeyInfo of an ML-DSA public key (CKA_PUBLIC_KEY_INFO).
pub(crate) fn spki(alg: Algorithm, public_key: &[u8]) -> Option<Vec<u8>> {
    Some(seq(&[&alg_id(alg)?, &bits(public_key)]))
}

/// `unix` seconds as UTCTime (before 2050) or GeneralizedTime (RFC 5280 §4.1.2.5).
fn time(unix: i64) -> Vec<u8> {
    let (y, mo, d, h, mi, s) = civil(unix);
    if (1950..2050).contains(&y) {
        tlv(0x17, format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100).as_bytes())
    } else {
        tlv(0x18, format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z").as_bytes())
    }
}

/// A CK_DATE (`YYYYMMDD`) for CKA_START_DATE and CKA_END_DATE.
pub(crate) fn ck_date(unix: i64) -> Vec<u8> {
    let (y, mo, d, ..) = civil(unix);
    format!("{y:04}{mo:02}{d:02}").into_bytes()
}

/// UTC date and time of `unix` seconds (days to civil date: H. Hinnant's algorithm).
fn civil(unix: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

/// What a self-signed certificate is made of, before its signature.
pub(crate) struct Tbs {
    /// The DER to sign.
    pub(crate) der: Vec<u8>,
    /// The serial number as a DER INTEGER (CKA_SERIAL_NUMBER).
    pub(crate) serial: Vec<u8>,
}

/// The to-be-signed part of a self-signed end-entity certificate for an
/// ML-DSA key: version 3, `serial` (16 bytes, made positive here), the
/// validity, and basicConstraints (not a CA), keyUsage (digitalSignature,
/// both critical) and a subjectKeyIdentifier (the leftmost 160 bits of the
/// key's SHA-256, RFC 7093 §2 method 1).
pub(crate) fn tbs_certificate(
    alg: Algorithm,
    public_key: &[u8],
    subject: &Name,
    serial: [u8; 16],
    not_before: i64,
    not_after: i64,
) -> Option<Tbs> {
    use sha2::Digest as _;
    let mut serial = serial;
    // Positive, and its first byte never 0: the encoding stays minimal.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let serial = tlv(0x02, &serial);
    let skid = &sha2::Sha256::digest(public_key)[..20];
    let critical = tlv(0x01, &[0xff]);
    let ext = |oid: &[u8], critical: Option<&[u8]>, value: &[u8]| {
        seq(&[&tlv(0x06, oid), critical.unwrap_or_default(), &tlv(0x04, value)])
    };
    let extensions = seq(&[
        &ext(&[0x55, 0x1d, 0x13], Some(&critical), &seq(&[])),
        &ext(&[0x55, 0x1d, 0x0f], Some(&critical), &tlv(0x03, &[0x07, 0x80])),
        &ext(&[0x55, 0x1d, 0x0e], None, &tlv(0x04, skid)),
    ]);
    let der = seq(&[
        &tlv(0xa0, &tlv(0x02, &[2])),
        &serial,
        &alg_id(alg)?,
        subject.der(),
        &seq(&[&time(not_before), &time(not_after)]),
        subject.der(),
        &spki(alg, public_key)?,
        &tlv(0xa3, &extensions),
    ]);
    Some(Tbs { der, serial })
}

/// The certification request info of a PKCS#10 request (RFC 2986) for an
/// ML-DSA key: version 0, the subject, the key, no attributes.
pub(crate) fn request_info(alg: Algorithm, public_key: &[u8], subject: &Name) -> Option<Vec<u8>> {
    Some(seq(&[&tlv(0x02, &[0]), subject.der(), &spki(alg, public_key)?, &tlv(0xa0, &[])]))
}

/// The signed structure: `to_be_signed`, the algorithm, the signature.
pub(crate) fn signed(alg: Algorithm, to_be_signed: &[u8], signature: &[u8]) -> Option<Vec<u8>> {
    Some(seq(&[to_be_signed, &alg_id(alg)?, &bits(signature)]))
}

/// PEM with the given label, 64 columns.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_strictly() {
        use x509_parser::prelude::FromDer as _;
        let n = Name::parse("CN=node-1, O=Example Org,C=DE").unwrap();
        let (_, parsed) = x509_parser::x509::X509Name::from_der(n.der()).unwrap();
        assert_eq!(parsed.to_string(), "CN=node-1, O=Example Org, C=DE");
        assert_eq!(Name::parse(" "), Err(NameError::Empty));
        assert_eq!(Name::parse("CN"), Err(NameError::Part("CN".into())));
        assert_eq!(Name::parse("XX=1"), Err(NameError::Part("XX=1".into())));
        assert_eq!(Name::parse("CN="), Err(NameError::Value("CN")));
        assert_eq!(Name::parse("CN=a+b"), Err(NameError::Value("CN")));
        assert_eq!(Name::parse(&format!("CN={}", "x".repeat(65))), Err(NameError::Value("CN")));
        assert_eq!(Name::parse("C=DEU"), Err(NameError::Country));
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(1_798_761_599), (2026, 12, 31, 23, 59, 59));
        assert_eq!(time(1_798_761_599), tlv(0x17, b"261231235959Z"));
        assert_eq!(time(2_524_608_000), tlv(0x18, b"20500101000000Z"));
        assert_eq!(ck_date(951_782_400), b"20000229");
        assert_eq!(tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn a_signed_certificate_parses_and_verifies() {
        use x509_parser::prelude::*;
        for alg in [Algorithm::MlDsa44, Algorithm::MlDsa65, Algorithm::MlDsa87] {
            let key = qkeyd_pqc::PrivateKey::from_seed(alg, &[7; 32]).unwrap();
            let pk = key.public_key();
            let name = Name::parse("CN=qkeyd test,O=qkeyd").unwrap();
            let tbs =
                tbs_certificate(alg, &pk, &name, [0xff; 16], 1_800_000_000, 1_900_000_000).unwrap();
            let sig = key.sign(&tbs.der, b"", &[0; 32]).unwrap();
            let der = signed(alg, &tbs.der, &sig).unwrap();
            let (rest, cert) = X509Certificate::from_der(&der).unwrap();
            assert!(rest.is_empty());
            assert_eq!(cert.version(), X509Version::V3);
            assert_eq!(cert.subject().to_string(), "CN=qkeyd test, O=qkeyd");
            assert_eq!(cert.issuer(), cert.subject());
            assert_eq!(cert.validity().not_before.timestamp(), 1_800_000_000);
            assert_eq!(cert.public_key().subject_public_key.data.as_ref(), &pk[..]);
            assert!(cert.signature_algorithm.parameters.is_none());
            let oid = cert.signature_algorithm.algorithm.to_id_string();
            assert_eq!(oid, format!("2.16.840.1.101.3.4.3.{}", 17 + alg.parameter_set() - 1));
            assert_eq!(&tbs.serial[2..], cert.raw_serial());
            assert_eq!(cert.raw_serial()[0] & 0x80, 0);
            let ku = cert.key_usage().unwrap().unwrap();
            assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign());
            assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
            // The signature verifies over exactly the bytes the certificate holds.
            let sig_bytes = cert.signature_value.data.as_ref();
            assert!(
                qkeyd_pqc::verify(alg, &pk, cert.tbs_certificate.as_ref(), b"", sig_bytes).unwrap()
            );
            let info = request_info(alg, &pk, &name).unwrap();
            let csr = signed(alg, &info, &key.sign(&info, b"", &[0; 32]).unwrap()).unwrap();
            let (_, req) = X509CertificationRequest::from_der(&csr).unwrap();
            assert_eq!(
                req.certification_request_info.subject.to_string(),
                "CN=qkeyd test, O=qkeyd"
            );
        }
        assert!(
            tbs_certificate(
                Algorithm::MlKem768,
                &[0; 1184],
                &Name::parse("CN=x").unwrap(),
                [0; 16],
                0,
                1
            )
            .is_none()
        );
        assert!(pem("CERTIFICATE", &[0; 100]).lines().all(|l| l.len() <= 64));
    }
}
