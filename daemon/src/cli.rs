//! Command line.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use qkeyd_pqc::Algorithm;

mod qkd;

pub(crate) use qkd::QkdAction;

/// qkeyd: health-tested entropy and post-quantum keys for Kubernetes nodes.
#[derive(Debug, Parser)]
#[command(name = "qkeyd", version, about)]
pub(crate) struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `qkeyd=debug`.
    #[arg(long, global = true, env = "QKEYD_LOG", default_value = "info")]
    pub(crate) log: String,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon.
    Serve {
        /// Config file (TOML); without it the embedded default is used: the OS
        /// source, fail-closed, loopback.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// REST listen address; overrides the config.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
        /// State directory (keys, audit log, API token); overrides the config.
        #[arg(long, value_name = "DIR", env = "QKEYD_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Serve the Kubernetes KMS v2 plugin on this unix socket (a path, or
        /// @name for an abstract socket); overrides `[kms] socket`.
        #[arg(long, value_name = "PATH")]
        kms_socket: Option<String>,
        /// Serve the PKCS#11 module (libqkeyd_pkcs11.so) on this unix socket
        /// (a path, or @name); overrides `[module] socket`. The module finds it
        /// through `QKEYD_MODULE_SOCKET`.
        #[arg(long, value_name = "PATH")]
        module_socket: Option<String>,
        /// Serve the REST API over TLS with this certificate chain (PEM);
        /// overrides `[tls] cert`. Needs --tls-key (or `[tls] key`).
        #[arg(long, value_name = "FILE")]
        tls_cert: Option<PathBuf>,
        /// The TLS certificate's private key (PEM); overrides `[tls] key`.
        #[arg(long, value_name = "FILE")]
        tls_key: Option<PathBuf>,
    },
    /// Assess a file of raw samples (one per byte) with the SP 800-90B non-IID
    /// estimators, as NIST's ea_non_iid does.
    Assess {
        /// Sample file (one sample per byte).
        #[arg(required_unless_present = "source", conflicts_with = "source")]
        file: Option<PathBuf>,
        /// Record from this configured source instead of reading a file.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// Samples to record with --source.
        #[arg(long, default_value_t = 1_000_000, requires = "source")]
        samples: usize,
        /// Config that defines --source (default: the embedded one).
        #[arg(long, short, requires = "source")]
        config: Option<PathBuf>,
        /// Bits per sample (1-8); detected from the data if omitted.
        #[arg(long)]
        bits: Option<u32>,
        /// Write the reference tool's JSON layout instead of text.
        #[arg(long)]
        json: bool,
        /// Run the IID track (§5: permutation, chi-square and LRS tests, and
        /// the MCV estimate) instead of the non-IID estimators.
        #[arg(long)]
        iid: bool,
    },
    /// Check a config file and print what it sets up.
    CheckConfig {
        /// Config file (TOML).
        file: PathBuf,
    },
    /// Manage the KMS plugin's key-encryption keys in a running daemon.
    Kms {
        /// Where the daemon is.
        #[command(flatten)]
        remote: Remote,
        /// What to do.
        #[command(subcommand)]
        action: KmsAction,
    },
    /// Manage and use keys in a running daemon (over its REST API).
    Keys {
        /// Where the daemon is.
        #[command(flatten)]
        remote: Remote,
        /// What to do.
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Certificates for the REST API's TLS.
    Tls {
        /// What to do.
        #[command(subcommand)]
        action: TlsAction,
    },
    /// Verify an evidence document (`POST /v1/keys/{id}/attest`) offline, as
    /// the gateway does: against the nonce it was asked with and a policy.
    /// Prints the key and the quote's facts (exit 0), or `invalid: CHECK:
    /// DETAIL` (exit 1); a file, nonce, policy or state that cannot be read
    /// or written exits 2. The policy's state file (nonces seen, TPM
    /// counters) is read if it exists and written on success only.
    Verify {
        /// The evidence document (JSON); `-` for standard input.
        evidence: PathBuf,
        /// The nonce the evidence was asked for, base64 (16 to 64 bytes).
        #[arg(long, value_name = "BASE64")]
        nonce: String,
        /// The verifier policy (TOML): trusted AK Names, PCRs, algorithms,
        /// sealers, trust, age, state file.
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// Verify as of this time (Unix seconds) instead of now.
        #[arg(long, value_name = "UNIX")]
        now: Option<u64>,
    },
    /// Enroll a node's TPM attestation key: `enroll` and `activate` run on
    /// the node (against its daemon), `challenge` and `admit` on the
    /// registrar's machine (offline).
    Attest {
        /// Where the daemon is (enroll, activate).
        #[command(flatten)]
        remote: Remote,
        /// What to do.
        #[command(subcommand)]
        action: AttestAction,
    },
    /// The QKD links' KMEs of a config (`[qkd.kme.NAME]`), asked directly
    /// over GS QKD 014 with the config's certificates.
    Qkd {
        /// What to do.
        #[command(subcommand)]
        action: QkdAction,
    },
}

