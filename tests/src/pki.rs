//! A small test PKI for the TLS end-to-end tests: certificate authorities, a
//! server certificate for `localhost` and `127.0.0.1`, and client certificates
//! with a chosen name, validity and key usage, each written out as PEM files.
//!
//! Keys are ECDSA P-256 (rcgen's default), made with aws-lc-rs.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

const DAY: Duration = Duration::from_secs(86_400);

/// A certificate authority that issues server and client certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A fresh self-signed CA whose common name is `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.remove(DnType::CommonName);
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, now() - DAY, now() + 3650 * DAY);
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        Self { issuer }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Write the CA certificate to `dir/NAME.pem` and return the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.pem()).expect("write CA certificate");
        path
    }

    /// A server certificate for `localhost` and `127.0.0.1` (serverAuth),
    /// valid from yesterday for a year.
    pub fn server(&self) -> Issued {
        self.issue(&Leaf {
            cn: "qkeyd test server".into(),
            sans: vec!["dns:localhost".into(), "ip:127.0.0.1".into()],
            usage: Usage::Server,
            ..Leaf::default()
        })
    }

    /// A client certificate (clientAuth) with this common name, valid from
    /// yesterday for a year.
    pub fn client(&self, cn: &str) -> Issued {
        self.issue(&Leaf { cn: cn.into(), ..Leaf::default() })
    }

    /// Issue a leaf certificate as `leaf` describes.
    pub fn issue(&self, leaf: &Leaf) -> Issued {
        let mut params = CertificateParams::default();
        params.distinguished_name.remove(DnType::CommonName);
        params.distinguished_name.push(DnType::CommonName, leaf.cn.as_str());
        params.subject_alt_names = leaf.sans.iter().map(|s| san(s)).collect();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match leaf.usage {
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Both => {
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
            }
        };
        params.use_authority_key_identifier_extension = true;
        let (from, to) = match leaf.validity {
            Validity::Current => (now() - DAY, now() + 365 * DAY),
            Validity::Expired => (now() - 30 * DAY, now() - DAY),
            Validity::NotYetValid => (now() + DAY, now() + 30 * DAY),
            Validity::EndsIn(days) => (now() - DAY, now() + u32::from(days) * DAY),
        };
        set_validity(&mut params, from, to);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf certificate");
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }
}

/// What a leaf certificate says.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// Subject common name.
    pub cn: String,
    /// Subject alternative names as `dns:NAME`, `ip:ADDR`, `uri:URI` or
    /// `email:ADDR`.
    pub sans: Vec<String>,
    /// Its validity period relative to now.
    pub validity: Validity,
    /// Its extended key usage.
    pub usage: Usage,
}

impl Default for Leaf {
    fn default() -> Self {
        Self {
            cn: "qkeyd test client".into(),
            sans: Vec::new(),
            validity: Validity::Current,
            usage: Usage::Client,
        }
    }
}

/// A validity period relative to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday for a year.
    Current,
    /// Ended yesterday.
    Expired,
    /// Starts tomorrow.
    NotYetValid,
    /// From yesterday until this many days from now.
    EndsIn(u16),
}

/// The extended key usage of a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// clientAuth only.
    Client,
    /// serverAuth only.
    Server,
    /// serverAuth and clientAuth.
    Both,
}

/// An issued certificate and its private key.
#[derive(Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl Issued {
    /// Write `dir/NAME.crt` and `dir/NAME.key`; return (cert, key) paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// Lower-case hex SHA-256 of the certificate's DER, as servers and probes
    /// print fingerprints.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.der)
    }
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of test output.
        f.debug_struct("Issued").field("sha256", &self.sha256()).finish_non_exhaustive()
    }
}

/// Lower-case hex SHA-256 of `data`, through rustls's aws-lc-rs provider.
pub fn sha256_hex(data: &[u8]) -> String {
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let hash = suite.tls13().expect("a TLS 1.3 suite").common.hash_provider.hash(data);
    hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn san(s: &str) -> SanType {
    let ia5 = |v: &str| v.try_into().unwrap_or_else(|e| panic!("SAN {s:?}: {e}"));
    match s.split_once(':') {
        Some(("dns", v)) => SanType::DnsName(ia5(v)),
        Some(("ip", v)) => SanType::IpAddress(v.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))),
        Some(("uri", v)) => SanType::URI(ia5(v)),
        Some(("email", v)) => SanType::Rfc822Name(ia5(v)),
        _ => panic!("SAN {s:?}: say dns:, ip:, uri: or email:"),
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock after 1970")
}

/// Valid from `from` to `to`, both since 1970.
fn set_validity(params: &mut CertificateParams, from: Duration, to: Duration) {
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + from;
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + to;
}
