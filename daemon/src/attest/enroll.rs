//! Enrollment, the node's side: open a registrar's MakeCredential challenge
//! with TPM2_ActivateCredential, proving the AK lives in the TPM whose EK
//! certificate the registrar checked.

use super::{AttestError, Attestor};

impl Attestor {
    /// Open a challenge; the secret goes back to the registrar.
    pub(crate) fn activate(
        &self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, AttestError> {
        #[cfg(feature = "tpm")]
        if let Some(t) = &self.tpm {
            return t
                .attester
                .activate_credential(credential_blob, encrypted_secret)
                .map_err(AttestError::Tpm);
        }
        let _ = (credential_blob, encrypted_secret);
        Err(AttestError::NoTpm)
    }
}
