//! The verifier's policy: which AKs, PCR values, algorithms, sealers and
//! trust scores it accepts, read from TOML and checked into [`Policy`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;
use crate::evidence::SealerKind;
use crate::tpm::TPM_ALG_SHA256;

/// The key algorithms a statement may name (their API names).
pub const ALGORITHMS: [&str; 6] =
    ["ml-kem-512", "ml-kem-768", "ml-kem-1024", "ml-dsa-44", "ml-dsa-65", "ml-dsa-87"];

/// Where the verifier keeps its state unless the policy says otherwise.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/gateway/qkeyd-verifier.json";

/// What the verifier accepts. [`Policy::default`] accepts only TPM-quoted
/// evidence of keys sealed by a TPM or an HSM, from sources trusted at 0.89
/// or more, made in the last 300 s; it trusts no AK until
/// `trusted_ak_names` lists one, so it refuses everything until then.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// AK Names (`0x000b || SHA-256(TPMT_PUBLIC)`) whose quotes count.
    pub trusted_ak_names: Vec<Vec<u8>>,
    /// Refuse evidence without a TPM quote.
    pub require_tpm: bool,
    /// Expected values of PCRs in the sha256 bank (each must be quoted).
    pub pcrs: BTreeMap<u32, [u8; 32]>,
    /// Expected `pcrDigest` of the quote.
    pub pcr_digest: Option<[u8; 32]>,
    /// Key algorithms accepted (API names, see [`ALGORITHMS`]).
    pub algorithms: Vec<String>,
    /// Sealer kinds accepted.
    pub sealers: Vec<SealerKind>,
    /// Lowest trust score accepted for every source the key came from.
    pub min_trust: f64,
    /// Oldest statement accepted, in seconds.
    pub max_age_secs: u64,
    /// TPM `firmwareVersion`s accepted; empty accepts any.
    pub firmware_versions: Vec<u64>,
    /// EK CA certificates (DER): when any are given, the evidence's EK
    /// certificate must be the one enrolled with its AK (`enrolled_eks`) and
    /// its chain must lead to one of them (TOML: `ek_roots`, base64 DER), so
    /// removing an EK CA refuses every node under it.
    pub ek_roots: Vec<Vec<u8>>,
    /// SHA-256 of the EK certificate each AK was enrolled with, by AK Name
    /// (TOML: `enrolled_eks = { "<ak name hex>" = "<sha256 hex>" }`, written by
    /// `qkeyd attest admit`).
    pub enrolled_eks: BTreeMap<Vec<u8>, [u8; 32]>,
    /// The verifier state (nonces seen, counters per AK), which the caller
    /// loads and saves around [`verify`](crate::verify()).
    pub state_file: PathBuf,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            trusted_ak_names: Vec::new(),
            require_tpm: true,
            pcrs: BTreeMap::new(),
            pcr_digest: None,
            algorithms: ALGORITHMS.iter().map(|a| (*a).to_owned()).collect(),
            sealers: vec![SealerKind::Tpm, SealerKind::Hsm],
            min_trust: 0.89,
            max_age_secs: 300,
            firmware_versions: Vec::new(),
            ek_roots: Vec::new(),
            enrolled_eks: BTreeMap::new(),
            state_file: PathBuf::from(DEFAULT_STATE_FILE),
        }
    }
}

/// The policy file as written; every key is optional and defaults to
/// [`Policy::default`]'s value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPolicy {
    trusted_ak_names: Vec<String>,
    require_tpm: bool,
    pcrs: BTreeMap<String, String>,
    pcr_digest: Option<String>,
    algorithms: Vec<String>,
    sealers: Vec<SealerKind>,
    min_trust: f64,
    max_age_secs: u64,
    firmware_versions: Vec<FirmwareVersion>,
    ek_roots: Vec<String>,
    enrolled_eks: BTreeMap<String, String>,
    state_file: PathBuf,
}

impl Default for RawPolicy {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            trusted_ak_names: Vec::new(),
            require_tpm: p.require_tpm,
            pcrs: BTreeMap::new(),
            pcr_digest: None,
            algorithms: p.algorithms,
            sealers: p.sealers,
            min_trust: p.min_trust,
            max_age_secs: p.max_age_secs,
            firmware_versions: Vec::new(),
            ek_roots: Vec::new(),
            enrolled_eks: BTreeMap::new(),
            state_file: p.state_file,
        }
    }
}

/// A `firmwareVersion`: a TOML integer, or a string in decimal or `0x` hex
/// for values above `i64::MAX`, which TOML integers cannot hold.
#[derive(Deserialize)]
#[serde(untagged)]
enum FirmwareVersion {
    Int(i64),
    Text(String),
}

