//! What the in-process unit tests share: a running pool on the OS source and
//! a state directory with the soft sealer, the same parts `serve` wires.

use std::{sync::Arc, time::Duration};

use qkeyd_drivers::seal::worker::SealerWorker;

use crate::{
    config::{Config, KeysConfig, KmsSettings, SealerConfig},
    pool::Pool,
    serve,
};

/// A pool fed by the OS source, as the embedded default configures it.
pub(crate) fn pool() -> Arc<Pool> {
    serve::start_pool(&Config::embedded().unwrap()).unwrap()
}

/// A fresh state directory with a soft sealer on its own thread.
pub(crate) fn soft_sealer() -> (tempfile::TempDir, SealerWorker) {
    let dir = tempfile::tempdir().unwrap();
    let (_, sealer) = serve::open_sealer(&soft_keys(dir.path())).unwrap();
    (dir, sealer)
}

/// KMS settings with no socket and the given Status cache lifetime.
pub(crate) fn kms_settings(status_cache: Duration) -> KmsSettings {
    KmsSettings {
        socket: None,
        mode: 0o600,
        allowed_uids: vec![],
        status_cache,
        kek_cache: Duration::from_secs(2),
        inline_token_session: true,
        cluster: None,
    }
}

/// The keys settings of a soft sealer in `dir`.
fn soft_keys(dir: &std::path::Path) -> KeysConfig {
    KeysConfig {
        state_dir: Some(dir.to_owned()),
        token_file: None,
        sealer: SealerConfig::Soft { key_file: None },
        seal_timeout: Duration::from_secs(5),
    }
}
