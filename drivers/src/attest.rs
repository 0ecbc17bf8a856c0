//! The node's attestation key (AK) in a TPM 2.0, and quotes with it.
//!
//! The AK is an ECC NIST P-256 restricted signing key (ECDSA-SHA256) made
//! under the endorsement key (EK) with the TCG template, then made persistent
//! at a fixed handle, so a quote needs no session with the EK: connect, quote,
//! read the PCRs. Like the sealer, every call opens its own connection (the
//! TPM is shared; a raw swtpm socket has no resource manager).
//!
//! What leaves here is public: the AK's TPM2B_PUBLIC and Name, the EK
//! certificate from NV, and quotes (TPMS_ATTEST and TPMT_SIGNATURE as the TPM
//! marshalled them, with the quoted PCR values).

use std::str::FromStr as _;

use tss_esapi::{
    Context,
    abstraction::{AsymmetricAlgorithmSelection, ak, ek, pcr},
    handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle},
    interface_types::{
        algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm},
        dynamic_handles::Persistent,
        ecc::EccCurve,
        key_bits::RsaKeyBits,
        resource_handles::Provision,
    },
    structures::{Data, HashScheme, PcrSelectionList, PcrSlot, Public, SignatureScheme},
    tcti_ldr::TctiNameConf,
    traits::Marshall as _,
};

use crate::Error;

/// The persistent handle the AK is kept at unless configured otherwise
/// (in the owner range the TCG assigns to platform-independent keys).
pub const DEFAULT_AK_HANDLE: u32 = 0x8101_0A7E;

/// Where the TPM is, where the AK lives, and which PCRs are quoted.
#[derive(Clone, Debug)]
pub struct AttestConfig {
    /// TCTI, e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`.
    pub tcti: String,
    /// The AK's persistent handle.
    pub ak_handle: u32,
    /// SHA-256 PCR indices every quote covers.
    pub pcrs: Vec<u8>,
}

/// The AK as a verifier sees it.
#[derive(Clone, Debug)]
pub struct AkInfo {
    /// TPM2B_PUBLIC (2-byte size, then TPMT_PUBLIC).
    pub public: Vec<u8>,
    /// The AK's Name: nameAlg ‖ SHA-256(TPMT_PUBLIC).
    pub name: Vec<u8>,
    /// The public key as SubjectPublicKeyInfo DER (P-256).
    pub spki_der: Vec<u8>,
    /// The EK certificate (DER) from the TPM's NV, if it has one.
    pub ek_certificate: Option<Vec<u8>>,
    /// Whether the AK was made now (first start) rather than found.
    pub created: bool,
}

/// A quote: what the TPM signed, its signature, and the quoted PCR values.
#[derive(Clone, Debug)]
pub struct Quote {
    /// TPMS_ATTEST as marshalled by the TPM.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// (PCR index, SHA-256 bank value), in index order.
    pub pcrs: Vec<(u8, Vec<u8>)>,
}

/// The node's TPM, for attestation.
#[derive(Debug)]
pub struct TpmAttester {
    config: AttestConfig,
}

fn tpm(what: &str) -> impl FnOnce(tss_esapi::Error) -> Error + '_ {
    move |e| match e {
        tss_esapi::Error::Tss2Error(rc) if rc.kind().is_none() => {
            Error::SealerUnavailable(format!("{what}: {e}"))
        }
        _ => Error::Backend(format!("{what}: {e}")),
    }
}

/// SubjectPublicKeyInfo DER of an uncompressed P-256 point.
fn p256_spki(x: &[u8], y: &[u8]) -> Result<Vec<u8>, Error> {
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING 04‖x‖y }
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    if x.len() > 32 || y.len() > 32 {
        return Err(Error::Backend("the AK is not a P-256 key".into()));
    }
    let mut der = PREFIX.to_vec();
    der.push(0x04);
    // A coordinate with leading zero bytes may come shorter: pad it back.
    for c in [x, y] {
        der.extend(std::iter::repeat_n(0, 32 - c.len()));
        der.extend_from_slice(c);
    }
    Ok(der)
}

impl TpmAttester {
    /// Reach the TPM and make sure the AK exists at its handle (made under
    /// the EK and persisted on first use). Returns the AK for verifiers.
    pub fn open(config: AttestConfig) -> Result<(Self, AkInfo), Error> {
        if let Some(&bad) = config.pcrs.iter().find(|&&i| i > 23) {
            return Err(Error::Backend(format!("PCR {bad} is out of range 0..=23")));
        }
        let a = Self { config };
        let info = a.ensure_ak()?;
        Ok((a, info))
    }

    fn connect(&self) -> Result<Context, Error> {
        let tcti = TctiNameConf::from_str(&self.config.tcti)
            .map_err(|e| Error::Backend(format!("TCTI {:?}: {e}", self.config.tcti)))?;
        Context::new(tcti)
            .map_err(|e| Error::SealerUnavailable(format!("TPM at {:?}: {e}", self.config.tcti)))
    }

