//! Secret keys: C_GenerateKey (CKM_AES_KEY_GEN), C_DeriveKey (CKM_HKDF_DERIVE
//! and CKM_HKDF_DATA) and C_CreateObject of a CKO_SECRET_KEY. A key whose
//! template asks for it sensitive or unextractable is made and kept by the
//! daemon; others live here.

use std::sync::atomic::Ordering;

use cryptoki_sys::*;
use qkeyd_p11_proto::{KeySource, Prf, Request, Response, Secret};
use zeroize::Zeroizing;

use super::{MODULE, Mech, Param, check_held, daemon_call, with};
use crate::{
    client::EPOCH,
    object::{self, Attr, Class, Object, Origin, Rv},
    rng::lock,
    stored,
};

/// The longest generic secret C_CreateObject takes.
const MAX_CREATED: usize = 256;

/// Add a secret-key object to session `h`.
fn add(h: CK_SESSION_HANDLE, o: Object) -> Result<CK_OBJECT_HANDLE, Rv> {
    with(|s| {
        s.session(h)?;
        if o.private && !s.logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        let hk = s.handle();
        s.objects.insert(hk, o);
        Ok(hk)
    })
}

fn held(key: String) -> Option<(String, u64)> {
    Some((key, EPOCH.load(Ordering::Acquire)))
}

