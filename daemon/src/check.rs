//! `qkeyd check-config`: what a configuration file sets up, and what on this
//! machine would stop it from working (a device that is not there, a PIN
//! file that cannot be read), without starting anything.

use std::{os::unix::fs::FileTypeExt as _, path::Path};

use crate::config::{Config, PinSource, SealerConfig, SocketSpec, SourceKind};

/// Print `c` and the problems found on this machine; `true` if there are none.
pub(crate) fn report(c: &Config) -> bool {
    let problems = problems(c);
    if problems.is_empty() {
        println!("config OK");
    } else {
        println!("config loads, but {} problem(s) on this machine", problems.len());
    }
    print_config(c);
    for p in &problems {
        println!("problem: {p}");
    }
    problems.is_empty()
}

/// What would keep `c` from working here.
fn problems(c: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for s in &c.sources {
        if let SourceKind::CharDev { path } = &s.kind {
            match std::fs::metadata(path) {
                Ok(m) if m.file_type().is_char_device() || m.file_type().is_fifo() => {}
                Ok(m) if m.is_file() => {}
                Ok(_) => out.push(format!(
                    "source {}: {} is not a character device, FIFO or file",
                    s.name,
                    path.display()
                )),
                Err(e) => out.push(format!(
                    "source {}: {}: {e} (qkeyd would start with this source unavailable)",
                    s.name,
                    path.display()
                )),
            }
        }
    }
    match &c.keys.sealer {
        SealerConfig::Soft { key_file: Some(f) } => readable(&mut out, "keys.soft.key_file", f),
        SealerConfig::Soft { key_file: None } => {}
        SealerConfig::Hsm { module, pin, .. } => {
            readable(&mut out, "keys.hsm.module", module);
            pin_source(&mut out, "keys.hsm", "", pin);
        }
        SealerConfig::Tpm { tcti, .. } => {
            if let Some(dev) = tcti.strip_prefix("device:") {
                readable(&mut out, "keys.tpm.tcti", Path::new(dev));
            }
        }
    }
    if let Some(dir) = &c.keys.state_dir
        && !dir.is_dir()
        && dir.parent().is_none_or(|p| !p.is_dir())
    {
        out.push(format!(
            "keys.state_dir: neither {} nor its parent directory exists",
            dir.display()
        ));
    }
    if let Some(f) = &c.keys.token_file {
        readable(&mut out, "keys.token_file", f);
    }
    for (key, socket) in [("kms.socket", &c.kms.socket), ("module.socket", &c.module.socket)] {
        if let Some(SocketSpec::Path { path, .. }) = socket
            && path.parent().is_some_and(|p| !p.is_dir())
        {
            out.push(format!("{key}: the directory of {} does not exist", path.display()));
        }
    }
    if c.module.socket.is_some() {
        if let Some(pin) = &c.module.pin {
            pin_source(&mut out, "module", "", pin);
        }
        if let Some(pin) = &c.module.so_pin {
            pin_source(&mut out, "module", "so_", pin);
        }
    }
    if let Some(t) = &c.tls {
        readable(&mut out, "tls.cert", &t.cert);
        readable(&mut out, "tls.key", &t.key);
        if let Some(ca) = &t.client_ca {
            readable(&mut out, "tls.client_ca", ca);
        }
    }
    if let Err(e) = c.check_serving() {
        out.push(e.to_string());
    }
    out
}

fn readable(out: &mut Vec<String>, key: &str, path: &Path) {
    if let Err(e) = std::fs::File::open(path) {
        out.push(format!("{key}: {}: {e}", path.display()));
    }
}

/// Check a PIN's source, named `{section}.{prefix}pin_file` or `…pin_env`.
fn pin_source(out: &mut Vec<String>, section: &str, prefix: &str, pin: &PinSource) {
    match pin {
        PinSource::File(f) => readable(out, &format!("{section}.{prefix}pin_file"), f),
        PinSource::Env(v) if std::env::var_os(v).is_none() => {
            out.push(format!("{section}.{prefix}pin_env: {v} is not set in this environment"));
        }
        PinSource::Env(_) => {}
    }
}

fn print_config(c: &Config) {
    println!("listen: {}", c.listen);
    match &c.tls {
        Some(t) => println!(
            "tls:    {:?}, TLS 1.3{}, cert {}, client certificates: {}",
            t.groups,
            if t.allow_tls12 { " and 1.2" } else { " only" },
            t.cert.display(),
            t.client_ca.as_ref().map_or_else(
                || "not asked for".to_owned(),
                |ca| format!("{} ({} rules)", ca.display(), t.clients.len())
            )
        ),
        None => println!("tls:    off (plain HTTP)"),
    }
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
            SourceKind::Tpm { tcti } => format!("tpm {tcti}"),
            SourceKind::Pkcs11 { module, token_label, .. } => {
                format!("pkcs11 {token_label:?} via {}", module.display())
            }
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
    let sealer = match &c.keys.sealer {
        SealerConfig::Soft { key_file } => match key_file {
            Some(f) => format!("soft (DANGER: key file {})", f.display()),
            None => "soft (DANGER: key file STATE_DIR/soft-seal.key)".to_owned(),
        },
        SealerConfig::Hsm { module, token_label, .. } => {
            format!("hsm (token {token_label:?} via {})", module.display())
        }
        SealerConfig::Tpm { tcti, pcrs } => format!("tpm ({tcti}, PCRs {pcrs:?})"),
    };
    let state = c.keys.state_dir.as_ref().map_or_else(
        || format!("{} (default)", crate::serve::default_state_dir().display()),
        |d| d.display().to_string(),
    );
    let token = c
        .keys
        .token_file
        .as_ref()
        .map_or_else(|| "STATE_DIR/api-token".to_owned(), |f| f.display().to_string());
    println!("keys:   sealer {sealer}; state dir {state}; API token {token}");
    match &c.kms.socket {
        Some(s) => println!(
            "kms:    {} (mode {:o}; uids root, qkeyd's{}; Status cached {} ms, KEKs {} ms)",
            s.endpoint(),
            c.kms.mode,
            uids(&c.kms.allowed_uids),
            c.kms.status_cache.as_millis(),
            c.kms.kek_cache.as_millis()
        ),
        None => println!("kms:    off"),
    }
    let m = &c.module;
    match &m.socket {
        Some(s) => {
            let pin = match &m.pin {
                Some(PinSource::File(f)) => format!("file {}", f.display()),
                Some(PinSource::Env(v)) => format!("${v}"),
                None => "STATE_DIR/module-pin".to_owned(),
            };
            let so_pin = match &m.so_pin {
                Some(PinSource::File(f)) => format!("file {}", f.display()),
                Some(PinSource::Env(v)) => format!("${v}"),
                None => "STATE_DIR/module-so-pin".to_owned(),
            };
            let pin = format!("{pin}, SO PIN {so_pin}");
            println!(
                "module: {} (mode {:o}; uids root, qkeyd's{}; gids {:?}; PIN {pin}; {} connections, {} per uid; idle {} s)",
                s.endpoint(),
                m.mode,
                uids(&m.allowed_uids),
                m.allowed_gids,
                m.max_connections,
                m.max_connections_per_uid,
                m.idle_timeout.as_secs()
            );
        }
        None => println!("module: off"),
    }
}

fn uids(extra: &[u32]) -> String {
    extra.iter().map(|u| format!(", {u}")).collect()
}
