//! Object management: the token keys listed by the daemon, C_FindObjects*,
//! reading (never modifying) attributes, and C_DestroyObject.

use std::sync::atomic::Ordering;

use cryptoki_sys::*;
use qkeyd_p11_proto::{KeyEntry, Request, Response};

use super::{State, daemon_call, session::release, with};
use crate::{
    client::EPOCH,
    object::{Attr, Class, Link, Object, Read, Rv},
};

/// The refreshed list of token keys, from the daemon.
fn refresh_token_objects() -> Result<(), Rv> {
    let keys = match daemon_call(&Request::List, CKR_GENERAL_ERROR)? {
        Response::Keys(k) => k,
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

/// C_SetAttributeValue and C_CopyObject: these objects are not modifiable.
pub(crate) fn modify(h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Result<(), Rv> {
    with(|s| {
        s.session(h)?;
        s.visible(o)?;
        Err(CKR_ACTION_PROHIBITED)
    })
}

/// C_DestroyObject. A token key pair is one vault key: destroying either
/// half destroys both, and destroying the other half afterwards succeeds.
pub(crate) fn destroy(h: CK_SESSION_HANDLE, o: CK_OBJECT_HANDLE) -> Result<(), Rv> {
    enum Then {
        Nothing,
        Session(String),
        Vault(String),
    }
    let then = with(|s| {
        let logged_in = s.logged_in;
        let rw = s.session(h)?.rw;
        if s.destroyed_pairs.contains(&o) {
            return Ok(Then::Nothing);
        }
        let obj = s.visible(o)?;
        if obj.token && !rw {
            return Err(CKR_SESSION_READ_ONLY);
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
                s.objects.remove(&o);
                Ok(Then::Nothing)
            }
        }
    })?;
    match then {
        Then::Nothing => Ok(()),
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
