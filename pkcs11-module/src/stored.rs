//! Objects the application makes with C_CreateObject and C_CopyObject: data
//! objects, X.509 certificates and ML-KEM/ML-DSA public keys. Such an object
//! is its attributes and nothing more. This file checks a template against
//! its class, fills in the defaults, and says which attributes
//! C_SetAttributeValue and C_CopyObject may change (PKCS#11 3.2 §4.4–4.9).

use std::collections::BTreeMap;

use cryptoki_sys::*;
use qkeyd_p11_proto::Algorithm;

use crate::object::{Attr, Class, Rv, as_bool, as_ulong, ulong};

/// An object's attributes.
pub(crate) type Attrs = BTreeMap<CK_ATTRIBUTE_TYPE, Vec<u8>>;

/// A value's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Ulong,
    Bytes,
}

/// When an attribute may be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// At creation only.
    Create,
    /// At creation, and by C_SetAttributeValue on a modifiable object.
    Set,
    /// At creation and by C_CopyObject (CKA_TOKEN, CKA_PRIVATE, …).
    Copy,
    /// Never: the token sets it.
    Never,
}

/// What the template must and may hold for `class` (with `key_type` for a
/// public key): each attribute's shape, when it may change, and its default
/// (`None`: required, or set by the token).
fn rules(
    class: Class,
    key_type: CK_KEY_TYPE,
) -> Vec<(CK_ATTRIBUTE_TYPE, Kind, Change, Option<Vec<u8>>)> {
    use Change::*;
    use Kind::*;
    let f = || Some(vec![0]);
    let t = || Some(vec![1]);
    let empty = || Some(Vec::new());
    let mut r = vec![
        (CKA_CLASS, Ulong, Create, None),
        (CKA_TOKEN, Bool, Copy, f()),
        // Data objects may hold an application's secrets: private unless asked.
        (CKA_PRIVATE, Bool, Copy, if class == Class::Data { t() } else { f() }),
        (CKA_MODIFIABLE, Bool, Copy, t()),
        (CKA_COPYABLE, Bool, Copy, t()),
        (CKA_DESTROYABLE, Bool, Copy, t()),
        (CKA_LABEL, Bytes, Set, empty()),
        (CKA_UNIQUE_ID, Bytes, Never, None),
    ];
    match class {
        Class::Data => r.extend([
            (CKA_APPLICATION, Bytes, Set, empty()),
            (CKA_OBJECT_ID, Bytes, Set, empty()),
            (CKA_VALUE, Bytes, Set, empty()),
        ]),
        Class::Certificate => r.extend([
            (CKA_CERTIFICATE_TYPE, Ulong, Create, None),
            (CKA_TRUSTED, Bool, Create, f()),
            (
                CKA_CERTIFICATE_CATEGORY,
                Ulong,
                Set,
                Some(ulong(CK_CERTIFICATE_CATEGORY_UNSPECIFIED)),
            ),
            (CKA_CHECK_VALUE, Bytes, Create, empty()),
            (CKA_START_DATE, Bytes, Set, empty()),
            (CKA_END_DATE, Bytes, Set, empty()),
            (CKA_PUBLIC_KEY_INFO, Bytes, Create, empty()),
            (CKA_SUBJECT, Bytes, Set, None),
            (CKA_ID, Bytes, Set, empty()),
            (CKA_ISSUER, Bytes, Set, empty()),
            (CKA_SERIAL_NUMBER, Bytes, Set, empty()),
            (CKA_VALUE, Bytes, Create, None),
            (CKA_URL, Bytes, Create, empty()),
            (CKA_HASH_OF_SUBJECT_PUBLIC_KEY, Bytes, Create, empty()),
            (CKA_HASH_OF_ISSUER_PUBLIC_KEY, Bytes, Create, empty()),
            (
                CKA_JAVA_MIDP_SECURITY_DOMAIN,
                Ulong,
                Create,
                Some(ulong(CK_SECURITY_DOMAIN_UNSPECIFIED)),
            ),
            (CKA_NAME_HASH_ALGORITHM, Ulong, Create, Some(ulong(CKM_SHA_1))),
        ]),
        _ => {
            let kem = key_type == CKK_ML_KEM;
            let mech = if kem { CKM_ML_KEM } else { CKM_ML_DSA };
            r.extend([
                (CKA_KEY_TYPE, Ulong, Create, None),
                (CKA_PARAMETER_SET, Ulong, Create, None),
                (CKA_VALUE, Bytes, Create, None),
                (CKA_ID, Bytes, Set, empty()),
                (CKA_SUBJECT, Bytes, Set, empty()),
                (CKA_START_DATE, Bytes, Set, empty()),
                (CKA_END_DATE, Bytes, Set, empty()),
                (CKA_DERIVE, Bool, Set, f()),
                (CKA_ENCRYPT, Bool, Set, f()),
                (CKA_WRAP, Bool, Set, f()),
                (CKA_VERIFY_RECOVER, Bool, Set, f()),
                (CKA_VERIFY, Bool, Set, if kem { f() } else { t() }),
                (CKA_ENCAPSULATE, Bool, Set, if kem { t() } else { f() }),
                (CKA_TRUSTED, Bool, Create, f()),
                (CKA_PUBLIC_KEY_INFO, Bytes, Create, empty()),
                (CKA_LOCAL, Bool, Never, f()),
                (CKA_KEY_GEN_MECHANISM, Ulong, Never, Some(ulong(CK_UNAVAILABLE_INFORMATION))),
                (CKA_ALLOWED_MECHANISMS, Bytes, Never, Some(ulong(mech))),
            ]);
        }
    }
    r
}

