//! ML-KEM: C_EncapsulateKey and C_DecapsulateKey, each leaving the shared
//! secret in a new session secret-key object: held by the daemon when the
//! template asks for a sensitive or unextractable key, else here. A public
//! key the application imported is encapsulated to by its value.

use cryptoki_sys::*;
use qkeyd_p11_proto::{Algorithm, Request, Response};
use zeroize::Zeroizing;

use super::{Mech, Out, Param, State, check_epoch, daemon_call, with};
use crate::{
    client::EPOCH,
    object::{self, Attr, Class, Origin, Rv, SHARED_SECRET_LEN},
};

/// The key an encapsulation or decapsulation uses.
enum KemKey {
    /// A daemon key (`s/N` or a vault key).
    Daemon(String, Algorithm),
    /// A public key the application imported.
    Imported(Vec<u8>, Algorithm),
}

impl KemKey {
    fn alg(&self) -> Algorithm {
        match self {
            Self::Daemon(_, a) | Self::Imported(_, a) => *a,
        }
    }
}

/// Check an ML-KEM key and a secret-key template for encapsulation or
/// decapsulation; returns the key, the template's spec and its key type.
fn kem_prepare(
    s: &mut State,
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    class: Class,
    template: &[Attr],
) -> Result<(KemKey, object::SecretSpec, CK_KEY_TYPE), Rv> {
    let logged_in = s.logged_in;
    s.session(h)?;
    if mech.mtype != CKM_ML_KEM {
        return Err(CKR_MECHANISM_INVALID);
    }
    if !matches!(mech.param, Param::None) {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let obj = s.key(key)?;
    if obj.class != class || obj.key_type != CKK_ML_KEM {
        return Err(CKR_KEY_TYPE_INCONSISTENT);
    }
    let allowed = if class == Class::Public { obj.caps.encapsulate } else { obj.caps.decapsulate };
    if !allowed {
        return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
    }
    let kem_key = match &obj.link {
        Some(link) => {
            check_epoch(link)?;
            KemKey::Daemon(link.key.clone(), link.alg)
        }
        None => KemKey::Imported(obj.value.to_vec(), obj.alg().ok_or(CKR_KEY_HANDLE_INVALID)?),
    };
    let spec = object::secret_key(template, false)?;
    let key_type = spec.key_type.unwrap_or(CKK_GENERIC_SECRET);
    if !matches!(key_type, CKK_GENERIC_SECRET | CKK_AES | CKK_HKDF) {
        return Err(CKR_TEMPLATE_INCONSISTENT);
    }
    if spec.len.is_some_and(|l| l != SHARED_SECRET_LEN) {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    if (spec.private || class == Class::Private) && !logged_in {
        return Err(CKR_USER_NOT_LOGGED_IN);
    }
    Ok((kem_key, spec, key_type))
}

/// The shared secret: its value here, or the daemon's reference to it.
enum Shared {
    Here(Zeroizing<Vec<u8>>),
    Held(String),
}

/// Add the secret-key object for `shared` to session `h`.
fn add_secret(
    h: CK_SESSION_HANDLE,
    spec: object::SecretSpec,
    key_type: CK_KEY_TYPE,
    shared: Shared,
) -> Result<CK_OBJECT_HANDLE, Rv> {
    // Made from a secret that left the daemon, or came to this process:
    // ALWAYS_SENSITIVE and NEVER_EXTRACTABLE are false (PKCS#11 3.2 §5.18).
    let origin = Origin { len: SHARED_SECRET_LEN, ..Origin::default() };
    let (value, held) = match shared {
        Shared::Here(v) => (v, None),
        Shared::Held(k) => (
            Zeroizing::new(Vec::new()),
            Some((k, EPOCH.load(std::sync::atomic::Ordering::Acquire))),
        ),
    };
    with(|s| {
        s.session(h)?;
        let hk = s.handle();
        s.objects.insert(hk, spec.object(key_type, value, held, origin, h));
        Ok(hk)
    })
}

/// C_EncapsulateKey: `ct` of `None` asks for the ciphertext length and makes nothing.
pub(crate) fn encapsulate(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    template: &[Attr],
    ct: Option<&mut [u8]>,
) -> Result<(Out, Option<CK_OBJECT_HANDLE>), Rv> {
    let (kem_key, spec, key_type) =
        with(|s| kem_prepare(s, h, mech, key, Class::Public, template))?;
    let len = kem_key.alg().output_len();
    let ct = match ct {
        None => return Ok((Out::Length(len), None)),
        Some(c) if c.len() < len => return Ok((Out::TooSmall(len), None)),
        Some(c) => c,
    };
    let keep = spec.keep();
    let req = match kem_key {
        KemKey::Daemon(key, _) if keep => Request::EncapsulateKept { key },
        KemKey::Daemon(key, _) => Request::Encapsulate { key },
        KemKey::Imported(public_key, alg) => Request::EncapsulateTo { alg, public_key, keep },
    };
    let (ciphertext, shared) = match daemon_call(&req, CKR_ARGUMENTS_BAD)? {
        Response::Encapsulated { ct, secret }
            if !keep && ct.len() == len && secret.expose().len() == SHARED_SECRET_LEN =>
        {
            (ct, Shared::Here(secret.into_inner()))
        }
        Response::EncapsulatedKept { ct, key } if keep && ct.len() == len => {
            (ct, Shared::Held(key))
        }
        _ => return Err(CKR_DEVICE_ERROR),
    };
    let handle = add_secret(h, spec, key_type, shared)?;
    ct[..len].copy_from_slice(&ciphertext);
    Ok((Out::Written(len), Some(handle)))
}

/// C_DecapsulateKey.
pub(crate) fn decapsulate(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    template: &[Attr],
    ct: &[u8],
) -> Result<CK_OBJECT_HANDLE, Rv> {
    let (kem_key, spec, key_type) =
        with(|s| kem_prepare(s, h, mech, key, Class::Private, template))?;
    let KemKey::Daemon(key, alg) = kem_key else { return Err(CKR_KEY_TYPE_INCONSISTENT) };
    if ct.len() != alg.output_len() {
        return Err(CKR_WRAPPED_KEY_LEN_RANGE);
    }
    let keep = spec.keep();
    let req = if keep {
        Request::DecapsulateKept { key, ct: ct.to_vec() }
    } else {
        Request::Decapsulate { key, ct: ct.to_vec() }
    };
    let shared = match daemon_call(&req, CKR_WRAPPED_KEY_LEN_RANGE)? {
        Response::SharedSecret(s) if !keep && s.expose().len() == SHARED_SECRET_LEN => {
            Shared::Here(s.into_inner())
        }
        Response::Secret { key, len } if keep && len as usize == SHARED_SECRET_LEN => {
            Shared::Held(key)
        }
        _ => return Err(CKR_DEVICE_ERROR),
    };
    add_secret(h, spec, key_type, shared)
}