/// `qkeyd attest` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum AttestAction {
    /// Node: print (or write) the enrollment request: the identity key, the
    /// AK's public area and Name, and the EK certificate chain.
    Enroll {
        /// Write it here (a new file) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Registrar: check the request's EK chain against trusted EK CAs and
    /// make a TPM2_MakeCredential challenge for its AK; keeps what the answer
    /// must match in `--pending`.
    Challenge {
        /// The node's enrollment request.
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// EK CA certificates to trust (PEM or DER); repeat for more.
        #[arg(long = "ek-root", value_name = "FILE", required = true)]
        ek_root: Vec<PathBuf>,
        /// The challenge for the node (a new file; default standard output).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Where the registrar keeps the expected answer (a new file).
        #[arg(long, value_name = "FILE")]
        pending: PathBuf,
    },
    /// Node: open the challenge with the TPM (TPM2_ActivateCredential).
    Activate {
        /// The registrar's challenge.
        #[arg(long, value_name = "FILE")]
        challenge: PathBuf,
        /// Write the answer here (a new file) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Registrar: check the node's answer and add its AK Name to the
    /// verifier policy's `trusted_ak_names`.
    Admit {
        /// What `challenge` kept.
        #[arg(long, value_name = "FILE")]
        pending: PathBuf,
        /// The node's answer.
        #[arg(long, value_name = "FILE")]
        answer: PathBuf,
        /// The verifier policy (TOML) to add the AK to (made if missing).
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
    },
}

/// `qkeyd tls` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum TlsAction {
    /// Write a self-signed certificate and its key (ECDSA P-256, serverAuth)
    /// to STATE_DIR/tls/server.crt and server.key; prints the certificate's
    /// SHA-256. Clients trust it by naming server.crt as their CA file.
    SelfIssue {
        /// A name clients reach the daemon by: DNS:NAME or IP:ADDRESS; repeat
        /// for more. The first is also the subject CN.
        #[arg(long = "san", value_name = "DNS:NAME|IP:ADDR", required = true)]
        sans: Vec<String>,
        /// State directory; the files go to its tls/ folder (0700).
        #[arg(
            long,
            value_name = "DIR",
            env = "QKEYD_STATE_DIR",
            default_value_os_t = crate::serve::default_state_dir()
        )]
        state_dir: PathBuf,
        /// Days the certificate is valid, from now (1-36500).
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Replace an existing certificate and key.
        #[arg(long)]
        force: bool,
    },
}

/// How the `keys` and `kms` clients reach a running daemon.
#[derive(Args, Debug)]
pub(crate) struct Remote {
    /// The daemon's REST address.
    #[arg(long, global = true, env = "QKEYD_URL", default_value = "http://127.0.0.1:8437")]
    pub(crate) url: String,
    /// File holding the API token (default: STATE_DIR/api-token). With a
    /// client certificate it is optional: sent when it can be read.
    #[arg(long, global = true, env = "QKEYD_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// CA certificates (PEM) the daemon's certificate must chain to; required
    /// for an https:// URL. For a `qkeyd tls self-issue` certificate, the
    /// certificate file itself.
    #[arg(long, global = true, env = "QKEYD_CA_FILE", value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM, leaf first) to present over https://;
    /// needs --client-key.
    #[arg(
        long,
        global = true,
        env = "QKEYD_CLIENT_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub(crate) client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(
        long,
        global = true,
        env = "QKEYD_CLIENT_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub(crate) client_key: Option<PathBuf>,
}

/// `--alg`: an algorithm and parameter set, by its API name.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum AlgArg {
    /// ML-KEM-512 (FIPS 203).
    #[value(name = "ml-kem-512", alias = "ml_kem_512")]
    MlKem512,
    /// ML-KEM-768 (FIPS 203).
    #[value(name = "ml-kem-768", alias = "ml_kem_768")]
    MlKem768,
    /// ML-KEM-1024 (FIPS 203).
    #[value(name = "ml-kem-1024", alias = "ml_kem_1024")]
    MlKem1024,
    /// ML-DSA-44 (FIPS 204).
    #[value(name = "ml-dsa-44", alias = "ml_dsa_44")]
    MlDsa44,
    /// ML-DSA-65 (FIPS 204).
    #[value(name = "ml-dsa-65", alias = "ml_dsa_65")]
    MlDsa65,
    /// ML-DSA-87 (FIPS 204).
    #[value(name = "ml-dsa-87", alias = "ml_dsa_87")]
    MlDsa87,
}