/// The class a template names, and the key type of a public key's.
fn class_of(template: &[Attr]) -> Result<(Class, CK_KEY_TYPE), Rv> {
    let find = |t| template.iter().find(|(a, _)| *a == t).map(|(_, v)| v.as_slice());
    let class = match as_ulong(find(CKA_CLASS).ok_or(CKR_TEMPLATE_INCOMPLETE)?)? {
        CKO_DATA => Class::Data,
        CKO_CERTIFICATE => Class::Certificate,
        CKO_PUBLIC_KEY => Class::Public,
        _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
    };
    let key_type = match (class, find(CKA_KEY_TYPE)) {
        (Class::Public, None) => return Err(CKR_TEMPLATE_INCOMPLETE),
        (Class::Public, Some(v)) => match as_ulong(v)? {
            k @ (CKK_ML_KEM | CKK_ML_DSA) => k,
            _ => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
        },
        _ => CK_UNAVAILABLE_INFORMATION,
    };
    Ok((class, key_type))
}

fn check_kind(kind: Kind, v: &[u8]) -> Result<(), Rv> {
    match kind {
        Kind::Bool => as_bool(v).map(|_| ()),
        Kind::Ulong => as_ulong(v).map(|_| ()),
        Kind::Bytes => Ok(()),
    }
}

/// A checked C_CreateObject template: the class and every attribute, the
/// defaults filled in. `so`: the security officer is logged in (the only one
/// who may make a trusted certificate).
pub(crate) fn create(template: &[Attr], so: bool) -> Result<(Class, Attrs), Rv> {
    let (class, key_type) = class_of(template)?;
    let rules = rules(class, key_type);
    let mut attrs = Attrs::new();
    for (t, v) in template {
        let (_, kind, change, _) =
            rules.iter().find(|r| r.0 == *t).ok_or(CKR_ATTRIBUTE_TYPE_INVALID)?;
        if *change == Change::Never {
            return Err(CKR_ATTRIBUTE_READ_ONLY);
        }
        check_kind(*kind, v)?;
        if attrs.insert(*t, v.clone()).is_some() {
            return Err(CKR_TEMPLATE_INCONSISTENT);
        }
    }
    for (t, _, _, default) in &rules {
        if !attrs.contains_key(t) {
            match default {
                Some(d) => {
                    attrs.insert(*t, d.clone());
                }
                None if *t == CKA_UNIQUE_ID => {}
                None => return Err(CKR_TEMPLATE_INCOMPLETE),
            }
        }
    }
    if flag(&attrs, CKA_TRUSTED) && !so {
        return Err(CKR_ATTRIBUTE_READ_ONLY);
    }
    check(class, &attrs)?;
    Ok((class, attrs))
}

