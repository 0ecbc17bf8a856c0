//! Parsers for the TPM 2.0 structures a quote is made of (TPM 2.0 Library,
//! Part 2 "Structures"): `TPMS_ATTEST` (§10.12.12), `TPMT_SIGNATURE`
//! (§11.3.4) and the `TPM2B_PUBLIC` of an ECC P-256 attestation key
//! (§12.2.5), with the key's Name (§16, Part 1).
//!
//! All integers are big-endian. Every parser checks each length against
//! what is left and against the specification's limit, and refuses bytes
//! left over after the structure: a structure has one encoding here, so a
//! signature over it cannot be stretched over another reading.

use p256::ecdsa::VerifyingKey;
use sha2::{Digest as _, Sha256};

use crate::Error;

#[cfg(test)]
pub(crate) mod marshal;

/// `TPM_GENERATED_VALUE`: the magic of every structure the TPM signs itself.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_QUOTE`: `TPMS_ATTEST` of TPM2_Quote.
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_ST_ATTEST_CERTIFY`: `TPMS_ATTEST` of TPM2_Certify.
pub const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
/// `TPM_ALG_SHA256`.
pub const TPM_ALG_SHA256: u16 = 0x000b;
/// `TPM_ALG_NULL`.
pub const TPM_ALG_NULL: u16 = 0x0010;
/// `TPM_ALG_ECDSA`.
pub const TPM_ALG_ECDSA: u16 = 0x0018;
/// `TPM_ALG_ECC`: the type of an ECC key's `TPMT_PUBLIC`.
pub const TPM_ALG_ECC: u16 = 0x0023;
/// `TPM_ECC_NIST_P256`.
pub const TPM_ECC_NIST_P256: u16 = 0x0003;

/// `TPMA_OBJECT.fixedTPM`: the key cannot leave this TPM.
pub const TPMA_OBJECT_FIXED_TPM: u32 = 1 << 1;
/// `TPMA_OBJECT.fixedParent`.
pub const TPMA_OBJECT_FIXED_PARENT: u32 = 1 << 4;
/// `TPMA_OBJECT.sensitiveDataOrigin`: the TPM generated the private key.
pub const TPMA_OBJECT_SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
/// `TPMA_OBJECT.restricted`: the key signs only digests the TPM made itself,
/// so it cannot sign a `TPMS_ATTEST` that it did not produce.
pub const TPMA_OBJECT_RESTRICTED: u32 = 1 << 16;
/// `TPMA_OBJECT.decrypt`.
pub const TPMA_OBJECT_DECRYPT: u32 = 1 << 17;
/// `TPMA_OBJECT.sign`.
pub const TPMA_OBJECT_SIGN: u32 = 1 << 18;

/// `sizeof(TPMU_NAME)`: a digest with its algorithm, SHA-512 at most.
const MAX_NAME: usize = 2 + 64;
/// `sizeof(TPMT_HA)`, the limit of `TPM2B_DATA`.
const MAX_DATA: usize = 2 + 64;
/// `sizeof(TPMU_HA)`, the limit of `TPM2B_DIGEST`.
const MAX_DIGEST: usize = 64;
/// P-256 coordinates and signature halves.
const P256_BYTES: usize = 32;
/// `HASH_COUNT` bound: no TPM has more PCR banks.
const MAX_PCR_BANKS: u32 = 16;
/// `PCR_SELECT_MAX` bound: 256 PCRs, far above any TPM's 24.
const MAX_PCR_SELECT: usize = 32;

/// A parsed `TPMS_ATTEST`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Attest {
    /// `magic`: [`TPM_GENERATED_VALUE`] when the TPM made the structure.
    pub magic: u32,
    /// `type`: which command attested ([`TPM_ST_ATTEST_QUOTE`], ...).
    pub st: u16,
    /// `qualifiedSigner`: the signing key's qualified Name.
    pub qualified_signer: Vec<u8>,
    /// `extraData`: the caller's qualifying data.
    pub extra_data: Vec<u8>,
    /// `clockInfo`.
    pub clock_info: ClockInfo,
    /// `firmwareVersion`: vendor-specific.
    pub firmware_version: u64,
    /// `attested`: the part that depends on `type`.
    pub attested: Attested,
}

/// `TPMS_CLOCK_INFO`.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct ClockInfo {
    /// `clock`: milliseconds the TPM has been powered, persisted.
    pub clock: u64,
    /// `resetCount`: TPM Resets since the last TPM2_Clear.
    pub reset_count: u32,
    /// `restartCount`: TPM Restarts and Resumes since the last TPM Reset.
    pub restart_count: u32,
    /// `safe`: 1 when `clock` has not gone back since it was last reported.
    pub safe: u8,
}

/// `TPMU_ATTEST`, as far as this crate reads it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Attested {
    /// `TPMS_QUOTE_INFO` (type [`TPM_ST_ATTEST_QUOTE`]).
    Quote(QuoteInfo),
    /// `TPMS_CERTIFY_INFO` (type [`TPM_ST_ATTEST_CERTIFY`]).
    Certify(CertifyInfo),
    /// Any other attestation type, its body not interpreted.
    Other(Vec<u8>),
}

/// `TPMS_QUOTE_INFO`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct QuoteInfo {
    /// `pcrSelect`: the quoted PCRs, one entry per bank.
    pub pcr_select: Vec<PcrSelection>,
    /// `pcrDigest`: the digest of the selected PCRs' values.
    pub pcr_digest: Vec<u8>,
}

/// `TPMS_CERTIFY_INFO`.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct CertifyInfo {
    /// `name`: the certified object's Name.
    pub name: Vec<u8>,
    /// `qualifiedName`.
    pub qualified_name: Vec<u8>,
}

/// `TPMS_PCR_SELECTION`: a bank and a bitmap of its PCRs.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct PcrSelection {
    /// `hash`: the bank's algorithm.
    pub hash: u16,
    /// `pcrSelect`: bit `i` of byte `j` selects PCR `8 * j + i`.
    pub select: Vec<u8>,
}

impl PcrSelection {
    /// The selected PCR indices in ascending order: the order in which the
    /// TPM concatenates their values for `pcrDigest`.
    pub fn indices(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for (j, byte) in (0u32..).zip(&self.select) {
            for i in 0..8 {
                if byte & (1 << i) != 0 {
                    out.push(8 * j + i);
                }
            }
        }
        out
    }
}

/// A parsed `TPMT_SIGNATURE` of scheme ECDSA.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct EcdsaSignature {
    /// `hash`: the digest the TPM signed with.
    pub hash: u16,
    /// `signatureR`, as the TPM gave it (leading zeros may be stripped).
    pub r: Vec<u8>,
    /// `signatureS`.
    pub s: Vec<u8>,
}

/// A parsed `TPM2B_PUBLIC` of an ECC NIST P-256 signing key.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct EccPublic {
    /// `nameAlg`: [`TPM_ALG_SHA256`] (the only one accepted).
    pub name_alg: u16,
    /// `objectAttributes` (`TPMA_OBJECT_*` bits).
    pub object_attributes: u32,
    /// `authPolicy`.
    pub auth_policy: Vec<u8>,
    /// The signing scheme's hash, `None` when the scheme is `TPM_ALG_NULL`.
    pub scheme_hash: Option<u16>,
    /// `unique.x`.
    pub x: Vec<u8>,
    /// `unique.y`.
    pub y: Vec<u8>,
    /// The marshalled `TPMT_PUBLIC` as read: its digest is the Name.
    public_area: Vec<u8>,
}

impl Attest {
    /// Parse a marshalled `TPMS_ATTEST` (the body of a `TPM2B_ATTEST`,
    /// without its size). The magic and type are returned as read, for the
    /// caller to check.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let magic = r.u32("TPMS_ATTEST.magic")?;
        let st = r.u16("TPMS_ATTEST.type")?;
        let qualified_signer = r.tpm2b("TPMS_ATTEST.qualifiedSigner", MAX_NAME)?.to_vec();
        let extra_data = r.tpm2b("TPMS_ATTEST.extraData", MAX_DATA)?.to_vec();
        let clock_info = ClockInfo {
            clock: r.u64("TPMS_CLOCK_INFO.clock")?,
            reset_count: r.u32("TPMS_CLOCK_INFO.resetCount")?,
            restart_count: r.u32("TPMS_CLOCK_INFO.restartCount")?,
            safe: r.u8("TPMS_CLOCK_INFO.safe")?,
        };
        let firmware_version = r.u64("TPMS_ATTEST.firmwareVersion")?;
        let attested = match st {
            TPM_ST_ATTEST_QUOTE => Attested::Quote(QuoteInfo {
                pcr_select: pcr_selection_list(&mut r)?,
                pcr_digest: r.tpm2b("TPMS_QUOTE_INFO.pcrDigest", MAX_DIGEST)?.to_vec(),
            }),
            TPM_ST_ATTEST_CERTIFY => Attested::Certify(CertifyInfo {
                name: r.tpm2b("TPMS_CERTIFY_INFO.name", MAX_NAME)?.to_vec(),
                qualified_name: r.tpm2b("TPMS_CERTIFY_INFO.qualifiedName", MAX_NAME)?.to_vec(),
            }),
            _ => Attested::Other(r.rest().to_vec()),
        };
        r.finish("TPMS_ATTEST")?;
        Ok(Self { magic, st, qualified_signer, extra_data, clock_info, firmware_version, attested })
    }
}

/// `TPML_PCR_SELECTION`.
fn pcr_selection_list(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>, Error> {
    let count = r.u32("TPML_PCR_SELECTION.count")?;
    if count > MAX_PCR_BANKS {
        return Err(Error::TooLarge {
            what: "TPML_PCR_SELECTION.count",
            size: count as usize,
            max: MAX_PCR_BANKS as usize,
        });
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let hash = r.u16("TPMS_PCR_SELECTION.hash")?;
        let size = usize::from(r.u8("TPMS_PCR_SELECTION.sizeofSelect")?);
        if size > MAX_PCR_SELECT {
            return Err(Error::TooLarge {
                what: "TPMS_PCR_SELECTION.sizeofSelect",
                size,
                max: MAX_PCR_SELECT,
            });
        }
        let select = r.take(size, "TPMS_PCR_SELECTION.pcrSelect")?.to_vec();
        out.push(PcrSelection { hash, select });
    }
    Ok(out)
}

impl EcdsaSignature {
    /// Parse a marshalled `TPMT_SIGNATURE`; any scheme but ECDSA is refused.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let alg = r.u16("TPMT_SIGNATURE.sigAlg")?;
        if alg != TPM_ALG_ECDSA {
            return Err(Error::Unsupported {
                what: "TPMT_SIGNATURE.sigAlg",
                value: alg.into(),
                expected: "TPM_ALG_ECDSA (0x0018): the AK must be an ECDSA P-256 key",
            });
        }
        let hash = r.u16("TPMS_SIGNATURE_ECDSA.hash")?;
        let sig_r = r.tpm2b("TPMS_SIGNATURE_ECDSA.signatureR", P256_BYTES)?.to_vec();
        let sig_s = r.tpm2b("TPMS_SIGNATURE_ECDSA.signatureS", P256_BYTES)?.to_vec();
        r.finish("TPMT_SIGNATURE")?;
        Ok(Self { hash, r: sig_r, s: sig_s })
    }

    /// The signature as p256 takes it; `None` when r or s is zero or not
    /// below the group order.
    pub fn to_p256(&self) -> Option<p256::ecdsa::Signature> {
        p256::ecdsa::Signature::from_scalars(pad32(&self.r), pad32(&self.s)).ok()
    }
}

impl EccPublic {
    /// Parse a marshalled `TPM2B_PUBLIC` (with its 2-byte size) that must
    /// hold an ECC NIST P-256 signing key: symmetric `TPM_ALG_NULL`, scheme
    /// ECDSA or NULL, KDF NULL, name algorithm SHA-256.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let mut outer = Reader::new(bytes);
        let public_area = outer.tpm2b("TPM2B_PUBLIC", usize::from(u16::MAX))?;
        outer.finish("TPM2B_PUBLIC")?;
        let mut r = Reader::new(public_area);
        expect(
            r.u16("TPMT_PUBLIC.type")?,
            TPM_ALG_ECC,
            "TPMT_PUBLIC.type",
            "TPM_ALG_ECC (0x0023)",
        )?;
        let name_alg = r.u16("TPMT_PUBLIC.nameAlg")?;
        expect(name_alg, TPM_ALG_SHA256, "TPMT_PUBLIC.nameAlg", "TPM_ALG_SHA256 (0x000b)")?;
        let object_attributes = r.u32("TPMT_PUBLIC.objectAttributes")?;
        let auth_policy = r.tpm2b("TPMT_PUBLIC.authPolicy", MAX_DIGEST)?.to_vec();
        expect(
            r.u16("TPMS_ECC_PARMS.symmetric")?,
            TPM_ALG_NULL,
            "TPMS_ECC_PARMS.symmetric",
            "TPM_ALG_NULL (0x0010) for a signing key",
        )?;
        let scheme_hash = match r.u16("TPMS_ECC_PARMS.scheme")? {
            TPM_ALG_NULL => None,
            TPM_ALG_ECDSA => Some(r.u16("TPMS_SCHEME_ECDSA.hashAlg")?),
            other => {
                return Err(Error::Unsupported {
                    what: "TPMS_ECC_PARMS.scheme",
                    value: other.into(),
                    expected: "TPM_ALG_ECDSA (0x0018) or TPM_ALG_NULL (0x0010)",
                });
            }
        };
        expect(
            r.u16("TPMS_ECC_PARMS.curveID")?,
            TPM_ECC_NIST_P256,
            "TPMS_ECC_PARMS.curveID",
            "TPM_ECC_NIST_P256 (0x0003)",
        )?;
        expect(r.u16("TPMS_ECC_PARMS.kdf")?, TPM_ALG_NULL, "TPMS_ECC_PARMS.kdf", "TPM_ALG_NULL")?;
        let x = r.tpm2b("TPMS_ECC_POINT.x", P256_BYTES)?.to_vec();
        let y = r.tpm2b("TPMS_ECC_POINT.y", P256_BYTES)?.to_vec();
        r.finish("TPMT_PUBLIC")?;
        Ok(Self {
            name_alg,
            object_attributes,
            auth_policy,
            scheme_hash,
            x,
            y,
            public_area: public_area.to_vec(),
        })
    }

    /// The marshalled `TPMT_PUBLIC` as it was read.
    pub fn public_area(&self) -> &[u8] {
        &self.public_area
    }

    /// The key's Name: `nameAlg || SHA-256(TPMT_PUBLIC)`.
    pub fn name(&self) -> Vec<u8> {
        let mut name = self.name_alg.to_be_bytes().to_vec();
        name.extend_from_slice(&Sha256::digest(&self.public_area));
        name
    }

    /// The key as a p256 verifying key; the point is checked to be on the
    /// curve.
    pub fn verifying_key(&self) -> Result<VerifyingKey, Error> {
        let mut sec1 = vec![0x04];
        sec1.extend_from_slice(&pad32(&self.x));
        sec1.extend_from_slice(&pad32(&self.y));
        VerifyingKey::from_sec1_bytes(&sec1)
            .map_err(|_| Error::NotOnCurve { what: "TPMS_ECC_POINT" })
    }
}

fn expect(value: u16, want: u16, what: &'static str, expected: &'static str) -> Result<(), Error> {
    if value == want {
        Ok(())
    } else {
        Err(Error::Unsupported { what, value: value.into(), expected })
    }
}

/// A P-256 value of at most 32 bytes (the parsers bound it), left-padded:
/// TPMs may strip leading zero bytes.
fn pad32(v: &[u8]) -> [u8; P256_BYTES] {
    let mut out = [0; P256_BYTES];
    let start = P256_BYTES.saturating_sub(v.len());
    let take = v.len().min(P256_BYTES);
    out[start..].copy_from_slice(&v[v.len() - take..]);
    out
}

/// A bounds-checked big-endian cursor.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        let have = self.buf.len() - self.pos;
        if n > have {
            return Err(Error::Truncated { what, offset: self.pos, need: n, have });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A `TPM2B_*`: a u16 size, then that many bytes, at most `max`.
    fn tpm2b(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], Error> {
        let size = usize::from(self.u16(what)?);
        if size > max {
            return Err(Error::TooLarge { what, size, max });
        }
        self.take(size, what)
    }

    fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    fn finish(self, what: &'static str) -> Result<(), Error> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            extra => Err(Error::Trailing { what, extra }),
        }
    }
}

/// The `magic` of a marshalled `TPMS_ATTEST`, read before the whole
/// structure is parsed (a wrong magic says more than a parse error): `None`
/// when the input is too short.
pub fn peek_magic(bytes: &[u8]) -> Option<u32> {
    Reader::new(bytes).u32("magic").ok()
}

/// The `type` of a marshalled `TPMS_ATTEST`, as [`peek_magic`].
pub fn peek_type(bytes: &[u8]) -> Option<u16> {
    let mut r = Reader::new(bytes);
    r.take(4, "magic").ok()?;
    r.u16("type").ok()
}

#[cfg(test)]
mod tests;
