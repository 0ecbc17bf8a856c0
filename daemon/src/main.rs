//! qkeyd: a node daemon that turns hardware randomness into trustworthy keys.
//!
//! This crate is the `qkeyd` binary: configuration,
//! the entropy pool (conditioning and the SP 800-90A DRBG), the source threads,
//! and the REST API with Prometheus metrics. Health tests live in
//! `qkeyd-health`; device access lives in `qkeyd-drivers`.
//!
//! Secrets (seed blocks, DRBG state) live only in zeroizing types without
//! `Debug` output of their contents; logs, errors and metrics carry counts,
//! states and sample positions, never sample values or random bytes.
#![forbid(unsafe_code)]

mod api;
mod assess;
mod attest;
mod attest_cli;
mod certificate;
mod check;
mod cli;
mod config;
mod durable;
mod incident;
mod keys_cli;
mod kms;
mod metrics;
mod module_server;
mod notify;
mod objects;
mod pool;
mod qkd;
mod refusals;
mod serve;
mod sources;
#[cfg(test)]
mod testing;
mod tls;
mod unix_socket;
mod vault;
mod verify_cli;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::{
    cli::{Cli, Command},
    config::Config,
    incident::Chain,
};

/// How `qkeyd` exits (README lists these).
#[derive(Clone, Copy, Debug)]
enum Exit {
    /// `serve` stopped on an error after its configuration loaded,
    /// `keys verify` found the signature invalid, `verify` refused the
    /// evidence, or `qkd probe` left the link out of use.
    Failed = 1,
    /// A `keys` or `kms` request failed: the daemon refused it or could not be
    /// reached; or `verify` could not read its evidence, nonce, policy or
    /// state file, or write the state file.
    Request = 2,
    /// The configuration does not load or check.
    Config = 3,
    /// `assess` was given input it cannot assess.
    Input = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        Self::from(e as u8)
    }
}

