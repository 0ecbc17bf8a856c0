//! The TPM 2.0 sealer: each seed is a sealed data object under the storage
//! primary, optionally bound to PCR values.
//!
//! The storage primary is an ECC P-256 restricted decryption key created from
//! the owner hierarchy's seed with the standard template, so it is the same
//! key every time and nothing needs to be made persistent. Every operation
//! opens its own connection (TCTI), creates the primary, does its work and
//! flushes what it loaded: the TPM is shared with other clients (tpm2-tools,
//! an attestation agent), there is no resource manager on a raw swtpm socket,
//! and a TPM that went away and came back is simply reached again.
//!
//! The TPM has no associated data, so the sealed data is `secret ‖
//! SHA-256(aad)` (≤ 96 bytes, under the 128-byte limit) and the hash is
//! checked on unseal. With a PCR policy the object has no password
//! (`userWithAuth` clear) and unseals only in a policy session whose
//! `PolicyPCR` matches the values the PCRs had at sealing time.
//!
//! Blob layout: `1 ‖ n ‖ n PCR indices ‖ u16 len ‖ TPM2B_PUBLIC ‖ TPM2B_PRIVATE`.

use std::str::FromStr as _;

use sha2::{Digest as _, Sha256};
use tss_esapi::{
    Context,
    attributes::{ObjectAttributesBuilder, SessionAttributesBuilder},
    constants::{SessionType, response_code::Tss2ResponseCodeKind},
    handles::KeyHandle,
    interface_types::{
        algorithm::{HashingAlgorithm, PublicAlgorithm},
        ecc::EccCurve,
        resource_handles::Hierarchy,
        session_handles::{AuthSession, PolicySession},
    },
    structures::{
        Digest, EccPoint, KeyedHashScheme, PcrSelectionList, PcrSlot, Private, Public,
        PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData,
        SymmetricDefinition, SymmetricDefinitionObject,
    },
    tcti_ldr::TctiNameConf,
    traits::{Marshall as _, UnMarshall as _},
};
use zeroize::Zeroizing;

use super::{Sealed, Sealer, Secret};
use crate::Error;

const FORMAT: u8 = 1;

/// Where the TPM is and which PCRs seal to.
#[derive(Clone, Debug)]
pub struct TpmConfig {
    /// TCTI, e.g. `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`.
    pub tcti: String,
    /// SHA-256 PCR indices the seeds are bound to (empty: no PCR policy).
    pub pcrs: Vec<u8>,
}

/// A TPM 2.0 reached through a TCTI.
#[derive(Debug)]
pub struct TpmSealer {
    config: TpmConfig,
}

fn tss(what: &str) -> impl FnOnce(tss_esapi::Error) -> Error + '_ {
    move |e| match e {
        tss_esapi::Error::Tss2Error(rc) => match rc.kind() {
            Some(Tss2ResponseCodeKind::PolicyFail | Tss2ResponseCodeKind::PcrChanged) => {
                Error::Policy(format!("{what}: {e}"))
            }
            // Not a TPM response: the transport or the ESAPI layer failed.
            None => Error::SealerUnavailable(format!("{what}: {e}")),
            Some(_) => Error::Backend(format!("{what}: {e}")),
        },
        tss_esapi::Error::WrapperError(_) => Error::Backend(format!("{what}: {e}")),
    }
}

