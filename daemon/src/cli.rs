//! Command line.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

/// qkeyd: health-tested entropy and post-quantum keys for Kubernetes nodes.
#[derive(Debug, Parser)]
#[command(name = "qkeyd", version, about)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `qkeyd=debug`.
    #[arg(long, global = true, env = "QKEYD_LOG", default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
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
        /// (a path, or @name); overrides `[pkcs11] socket`.
        #[arg(long, value_name = "PATH")]
        pkcs11_socket: Option<String>,
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
        /// The daemon's REST address.
        #[arg(long, global = true, env = "QKEYD_URL", default_value = "http://127.0.0.1:8437")]
        url: String,
        /// File holding the API token (default: STATE_DIR/api-token).
        #[arg(long, global = true, env = "QKEYD_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: KmsAction,
    },
    /// Manage and use keys in a running daemon (over its REST API).
    Keys {
        /// The daemon's REST address.
        #[arg(long, global = true, env = "QKEYD_URL", default_value = "http://127.0.0.1:8437")]
        url: String,
        /// File holding the API token (default: STATE_DIR/api-token).
        #[arg(long, global = true, env = "QKEYD_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// What to do.
        #[command(subcommand)]
        action: KeysAction,
    },
}

/// `qkeyd kms` actions.
#[derive(Debug, Subcommand)]
pub enum KmsAction {
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
pub enum KeysAction {
    /// Create a key: `--alg ml-kem-768|ml-dsa-65|…`.
    Create {
        /// Algorithm and parameter set.
        #[arg(long)]
        alg: String,
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
