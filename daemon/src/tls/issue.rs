//! `qkeyd tls self-issue`: a first self-signed certificate for the REST API.
//!
//! The certificate is its own CA: a client trusts it by naming the certificate
//! file itself (`qkeyd keys --ca-file STATE_DIR/tls/server.crt`, `curl
//! --cacert`). It carries an ECDSA P-256 key, the subject alternative names
//! given (the first is also the subject CN), the serverAuth extended key usage
//! and no basic-constraints CA bit, so it cannot sign other certificates.
//!
//! The private key is written once, 0600, in a 0700 folder; its PEM text lives
//! in a zeroizing buffer and is never printed or logged. Files go through a
//! fsynced temp file and a rename (or, without `--force`, a hard link that
//! refuses an existing name), so a crash leaves the old file or the new one.

use std::{
    fs,
    io::{self, Write as _},
    net::IpAddr,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use base64::Engine as _;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType,
    SerialNumber,
};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// How long before "now" the certificate becomes valid: a client whose clock
/// is a little behind still accepts it at once.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The longest validity `--days` may ask for (100 years).
const MAX_DAYS: u32 = 36_500;

/// What `self-issue` was asked to do.
#[derive(Debug)]
pub(crate) struct Request {
    /// `--san` values as given (`DNS:name` or `IP:address`).
    pub(crate) sans: Vec<String>,
    /// The state directory; files go to its `tls/` folder.
    pub(crate) state_dir: PathBuf,
    /// Validity in days from now.
    pub(crate) days: u32,
    /// Replace an existing certificate and key.
    pub(crate) force: bool,
}

/// What `self-issue` wrote.
#[derive(Debug)]
pub(crate) struct Issued {
    /// SHA-256 of the certificate's DER, hex.
    pub(crate) sha256: String,
    /// The certificate (PEM).
    pub(crate) cert: PathBuf,
    /// The private key (PEM, PKCS#8).
    pub(crate) key: PathBuf,
}

