//! `[attest]`: attested keys for the gateway. On when the table is present.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, SealerConfig, error::range};

/// The persistent handle of the attestation key unless configured.
pub(crate) const DEFAULT_AK_HANDLE: u32 = 0x8101_0A7E;

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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAttest {
    tcti: Option<String>,
    tpm: Option<bool>,
    ak_handle: String,
    pcrs: Vec<u8>,
    ek_ca_files: Vec<PathBuf>,
}

impl Default for RawAttest {
    fn default() -> Self {
        Self {
            tcti: None,
            tpm: None,
            ak_handle: format!("{DEFAULT_AK_HANDLE:#x}"),
            pcrs: (0..8).collect(),
            ek_ca_files: Vec::new(),
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
        Ok(AttestSettings { tcti, ak_handle, pcrs, ek_ca_files: self.ek_ca_files })
    }
}
