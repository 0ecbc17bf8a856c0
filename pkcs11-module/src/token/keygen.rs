//! C_GenerateKeyPair: ML-KEM and ML-DSA key pairs, made by the daemon (in
//! its vault for token keys, else for this connection only).

use std::sync::atomic::Ordering;

use cryptoki_sys::*;
use qkeyd_p11_proto::{self as proto, Algorithm, Request, Response};

use super::{Mech, Param, daemon_call, session::release, with};
use crate::{
    client::EPOCH,
    object::{self, Attr, Class, Link, Object, Rv},
};

/// C_GenerateKeyPair: (public, private) handles.
pub(crate) fn generate_key_pair(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    public: &[Attr],
    private: &[Attr],
) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE), Rv> {
    let kem = match mech.mtype {
        CKM_ML_KEM_KEY_PAIR_GEN => true,
        CKM_ML_DSA_KEY_PAIR_GEN => false,
        _ => return Err(CKR_MECHANISM_INVALID),
    };
    if !matches!(mech.param, Param::None) {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    let pubs = object::key_pair_half(public, Class::Public, kem)?;
    let privs = object::key_pair_half(private, Class::Private, kem)?;
    let set = match (pubs.parameter_set, privs.parameter_set) {
        (Some(a), Some(b)) if a != b => return Err(CKR_TEMPLATE_INCONSISTENT),
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return Err(CKR_TEMPLATE_INCOMPLETE),
    };
    let alg = Algorithm::from_parameter_set(kem, set).ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
    let token = match (pubs.token, privs.token) {
        (Some(a), Some(b)) if a != b => return Err(CKR_TEMPLATE_INCONSISTENT),
        (a, b) => a.or(b).unwrap_or(false),
    };
    if token {
        // The vault keeps one label per pair, names it by its own id, and
        // keeps public halves public and private halves private and usable.
        let same = |a: &Option<Vec<u8>>, b: &Option<Vec<u8>>| a.is_none() || b.is_none() || a == b;
        if !same(&pubs.label, &privs.label)
            || pubs.private == Some(true)
            || privs.private == Some(false)
            || pubs.usage == Some(false)
            || privs.usage == Some(false)
        {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
        if pubs.id.iter().chain(&privs.id).any(|id| !id.is_empty()) {
            return Err(CKR_ATTRIBUTE_READ_ONLY);
        }
    }
    let label = privs.label.clone().or_else(|| pubs.label.clone()).unwrap_or_default();
    let label_text = String::from_utf8(label.clone()).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)?;
    if label_text.len() > proto::MAX_LABEL {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    with(|s| {
        let logged_in = s.logged_in;
        let x = s.session(h)?;
        if !logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        if token && !x.rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        Ok(())
    })?;
    let entry = match daemon_call(
        &Request::Generate { alg, token, label: label_text },
        CKR_ATTRIBUTE_VALUE_INVALID,
    )? {
        Response::Key(k) if k.alg == alg && k.token == token => k,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    let epoch = EPOCH.load(Ordering::Acquire);
    let made = with(|s| {
        // The session may have closed meanwhile: a token key then simply
        // stays in the vault; a session key is released below.
        s.session(h)?;
        if token {
            s.merge_token_key(&entry, epoch);
            let p = s.token_handles.get(&(entry.key.clone(), Class::Public)).copied();
            let q = s.token_handles.get(&(entry.key.clone(), Class::Private)).copied();
            return p.zip(q).ok_or(CKR_GENERAL_ERROR);
        }
        let link = Link { key: entry.key.clone(), alg, epoch };
        let mut p = Object::key(
            Class::Public,
            link.clone(),
            false,
            pubs.label.as_deref().unwrap_or_default(),
            pubs.id.as_deref().unwrap_or_default(),
            &entry.public_key,
        );
        p.private = pubs.private.unwrap_or(false);
        p.owner = Some(h);
        if pubs.usage == Some(false) {
            p.caps.verify = false;
            p.caps.encapsulate = false;
        }
        let mut q = Object::key(
            Class::Private,
            link,
            false,
            privs.label.as_deref().unwrap_or_default(),
            privs.id.as_deref().unwrap_or_default(),
            &[],
        );
        q.private = privs.private.unwrap_or(true);
        q.owner = Some(h);
        if privs.usage == Some(false) {
            q.caps.sign = false;
            q.caps.decapsulate = false;
        }
        let (hp, hq) = (s.handle(), s.handle());
        s.objects.insert(hp, p);
        s.objects.insert(hq, q);
        Ok((hp, hq))
    });
    if made.is_err() && !token {
        release(vec![entry.key], false);
    }
    made
}
