//! A TPM 2.0's random number generator (`TPM2_GetRandom`).

use std::{io, path::PathBuf, str::FromStr as _};

use tss_esapi::{Context, tcti_ldr::TctiNameConf};

use crate::{EntropySource, Error, SourceInfo};

/// The most `TPM2_GetRandom` gives per call (the size of the largest digest).
pub const MAX_PER_CALL: usize = 64;
/// Calls per read: a read holds the TPM for at most this many commands, so the
/// sealer and the attestor (a TPM serves one connection at a time through
/// swtpm) wait no longer than that.
const CALLS_PER_READ: usize = 16;

/// Reads `TPM2_GetRandom` of the TPM at a TCTI. The TPM's output comes from its
/// own DRBG (conditioned), so, as with the OS source, the claim is a policy
/// choice and the health tests catch outright failure. The TPM is connected
/// per read and released after it, like the TPM sealer does.
#[derive(Debug)]
pub struct TpmSource {
    info: SourceInfo,
    tcti: String,
}

impl TpmSource {
    /// A source on the TPM at `tcti` (e.g. `device:/dev/tpmrm0`).
    pub fn new(name: &str, tcti: &str, claimed_h: f64) -> Result<Self, Error> {
        TctiNameConf::from_str(tcti).map_err(|e| Error::Config(format!("TCTI {tcti:?}: {e}")))?;
        Ok(Self {
            info: SourceInfo {
                name: name.to_owned(),
                kind: "tpm",
                identity: tcti.to_owned(),
                bits_per_sample: 8,
                claimed_h,
            },
            tcti: tcti.to_owned(),
        })
    }

    fn unavailable(&self, what: String) -> Error {
        Error::Unavailable { path: PathBuf::from(&self.tcti), source: Some(io::Error::other(what)) }
    }
}

impl EntropySource for TpmSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let tcti = TctiNameConf::from_str(&self.tcti)
            .map_err(|e| Error::Config(format!("TCTI {:?}: {e}", self.tcti)))?;
        let mut ctx = Context::new(tcti).map_err(|e| self.unavailable(e.to_string()))?;
        let want = buf.len().min(MAX_PER_CALL * CALLS_PER_READ);
        let mut got = 0;
        while got < want {
            let n = (want - got).min(MAX_PER_CALL);
            let random = ctx.get_random(n).map_err(|e| self.unavailable(e.to_string()))?;
            let bytes = random.value();
            if bytes.is_empty() {
                break;
            }
            let n = bytes.len().min(want - got);
            buf[got..got + n].copy_from_slice(&bytes[..n]);
            got += n;
        }
        if got == 0 {
            return Err(self.unavailable("TPM2_GetRandom gave no bytes".into()));
        }
        Ok(got)
    }
}
