//! ML-KEM: C_EncapsulateKey and C_DecapsulateKey, each leaving the shared
//! secret in a new session secret-key object.

use cryptoki_sys::*;
use qkeyd_p11_proto::{Request, Response};

use super::{Mech, Out, Param, State, check_epoch, daemon_call, with};
use crate::object::{self, Attr, Class, Link, Rv, SHARED_SECRET_LEN};

/// Check an ML-KEM key and a secret-key template for encapsulation or
/// decapsulation; returns the key's link and the template's spec.
fn kem_prepare(
    s: &mut State,
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    class: Class,
    template: &[Attr],
) -> Result<(Link, object::SecretSpec), Rv> {
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
    let link = obj.link.clone().ok_or(CKR_KEY_HANDLE_INVALID)?;
    let spec = object::secret_key(template)?;
    if (spec.private || class == Class::Private) && !logged_in {
        return Err(CKR_USER_NOT_LOGGED_IN);
    }
    check_epoch(&link)?;
    Ok((link, spec))
}

/// C_EncapsulateKey: `ct` of `None` asks for the ciphertext length and makes nothing.
pub(crate) fn encapsulate(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    template: &[Attr],
    ct: Option<&mut [u8]>,
) -> Result<(Out, Option<CK_OBJECT_HANDLE>), Rv> {
    let (link, spec) = with(|s| kem_prepare(s, h, mech, key, Class::Public, template))?;
    let len = link.alg.output_len();
    let ct = match ct {
        None => return Ok((Out::Length(len), None)),
        Some(c) if c.len() < len => return Ok((Out::TooSmall(len), None)),
        Some(c) => c,
    };
    let (ciphertext, secret) =
        match daemon_call(&Request::Encapsulate { key: link.key.clone() }, CKR_ARGUMENTS_BAD)? {
            Response::Encapsulated { ct, secret }
                if ct.len() == len && secret.expose().len() == SHARED_SECRET_LEN =>
            {
                (ct, secret)
            }
            _ => return Err(CKR_DEVICE_ERROR),
        };
    let handle = with(|s| {
        s.session(h)?;
        let hk = s.handle();
        s.objects.insert(hk, spec.object(secret.into_inner(), h));
        Ok(hk)
    })?;
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
    let (link, spec) = with(|s| kem_prepare(s, h, mech, key, Class::Private, template))?;
    if ct.len() != link.alg.output_len() {
        return Err(CKR_WRAPPED_KEY_LEN_RANGE);
    }
    let secret = match daemon_call(
        &Request::Decapsulate { key: link.key.clone(), ct: ct.to_vec() },
        CKR_WRAPPED_KEY_LEN_RANGE,
    )? {
        Response::SharedSecret(s) if s.expose().len() == SHARED_SECRET_LEN => s,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    with(|s| {
        s.session(h)?;
        let hk = s.handle();
        s.objects.insert(hk, spec.object(secret.into_inner(), h));
        Ok(hk)
    })
}