/// The SHA-256 bank selection of `pcrs` (shared with the attestation key).
pub(crate) fn pcr_list(pcrs: &[u8]) -> Result<PcrSelectionList, Error> {
    let slots = pcrs
        .iter()
        .map(|&i| {
            PcrSlot::try_from(1u32 << i)
                .map_err(|_| Error::Backend(format!("PCR {i} is not a valid slot")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    PcrSelectionList::builder()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(tss("PCR selection"))
}

impl TpmSealer {
    /// A sealer for the TPM at `config.tcti`; checks now that it answers.
    pub fn open(config: TpmConfig) -> Result<Self, Error> {
        if let Some(&bad) = config.pcrs.iter().find(|&&i| i > 23) {
            return Err(Error::Backend(format!("PCR {bad} is out of range 0..=23")));
        }
        let mut s = Self { config };
        s.check()?;
        Ok(s)
    }

    fn connect(&self) -> Result<Context, Error> {
        let tcti = TctiNameConf::from_str(&self.config.tcti)
            .map_err(|e| Error::Backend(format!("TCTI {:?}: {e}", self.config.tcti)))?;
        Context::new(tcti)
            .map_err(|e| Error::SealerUnavailable(format!("TPM at {:?}: {e}", self.config.tcti)))
    }

    /// Connect, create the storage primary, run `f`, flush the primary.
    fn with_primary<T>(
        &self,
        f: impl FnOnce(&mut Context, KeyHandle) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut ctx = self.connect()?;
        let primary = ctx
            .execute_with_nullauth_session(|c| {
                c.create_primary(Hierarchy::Owner, storage_primary()?, None, None, None, None)
            })
            .map_err(tss("creating the storage primary"))?
            .key_handle;
        let result = f(&mut ctx, primary);
        let _ = ctx.flush_context(primary.into());
        result
    }

    fn policy_digest(ctx: &mut Context, pcrs: &PcrSelectionList) -> Result<Digest, Error> {
        let trial = start_session(ctx, SessionType::Trial)?;
        let ps = PolicySession::try_from(trial).map_err(tss("trial session"))?;
        let digest = ctx
            .policy_pcr(ps, Digest::default(), pcrs.clone())
            .and_then(|()| ctx.policy_get_digest(ps))
            .map_err(tss("computing the PCR policy"));
        let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(trial).into());
        digest
    }
}

fn start_session(ctx: &mut Context, kind: SessionType) -> Result<AuthSession, Error> {
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            kind,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tss("starting a session"))?
        .ok_or_else(|| Error::Backend("the TPM returned no session".into()))?;
    let (attrs, mask) =
        SessionAttributesBuilder::new().with_decrypt(true).with_encrypt(true).build();
    ctx.tr_sess_set_attributes(session, attrs, mask).map_err(tss("session attributes"))?;
    Ok(session)
}

/// The standard ECC P-256 storage primary template (as `tpm2_createprimary -G ecc`).
fn storage_primary() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_decrypt(true)
        .with_restricted(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

fn sealed_template(policy: Option<Digest>) -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_user_with_auth(policy.is_none())
        .build()?;
    let mut b = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::KeyedHash)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
        .with_keyed_hash_unique_identifier(Digest::default());
    if let Some(p) = policy {
        b = b.with_auth_policy(p);
    }
    b.build()
}

struct Blob {
    pcrs: Vec<u8>,
    public: Public,
    private: Private,
}

fn encode(pcrs: &[u8], public: &Public, private: &Private) -> Result<Vec<u8>, Error> {
    let public = public.marshall().map_err(tss("encoding the public area"))?;
    let len =
        u16::try_from(public.len()).map_err(|_| Error::Backend("public area too large".into()))?;
    let mut out = vec![FORMAT, pcrs.len() as u8];
    out.extend_from_slice(pcrs);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&public);
    out.extend_from_slice(private.value());
    Ok(out)
}