/// `qkeyd qkd …`.
fn qkd(action: crate::cli::QkdAction) -> ExitCode {
    use crate::{cli::QkdAction, qkd::Outcome};
    let path = match &action {
        QkdAction::Status { config, .. } | QkdAction::Probe { config, .. } => config,
    };
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("qkeyd: {}", Chain(&e));
            return Exit::Config.into();
        }
    };
    let outcome = match action {
        QkdAction::Status { kme, json, .. } => {
            crate::qkd::status_report(&config.kmes, kme.as_deref(), json)
        }
        QkdAction::Probe { kme, peer, keys, size, json, .. } => {
            let probe = crate::qkd::probe::Probe { kme, peer, keys, size };
            crate::qkd::probe::probe(&config.kmes, &probe, json)
        }
    };
    match outcome {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::OutOfUse) => Exit::Failed.into(),
        Ok(Outcome::RequestFailed) => Exit::Request.into(),
        Err(e) => {
            eprintln!("qkeyd: {e:#}");
            Exit::Config.into()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // tss-esapi logs every TPM connection at info; its errors reach us as values.
    let directives = if cli.log.contains("tss_esapi") {
        cli.log.clone()
    } else {
        format!("{},tss_esapi=off", cli.log)
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    match cli.command {
        Command::Assess { file, source, samples, config, bits, json, iid } => {
            let opts = crate::assess::Options { bits, json, iid };
            let commandline = std::env::args().collect::<Vec<_>>().join(" ");
            let result = match (file, source) {
                (Some(file), _) => crate::assess::run(&file, opts, &commandline),
                (None, Some(name)) => {
                    let loaded = match &config {
                        Some(path) => Config::load(path),
                        None => Config::embedded(),
                    };
                    loaded.map_err(anyhow::Error::from).and_then(|c| {
                        crate::assess::run_source(&c, &name, samples, opts, &commandline)
                    })
                }
                (None, None) => Err(anyhow::anyhow!("give a FILE or --source NAME")),
            };
            match result {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("qkeyd: {e:#}");
                    Exit::Input.into()
                }
            }
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) if crate::check::report(&config) => ExitCode::SUCCESS,
            Ok(_) => Exit::Config.into(),
            Err(e) => {
                eprintln!("qkeyd: {}", Chain(&e));
                Exit::Config.into()
            }
        },
        Command::Keys { remote, action } => keys(&remote, action),
        Command::Qkd { action } => qkd(action),
        Command::Kms { remote, action } => match crate::keys_cli::run_kms(&remote, action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qkeyd: {e:#}");
                Exit::Request.into()
            }
        },
        Command::Tls {
            action: crate::cli::TlsAction::SelfIssue { sans, state_dir, days, force },
        } => {
            let req = crate::tls::issue::Request { sans, state_dir, days, force };
            match crate::tls::issue::run(&req) {
                Ok(issued) => {
                    println!("sha256:{}", issued.sha256);
                    println!("cert: {}", issued.cert.display());
                    println!("key: {}", issued.key.display());
                    eprintln!(
                        "start with: qkeyd serve --tls-cert {} --tls-key {}",
                        issued.cert.display(),
                        issued.key.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("qkeyd: tls self-issue: {}", Chain(&e));
                    if e.is_argument() { Exit::Config } else { Exit::Failed }.into()
                }
            }
        }
        Command::Attest { remote, action } => match crate::attest_cli::run(&remote, action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("qkeyd: attest: {e:#}");
                Exit::Request.into()
            }
        },
        Command::Verify { evidence, nonce, policy, now } => {
            let req = crate::verify_cli::Request { evidence, nonce, policy, now };
            match crate::verify_cli::run(&req, std::io::stdin().lock(), std::io::stdout().lock()) {
                Ok(crate::verify_cli::Outcome::Valid) => ExitCode::SUCCESS,
                Ok(crate::verify_cli::Outcome::Invalid) => Exit::Failed.into(),
                Err(e) => {
                    eprintln!("qkeyd: verify: {e}");
                    Exit::Request.into()
                }
            }
        }
        Command::Serve {
            config,
            listen,
            state_dir,
            kms_socket,
            module_socket,
            tls_cert,
            tls_key,
        } => {
            let loaded = match &config {
                Some(path) => Config::load(path),
                None => Config::embedded(),
            };
            let mut config = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("qkeyd: {}", Chain(&e));
                    return Exit::Config.into();
                }
            };
            if let Some(addr) = listen {
                config.listen = addr;
            }
            if let Some(dir) = state_dir {
                config.keys.state_dir = Some(dir);
            }
            if let Some(socket) = kms_socket {
                // --kms-socket moves (or turns on) the plugin; other [kms] settings stay.
                if let Err(e) = config.kms.set_socket(&socket) {
                    eprintln!("qkeyd: --kms-socket: {e:#}");
                    return Exit::Config.into();
                }
            }
            if let Some(socket) = module_socket
                && let Err(e) = config.module.set_socket(&socket)
            {
                eprintln!("qkeyd: --module-socket: {e:#}");
                return Exit::Config.into();
            }
            if let Err(e) =
                config.set_tls_files(tls_cert, tls_key).and_then(|()| config.check_serving())
            {
                eprintln!("qkeyd: {}", Chain(&e));
                return Exit::Config.into();
            }
            // At least 4 workers: a token that hangs inside an inline KEK
            // operation holds one (see InlineKeys), and the rest keep serving.
            let workers = std::thread::available_parallelism().map_or(4, |n| n.get().max(4));
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("qkeyd: cannot start the runtime: {e}");
                    return Exit::Failed.into();
                }
            };
            match runtime.block_on(crate::serve::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("qkeyd: {e:#}");
                    Exit::Failed.into()
                }
            }
        }
    }
}

fn keys(remote: &crate::cli::Remote, action: crate::cli::KeysAction) -> ExitCode {
    match crate::keys_cli::run(remote, action) {
        Ok(crate::keys_cli::Outcome::Done) => ExitCode::SUCCESS,
        Ok(crate::keys_cli::Outcome::Invalid) => Exit::Failed.into(),
        Err(e) => {
            eprintln!("qkeyd: {e:#}");
            Exit::Request.into()
        }
    }
}
