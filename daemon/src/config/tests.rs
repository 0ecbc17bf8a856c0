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
    assert_eq!(all.sources.len(), 5);
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
        ("[[source]]\nname=\"o\"\nkind=\"qrng\"", "unknown variant"),
        ("[[source]]\nname=\"t\"\nkind=\"tpm\"", "missing field `tcti`"),
        (
            "[[source]]\nname=\"h\"\nkind=\"pkcs11\"\nmodule=\"/m.so\"\ntoken_label=\"t\"\npin_file=\"/p\"\npin_env=\"P\"",
            "at most one of pin_file and pin_env",
        ),
        ("[[source]]\nname=\"o\"\nkind=\"os\"\nbogus=1", "unknown field"),
        ("[pool]\nreseed_interval_requests=0\n[[source]]\nname=\"o\"\nkind=\"os\"", "2^48"),
        ("[health]\npermanent_alpha_log2=-10.0\n[[source]]\nname=\"o\"\nkind=\"os\"", "permanent"),
        ("[[source]]\nname=\"s\"\nkind=\"sim\"", "allow_sim_sources"),
        ("[pool]\nseed_timeout_ms=99999999999\n[[source]]\nname=\"o\"\nkind=\"os\"", "1..=60000"),
        ("[health]\nmonitor_rate=99999999\n[[source]]\nname=\"o\"\nkind=\"os\"", "monitor_rate"),
        ("[pool]\nreseed_interval_secs=1e300\n[[source]]\nname=\"o\"\nkind=\"os\"", "86400"),
    ];
    for (text, needle) in cases {
        let e = Chain(&Config::from_toml(text).unwrap_err()).to_string();
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn tls_table_parses_rules_and_rights() {
    let c = Config::from_toml(
        r#"
        listen = "0.0.0.0:8437"
        [[source]]
        name = "os"
        kind = "os"
        [tls]
        cert = "c.pem"
        key = "k.pem"
        groups = "pq-only"
        client_ca = "ca.pem"
        anonymous = []
        [[tls.client]]
        identity = "cn:gw"
        rights = ["random", "keys:use"]
        [[tls.client]]
        identity = "ip:10.0.0.1"
        rights = ["kms:admin"]
        "#,
    )
    .unwrap();
    let t = c.tls.as_ref().unwrap();
    assert_eq!(t.groups, Groups::PqOnly);
    assert!(!t.allow_tls12);
    assert_eq!(t.clients.len(), 2);
    assert_eq!(t.clients[0].identity, Identity::Cn("gw".into()));
    assert!(t.clients[0].rights.has(Right::KeysUse) && !t.clients[0].rights.has(Right::KeysAdmin));
    assert_eq!(c.access.anonymous, Rights::default());
    // With TLS, any address will do.
    c.check_serving().unwrap();
}

#[test]
fn tls_mistakes_are_named() {
    let base = "[[source]]\nname = \"os\"\nkind = \"os\"\n";
    for (tls, says) in [
        ("[tls]\ncert = \"c\"\n", "tls.cert and tls.key go together"),
        ("[tls]\ngroups = \"pq\"\n", "tls.groups"),
        ("[tls]\ngroups = \"pq-only\"\nmin_version = \"1.2\"\n", "needs TLS 1.3"),
        ("[tls]\nmin_version = \"1.1\"\n", "tls.min_version"),
        ("[tls]\nhandshake_timeout_secs = 0\n", "tls.handshake_timeout_secs"),
        ("[[tls.client]]\nidentity = \"cn:a\"\nrights = []\n", "need tls.client_ca"),
        (
            "[tls]\nclient_ca = \"ca\"\n[[tls.client]]\nidentity = \"host:a\"\nrights = []\n",
            "cn:NAME",
        ),
        (
            "[tls]\nclient_ca = \"ca\"\n[[tls.client]]\nidentity = \"cn:a\"\nrights = [\"root\"]\n",
            "root",
        ),
        ("[tls]\nbearer_token = false\n", "needs tls.client_ca"),
    ] {
        let e = Config::from_toml(&format!("{base}{tls}")).unwrap_err();
        let text = Chain(&e).to_string();
        assert!(text.contains(says), "{tls:?}: {text}");
    }
}

#[test]
fn plain_http_stays_on_loopback_unless_danger_says_otherwise() {
    let base = "listen = \"0.0.0.0:8437\"\n[[source]]\nname = \"os\"\nkind = \"os\"\n";
    let c = Config::from_toml(base).unwrap();
    let e = c.check_serving().unwrap_err();
    assert!(e.to_string().contains("plaintext_beyond_loopback"), "{e}");
    let c =
        Config::from_toml(&format!("{base}[danger]\nplaintext_beyond_loopback = true\n")).unwrap();
    c.check_serving().unwrap();
    // Files from the command line turn TLS on and keep the [tls] options.
    let mut c = Config::from_toml(&format!("{base}[tls]\ngroups = \"pq-only\"\n")).unwrap();
    assert!(c.check_serving().is_err());
    c.set_tls_files(Some("c.pem".into()), Some("k.pem".into())).unwrap();
    assert_eq!(c.tls.as_ref().unwrap().groups, Groups::PqOnly);
    c.check_serving().unwrap();
    let mut c = Config::from_toml(base).unwrap();
    assert!(c.set_tls_files(Some("c.pem".into()), None).is_err());
    // A client CA needs a certificate to ask with.
    let c =
        Config::from_toml("[[source]]\nname = \"os\"\nkind = \"os\"\n[tls]\nclient_ca = \"ca\"\n")
            .unwrap();
    assert!(c.check_serving().unwrap_err().to_string().contains("tls.client_ca needs"));
}

#[test]
fn the_cluster_table_needs_its_parts_and_names_each_missing_one() {
    let base = "[[source]]\nname=\"o\"\nkind=\"os\"\n";
    let full = "[kms]\nsocket=\"/tmp/k.sock\"\n[kms.cluster]\nendpoints=[\"https://10.0.0.1:2379\"]\n\
                ca_file=\"/ca.pem\"\ncert_file=\"/c.pem\"\nkey_file=\"/k.pem\"\nnode=\"cp-1\"\n\
                policy=\"/p.toml\"\n[attest]\ntpm=false\n";
    let c = Config::from_toml(&format!("{base}{full}")).unwrap();
    let cl = c.kms.cluster.unwrap();
    assert_eq!(cl.prefix, "/qkeyd/v1/");
    assert_eq!(cl.node, "cp-1");
    assert_eq!(cl.poll_interval, Duration::from_secs(2));
    let cases = [
        (full.replace("[attest]\ntpm=false\n", ""), "needs [attest]"),
        (full.replace("socket=\"/tmp/k.sock\"", ""), "set kms.socket"),
        (full.replace("ca_file=\"/ca.pem\"\n", ""), "need ca_file"),
        (full.replace("key_file=\"/k.pem\"\n", ""), "go together"),
        (full.replace("https://10.0.0.1", "http://10.0.0.1"), "http:// only on loopback"),
        (full.replace("node=\"cp-1\"", "node=\"cp/1\""), "kms.cluster.node"),
        (full.replace("policy=\"/p.toml\"\n", ""), "needs policy"),
        (
            full.replace("[kms.cluster]\n", "[kms.cluster]\nprefix=\"qkeyd\"\n"),
            "kms.cluster.prefix",
        ),
    ];
    for (text, needle) in cases {
        let e = Chain(&Config::from_toml(&format!("{base}{text}")).unwrap_err()).to_string();
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn a_kme_table_needs_mutual_tls_and_valid_sae_ids() {
    let base = "[[source]]\nname=\"o\"\nkind=\"os\"\n";
    let full = "[qkd.kme.east]\nurl=\"https://kme-1.example:8443/\"\nca_file=\"/ca.pem\"\n\
                cert_file=\"/sae.pem\"\nkey_file=\"/sae.key\"\nsae_id=\"node-1\"\n\
                peers=[\"node-2\", \"gw_3\"]\n";
    let c = Config::from_toml(&format!("{base}{full}")).unwrap();
    assert_eq!(c.kmes.len(), 1);
    let k = &c.kmes[0];
    assert_eq!(k.name, "east");
    assert_eq!(k.url, "https://kme-1.example:8443", "the trailing / is dropped");
    assert_eq!(k.peers, ["node-2", "gw_3"]);
    assert_eq!(k.timeout, Duration::from_secs(5));
    assert_eq!((k.claimed_h, k.min_trust), (7.5, 0.89));
    assert!(Config::from_toml(base).unwrap().kmes.is_empty());
    let cases = [
        (full.replace("https://", "http://"), "must be https://HOST[:PORT]"),
        (full.replace(":8443/", ":8443/api"), "must be https://HOST[:PORT]"),
        (full.replace("ca_file=\"/ca.pem\"\n", ""), "missing field `ca_file`"),
        (full.replace("node-1", "node 1"), "sae_id \"node 1\""),
        (full.replace("\"gw_3\"", "\"gw/3\""), "peer \"gw/3\""),
        (full.replace(", \"gw_3\"", ", \"node-1\""), "this node's own sae_id"),
        (full.replace("peers=[\"node-2\", \"gw_3\"]", "peers=[]"), "peers is empty"),
        (full.replace("[qkd.kme.east]", "[qkd.kme.\"a b\"]"), "[qkd.kme.a b]: the name"),
        (format!("{full}timeout_secs=0\n"), "timeout_secs must be in (0, 300]"),
        (format!("{full}tls=true\n"), "unknown field `tls`"),
        (format!("{full}claimed_h=9\n"), "claimed_h must be in (0, 8]"),
        (format!("{full}min_trust=1.5\n"), "min_trust must be in [0, 1]"),
    ];
    for (text, needle) in cases {
        let e = Chain(&Config::from_toml(&format!("{base}{text}")).unwrap_err()).to_string();
        assert!(e.contains(needle), "{text:?}: {e}");
    }
}

#[test]
fn a_qkd_server_needs_its_peers_attestation_and_sizes_its_combiner_can_make() {
    let base = "[[source]]\nname=\"o\"\nkind=\"os\"\n";
    let kme = "[qkd.kme.east]\nurl=\"https://kme-1.example:8443\"\nca_file=\"/ca.pem\"\n\
               cert_file=\"/n.pem\"\nkey_file=\"/n.key\"\nsae_id=\"node-1\"\npeers=[\"node-2\"]\n";
    let serve = "[qkd.serve]\nlisten=\"0.0.0.0:8444\"\ncert_file=\"/n.pem\"\nkey_file=\"/n.key\"\n\
                 client_ca=\"/ca.pem\"\nsaes=[\"gw-1\"]\n";
    let peer = "[qkd.peer.two]\nurl=\"https://node-2:8444\"\nca_file=\"/ca.pem\"\n\
                identity=\"cn:node-2\"\npolicy=\"/p.toml\"\nkme=\"east\"\nkme_sae_id=\"node-2\"\n\
                saes=[\"gw-2\"]\nnode_fingerprint=\"sha3-256:\
                00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n";
    let full = format!("{base}[attest]\n{kme}{serve}{peer}");
    let c = Config::from_toml(&full).unwrap();
    let s = c.qkd_serve.as_ref().unwrap();
    assert_eq!((s.key_size, s.min_key_size, s.max_key_size), (256, 64, 8192));
    assert_eq!((s.max_key_per_request, s.hold), (128, Duration::from_secs(300)));
    assert_eq!(s.combiner, Combiner::Hkdf);
    let p = &c.qkd_peers[0];
    assert_eq!((p.name.as_str(), p.kme.as_str(), p.kme_sae_id.as_str()), ("two", "east", "node-2"));
    assert_eq!(
        p.node_fingerprint.as_deref(),
        Some("sha3-256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
    );
    let qubip = full.replace("saes=[\"gw-1\"]\n", "saes=[\"gw-1\"]\ncombiner=\"qubip-xor\"\n");
    assert!(Config::from_toml(&qubip).unwrap_err().to_string().contains("256-bit keys only"));
    let qubip = qubip.replace(
        "combiner=\"qubip-xor\"\n",
        "combiner=\"qubip-xor\"\nkey_size=256\nmin_key_size=256\nmax_key_size=256\n",
    );
    assert_eq!(Config::from_toml(&qubip).unwrap().qkd_serve.unwrap().combiner, Combiner::QubipXor);
    let cases = [
        (full.replace("[attest]\n", ""), "needs [attest]"),
        (format!("{base}[attest]\n{kme}{serve}"), "needs a [qkd.peer.NAME]"),
        (format!("{base}[attest]\n{kme}{peer}"), "[qkd.peer.NAME] needs [qkd.serve]"),
        (full.replace("kme=\"east\"", "kme=\"west\""), "kme \"west\" names no [qkd.kme.NAME]"),
        (
            full.replace("kme_sae_id=\"node-2\"", "kme_sae_id=\"node-9\""),
            "not among [qkd.kme.east] peers",
        ),
        (
            full.replace("saes=[\"gw-2\"]", "saes=[\"gw-1\"]"),
            "both local (saes) and [qkd.peer.two]'s",
        ),
        (full.replace("identity=\"cn:node-2\"", "identity=\"node-2\""), "identity \"node-2\""),
        (full.replace("https://node-2:8444", "http://node-2:8444"), "must be https://HOST[:PORT]"),
        (full.replace("0.0.0.0:8444", "8444"), "listen \"8444\""),
        (
            full.replace("saes=[\"gw-1\"]\n", "saes=[\"gw-1\"]\ncombiner=\"xor\"\n"),
            "combiner \"xor\"",
        ),
        (full.replace("saes=[\"gw-1\"]\n", "saes=[\"gw-1\"]\nkey_size=100\n"), "multiples of 8"),
        (
            full.replace("saes=[\"gw-1\"]\n", "saes=[\"gw-1\"]\nmax_key_per_request=0\n"),
            "max_key_per_request",
        ),
        (full.replace("00112233", "zz112233"), "node_fingerprint"),
        (full.replace("saes=[\"gw-1\"]", "saes=[]"), "saes is empty"),
        (
            full.replace("identity=\"cn:node-2\"", "identity=\"cn:gw-1\""),
            "certificate of local SAE gw-1",
        ),
        (
            format!(
                "{full}{}",
                peer.replace("peer.two", "peer.three").replace("cn:node-2", "cn:node-3")
            ),
            "list the same SAE",
        ),
        (
            format!("{full}{}", peer.replace("peer.two", "peer.three").replace("gw-2", "gw-3")),
            "have the same identity",
        ),
    ];
    for (text, needle) in cases {
        let e = Chain(&Config::from_toml(&text).unwrap_err()).to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let danger = full.replace("[attest]\n", "") + "[danger]\nqkd_without_ml_kem=true\n";
    assert!(Config::from_toml(&danger).unwrap().danger.qkd_without_ml_kem);
}