impl From<AlgArg> for Algorithm {
    fn from(a: AlgArg) -> Self {
        match a {
            AlgArg::MlKem512 => Self::MlKem512,
            AlgArg::MlKem768 => Self::MlKem768,
            AlgArg::MlKem1024 => Self::MlKem1024,
            AlgArg::MlDsa44 => Self::MlDsa44,
            AlgArg::MlDsa65 => Self::MlDsa65,
            AlgArg::MlDsa87 => Self::MlDsa87,
        }
    }
}

/// `qkeyd kms` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum KmsAction {
    /// List the KEKs: the write key and those that still decrypt.
    List,
    /// Make a new KEK the write key; older ones keep decrypting.
    Rotate,
    /// Retire a KEK: data encrypted under it no longer decrypts.
    Retire {
        /// The key id (as Status reported it).
        key_id: String,
        /// Retire it even within its grace period after a rotation or a use.
        #[arg(long)]
        force: bool,
    },
    /// The nodes sharing the KEKs through etcd (`[kms.cluster]`).
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
}

/// `qkeyd kms cluster` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterAction {
    /// Each node: its state, when it was admitted, and which KEKs it holds.
    Status {
        /// Print the daemon's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Take a node out: delete its envelopes and never admit it again.
    /// Rotate afterwards: it may still hold the KEKs it had.
    Remove {
        /// The node's name (as `status` lists it).
        node: String,
    },
}

