//! `[attest]`: attested keys for the gateway. On when the table is present.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, SealerConfig, error::range};

/// The persistent handle of the attestation key unless configured.
pub(crate) const DEFAULT_AK_HANDLE: u32 = 0x8101_0A7E;
/// The lowest trust score a source must have to seed a gateway key, unless
/// configured.
pub(crate) const DEFAULT_MIN_TRUST: f64 = 0.89;
/// How long a gateway key is valid unless configured (seconds).
pub(crate) const DEFAULT_GATEWAY_KEY_TTL_SECS: u64 = 3600;
/// The longest validity of a gateway key (seconds): a week.
const MAX_GATEWAY_KEY_TTL_SECS: u64 = 7 * 24 * 3600;

/// Attestation settings (`[attest]`). Without the `tpm` feature only
/// `tcti` is read (to refuse it).
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "tpm"), allow(dead_code))]
pub(crate) struct AttestSettings {
    /// The TPM that quotes (`None`: evidence says there is no TPM).
    pub(crate) tcti: Option<String>,
    /// The AK's persistent handle.
    pub(crate) ak_handle: u32,
    /// SHA-256 PCRs every quote covers.
    pub(crate) pcrs: Vec<u8>,
    /// Issuer certificates (PEM or DER files) sent after the EK certificate.
    pub(crate) ek_ca_files: Vec<PathBuf>,
    /// The lowest trust score of the source whose fresh seed a gateway key
    /// is drawn after; below it the request is refused.
    pub(crate) min_trust: f64,
    /// How long after its delivery a gateway key expires (seconds).
    pub(crate) gateway_key_ttl_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAttest {
    tcti: Option<String>,
    tpm: Option<bool>,
    ak_handle: String,
    pcrs: Vec<u8>,
    ek_ca_files: Vec<PathBuf>,
    min_trust: f64,
    gateway_key_ttl_secs: u64,
}

impl Default for RawAttest {
    fn default() -> Self {
        Self {
            tcti: None,
            tpm: None,
            ak_handle: format!("{DEFAULT_AK_HANDLE:#x}"),
            pcrs: (0..8).collect(),
            ek_ca_files: Vec::new(),
            min_trust: DEFAULT_MIN_TRUST,
            gateway_key_ttl_secs: DEFAULT_GATEWAY_KEY_TTL_SECS,
        }
    }
}

impl RawAttest {
    pub(super) fn check(self, sealer: &SealerConfig) -> Result<AttestSettings, ConfigError> {
        let hex = self.ak_handle.trim_start_matches("0x").trim_start_matches("0X");
        let ak_handle = u32::from_str_radix(hex, 16)
            .ok()
            .filter(|h| (0x8100_0000..=0x81FF_FFFF).contains(h))
            .ok_or_else(|| ConfigError::OutOfRange {
                key: "attest.ak_handle",
                allowed: "a persistent handle, 0x81000000..=0x81ffffff",
                value: format!("{:?}", self.ak_handle),
            })?;
        if let Some(bad) = self.pcrs.iter().find(|&&p| p > 23) {
            range(false, "attest.pcrs", "PCRs 0..=23", bad)?;
        }
        let mut pcrs = self.pcrs;
        pcrs.sort_unstable();
        pcrs.dedup();
        range(!pcrs.is_empty(), "attest.pcrs", "at least one PCR", "[]")?;
        range(
            (0.0..=1.0).contains(&self.min_trust),
            "attest.min_trust",
            "within 0..=1",
            self.min_trust,
        )?;
        range(
            (1..=MAX_GATEWAY_KEY_TTL_SECS).contains(&self.gateway_key_ttl_secs),
            "attest.gateway_key_ttl_secs",
            "1..=604800 (a week)",
            self.gateway_key_ttl_secs,
        )?;
        // The TPM: the one named, else the sealer's; `tpm = false` says none.
        let tcti = match (self.tpm, self.tcti, sealer) {
            (Some(false), Some(_), _) => {
                return Err(ConfigError::Inconsistent(
                    "attest.tpm = false and attest.tcti contradict each other",
                ));
            }
            (Some(false), None, _) => None,
            (_, Some(t), _) => Some(t),
            (_, None, SealerConfig::Tpm { tcti, .. }) => Some(tcti.clone()),
            (Some(true), None, _) => {
                return Err(ConfigError::Inconsistent(
                    "attest.tpm = true needs attest.tcti (or keys.sealer = \"tpm\")",
                ));
            }
            (None, None, _) => None,
        };
        Ok(AttestSettings {
            tcti,
            ak_handle,
            pcrs,
            ek_ca_files: self.ek_ca_files,
            min_trust: self.min_trust,
            gateway_key_ttl_secs: self.gateway_key_ttl_secs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<AttestSettings, ConfigError> {
        toml::from_str::<RawAttest>(text).unwrap().check(&SealerConfig::Soft { key_file: None })
    }

    #[test]
    fn gateway_keys_need_trust_089_and_live_an_hour_by_default() {
        let s = check("").unwrap();
        assert_eq!(s.min_trust, 0.89);
        assert_eq!(s.gateway_key_ttl_secs, 3600);
        let s = check("min_trust = 1.0\ngateway_key_ttl_secs = 60").unwrap();
        assert_eq!((s.min_trust, s.gateway_key_ttl_secs), (1.0, 60));
    }

    #[test]
    fn attest_values_out_of_range_are_refused_with_their_key() {
        for (text, want) in [
            ("min_trust = 1.01", "attest.min_trust"),
            ("min_trust = -0.1", "attest.min_trust"),
            ("min_trust = nan", "attest.min_trust"),
            ("gateway_key_ttl_secs = 0", "attest.gateway_key_ttl_secs"),
            ("gateway_key_ttl_secs = 604801", "attest.gateway_key_ttl_secs"),
            ("pcrs = [24]", "attest.pcrs"),
            ("ak_handle = \"0x80000000\"", "attest.ak_handle"),
        ] {
            match check(text) {
                Err(ConfigError::OutOfRange { key, .. }) => assert_eq!(key, want, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