/// Why `self-issue` wrote nothing (or, for [`IssueError::Write`], stopped).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum IssueError {
    /// A `--san` without a `DNS:` or `IP:` prefix.
    #[error(
        "--san {0:?}: write DNS:<name> or IP:<address>, e.g. --san DNS:localhost --san IP:127.0.0.1"
    )]
    SanKind(String),
    /// A `DNS:` name that is not a valid host name.
    #[error(
        "--san {0:?}: not a valid DNS name (letters, digits, '-' and '.'; IP addresses go in IP:)"
    )]
    DnsName(String),
    /// An `IP:` value that is not an IPv4 or IPv6 address.
    #[error("--san {0:?}: not an IPv4 or IPv6 address")]
    IpAddress(String),
    /// No `--san` at all.
    #[error(
        "give at least one --san (DNS:<name> or IP:<address>): the name clients use to reach the daemon"
    )]
    NoSan,
    /// `--days` out of range.
    #[error("--days {0}: give 1 to {MAX_DAYS}")]
    Days(u32),
    /// The certificate or key is already there and `--force` was not given.
    #[error(
        "{} already exists; nothing was written: keep it, or pass --force to replace the certificate and key",
        .0.display()
    )]
    Exists(PathBuf),
    /// The system's random number generator failed (for the serial number).
    #[error("cannot read the system's random numbers")]
    Random(#[source] getrandom::Error),
    /// rcgen could not generate the key or sign the certificate.
    #[error("cannot generate the certificate")]
    Generate(#[source] rcgen::Error),
    /// A file or folder could not be created, written or synced.
    #[error("cannot write {} (check the state directory's owner, permissions and free space)", .path.display())]
    Write {
        /// The path that failed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl IssueError {
    /// Whether the arguments were at fault (rather than the disk).
    pub(crate) fn is_argument(&self) -> bool {
        matches!(
            self,
            Self::SanKind(_)
                | Self::DnsName(_)
                | Self::IpAddress(_)
                | Self::NoSan
                | Self::Days(_)
                | Self::Exists(_)
        )
    }
}

/// A parsed `--san`.
#[derive(Clone, Debug, Eq, PartialEq)]
enum San {
    Dns(String),
    Ip(IpAddr),
}

impl San {
    fn parse(s: &str) -> Result<Self, IssueError> {
        let (kind, value) = s.split_once(':').ok_or_else(|| IssueError::SanKind(s.to_owned()))?;
        if kind.eq_ignore_ascii_case("DNS") {
            let name = value.to_ascii_lowercase();
            // rustls's own check: a name a client would be able to ask for.
            rustls::pki_types::DnsName::try_from(name.as_str())
                .map_err(|_| IssueError::DnsName(s.to_owned()))?;
            if name.parse::<IpAddr>().is_ok() {
                return Err(IssueError::DnsName(s.to_owned()));
            }
            Ok(Self::Dns(name))
        } else if kind.eq_ignore_ascii_case("IP") {
            value.parse().map(Self::Ip).map_err(|_| IssueError::IpAddress(s.to_owned()))
        } else {
            Err(IssueError::SanKind(s.to_owned()))
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Dns(n) => n.clone(),
            Self::Ip(a) => a.to_string(),
        }
    }

    fn to_rcgen(&self) -> Result<SanType, IssueError> {
        Ok(match self {
            Self::Dns(n) => SanType::DnsName(
                n.as_str().try_into().map_err(|_| IssueError::DnsName(format!("DNS:{n}")))?,
            ),
            Self::Ip(a) => SanType::IpAddress(*a),
        })
    }
}

/// The certificate and key, in memory.
struct Pair {
    cert_der: Vec<u8>,
    cert_pem: String,
    key_pem: Zeroizing<String>,
}

/// Issue the certificate and write `STATE_DIR/tls/server.{crt,key}`.
pub(crate) fn run(req: &Request) -> Result<Issued, IssueError> {
    let sans = req.sans.iter().map(|s| San::parse(s)).collect::<Result<Vec<_>, _>>()?;
    if sans.is_empty() {
        return Err(IssueError::NoSan);
    }
    if !(1..=MAX_DAYS).contains(&req.days) {
        return Err(IssueError::Days(req.days));
    }
    let dir = std::path::absolute(&req.state_dir).unwrap_or_else(|_| req.state_dir.clone());
    let dir = dir.join("tls");
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    if !req.force {
        for p in [&cert, &key] {
            if fs::symlink_metadata(p).is_ok() {
                return Err(IssueError::Exists(p.clone()));
            }
        }
    }
    let pair = generate(&sans, req.days, SystemTime::now())?;
    make_dir(&dir)?;
    // The key first: a daemon that reloads in between sees a key that does not
    // match the old certificate, refuses it and keeps serving the old pair.
    put(&dir, &key, pair.key_pem.as_bytes(), req.force)?;
    put(&dir, &cert, pair.cert_pem.as_bytes(), req.force)?;
    fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(at(&dir))?;
    Ok(Issued { sha256: hex::encode(Sha256::digest(&pair.cert_der)), cert, key })
}

/// A fresh P-256 key and the self-signed certificate for `sans`, valid from
/// `now - BACKDATE` for `days` days.
fn generate(sans: &[San], days: u32, now: SystemTime) -> Result<Pair, IssueError> {
    let first = sans.first().ok_or(IssueError::NoSan)?;
    let since_epoch = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);

    let mut params = CertificateParams::default();
    params.subject_alt_names = sans.iter().map(San::to_rcgen).collect::<Result<_, _>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, first.text());
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = epoch + since_epoch.saturating_sub(BACKDATE);
    params.not_after = epoch + since_epoch + Duration::from_secs(u64::from(days) * 86_400);
    let mut serial = [0u8; 16];
    getrandom::fill(&mut serial).map_err(IssueError::Random)?;
    serial[0] &= 0x7f; // a positive INTEGER of at most 16 bytes (RFC 5280 §4.1.2.2)
    serial[0] |= 0x40; // and never a shorter one
    params.serial_number = Some(SerialNumber::from_slice(&serial));

    let mut key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(IssueError::Generate)?;
    let cert = params.self_signed(&key).map_err(IssueError::Generate);
    let key_pem = pkcs8_pem(key.serialized_der());
    // rcgen keeps the PKCS#8 DER in a plain Vec: clear it before it is freed.
    zeroize::Zeroize::zeroize(&mut key);
    let cert = cert?;
    Ok(Pair { cert_der: cert.der().to_vec(), cert_pem: cert.pem(), key_pem })
}

/// PEM of a PKCS#8 DER key, built in a buffer sized up front so no copy of
/// the key is left behind by a reallocation.
fn pkcs8_pem(der: &[u8]) -> Zeroizing<String> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----\n";
    const END: &str = "-----END PRIVATE KEY-----\n";
    let lines = der.len().div_ceil(48);
    let mut pem = Zeroizing::new(String::with_capacity(
        BEGIN.len() + END.len() + der.len().div_ceil(3) * 4 + lines,
    ));
    pem.push_str(BEGIN);
    for chunk in der.chunks(48) {
        base64::engine::general_purpose::STANDARD.encode_string(chunk, &mut pem);
        pem.push('\n');
    }
    pem.push_str(END);
    pem
}

