//! Golden configs and the errors bad ones get.

use qkeyd_drivers::source::sim::Fault;

use std::path::Path;

use super::*;
use crate::incident::Chain;

#[test]
fn embedded_default_is_os_fail_closed_on_loopback() {
    let c = Config::embedded().unwrap();
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert!(c.listen.ip().is_loopback());
    assert_eq!(c.sources.len(), 1);
    assert!(matches!(c.sources[0].kind, SourceKind::Os));
    assert_eq!(c.pool.mode, EntropyMode::FailClosed);
    assert!(!c.danger.os_fallback);
}

#[test]
fn example_config_is_as_safe_as_the_embedded_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.example.toml");
    let c = Config::load(Path::new(path)).unwrap();
    let d = Config::embedded().unwrap();
    assert_eq!(c.listen, d.listen);
    assert_eq!(c.sources.len(), 1);
    assert!(matches!(c.sources[0].kind, SourceKind::Os));
    assert_eq!(c.pool.mode, EntropyMode::FailClosed);
    assert!(!c.danger.os_fallback && !c.danger.allow_sim_sources);
    assert!(matches!(c.keys.sealer, SealerConfig::Soft { .. }));
    assert!(c.kms.socket.is_none() && c.module.socket.is_none());
    // Every commented-out table is a real option: uncommented, the file still
    // parses (with the simulated source allowed, as its comment says).
    let text = std::fs::read_to_string(path).unwrap();
    let mut uncommented = String::new();
    for line in text.lines() {
        let t = line.strip_prefix("# ").unwrap_or(line);
        let is_setting = t.starts_with('[')
            || t.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            });
        uncommented.push_str(if is_setting { t } else { line });
        uncommented.push('\n');
    }
    let all = Config::from_toml(&uncommented).unwrap();
    assert_eq!(all.sources.len(), 3);
    assert!(all.danger.os_fallback && all.danger.allow_sim_sources);
    assert!(all.kms.socket.is_some() && all.module.socket.is_some());
}

#[test]
fn sim_schedule_parses() {
    let c = Config::from_toml(
        r#"
        [[source]]
        name = "q"
        kind = "sim"
        seed = 7
        claimed_h = 7.5
        [[source.schedule]]
        after_samples = 100
        fault = "stuck"
        value = 3
        [[source.schedule]]
        after_samples = 200
        fault = "drift"
        value = 0
        to_p = 0.25
        over_samples = 1000
        [danger]
        os_fallback = true
        allow_sim_sources = true
        "#,
    )
    .unwrap();
    let SourceKind::Sim { seed, schedule } = &c.sources[0].kind else { panic!() };
    assert_eq!(*seed, 7);
    assert_eq!(schedule[0].fault, Fault::Stuck { value: 3 });
    assert_eq!(schedule[1].after_samples, 200);
    assert_eq!(c.pool.mode, EntropyMode::OsFallback);
}

#[test]
fn module_settings_parse_with_defaults_and_refuse_nonsense() {
    let os = "[[source]]\nname=\"o\"\nkind=\"os\"\n";
    let c = Config::from_toml(os).unwrap();
    assert!(c.module.socket.is_none(), "off unless asked for");
    assert_eq!(c.module.mode, 0o660);
    let c = Config::from_toml(&format!(
        "{os}[module]\nsocket=\"@qkeyd-p11\"\nallowed_gids=[990]\npin_env=\"P\"\nkey_cache_ms=0\n"
    ))
    .unwrap();
    assert_eq!(c.module.socket, Some(SocketSpec::Abstract("qkeyd-p11".into())));
    assert_eq!(c.module.allowed_gids, [990]);
    assert!(matches!(c.module.pin, Some(PinSource::Env(ref v)) if v == "P"));
    assert!(c.module.key_cache.is_zero());
    for (bad, needle) in [
        ("[module]\nsocket=\"rel.sock\"", "absolute path"),
        ("[module]\nsocket_mode=\"0060\"", "owner needs"),
        ("[module]\npin_file=\"/a\"\npin_env=\"B\"", "at most one"),
        ("[module]\nmax_connections=0", "1..=4096"),
        ("[module]\nkey_cache_ms=99999999", "3600000"),
        ("[module]\nbogus=1", "unknown field"),
    ] {
        let e = Chain(&Config::from_toml(&format!("{os}{bad}")).unwrap_err()).to_string();
        assert!(e.contains(needle), "{bad:?}: {e}");
    }
}

#[test]
fn bad_configs_say_what_is_wrong() {
    let cases = [
        ("listen = \"nope\"\n[[source]]\nname=\"o\"\nkind=\"os\"", "not ADDR:PORT"),
        ("", "no [[source]]"),
        ("[[source]]\nname=\"o\"\nkind=\"os\"\n[[source]]\nname=\"o\"\nkind=\"os\"", "used twice"),
        ("[[source]]\nname=\"o o\"\nkind=\"os\"", "1-64 characters"),
        ("[[source]]\nname=\"c\"\nkind=\"chardev\"\npath=\"/x\"\nclaimed_h=9.0", "min-entropy"),
        ("[[source]]\nname=\"o\"\nkind=\"tpm\"", "unknown variant"),
        ("[[source]]\nname=\"o\"\nkind=\"os\"\nbogus=1", "unknown field"),
        ("[pool]\nreseed_interval_requests=0\n[[source]]\nname=\"o\"\nkind=\"os\"", "2^48"),
        ("[health]\npermanent_alpha_log2=-10.0\n[[source]]\nname=\"o\"\nkind=\"os\"", "permanent"),
        ("[[source]]\nname=\"s\"\nkind=\"sim\"", "allow_sim_sources"),
        ("[pool]\nseed_timeout_ms=99999999999\n[[source]]\nname=\"o\"\nkind=\"os\"", "1..=60000"),
        ("[pool]\nreseed_interval_secs=1e300\n[[source]]\nname=\"o\"\nkind=\"os\"", "86400"),
    ];
    for (text, needle) in cases {
        let e = Chain(&Config::from_toml(text).unwrap_err()).to_string();
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}
