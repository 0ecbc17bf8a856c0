//! Object management: the token keys and token objects listed by the
//! daemon, C_FindObjects*, C_GetAttributeValue, and the objects the
//! application makes, changes, copies and destroys (C_CreateObject,
//! C_SetAttributeValue, C_CopyObject, C_DestroyObject; secret keys in `secret.rs`).

use std::sync::atomic::Ordering;

use cryptoki_sys::*;
use qkeyd_p11_proto::{KeyEntry, Request, Response, StoredObject};

use super::{State, daemon_call, session::release, with};
use crate::{
    client::EPOCH,
    object::{Attr, Class, Link, Object, Read, Rv},
    stored::{self, Attrs},
};

/// The refreshed list of token keys and token objects, from the daemon.
fn refresh_token_objects() -> Result<(), Rv> {
    let keys = match daemon_call(&Request::List, CKR_GENERAL_ERROR)? {
        Response::Keys(k) => k,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    let objects = match daemon_call(&Request::ListObjects, CKR_GENERAL_ERROR)? {
        Response::Objects(o) => o,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    let epoch = EPOCH.load(Ordering::Acquire);
    with(|s| {
        let listed: std::collections::HashSet<&str> = keys.iter().map(|k| k.key.as_str()).collect();
        let gone: Vec<CK_OBJECT_HANDLE> = s
            .objects
            .iter()
            .filter(|(_, o)| {
                o.token && o.link.as_ref().is_some_and(|l| !listed.contains(l.key.as_str()))
            })
            .map(|(h, _)| *h)
            .collect();
        for h in gone {
            s.objects.remove(&h);
        }
        s.token_handles.retain(|(k, _), _| listed.contains(k.as_str()));
        for k in &keys {
            s.merge_token_key(k, epoch);
        }
        s.merge_token_objects(objects);
        Ok(())
    })
}

/// C_FindObjectsInit.
pub(crate) fn find_init(h: CK_SESSION_HANDLE, template: &[Attr]) -> Result<(), Rv> {
    with(|s| {
        let x = s.session(h)?;
        if x.find.is_some() { Err(CKR_OPERATION_ACTIVE) } else { Ok(()) }
    })?;
    refresh_token_objects()?;
    with(|s| {
        let logged_in = s.logged_in;
        let found: Vec<CK_OBJECT_HANDLE> = s
            .objects
            .iter()
            .filter(|(_, o)| (logged_in || !o.private) && o.matches(template))
            .map(|(h, _)| *h)
            .collect();
        let x = s.session(h)?;
        if x.find.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        x.find = Some(found);
        Ok(())
    })
}

/// C_FindObjects: up to `max` handles.
pub(crate) fn find(h: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>, Rv> {
    with(|s| {
        let found = s.session(h)?.find.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        let n = max.min(found.len());
        Ok(found.drain(..n).collect())
    })
}

/// C_FindObjectsFinal.
pub(crate) fn find_final(h: CK_SESSION_HANDLE) -> Result<(), Rv> {
    with(|s| s.session(h)?.find.take().map(|_| ()).ok_or(CKR_OPERATION_NOT_INITIALIZED))
}

/// C_GetAttributeValue: each attribute's reading, in order.
pub(crate) fn get_attributes(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    types: &[CK_ATTRIBUTE_TYPE],
) -> Result<Vec<Read>, Rv> {
    with(|s| {
        s.session(h)?;
        let obj = s.visible(o)?;
        Ok(types.iter().map(|t| obj.read(*t)).collect())
    })
}

/// An object's attributes as the daemon stores them (its id is kept apart).
fn to_store(attrs: &Attrs) -> Vec<(u64, Vec<u8>)> {
    attrs.iter().filter(|(t, _)| **t != CKA_UNIQUE_ID).map(|(t, v)| (*t, v.clone())).collect()
}

/// Store a token object in the daemon: a new one (`id` of `None`) or a change.
fn put(id: Option<&str>, attrs: &Attrs) -> Result<String, Rv> {
    let req = Request::PutObject {
        id: id.unwrap_or_default().to_owned(),
        private: stored::flag(attrs, CKA_PRIVATE),
        attrs: to_store(attrs),
    };
    match daemon_call(&req, CKR_TEMPLATE_INCONSISTENT)? {
        Response::ObjectId(id) => Ok(id),
        _ => Err(CKR_DEVICE_ERROR),
    }
}

/// Add a new object the application made to session `h` (CKA_TOKEN false)
/// or to the daemon's token objects. Only session objects in a R/O session,
/// and private ones only with the user logged in.
fn add(h: CK_SESSION_HANDLE, class: Class, mut attrs: Attrs) -> Result<CK_OBJECT_HANDLE, Rv> {
    let token = stored::flag(&attrs, CKA_TOKEN);
    with(|s| {
        let rw = s.session(h)?.rw;
        if token && !rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        if stored::flag(&attrs, CKA_PRIVATE) && !s.logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        Ok(())
    })?;
    if !token {
        return with(|s| {
            s.session(h)?;
            let o = s.handle();
            attrs.insert(CKA_UNIQUE_ID, format!("session-{o}").into_bytes());
            s.objects.insert(o, Object::stored(class, attrs, Some(h), None));
            Ok(o)
        });
    }
    let id = put(None, &attrs)?;
    attrs.insert(CKA_UNIQUE_ID, id.clone().into_bytes());
    with(|s| {
        let o = s.handle();
        s.objects.insert(o, Object::stored(class, attrs, None, Some(id.clone())));
        s.stored_handles.insert(id, o);
        Ok(o)
    })
}

/// C_CreateObject: a data object, an X.509 certificate or a public key.
pub(crate) fn create_object(
    h: CK_SESSION_HANDLE,
    template: &[Attr],
) -> Result<CK_OBJECT_HANDLE, Rv> {
    let so = with(|s| {
        s.session(h)?;
        Ok(s.so)
    })?;
    let class =
        template.iter().find(|(t, _)| *t == CKA_CLASS).map(|(_, v)| crate::object::as_ulong(v));
    if let Some(Ok(CKO_SECRET_KEY)) = class {
        return super::create_secret(h, template);
    }
    let (class, attrs) = stored::create(template, so)?;
    add(h, class, attrs)
}

/// C_CopyObject: a copy of an object the application made, changed by `template`.
pub(crate) fn copy_object(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    template: &[Attr],
) -> Result<CK_OBJECT_HANDLE, Rv> {
    let (class, attrs) = with(|s| {
        s.session(h)?;
        let obj = s.visible(o)?;
        if !obj.is_stored() {
            // Keys read CKA_COPYABLE false.
            return Err(CKR_ACTION_PROHIBITED);
        }
        Ok((obj.class, stored::copy(obj.class, &obj.attrs, template)?))
    })?;
    add(h, class, attrs)
}

/// C_SetAttributeValue: on an object the application made, or on a secret
/// key's label, id, uses and latches. Keys the daemon holds are not modifiable.
pub(crate) fn set_attributes(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    template: &[Attr],
) -> Result<(), Rv> {
    let change = with(|s| {
        let rw = s.session(h)?.rw;
        let obj = s.visible(o)?;
        if obj.token && !rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        if !obj.is_stored() {
            let (label, id, caps) = obj.set_secret(template)?;
            let obj = s.objects.get_mut(&o).ok_or(CKR_OBJECT_HANDLE_INVALID)?;
            (obj.label, obj.id, obj.caps) = (label, id, caps);
            return Ok(None);
        }
        let attrs = stored::set(obj.class, &obj.attrs, template)?;
        match &obj.store {
            Some(id) => Ok(Some((id.clone(), obj.class, attrs))),
            None => {
                let obj = s.objects.get_mut(&o).ok_or(CKR_OBJECT_HANDLE_INVALID)?;
                *obj = Object::stored(obj.class, attrs, obj.owner, None);
                Ok(None)
            }
        }
    })?;
    let Some((id, class, attrs)) = change else { return Ok(()) };
    put(Some(&id), &attrs)?;
    with(|s| {
        if let Some(obj) = s.objects.get_mut(&o) {
            *obj = Object::stored(class, attrs, None, Some(id));
        }
        Ok(())
    })
}

/// C_DestroyObject. A token key pair is one vault key: destroying either
/// half destroys both, and destroying the other half afterwards succeeds.
pub(crate) fn destroy(h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Result<(), Rv> {
    enum Then {
        Nothing,
        Session(String),
        Vault(String),
        Stored(String),
    }
    let then = with(|s| {
        let logged_in = s.logged_in;
        let so = s.so;
        let rw = s.session(h)?.rw;
        if s.destroyed_pairs.contains(&o) {
            return Ok(Then::Nothing);
        }
        let obj = s.visible(o)?;
        if obj.token && !rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        if obj.is_stored() {
            if !stored::flag(&obj.attrs, CKA_DESTROYABLE) {
                return Err(CKR_ACTION_PROHIBITED);
            }
            return match obj.store.clone() {
                // Token objects are node state: a login (user or SO) destroys them.
                Some(_) if !logged_in && !so => Err(CKR_USER_NOT_LOGGED_IN),
                Some(id) => Ok(Then::Stored(id)),
                None => {
                    s.objects.remove(&o);
                    Ok(Then::Nothing)
                }
            };
        }
        if obj.private && !logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        if obj.token && !logged_in {
            // The vault key goes with its private half, which needs the PIN.
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        match (&obj.link, obj.token) {
            (Some(l), true) => Ok(Then::Vault(l.key.clone())),
            (Some(l), false) => {
                let key = l.key.clone();
                s.objects.remove(&o);
                let still =
                    s.objects.values().any(|x| x.link.as_ref().is_some_and(|l| l.key == key));
                Ok(if still { Then::Nothing } else { Then::Session(key) })
            }
            (None, _) => {
                let held = obj.held.as_ref().map(|(k, _)| k.clone());
                s.objects.remove(&o);
                Ok(held.map_or(Then::Nothing, Then::Session))
            }
        }
    })?;
    match then {
        Then::Nothing => Ok(()),
        Then::Stored(id) => {
            daemon_call(&Request::DestroyObject { id: id.clone() }, CKR_GENERAL_ERROR)?;
            with(|s| {
                s.objects.remove(&o);
                s.stored_handles.remove(&id);
                Ok(())
            })
        }
        Then::Session(key) => {
            release(vec![key], false);
            Ok(())
        }
        Then::Vault(key) => {
            daemon_call(&Request::Destroy { key: key.clone() }, CKR_GENERAL_ERROR)?;
            with(|s| {
                let halves: Vec<CK_OBJECT_HANDLE> = s
                    .token_handles
                    .iter()
                    .filter(|((k, _), _)| *k == key)
                    .map(|(_, h)| *h)
                    .collect();
                for half in halves {
                    s.objects.remove(&half);
                    s.destroyed_pairs.insert(half);
                }
                s.token_handles.retain(|(k, _), _| *k != key);
                Ok(())
            })
        }
    }
}

impl State {
    /// Make the token objects the daemon listed the ones this process sees:
    /// new ones get handles, changed ones their new attributes, gone ones go.
    fn merge_token_objects(&mut self, listed: Vec<StoredObject>) {
        let ids: std::collections::HashSet<String> = listed.iter().map(|o| o.id.clone()).collect();
        let gone: Vec<(String, CK_OBJECT_HANDLE)> = self
            .stored_handles
            .iter()
            .filter(|(id, _)| !ids.contains(*id))
            .map(|(id, h)| (id.clone(), *h))
            .collect();
        for (id, h) in gone {
            self.stored_handles.remove(&id);
            self.objects.remove(&h);
        }
        for o in listed {
            let mut attrs: Attrs = o.attrs.into_iter().collect();
            attrs.insert(CKA_UNIQUE_ID, o.id.clone().into_bytes());
            let class = match attrs.get(&CKA_CLASS).and_then(|v| crate::object::as_ulong(v).ok()) {
                Some(CKO_DATA) => Class::Data,
                Some(CKO_CERTIFICATE) => Class::Certificate,
                Some(CKO_PUBLIC_KEY) => Class::Public,
                // Not an object this module makes: not shown.
                _ => continue,
            };
            let obj = Object::stored(class, attrs, None, Some(o.id.clone()));
            match self.stored_handles.get(&o.id) {
                Some(h) => {
                    self.objects.insert(*h, obj);
                }
                None => {
                    let h = self.handle();
                    self.objects.insert(h, obj);
                    self.stored_handles.insert(o.id, h);
                }
            }
        }
    }

    /// Add (or keep) the two objects of a listed vault key.
    pub(super) fn merge_token_key(&mut self, k: &KeyEntry, epoch: u64) {
        let id = k.key.split_once('/').map_or(&k.key[..], |(id, _)| id);
        let id = hex_decode(id);
        for class in [Class::Public, Class::Private] {
            if self.token_handles.contains_key(&(k.key.clone(), class)) {
                continue;
            }
            let link = Link { key: k.key.clone(), alg: k.alg, epoch };
            let obj = Object::key(class, link, true, k.label.as_bytes(), &id, &k.public_key);
            let h = self.handle();
            self.objects.insert(h, obj);
            self.token_handles.insert((k.key.clone(), class), h);
        }
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    let digits: Vec<u8> =
        s.bytes().filter_map(|b| (b as char).to_digit(16).map(|d| d as u8)).collect();
    if digits.len() != s.len() || !digits.len().is_multiple_of(2) {
        return s.as_bytes().to_vec();
    }
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_decode() {
        assert_eq!(hex_decode("00ff10"), vec![0, 255, 16]);
        assert_eq!(hex_decode("xyz"), b"xyz".to_vec());
        assert_eq!(hex_decode("abc"), b"abc".to_vec());
    }
}