    fn handle(&self) -> Result<PersistentTpmHandle, Error> {
        PersistentTpmHandle::new(self.config.ak_handle).map_err(|_| {
            Error::Backend(format!("{:#x} is not a persistent handle", self.config.ak_handle))
        })
    }

    /// The AK's handle in this connection, if it exists.
    fn find_ak(&self, ctx: &mut Context) -> Result<Option<KeyHandle>, Error> {
        let handle = self.handle()?;
        match ctx.execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(handle))) {
            Ok(obj) => Ok(Some(KeyHandle::from(obj))),
            Err(tss_esapi::Error::Tss2Error(rc)) if rc.kind().is_some() => Ok(None),
            Err(e) => Err(tpm("looking up the AK")(e)),
        }
    }

    fn ensure_ak(&self) -> Result<AkInfo, Error> {
        let mut ctx = self.connect()?;
        let rsa = AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048);
        let ek_certificate = ek::retrieve_ek_pubcert(&mut ctx, rsa).ok();
        let (ak, created) = match self.find_ak(&mut ctx)? {
            Some(ak) => (ak, false),
            None => (self.create_ak(&mut ctx, rsa)?, true),
        };
        let (public, name, _) =
            ctx.execute_without_session(|c| c.read_public(ak)).map_err(tpm("reading the AK"))?;
        let Public::Ecc { unique, parameters, object_attributes, .. } = &public else {
            return Err(Error::Backend(format!(
                "the object at {:#x} is not an ECC key: not qkeyd's AK",
                self.config.ak_handle
            )));
        };
        if parameters.ecc_curve() != EccCurve::NistP256
            || !object_attributes.restricted()
            || !object_attributes.sign_encrypt()
            || !object_attributes.fixed_tpm()
        {
            return Err(Error::Backend(format!(
                "the key at {:#x} is not a restricted P-256 signing key bound to this TPM",
                self.config.ak_handle
            )));
        }
        let spki_der = p256_spki(unique.x().value(), unique.y().value())?;
        let tpmt = public.marshall().map_err(tpm("marshalling the AK"))?;
        let size =
            u16::try_from(tpmt.len()).map_err(|_| Error::Backend("AK public too large".into()))?;
        let mut tpm2b = size.to_be_bytes().to_vec();
        tpm2b.extend_from_slice(&tpmt);
        Ok(AkInfo { public: tpm2b, name: name.value().to_vec(), spki_der, ek_certificate, created })
    }

    /// Make the AK under the EK and persist it at the configured handle.
    fn create_ak(
        &self,
        ctx: &mut Context,
        rsa: AsymmetricAlgorithmSelection,
    ) -> Result<KeyHandle, Error> {
        let ek = ek::create_ek_object_2(ctx, rsa, None).map_err(tpm("creating the EK"))?;
        let made = ak::create_ak_2(
            ctx,
            ek,
            HashingAlgorithm::Sha256,
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            SignatureSchemeAlgorithm::EcDsa,
            None,
            None,
        )
        .map_err(tpm("creating the AK"));
        let result = made.and_then(|made| {
            let loaded = ak::load_ak(ctx, ek, None, made.out_private, made.out_public)
                .map_err(tpm("loading the AK"))?;
            let persistent = Persistent::Persistent(self.handle()?);
            let kept = ctx
                .execute_with_nullauth_session(|c| {
                    c.evict_control(Provision::Owner, ObjectHandle::from(loaded), persistent)
                })
                .map_err(tpm("making the AK persistent"));
            let _ = ctx.flush_context(loaded.into());
            kept.map(KeyHandle::from)
        });
        let _ = ctx.flush_context(ek.into());
        result
    }

    /// Quote the configured PCRs with `extra` as qualifying data.
    pub fn quote(&self, extra: &[u8]) -> Result<Quote, Error> {
        let mut ctx = self.connect()?;
        let ak = self.find_ak(&mut ctx)?.ok_or_else(|| {
            Error::Backend(format!("no AK at {:#x}: was the TPM cleared?", self.config.ak_handle))
        })?;
        let sel = crate::seal::tpm::pcr_list(&self.config.pcrs)?;
        let data = Data::try_from(extra.to_vec()).map_err(tpm("qualifying data"))?;
        let scheme =
            SignatureScheme::EcDsa { hash_scheme: HashScheme::new(HashingAlgorithm::Sha256) };
        // The PCRs are read after the quote; if one moved in between, the
        // values would not match the quoted digest: quote again (once).
        for _ in 0..2 {
            let before = self.read_pcrs(&mut ctx, &sel)?;
            let (attest, signature) = ctx
                .execute_with_nullauth_session(|c| c.quote(ak, data.clone(), scheme, sel.clone()))
                .map_err(tpm("TPM2_Quote"))?;
            let after = self.read_pcrs(&mut ctx, &sel)?;
            if before == after {
                return Ok(Quote {
                    attest: attest.marshall().map_err(tpm("marshalling the quote"))?,
                    signature: signature.marshall().map_err(tpm("marshalling the signature"))?,
                    pcrs: after,
                });
            }
        }
        Err(Error::Backend("the quoted PCRs kept changing during the quote".into()))
    }

    /// TPM2_ActivateCredential: open a registrar's MakeCredential challenge
    /// (`credential_blob` = TPM2B_ID_OBJECT, `secret` = TPM2B_ENCRYPTED_SECRET,
    /// both with their sizes) with the AK and the EK. Only this TPM can, and
    /// only for this AK's Name: that is what the registrar learns.
    pub fn activate_credential(
        &self,
        credential_blob: &[u8],
        secret: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, Error> {
        use tss_esapi::{
            attributes::SessionAttributesBuilder,
            constants::SessionType,
            interface_types::session_handles::PolicySession,
            structures::{EncryptedSecret, IdObject, SymmetricDefinition},
        };
        let body = |b: &[u8], what: &str| -> Result<Vec<u8>, Error> {
            let (size, rest) = b
                .split_first_chunk::<2>()
                .ok_or_else(|| Error::Backend(format!("{what}: too short")))?;
            if usize::from(u16::from_be_bytes(*size)) != rest.len() {
                return Err(Error::Backend(format!("{what}: its size does not match")));
            }
            Ok(rest.to_vec())
        };
        let blob = IdObject::try_from(body(credential_blob, "the credential blob")?)
            .map_err(tpm("the credential blob"))?;
        let secret = EncryptedSecret::try_from(body(secret, "the encrypted secret")?)
            .map_err(tpm("the encrypted secret"))?;
        let mut ctx = self.connect()?;
        let ak = self
            .find_ak(&mut ctx)?
            .ok_or_else(|| Error::Backend(format!("no AK at {:#x}", self.config.ak_handle)))?;
        let rsa = AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048);
        let ek = ek::create_ek_object_2(&mut ctx, rsa, None).map_err(tpm("creating the EK"))?;
        let result = (|| {
            let (attrs, mask) = SessionAttributesBuilder::new().build();
            let hmac = ctx
                .start_auth_session(
                    None,
                    None,
                    None,
                    SessionType::Hmac,
                    SymmetricDefinition::AES_128_CFB,
                    HashingAlgorithm::Sha256,
                )
                .map_err(tpm("an HMAC session"))?
                .ok_or_else(|| Error::Backend("no HMAC session".into()))?;
            ctx.tr_sess_set_attributes(hmac, attrs, mask).map_err(tpm("session attributes"))?;
            let policy = ctx
                .start_auth_session(
                    None,
                    None,
                    None,
                    SessionType::Policy,
                    SymmetricDefinition::AES_128_CFB,
                    HashingAlgorithm::Sha256,
                )
                .map_err(tpm("a policy session"))?
                .ok_or_else(|| Error::Backend("no policy session".into()))?;
            ctx.tr_sess_set_attributes(policy, attrs, mask).map_err(tpm("session attributes"))?;
            // The EK's policy: PolicySecret of the endorsement hierarchy.
            ctx.execute_with_session(Some(hmac), |c| {
                c.policy_secret(
                    PolicySession::try_from(policy)?,
                    tss_esapi::handles::AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })
            .map_err(tpm("PolicySecret for the EK"))?;
            let opened = ctx
                .execute_with_sessions((Some(hmac), Some(policy), None), |c| {
                    c.activate_credential(ak, ek, blob, secret)
                })
                .map_err(tpm("TPM2_ActivateCredential"));
            for s in [hmac, policy] {
                let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(s).into());
            }
            opened.map(|d| zeroize::Zeroizing::new(d.value().to_vec()))
        })();
        let _ = ctx.flush_context(ek.into());
        result
    }

    fn read_pcrs(
        &self,
        ctx: &mut Context,
        sel: &PcrSelectionList,
    ) -> Result<Vec<(u8, Vec<u8>)>, Error> {
        let data = ctx
            .execute_without_session(|c| pcr::read_all(c, sel.clone()))
            .map_err(tpm("reading the PCRs"))?;
        let bank = data
            .pcr_bank(HashingAlgorithm::Sha256)
            .ok_or_else(|| Error::Backend("the TPM has no SHA-256 PCR bank".into()))?;
        self.config
            .pcrs
            .iter()
            .map(|&i| {
                let slot = PcrSlot::try_from(1u32 << i)
                    .map_err(|_| Error::Backend(format!("PCR {i} is not a valid slot")))?;
                let d = bank
                    .get_digest(slot)
                    .ok_or_else(|| Error::Backend(format!("PCR {i} was not read")))?;
                Ok((i, d.value().to_vec()))
            })
            .collect()
    }
}
