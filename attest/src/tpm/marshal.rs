//! Marshalling of the structures the parsers read, for tests: synthetic
//! quotes signed by a software "AK".

use p256::ecdsa::VerifyingKey;

use super::{
    Attest, Attested, EcdsaSignature, TPM_ALG_ECC, TPM_ALG_ECDSA, TPM_ALG_NULL, TPM_ALG_SHA256,
    TPM_ECC_NIST_P256, TPMA_OBJECT_FIXED_PARENT, TPMA_OBJECT_FIXED_TPM, TPMA_OBJECT_RESTRICTED,
    TPMA_OBJECT_SENSITIVE_DATA_ORIGIN, TPMA_OBJECT_SIGN,
};

/// `TPMA_OBJECT` of a key made by `tpm2_createak`: fixedTPM, fixedParent,
/// sensitiveDataOrigin, userWithAuth, restricted, sign.
pub(crate) const AK_ATTRIBUTES: u32 = TPMA_OBJECT_FIXED_TPM
    | TPMA_OBJECT_FIXED_PARENT
    | TPMA_OBJECT_SENSITIVE_DATA_ORIGIN
    | (1 << 6)
    | TPMA_OBJECT_RESTRICTED
    | TPMA_OBJECT_SIGN;

fn tpm2b(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&u16::try_from(v.len()).expect("test TPM2B fits").to_be_bytes());
    out.extend_from_slice(v);
}

impl Attest {
    /// The marshalled `TPMS_ATTEST`.
    pub(crate) fn marshal(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.magic.to_be_bytes());
        out.extend_from_slice(&self.st.to_be_bytes());
        tpm2b(&mut out, &self.qualified_signer);
        tpm2b(&mut out, &self.extra_data);
        out.extend_from_slice(&self.clock_info.clock.to_be_bytes());
        out.extend_from_slice(&self.clock_info.reset_count.to_be_bytes());
        out.extend_from_slice(&self.clock_info.restart_count.to_be_bytes());
        out.push(self.clock_info.safe);
        out.extend_from_slice(&self.firmware_version.to_be_bytes());
        match &self.attested {
            Attested::Quote(q) => {
                let count = u32::try_from(q.pcr_select.len()).expect("few banks");
                out.extend_from_slice(&count.to_be_bytes());
                for sel in &q.pcr_select {
                    out.extend_from_slice(&sel.hash.to_be_bytes());
                    out.push(u8::try_from(sel.select.len()).expect("short bitmap"));
                    out.extend_from_slice(&sel.select);
                }
                tpm2b(&mut out, &q.pcr_digest);
            }
            Attested::Certify(c) => {
                tpm2b(&mut out, &c.name);
                tpm2b(&mut out, &c.qualified_name);
            }
            Attested::Other(body) => out.extend_from_slice(body),
        }
        out
    }
}

impl EcdsaSignature {
    /// The marshalled `TPMT_SIGNATURE`.
    pub(crate) fn marshal(&self) -> Vec<u8> {
        let mut out = TPM_ALG_ECDSA.to_be_bytes().to_vec();
        out.extend_from_slice(&self.hash.to_be_bytes());
        tpm2b(&mut out, &self.r);
        tpm2b(&mut out, &self.s);
        out
    }

    /// A TPM-style ECDSA-SHA256 signature from p256's.
    pub(crate) fn from_p256(sig: &p256::ecdsa::Signature) -> Self {
        let (r, s) = sig.split_bytes();
        Self { hash: TPM_ALG_SHA256, r: r.to_vec(), s: s.to_vec() }
    }
}

/// The fields of an ECC `TPMT_PUBLIC` a test may vary.
pub(crate) struct PublicSpec {
    pub(crate) name_alg: u16,
    pub(crate) attributes: u32,
    pub(crate) scheme: u16,
    pub(crate) curve: u16,
    pub(crate) x: Vec<u8>,
    pub(crate) y: Vec<u8>,
}

impl PublicSpec {
    /// An AK as `tpm2_createak -G ecc -g sha256 -s ecdsa` makes it.
    pub(crate) fn ak(key: &VerifyingKey) -> Self {
        let point = key.to_sec1_point(false);
        let bytes = point.as_bytes();
        Self {
            name_alg: TPM_ALG_SHA256,
            attributes: AK_ATTRIBUTES,
            scheme: TPM_ALG_ECDSA,
            curve: TPM_ECC_NIST_P256,
            x: bytes[1..33].to_vec(),
            y: bytes[33..65].to_vec(),
        }
    }

    /// The marshalled `TPM2B_PUBLIC`, with its size.
    pub(crate) fn marshal(&self) -> Vec<u8> {
        let mut area = TPM_ALG_ECC.to_be_bytes().to_vec();
        area.extend_from_slice(&self.name_alg.to_be_bytes());
        area.extend_from_slice(&self.attributes.to_be_bytes());
        tpm2b(&mut area, &[]);
        area.extend_from_slice(&TPM_ALG_NULL.to_be_bytes());
        area.extend_from_slice(&self.scheme.to_be_bytes());
        if self.scheme != TPM_ALG_NULL {
            area.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        }
        area.extend_from_slice(&self.curve.to_be_bytes());
        area.extend_from_slice(&TPM_ALG_NULL.to_be_bytes());
        tpm2b(&mut area, &self.x);
        tpm2b(&mut area, &self.y);
        let mut out = Vec::new();
        tpm2b(&mut out, &area);
        out
    }
}
