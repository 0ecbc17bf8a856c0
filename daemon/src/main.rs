//! The `qkeyd` binary.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use qkeyd::{
    cli::{Cli, Command},
    config::{Config, SourceKind},
};
use tracing_subscriber::EnvFilter;

/// Exit code for a configuration that does not load or check.
const EXIT_CONFIG: u8 = 3;
/// Exit code for input that cannot be assessed.
const EXIT_INPUT: u8 = 4;

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
            let opts = qkeyd::assess::Options { bits, json, iid };
            let commandline = std::env::args().collect::<Vec<_>>().join(" ");
            let result = match (file, source) {
                (Some(file), _) => qkeyd::assess::run(&file, opts, &commandline),
                (None, Some(name)) => {
                    let loaded = match &config {
                        Some(path) => Config::load(path),
                        None => Config::embedded(),
                    };
                    loaded.and_then(|c| {
                        qkeyd::assess::run_source(&c, &name, samples, opts, &commandline)
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
                    ExitCode::from(EXIT_INPUT)
                }
            }
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                print_config(&config);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("qkeyd: {e:#}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Keys { url, token_file, action } => keys(&url, token_file, action),
        Command::Kms { url, token_file, action } => {
            match qkeyd::keys_cli::run_kms(&url, token_file, action) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("qkeyd: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve { config, listen, state_dir, kms_socket, pkcs11_socket } => {
            let loaded = match &config {
                Some(path) => Config::load(path),
                None => Config::embedded(),
            };
            let mut config = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("qkeyd: {e:#}");
                    return ExitCode::from(EXIT_CONFIG);
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
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
            if let Some(socket) = pkcs11_socket
                && let Err(e) = config.pkcs11.set_socket(&socket)
            {
                eprintln!("qkeyd: --pkcs11-socket: {e:#}");
                return ExitCode::from(EXIT_CONFIG);
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
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(qkeyd::serve::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("qkeyd: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn keys(
    url: &str,
    token_file: Option<std::path::PathBuf>,
    action: qkeyd::cli::KeysAction,
) -> ExitCode {
    match qkeyd::keys_cli::run(url, token_file, action) {
        Ok(qkeyd::keys_cli::Outcome::Done) => ExitCode::SUCCESS,
        Ok(qkeyd::keys_cli::Outcome::Invalid) => ExitCode::from(1),
        Err(e) => {
            eprintln!("qkeyd: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_config(c: &Config) {
    println!("config OK");
    println!("listen: {}", c.listen);
    println!(
        "mode:   {:?}{}",
        c.pool.mode,
        if c.danger.os_fallback { " (DANGER: OS fallback)" } else { "" }
    );
    println!("sources:");
    for s in &c.sources {
        let kind = match &s.kind {
            SourceKind::Os => "os".to_owned(),
            SourceKind::CharDev { path } => format!("chardev {}", path.display()),
            SourceKind::Sim { schedule, .. } => {
                format!("sim ({} scheduled faults)", schedule.len())
            }
        };
        // Cutoffs were computed when the config was checked; this repeats it for display.
        match s.params.cutoffs() {
            Ok((i, p)) => println!(
                "  {:<12} {kind:<28} bits={} H={} RCT={}/{} APT={}/{} (W={})",
                s.name,
                s.params.bits_per_sample,
                s.params.claimed_h,
                i.rct,
                p.rct,
                i.apt,
                p.apt,
                i.window
            ),
            Err(e) => println!("  {:<12} {kind}: {e}", s.name),
        }
    }
}