/// `qkeyd keys` actions. Binary inputs are files; outputs are printed as
/// JSON (keys) or base64 (signatures, ciphertexts, secrets) on standard
/// output, one per line, and the key version an operation used on standard
/// error (so `keys sign … > sig` keeps only the signature).
#[derive(Debug, Subcommand)]
pub(crate) enum KeysAction {
    /// Create a key: `--alg ml-kem-768|ml-dsa-65|…`.
    Create {
        /// Algorithm and parameter set (case and `_`/`-` do not matter).
        #[arg(long, value_enum, ignore_case = true)]
        alg: AlgArg,
        /// Label.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys.
    List,
    /// Show one key.
    Show {
        /// Key id.
        id: String,
    },
    /// Add a version; it becomes current.
    Rotate {
        /// Key id.
        id: String,
    },
    /// Destroy a key and every version.
    Destroy {
        /// Key id.
        id: String,
    },
    /// Sign a file with an ML-DSA key; prints the signature (base64) and, on
    /// standard error, the version that signed.
    Sign {
        /// Key id.
        id: String,
        /// The message file (`-` for standard input).
        #[arg(long)]
        message: PathBuf,
        /// Context string (at most 255 bytes).
        #[arg(long, default_value = "")]
        context: String,
        /// Key version (default: current).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Verify a signature; prints `valid` (exit 0) or `invalid` (exit 1), and
    /// on standard error the version that verified.
    Verify {
        /// Key id.
        id: String,
        /// The message file (`-` for standard input).
        #[arg(long)]
        message: PathBuf,
        /// The signature.
        #[command(flatten)]
        signature: SignatureArg,
        /// Context string.
        #[arg(long, default_value = "")]
        context: String,
        /// Key version (default: every version is tried, newest first).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Encapsulate a fresh shared secret to an ML-KEM key; prints the
    /// ciphertext (base64) and, on standard error, the version used: keep it,
    /// decapsulate needs it once the key is rotated.
    Encapsulate {
        /// Key id.
        id: String,
        /// Key version (default: current).
        #[arg(long)]
        version: Option<u32>,
        /// Also print the shared secret (base64), on a second line.
        #[arg(long)]
        print_secret: bool,
    },
    /// Decapsulate a ciphertext with an ML-KEM key; prints the shared secret
    /// (base64).
    Decapsulate {
        /// Key id.
        id: String,
        /// The ciphertext.
        #[command(flatten)]
        ciphertext: CiphertextArg,
        /// The version encapsulate used (required once the key has several).
        #[arg(long)]
        version: Option<u32>,
    },
    /// Decapsulate a ciphertext and derive a key from the shared secret with
    /// HKDF-SHA3-256; prints the derived key (base64).
    Derive {
        /// Key id.
        id: String,
        /// The ciphertext.
        #[command(flatten)]
        ciphertext: CiphertextArg,
        /// Bytes to derive (1-1024).
        #[arg(long)]
        length: usize,
        /// HKDF salt (text).
        #[arg(long, default_value = "")]
        salt: String,
        /// HKDF info (text).
        #[arg(long, default_value = "")]
        info: String,
        /// The version encapsulate used (required once the key has several).
        #[arg(long)]
        version: Option<u32>,
    },
}

/// A signature: as text, or the file `keys sign` wrote.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct SignatureArg {
    /// The signature, base64 (as `keys sign` prints it).
    #[arg(long, value_name = "BASE64")]
    pub(crate) signature: Option<String>,
    /// A file holding the signature: base64 as `keys sign > FILE` writes it,
    /// or the raw signature bytes; `-` for standard input.
    #[arg(long, value_name = "PATH")]
    pub(crate) signature_file: Option<PathBuf>,
}

/// A ciphertext: as text, or the file `keys encapsulate` wrote.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct CiphertextArg {
    /// The ciphertext, base64 (as `keys encapsulate` prints it).
    #[arg(long, value_name = "BASE64")]
    pub(crate) ciphertext: Option<String>,
    /// A file holding the ciphertext: base64 as `keys encapsulate > FILE`
    /// writes it, or the raw bytes; `-` for standard input.
    #[arg(long, value_name = "PATH")]
    pub(crate) ciphertext_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_has_its_api_name_on_the_command_line() {
        for a in AlgArg::value_variants() {
            let name = a.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(name.as_deref(), Some(Algorithm::from(*a).name()));
        }
    }

    #[test]
    fn alg_takes_any_case_and_underscores() {
        for spelling in ["ml-dsa-44", "ML-DSA-44", "ml_dsa_44", "Ml_Dsa_44"] {
            let cli = Cli::try_parse_from(["qkeyd", "keys", "create", "--alg", spelling]).unwrap();
            let Command::Keys { action: KeysAction::Create { alg, .. }, .. } = cli.command else {
                panic!("parsed as another command")
            };
            assert_eq!(Algorithm::from(alg), Algorithm::MlDsa44, "{spelling}");
        }
        assert!(Cli::try_parse_from(["qkeyd", "keys", "create", "--alg", "rsa"]).is_err());
    }

    #[test]
    fn verify_takes_the_signature_as_text_or_as_a_file_but_not_both() {
        let parse = |extra: &[&str]| {
            let base = ["qkeyd", "keys", "verify", "ID", "--message", "m"];
            Cli::try_parse_from(base.iter().chain(extra))
        };
        let Command::Keys { action: KeysAction::Verify { signature, .. }, .. } =
            parse(&["--signature-file", "sig"]).unwrap().command
        else {
            panic!("parsed as another command")
        };
        assert_eq!(signature.signature_file.as_deref(), Some(std::path::Path::new("sig")));
        assert!(parse(&["--signature", "AAAA"]).is_ok());
        assert!(parse(&[]).is_err(), "a signature is required");
        assert!(parse(&["--signature", "AAAA", "--signature-file", "sig"]).is_err());
        let decap = ["qkeyd", "keys", "decapsulate", "ID"];
        assert!(Cli::try_parse_from(decap).is_err(), "a ciphertext is required");
        assert!(Cli::try_parse_from(decap.iter().chain(&["--ciphertext-file", "-"])).is_ok());
    }

    #[test]
    fn self_issue_takes_repeated_sans_and_needs_one() {
        let cli = Cli::try_parse_from([
            "qkeyd",
            "tls",
            "self-issue",
            "--san",
            "DNS:localhost",
            "--san",
            "IP:127.0.0.1",
            "--state-dir",
            "/s",
        ])
        .unwrap();
        let Command::Tls { action: TlsAction::SelfIssue { sans, state_dir, days, force } } =
            cli.command
        else {
            panic!("parsed as another command")
        };
        assert_eq!(sans, ["DNS:localhost", "IP:127.0.0.1"]);
        assert_eq!(state_dir, PathBuf::from("/s"));
        assert_eq!((days, force), (365, false));
        assert!(Cli::try_parse_from(["qkeyd", "tls", "self-issue"]).is_err(), "--san is required");
    }

    #[test]
    fn the_tls_options_of_keys_and_kms_go_anywhere_and_the_key_goes_with_the_cert() {
        let cli = Cli::try_parse_from([
            "qkeyd",
            "kms",
            "--url",
            "https://h:1",
            "list",
            "--ca-file",
            "ca.pem",
            "--client-cert",
            "c.pem",
            "--client-key",
            "k.pem",
        ])
        .unwrap();
        let Command::Kms { remote, action: KmsAction::List } = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(remote.ca_file.as_deref(), Some(std::path::Path::new("ca.pem")));
        assert_eq!(remote.client_cert.as_deref(), Some(std::path::Path::new("c.pem")));
        assert_eq!(remote.client_key.as_deref(), Some(std::path::Path::new("k.pem")));
        for half in [["--client-cert", "c.pem"], ["--client-key", "k.pem"]] {
            let args = ["qkeyd", "keys", "list"].into_iter().chain(half);
            assert!(Cli::try_parse_from(args).is_err(), "{half:?} alone");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