/// The `tls/` folder, 0700 (tightened if it already exists wider).
fn make_dir(dir: &Path) -> Result<(), IssueError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(at(dir))?;
    let meta = fs::metadata(dir).map_err(at(dir))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(at(dir))?;
    }
    Ok(())
}

/// Write `body` to `path` (0600) through a fsynced temp file in `dir`: renamed
/// over `path` with `replace`, else hard-linked, which fails if `path` exists.
fn put(dir: &Path, path: &Path, body: &[u8], replace: bool) -> Result<(), IssueError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let staged = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(body).and_then(|()| f.sync_all()));
    if let Err(e) = staged {
        let _ = fs::remove_file(&tmp);
        return Err(at(&tmp)(e));
    }
    let published = if replace {
        fs::rename(&tmp, path)
    } else {
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        linked
    };
    match published {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(IssueError::Exists(path.to_path_buf()))
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(at(path)(e))
        }
    }
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> IssueError + '_ {
    move |source| IssueError::Write { path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use x509_parser::{
        extensions::GeneralName, oid_registry, pem::parse_x509_pem, prelude::FromDer as _,
    };

    use super::*;

    fn request(dir: &Path, sans: &[&str]) -> Request {
        Request {
            sans: sans.iter().map(|s| (*s).to_owned()).collect(),
            state_dir: dir.to_path_buf(),
            days: 30,
            force: false,
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_certificate_names_its_sans_serves_tls_and_is_valid_for_the_days_asked() {
        let dir = tempfile::tempdir().unwrap();
        let before = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let issued =
            run(&request(dir.path(), &["DNS:localhost", "IP:127.0.0.1", "IP:::1"])).unwrap();
        let after = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();

        let pem = fs::read(&issued.cert).unwrap();
        let (_, pem) = parse_x509_pem(&pem).unwrap();
        assert_eq!(pem.label, "CERTIFICATE");
        assert_eq!(issued.sha256, hex::encode(Sha256::digest(&pem.contents)));
        let (rest, cert) =
            x509_parser::certificate::X509Certificate::from_der(&pem.contents).unwrap();
        assert!(rest.is_empty());

        let cn: Vec<_> = cert.subject().iter_common_name().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(cn, ["localhost"]);
        assert_eq!(cert.subject(), cert.issuer(), "self-signed");
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            [
                GeneralName::DNSName("localhost"),
                GeneralName::IPAddress(&[127, 0, 0, 1]),
                GeneralName::IPAddress(&std::net::Ipv6Addr::LOCALHOST.octets()),
            ]
        );
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth);
        assert!(!eku.value.client_auth && !eku.value.any && eku.value.other.is_empty());
        assert!(!cert.is_ca());

        let spki = cert.public_key();
        assert_eq!(spki.algorithm.algorithm, oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY);
        let curve = spki.algorithm.parameters.as_ref().unwrap().as_oid().unwrap();
        assert_eq!(curve, oid_registry::OID_EC_P256);
        assert_eq!(cert.signature_algorithm.algorithm, oid_registry::OID_SIG_ECDSA_WITH_SHA256);

        // rustls, given the certificate as its only root, accepts it for each
        // of its names and for no other.
        let verify = |name: &str| {
            use rustls::{
                client::WebPkiServerVerifier, client::danger::ServerCertVerifier as _, pki_types,
            };
            let der = pki_types::CertificateDer::from(pem.contents.clone());
            let mut roots = rustls::RootCertStore::empty();
            roots.add(der.clone()).unwrap();
            let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let verifier = WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
            let name = pki_types::ServerName::try_from(name.to_owned()).unwrap();
            verifier.verify_server_cert(&der, &[], &name, &[], pki_types::UnixTime::now())
        };
        for name in ["localhost", "127.0.0.1", "::1"] {
            verify(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let err = verify("other.example").unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{err:?}"
        );

        let nb = cert.validity().not_before.timestamp() as u64;
        let na = cert.validity().not_after.timestamp() as u64;
        assert!(nb >= before - 300 && nb <= after - 300, "not_before {nb} vs now {before}");
        assert_eq!(na - nb, 30 * 86_400 + 300);
        assert!(cert.serial.bits() > 64);
    }

    #[test]
    fn the_key_is_a_p256_pkcs8_key_that_matches_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let issued = run(&request(dir.path(), &["DNS:qkeyd.example"])).unwrap();
        let key_pem = fs::read_to_string(&issued.key).unwrap();
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(key_pem.lines().all(|l| l.len() <= 64));
        let key = KeyPair::from_pem(&key_pem).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);

        let cert_pem = fs::read(&issued.cert).unwrap();
        let (_, pem) = parse_x509_pem(&cert_pem).unwrap();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&pem.contents).unwrap();
        assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    }

    #[test]
    fn files_are_0600_in_a_0700_folder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let issued = run(&request(&state, &["DNS:localhost"])).unwrap();
        assert_eq!(issued.cert, state.join("tls/server.crt"));
        assert_eq!(issued.key, state.join("tls/server.key"));
        assert_eq!(mode(&state.join("tls")), 0o700);
        assert_eq!(mode(&issued.cert), 0o600);
        assert_eq!(mode(&issued.key), 0o600);
        let names: Vec<_> =
            fs::read_dir(state.join("tls")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temp file left: {names:?}");
    }

    #[test]
    fn a_wider_tls_folder_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("tls")).unwrap();
        fs::set_permissions(dir.path().join("tls"), fs::Permissions::from_mode(0o755)).unwrap();
        run(&request(dir.path(), &["DNS:localhost"])).unwrap();
        assert_eq!(mode(&dir.path().join("tls")), 0o700);
    }

    #[test]
    fn a_second_run_refuses_and_changes_nothing_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let first = run(&request(dir.path(), &["DNS:localhost"])).unwrap();
        let (cert, key) = (fs::read(&first.cert).unwrap(), fs::read(&first.key).unwrap());

        let err = run(&request(dir.path(), &["DNS:other"])).unwrap_err();
        assert!(matches!(&err, IssueError::Exists(p) if *p == first.cert), "{err:?}");
        assert!(err.is_argument());
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(fs::read(&first.cert).unwrap(), cert);
        assert_eq!(fs::read(&first.key).unwrap(), key);

        // Only the key left (say, the certificate was deleted): still refused.
        fs::remove_file(&first.cert).unwrap();
        let err = run(&request(dir.path(), &["DNS:other"])).unwrap_err();
        assert!(matches!(&err, IssueError::Exists(p) if *p == first.key), "{err:?}");
        assert!(!first.cert.exists());
        assert_eq!(fs::read(&first.key).unwrap(), key);

        let forced = run(&Request { force: true, ..request(dir.path(), &["DNS:other"]) }).unwrap();
        assert_ne!(fs::read(&forced.cert).unwrap(), cert);
        assert_ne!(fs::read(&forced.key).unwrap(), key);
        assert_ne!(forced.sha256, first.sha256);
        assert_eq!(mode(&forced.key), 0o600);
    }

    #[test]
    fn sans_must_say_dns_or_ip() {
        let dir = tempfile::tempdir().unwrap();
        for (san, want) in [
            ("localhost", "write DNS:<name> or IP:<address>"),
            ("URI:https://x", "write DNS:<name> or IP:<address>"),
            ("email:a@b", "write DNS:<name> or IP:<address>"),
            ("DNS:", "not a valid DNS name"),
            ("DNS:bad name", "not a valid DNS name"),
            ("DNS:127.0.0.1", "not a valid DNS name"),
            ("IP:localhost", "not an IPv4 or IPv6 address"),
            ("IP:300.1.1.1", "not an IPv4 or IPv6 address"),
        ] {
            let err = run(&request(dir.path(), &["DNS:ok", san])).unwrap_err();
            assert!(err.is_argument(), "{san}");
            assert!(err.to_string().contains(want), "{san}: {err}");
            assert!(err.to_string().contains(san), "{san}: {err}");
        }
        assert!(!dir.path().join("tls").exists(), "nothing written for bad arguments");
        // Case does not matter in the prefix; DNS names are stored lower-case.
        assert_eq!(San::parse("dns:LocalHost").unwrap(), San::Dns("localhost".into()));
        assert_eq!(San::parse("ip:::1").unwrap(), San::Ip("::1".parse().unwrap()));
    }

    #[test]
    fn days_must_be_in_range() {
        let dir = tempfile::tempdir().unwrap();
        for days in [0, MAX_DAYS + 1] {
            let err = run(&Request { days, ..request(dir.path(), &["DNS:a"]) }).unwrap_err();
            assert!(matches!(err, IssueError::Days(d) if d == days));
        }
        run(&Request { days: MAX_DAYS, ..request(dir.path(), &["DNS:a"]) }).unwrap();
    }

    #[test]
    fn the_key_pem_is_standard_base64_in_64_column_lines() {
        let der: Vec<u8> = (0..=255u8).cycle().take(138).collect();
        let pem = pkcs8_pem(&der);
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(body).unwrap(), der);
        assert_eq!(pem.lines().map(str::len).collect::<Vec<_>>(), [27, 64, 64, 56, 25]);
    }
}
