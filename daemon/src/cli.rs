//! Command line.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use qkeyd_pqc::Algorithm;

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
}

/// How the `keys` and `kms` clients reach a running daemon.
#[derive(Args, Debug)]
pub(crate) struct Remote {
    /// The daemon's REST address.
    #[arg(long, global = true, env = "QKEYD_URL", default_value = "http://127.0.0.1:8437")]
    pub(crate) url: String,
    /// File holding the API token (default: STATE_DIR/api-token).
    #[arg(long, global = true, env = "QKEYD_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
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
}

/// `qkeyd keys` actions. Binary inputs are files; outputs are printed as
/// JSON (keys) or base64 (signatures).
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
    /// Sign a file with an ML-DSA key; prints the signature (base64).
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
    /// Verify a signature; exit code 0 if valid, 1 if not.
    Verify {
        /// Key id.
        id: String,
        /// The message file (`-` for standard input).
        #[arg(long)]
        message: PathBuf,
        /// The signature, base64.
        #[arg(long)]
        signature: String,
        /// Context string.
        #[arg(long, default_value = "")]
        context: String,
        /// Key version (default: current).
        #[arg(long)]
        version: Option<u32>,
    },
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
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