/// Rules across attributes: an X.509 certificate, a public key whose value
/// fits its parameter set and that does only what its algorithm does.
fn check(class: Class, attrs: &Attrs) -> Result<(), Rv> {
    let get = |t| attrs.get(&t).map(Vec::as_slice).unwrap_or_default();
    match class {
        Class::Certificate => {
            if as_ulong(get(CKA_CERTIFICATE_TYPE))? != CKC_X_509 {
                return Err(CKR_ATTRIBUTE_VALUE_INVALID);
            }
            if get(CKA_VALUE).is_empty() {
                return Err(CKR_ATTRIBUTE_VALUE_INVALID);
            }
        }
        Class::Public => {
            let alg = public_alg(attrs).ok_or(CKR_ATTRIBUTE_VALUE_INVALID)?;
            if get(CKA_VALUE).len() != alg.public_key_len() {
                return Err(CKR_ATTRIBUTE_VALUE_INVALID);
            }
            let wrong_use = if alg.is_kem() { CKA_VERIFY } else { CKA_ENCAPSULATE };
            for t in [wrong_use, CKA_DERIVE, CKA_ENCRYPT, CKA_WRAP, CKA_VERIFY_RECOVER] {
                if flag(attrs, t) {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The parameter set of a public key made from attributes.
pub(crate) fn public_alg(attrs: &Attrs) -> Option<Algorithm> {
    let kt = as_ulong(attrs.get(&CKA_KEY_TYPE)?).ok()?;
    let ps = as_ulong(attrs.get(&CKA_PARAMETER_SET)?).ok()?;
    Algorithm::ALL.into_iter().find(|a| a.parameter_set() == ps && a.is_kem() == (kt == CKK_ML_KEM))
}

/// A boolean attribute that is present and true.
pub(crate) fn flag(attrs: &Attrs, t: CK_ATTRIBUTE_TYPE) -> bool {
    attrs.get(&t).is_some_and(|v| v.first().is_some_and(|b| *b != 0))
}

/// C_SetAttributeValue on an object of `class`: the attributes after the
/// change. A non-modifiable object changes nothing (CKR_ACTION_PROHIBITED);
/// attributes fixed at creation are CKR_ATTRIBUTE_READ_ONLY.
pub(crate) fn set(class: Class, attrs: &Attrs, template: &[Attr]) -> Result<Attrs, Rv> {
    if !flag(attrs, CKA_MODIFIABLE) {
        return Err(CKR_ACTION_PROHIBITED);
    }
    change(class, attrs, template, |c| c == Change::Set)
}

/// C_CopyObject from an object of `class`: the copy's attributes. An object
/// that is not copyable is CKR_ACTION_PROHIBITED; the template may change
/// what C_SetAttributeValue may (on a modifiable object) and CKA_TOKEN,
/// CKA_PRIVATE, CKA_MODIFIABLE, CKA_DESTROYABLE, and CKA_COPYABLE to false.
pub(crate) fn copy(class: Class, attrs: &Attrs, template: &[Attr]) -> Result<Attrs, Rv> {
    if !flag(attrs, CKA_COPYABLE) {
        return Err(CKR_ACTION_PROHIBITED);
    }
    let modifiable = flag(attrs, CKA_MODIFIABLE);
    // The source is copyable, so the copy's CKA_COPYABLE can only stay or turn false.
    let mut new =
        change(class, attrs, template, |c| c == Change::Copy || (modifiable && c == Change::Set))?;
    new.remove(&CKA_UNIQUE_ID);
    Ok(new)
}

fn change(
    class: Class,
    attrs: &Attrs,
    template: &[Attr],
    may: impl Fn(Change) -> bool,
) -> Result<Attrs, Rv> {
    let key_type = attrs.get(&CKA_KEY_TYPE).and_then(|v| as_ulong(v).ok()).unwrap_or(0);
    let rules = rules(class, key_type);
    let mut new = attrs.clone();
    for (t, v) in template {
        let (_, kind, change, _) =
            rules.iter().find(|r| r.0 == *t).ok_or(CKR_ATTRIBUTE_TYPE_INVALID)?;
        if !may(*change) {
            return Err(CKR_ATTRIBUTE_READ_ONLY);
        }
        check_kind(*kind, v)?;
        new.insert(*t, v.clone());
    }
    check(class, &new)?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> Vec<Attr> {
        vec![
            (CKA_CLASS, ulong(CKO_DATA)),
            (CKA_TOKEN, vec![0]),
            (CKA_APPLICATION, b"app".to_vec()),
            (CKA_VALUE, vec![0xde, 0xad]),
        ]
    }

    #[test]
    fn data_objects_take_their_defaults_and_refuse_what_is_not_theirs() {
        let (class, a) = create(&data(), false).unwrap();
        assert_eq!(class, Class::Data);
        assert!(flag(&a, CKA_PRIVATE) && flag(&a, CKA_MODIFIABLE) && flag(&a, CKA_DESTROYABLE));
        assert_eq!(a[&CKA_LABEL], Vec::<u8>::new());
        assert_eq!(create(&[(CKA_VALUE, vec![1])], false).unwrap_err(), CKR_TEMPLATE_INCOMPLETE);
        assert_eq!(create(&[], false).unwrap_err(), CKR_TEMPLATE_INCOMPLETE);
        let mut t = data();
        t.push((CKA_KEY_TYPE, ulong(CKK_AES)));
        assert_eq!(create(&t, false).unwrap_err(), CKR_ATTRIBUTE_TYPE_INVALID);
        let mut t = data();
        t.push((CKA_TOKEN, vec![1]));
        assert_eq!(create(&t, false).unwrap_err(), CKR_TEMPLATE_INCONSISTENT);
        let mut t = data();
        t.push((CKA_UNIQUE_ID, b"mine".to_vec()));
        assert_eq!(create(&t, false).unwrap_err(), CKR_ATTRIBUTE_READ_ONLY);
        let mut t = data();
        t.push((CKA_PRIVATE, vec![1, 0]));
        assert_eq!(create(&t, false).unwrap_err(), CKR_ATTRIBUTE_VALUE_INVALID);
        assert_eq!(
            create(&[(CKA_CLASS, ulong(CKO_OTP_KEY))], false).unwrap_err(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
    }

    #[test]
    fn set_and_copy_follow_modifiable_copyable_and_read_only() {
        let (class, a) = create(&data(), false).unwrap();
        let b = set(class, &a, &[(CKA_LABEL, b"new".to_vec())]).unwrap();
        assert_eq!(b[&CKA_LABEL], b"new");
        assert_eq!(
            set(class, &a, &[(CKA_CLASS, ulong(CKO_DATA))]).unwrap_err(),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(set(class, &a, &[(CKA_TOKEN, vec![1])]).unwrap_err(), CKR_ATTRIBUTE_READ_ONLY);
        assert_eq!(set(class, &a, &[(999, vec![])]).unwrap_err(), CKR_ATTRIBUTE_TYPE_INVALID);
        // A copy may change CKA_TOKEN and make itself unmodifiable and uncopyable.
        let c = copy(class, &a, &[(CKA_MODIFIABLE, vec![0]), (CKA_COPYABLE, vec![0])]).unwrap();
        assert_eq!(set(class, &c, &[(CKA_LABEL, vec![])]).unwrap_err(), CKR_ACTION_PROHIBITED);
        assert_eq!(copy(class, &c, &[]).unwrap_err(), CKR_ACTION_PROHIBITED);
        assert_eq!(
            copy(class, &a, &[(CKA_CLASS, ulong(CKO_PUBLIC_KEY))]).unwrap_err(),
            CKR_ATTRIBUTE_READ_ONLY
        );
        // An unmodifiable object's copy still takes the copy attributes, not the others.
        let (_, ro) = create(&[data(), vec![(CKA_MODIFIABLE, vec![0])]].concat(), false).unwrap();
        assert!(copy(class, &ro, &[(CKA_TOKEN, vec![1])]).is_ok());
        assert_eq!(copy(class, &ro, &[(CKA_LABEL, vec![])]).unwrap_err(), CKR_ATTRIBUTE_READ_ONLY);
        // Uncopyable cannot be copied back to copyable.
        let (_, nc) = create(&[data(), vec![(CKA_COPYABLE, vec![0])]].concat(), false).unwrap();
        assert_eq!(copy(class, &nc, &[]).unwrap_err(), CKR_ACTION_PROHIBITED);
    }

    #[test]
    fn certificates_need_their_type_subject_and_value_and_trust_needs_the_so() {
        let cert = vec![
            (CKA_CLASS, ulong(CKO_CERTIFICATE)),
            (CKA_CERTIFICATE_TYPE, ulong(CKC_X_509)),
            (CKA_SUBJECT, vec![0x30, 0]),
            (CKA_VALUE, vec![0x30, 0x03, 1, 2, 3]),
            (CKA_ID, vec![7]),
        ];
        let (class, a) = create(&cert, false).unwrap();
        assert_eq!(class, Class::Certificate);
        assert!(!flag(&a, CKA_PRIVATE) && !flag(&a, CKA_TRUSTED));
        assert_eq!(create(&cert[..3], false).unwrap_err(), CKR_TEMPLATE_INCOMPLETE);
        let mut t = cert.clone();
        t.push((CKA_TRUSTED, vec![1]));
        assert_eq!(create(&t, false).unwrap_err(), CKR_ATTRIBUTE_READ_ONLY);
        assert!(create(&t, true).is_ok());
        let mut t = cert.clone();
        t[1].1 = ulong(CKC_WTLS);
        assert_eq!(create(&t, false).unwrap_err(), CKR_ATTRIBUTE_VALUE_INVALID);
        assert_eq!(set(class, &a, &[(CKA_VALUE, vec![1])]).unwrap_err(), CKR_ATTRIBUTE_READ_ONLY);
        assert!(set(class, &a, &[(CKA_ID, vec![8])]).is_ok());
    }

    #[test]
    fn public_keys_fit_their_parameter_set_and_do_what_it_does() {
        let kem = |len: usize| {
            vec![
                (CKA_CLASS, ulong(CKO_PUBLIC_KEY)),
                (CKA_KEY_TYPE, ulong(CKK_ML_KEM)),
                (CKA_PARAMETER_SET, ulong(Algorithm::MlKem768.parameter_set())),
                (CKA_VALUE, vec![1; len]),
            ]
        };
        let (_, a) = create(&kem(1184), false).unwrap();
        assert_eq!(public_alg(&a), Some(Algorithm::MlKem768));
        assert!(flag(&a, CKA_ENCAPSULATE) && !flag(&a, CKA_VERIFY));
        assert_eq!(create(&kem(1183), false).unwrap_err(), CKR_ATTRIBUTE_VALUE_INVALID);
        let mut t = kem(1184);
        t.push((CKA_VERIFY, vec![1]));
        assert_eq!(create(&t, false).unwrap_err(), CKR_TEMPLATE_INCONSISTENT);
        let mut t = kem(1184);
        t[1].1 = ulong(CKK_RSA);
        assert_eq!(create(&t, false).unwrap_err(), CKR_ATTRIBUTE_VALUE_INVALID);
        assert_eq!(create(&kem(1184)[..3], false).unwrap_err(), CKR_TEMPLATE_INCOMPLETE);
    }
}