fn decode(blob: &[u8]) -> Result<Blob, Error> {
    let bad = |why: &str| Error::Malformed(format!("TPM blob: {why}"));
    let (&format, rest) = blob.split_first().ok_or_else(|| bad("empty"))?;
    if format != FORMAT {
        return Err(bad("unknown format"));
    }
    let (&n, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
    let n = usize::from(n);
    if rest.len() < n + 2 {
        return Err(bad("truncated"));
    }
    let (pcrs, rest) = rest.split_at(n);
    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    if rest.len() <= len {
        return Err(bad("truncated"));
    }
    let (public, private) = rest.split_at(len);
    Ok(Blob {
        pcrs: pcrs.to_vec(),
        public: Public::unmarshall(public).map_err(|_| bad("public area"))?,
        private: Private::try_from(private.to_vec()).map_err(|_| bad("private area"))?,
    })
}

impl Sealer for TpmSealer {
    fn kind(&self) -> &'static str {
        "tpm"
    }

    fn seal(&mut self, _name: &str, aad: &[u8], secret: &[u8]) -> Result<Sealed, Error> {
        let mut data = Zeroizing::new(secret.to_vec());
        data.extend_from_slice(&Sha256::digest(aad));
        let pcrs = self.config.pcrs.clone();
        let blob = self.with_primary(|ctx, primary| {
            let policy = if pcrs.is_empty() {
                None
            } else {
                Some(Self::policy_digest(ctx, &pcr_list(&pcrs)?)?)
            };
            let template = sealed_template(policy).map_err(tss("sealed object template"))?;
            let sensitive = SensitiveData::try_from(data.to_vec())
                .map_err(|_| Error::Backend("secret too large for a TPM sealed object".into()))?;
            let created = ctx
                .execute_with_nullauth_session(|c| {
                    c.create(primary, template, None, Some(sensitive), None, None)
                })
                .map_err(tss("sealing"))?;
            encode(&pcrs, &created.out_public, &created.out_private)
        })?;
        Ok(Sealed { backend: "tpm".into(), object: None, blob })
    }

    fn unseal(&mut self, sealed: &Sealed, aad: &[u8]) -> Result<Secret, Error> {
        if sealed.backend != self.kind() {
            return Err(Error::Malformed(format!("sealed by {:?}, not tpm", sealed.backend)));
        }
        let blob = decode(&sealed.blob)?;
        let data = self.with_primary(|ctx, primary| {
            let object = ctx
                .execute_with_nullauth_session(|c| c.load(primary, blob.private, blob.public))
                // A changed blob fails the TPM's integrity check on load.
                .map_err(|e| match tss("loading the sealed object")(e) {
                    Error::Backend(_) => Error::Integrity,
                    other => other,
                })?;
            let result = if blob.pcrs.is_empty() {
                ctx.execute_with_session(Some(AuthSession::Password), |c| c.unseal(object.into()))
                    .map_err(tss("unsealing"))
            } else {
                let session = start_session(ctx, SessionType::Policy)?;
                let ps = PolicySession::try_from(session).map_err(tss("policy session"))?;
                let r = pcr_list(&blob.pcrs).and_then(|list| {
                    ctx.policy_pcr(ps, Digest::default(), list).map_err(tss("PolicyPCR"))?;
                    ctx.execute_with_session(Some(session), |c| c.unseal(object.into()))
                        .map_err(|e| match tss("unsealing")(e) {
                            Error::Backend(m) | Error::Policy(m) => Error::Policy(format!(
                                "{m}: the PCRs the key is bound to ({:?}) have changed since it was sealed",
                                blob.pcrs
                            )),
                            other => other,
                        })
                });
                let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(session).into());
                r
            };
            let _ = ctx.flush_context(object.into());
            result
        })?;
        let data = Zeroizing::new(data.value().to_vec());
        let (secret, hash) = data.split_at(data.len().saturating_sub(32));
        if data.len() < 32 || hash != Sha256::digest(aad).as_slice() {
            return Err(Error::Integrity);
        }
        Ok(Secret(Zeroizing::new(secret.to_vec())))
    }

    fn destroy(&mut self, _sealed: &Sealed) -> Result<(), Error> {
        // Nothing lives in the TPM: the blob is the only copy, and the store
        // removes it.
        Ok(())
    }

    fn check(&mut self) -> Result<(), Error> {
        self.with_primary(|_, _| Ok(()))
    }
}
