//! `qkeyd qkd`: the QKD links' KMEs, asked directly.

use std::path::PathBuf;

use clap::Subcommand;

/// `qkeyd qkd` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum QkdAction {
    /// Ask each KME (or the one named) for the status of each peer's link:
    /// one line per link; exit 0 if every KME answered, 2 if not.
    Status {
        /// Config file (TOML) with the `[qkd.kme.NAME]` tables.
        #[arg(long, short)]
        config: PathBuf,
        /// Only this KME.
        #[arg(long, value_name = "NAME")]
        kme: Option<String>,
        /// One JSON document instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Take keys shared with a peer (enc_keys) and put them through the
    /// link's health tests: start-up, RCT and APT, drift and trust, repeated
    /// keys and key_IDs. The keys are used up and wiped: for commissioning
    /// and test links. Exit 0 if the link is in use at the end, 1 if it is
    /// out of use, 2 if a request failed.
    Probe {
        /// Config file (TOML) with the `[qkd.kme.NAME]` tables.
        #[arg(long, short)]
        config: PathBuf,
        /// The KME.
        #[arg(long, value_name = "NAME")]
        kme: String,
        /// The peer SAE (default: the KME's first peer).
        #[arg(long, value_name = "SAE_ID")]
        peer: Option<String>,
        /// Keys to take.
        #[arg(long, default_value_t = 1000)]
        keys: u32,
        /// Bits per key (default: the KME's key_size).
        #[arg(long, value_name = "BITS")]
        size: Option<u32>,
        /// One JSON document instead of lines.
        #[arg(long)]
        json: bool,
    },
}