impl Policy {
    /// Parse and check a TOML policy.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        let raw: RawPolicy = toml::from_str(text).map_err(Error::PolicyParse)?;
        let trusted_ak_names =
            raw.trusted_ak_names.iter().map(|n| ak_name(n)).collect::<Result<Vec<_>, _>>()?;
        let mut pcrs = BTreeMap::new();
        for (k, v) in &raw.pcrs {
            let index = k
                .parse::<u32>()
                .ok()
                .filter(|i| *i < 256)
                .ok_or_else(|| value("pcrs", format!("`{k}` is not a PCR index (0 to 255)")))?;
            pcrs.insert(index, digest32("pcrs", v)?);
        }
        let pcr_digest =
            raw.pcr_digest.as_deref().map(|d| digest32("pcr_digest", d)).transpose()?;
        for a in &raw.algorithms {
            if !ALGORITHMS.contains(&a.as_str()) {
                return Err(value(
                    "algorithms",
                    format!("unknown algorithm `{a}`; known: {}", ALGORITHMS.join(", ")),
                ));
            }
        }
        if !(raw.min_trust.is_finite() && (0.0..=1.0).contains(&raw.min_trust)) {
            return Err(value(
                "min_trust",
                format!("{} is not a score from 0 to 1", raw.min_trust),
            ));
        }
        if raw.max_age_secs == 0 {
            return Err(value("max_age_secs", "must be at least 1 second".into()));
        }
        let firmware_versions = raw
            .firmware_versions
            .iter()
            .map(|f| match f {
                FirmwareVersion::Int(i) => u64::try_from(*i)
                    .map_err(|_| value("firmware_versions", format!("{i} is negative"))),
                FirmwareVersion::Text(t) => {
                    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                        Some(h) => u64::from_str_radix(h, 16),
                        None => t.parse::<u64>(),
                    };
                    parsed.map_err(|_| {
                        value(
                            "firmware_versions",
                            format!("`{t}` is not a u64 (decimal or 0x hex)"),
                        )
                    })
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ek_roots = raw
            .ek_roots
            .iter()
            .map(|r| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(r.trim())
                    .map_err(|e| value("ek_roots", format!("not base64 DER: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut enrolled_eks = BTreeMap::new();
        for (name, ek) in &raw.enrolled_eks {
            enrolled_eks.insert(ak_name(name)?, digest32("enrolled_eks", ek)?);
        }
        Ok(Self {
            ek_roots,
            enrolled_eks,
            trusted_ak_names,
            require_tpm: raw.require_tpm,
            pcrs,
            pcr_digest,
            algorithms: raw.algorithms,
            sealers: raw.sealers,
            min_trust: raw.min_trust,
            max_age_secs: raw.max_age_secs,
            firmware_versions,
            state_file: raw.state_file,
        })
    }

    /// Read and check a TOML policy file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Io { path: path.to_owned(), source })?;
        Self::from_toml(&text)
    }
}

fn value(key: &'static str, reason: String) -> Error {
    Error::PolicyValue { key, reason }
}

fn digest32(key: &'static str, text: &str) -> Result<[u8; 32], Error> {
    let bytes = hex::decode(text).map_err(|e| value(key, format!("`{text}`: bad hex ({e})")))?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        value(key, format!("`{text}` is {} bytes, a SHA-256 value is 32", bytes.len()))
    })
}

fn ak_name(text: &str) -> Result<Vec<u8>, Error> {
    let key = "trusted_ak_names";
    let bytes = hex::decode(text).map_err(|e| value(key, format!("`{text}`: bad hex ({e})")))?;
    if bytes.len() != 34 || bytes[..2] != TPM_ALG_SHA256.to_be_bytes() {
        return Err(value(
            key,
            format!("`{text}` is not a SHA-256 Name (000b followed by 32 bytes in hex)"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_default_policy() {
        assert_eq!(Policy::from_toml("").unwrap(), Policy::default());
        let p = Policy::default();
        assert!(p.require_tpm);
        assert_eq!(p.min_trust, 0.89);
        assert_eq!(p.max_age_secs, 300);
        assert_eq!(p.algorithms.len(), 6);
        assert_eq!(p.sealers, [SealerKind::Tpm, SealerKind::Hsm]);
    }

    #[test]
    fn every_key_parses() {
        let name = format!("000b{}", "ab".repeat(32));
        let text = format!(
            r#"
trusted_ak_names = ["{name}"]
require_tpm = false
pcrs = {{ "0" = "{z}", "7" = "{z}" }}
pcr_digest = "{z}"
algorithms = ["ml-kem-768", "ml-dsa-87"]
sealers = ["tpm", "hsm", "soft"]
min_trust = 0.5
max_age_secs = 60
firmware_versions = [1, "0xffffffffffffffff", "42"]
state_file = "/tmp/state.json"
"#,
            z = "00".repeat(32)
        );
        let p = Policy::from_toml(&text).unwrap();
        assert_eq!(p.trusted_ak_names, [hex::decode(&name).unwrap()]);
        assert!(!p.require_tpm);
        assert_eq!(p.pcrs.keys().copied().collect::<Vec<_>>(), [0, 7]);
        assert_eq!(p.pcr_digest, Some([0; 32]));
        assert_eq!(p.sealers.len(), 3);
        assert_eq!(p.min_trust, 0.5);
        assert_eq!(p.max_age_secs, 60);
        assert_eq!(p.firmware_versions, [1, u64::MAX, 42]);
        assert_eq!(p.state_file, PathBuf::from("/tmp/state.json"));
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let cases = [
            ("trusted_ak_names = [\"000c00\"]", "trusted_ak_names"),
            ("trusted_ak_names = [\"zz\"]", "trusted_ak_names"),
            ("pcrs = { \"x\" = \"00\" }", "pcrs"),
            ("pcrs = { \"1\" = \"00\" }", "pcrs"),
            ("pcr_digest = \"0g\"", "pcr_digest"),
            ("algorithms = [\"rsa-2048\"]", "algorithms"),
            ("min_trust = 1.5", "min_trust"),
            ("max_age_secs = 0", "max_age_secs"),
            ("firmware_versions = [-1]", "firmware_versions"),
            ("firmware_versions = [\"0xq\"]", "firmware_versions"),
        ];
        for (text, want) in cases {
            match Policy::from_toml(text) {
                Err(Error::PolicyValue { key, .. }) => assert_eq!(key, want, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(Policy::from_toml("sealers = [\"usb\"]"), Err(Error::PolicyParse(_))));
        assert!(matches!(Policy::from_toml("unknown = 1"), Err(Error::PolicyParse(_))));
    }
}