/// C_GenerateKey: CKM_AES_KEY_GEN.
pub(crate) fn generate_key(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    template: &[Attr],
) -> Result<CK_OBJECT_HANDLE, Rv> {
    let logged_in = with(|s| {
        s.session(h)?;
        Ok(s.logged_in)
    })?;
    if mech.mtype != CKM_AES_KEY_GEN {
        return Err(CKR_MECHANISM_INVALID);
    }
    if !matches!(mech.param, Param::None) {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let spec = object::secret_key(template, false)?;
    if spec.key_type.is_some_and(|t| t != CKK_AES) {
        return Err(CKR_TEMPLATE_INCONSISTENT);
    }
    let len = spec.len.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
    if !object::length_fits(CKK_AES, len) {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    if spec.private && !logged_in {
        return Err(CKR_USER_NOT_LOGGED_IN);
    }
    let origin = Origin {
        local: true,
        mechanism: Some(CKM_AES_KEY_GEN),
        always_sensitive: spec.caps.sensitive,
        never_extractable: !spec.caps.extractable,
        len,
    };
    let o = if spec.keep() {
        match daemon_call(&Request::GenerateSecret { len: len as u32 }, CKR_TEMPLATE_INCONSISTENT)?
        {
            Response::Secret { key, len: l } if l as usize == len => {
                spec.object(CKK_AES, Zeroizing::new(Vec::new()), held(key), origin, h)
            }
            _ => return Err(CKR_DEVICE_ERROR),
        }
    } else {
        let mut value = Zeroizing::new(vec![0u8; len]);
        lock(&MODULE.rng).fill(&mut value, &MODULE.daemon)?;
        spec.object(CKK_AES, value, None, origin, h)
    };
    add(h, o)
}

/// A secret key given as a value (C_CreateObject of a CKO_SECRET_KEY).
pub(crate) fn create_secret(
    h: CK_SESSION_HANDLE,
    template: &[Attr],
) -> Result<CK_OBJECT_HANDLE, Rv> {
    let mut spec = object::secret_key(template, true)?;
    let key_type = spec.key_type.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
    let value = spec.value.take().ok_or(CKR_TEMPLATE_INCOMPLETE)?;
    // Held here, a generic secret may be longer than the daemon makes them
    // (an HMAC key of a block or two).
    let fits = match key_type {
        CKK_GENERIC_SECRET | CKK_HKDF => (1..=MAX_CREATED).contains(&value.len()),
        _ => object::length_fits(key_type, value.len()),
    };
    if !fits {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    // It came from the application: it was never sensitive here.
    let origin = Origin { len: value.len(), ..Origin::default() };
    add(h, spec.object(key_type, value, None, origin, h))
}

/// The base key of a derivation, as the daemon takes it, and its history.
fn base_key(h: CK_SESSION_HANDLE, base: CK_OBJECT_HANDLE) -> Result<(KeySource, Origin), Rv> {
    with(|s| {
        s.session(h)?;
        let o = s.key(base)?;
        if o.class != Class::Secret || !matches!(o.key_type, CKK_GENERIC_SECRET | CKK_HKDF) {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        if !o.caps.derive {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        let source = match &o.held {
            Some(held) => {
                check_held(held)?;
                KeySource::Held(held.0.clone())
            }
            None => KeySource::Value(Secret::new(o.value.to_vec())),
        };
        Ok((source, o.origin))
    })
}

/// C_DeriveKey: CKM_HKDF_DERIVE (a secret key) or CKM_HKDF_DATA (a data
/// object), from a generic secret or HKDF key, such as a decapsulated one.
pub(crate) fn derive_key(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    base: CK_OBJECT_HANDLE,
    template: &[Attr],
) -> Result<CK_OBJECT_HANDLE, Rv> {
    let Param::Hkdf { extract, expand, prf, salt, info } = &mech.param else {
        return Err(match mech.mtype {
            CKM_HKDF_DERIVE | CKM_HKDF_DATA => CKR_MECHANISM_PARAM_INVALID,
            _ => CKR_MECHANISM_INVALID,
        });
    };
    let (prf, hash_len) = match *prf {
        CKM_SHA256 => (Prf::Sha256, 32),
        CKM_SHA384 => (Prf::Sha384, 48),
        CKM_SHA512 => (Prf::Sha512, 64),
        _ => return Err(CKR_MECHANISM_PARAM_INVALID),
    };
    if !extract && !expand {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let (source, base_origin) = base_key(h, base)?;
    let salt = salt.clone().unwrap_or_default();
    if mech.mtype == CKM_HKDF_DATA {
        return derive_data(h, source, prf, (*extract, *expand), salt, info.clone(), template);
    }
    let spec = object::secret_key(template, false)?;
    let key_type = spec.key_type.unwrap_or(CKK_GENERIC_SECRET);
    // Extract alone gives the pseudorandom key: the hash's length.
    let len = match (spec.len, *expand) {
        (Some(l), _) => l,
        (None, false) => hash_len,
        (None, true) => return Err(CKR_TEMPLATE_INCOMPLETE),
    };
    if !object::length_fits(key_type, len) || (!expand && len != hash_len) {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    let keep = spec.keep();
    let req = Request::Derive {
        base: source,
        prf,
        extract: *extract,
        expand: *expand,
        salt,
        info: info.clone(),
        len: len as u32,
        keep,
    };
    let origin = Origin {
        local: false,
        mechanism: None,
        always_sensitive: base_origin.always_sensitive && spec.caps.sensitive,
        never_extractable: base_origin.never_extractable && !spec.caps.extractable,
        len,
    };
    let o = match daemon_call(&req, CKR_MECHANISM_PARAM_INVALID)? {
        Response::Secret { key, len: l } if keep && l as usize == len => {
            spec.object(key_type, Zeroizing::new(Vec::new()), held(key), origin, h)
        }
        Response::SharedSecret(v) if !keep && v.expose().len() == len => {
            spec.object(key_type, v.into_inner(), None, origin, h)
        }
        _ => return Err(CKR_DEVICE_ERROR),
    };
    add(h, o)
}

/// CKM_HKDF_DATA: the output is a data object (its CKA_VALUE readable).
fn derive_data(
    h: CK_SESSION_HANDLE,
    source: KeySource,
    prf: Prf,
    (extract, expand): (bool, bool),
    salt: Vec<u8>,
    info: Vec<u8>,
    template: &[Attr],
) -> Result<CK_OBJECT_HANDLE, Rv> {
    // The template describes a data object; CKA_VALUE_LEN says how much.
    let mut len = None;
    let mut rest = Vec::new();
    for (t, v) in template {
        match *t {
            CKA_VALUE_LEN => len = Some(object::as_ulong(v)? as usize),
            CKA_CLASS if object::as_ulong(v)? != CKO_DATA => return Err(CKR_TEMPLATE_INCONSISTENT),
            CKA_VALUE => return Err(CKR_ATTRIBUTE_READ_ONLY),
            _ => rest.push((*t, v.clone())),
        }
    }
    let len = len.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
    if !(1..=qkeyd_p11_proto::MAX_SECRET).contains(&len) {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    if !rest.iter().any(|(t, _)| *t == CKA_CLASS) {
        rest.push((CKA_CLASS, object::ulong(CKO_DATA)));
    }
    if rest.iter().any(|(t, v)| *t == CKA_TOKEN && v.first().is_some_and(|b| *b != 0)) {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    let (class, mut attrs) = stored::create(&rest, false)?;
    let req = Request::Derive {
        base: source,
        prf,
        extract,
        expand,
        salt,
        info,
        len: len as u32,
        keep: false,
    };
    let value = match daemon_call(&req, CKR_MECHANISM_PARAM_INVALID)? {
        Response::SharedSecret(v) if v.expose().len() == len => v,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    attrs.insert(CKA_VALUE, value.expose().to_vec());
    with(|s| {
        s.session(h)?;
        if stored::flag(&attrs, CKA_PRIVATE) && !s.logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        let o = s.handle();
        attrs.insert(CKA_UNIQUE_ID, format!("session-{o}").into_bytes());
        s.objects.insert(o, Object::stored(class, attrs, Some(h), None));
        Ok(o)
    })
}
