//! Objects as the application sees them, and what reading their attributes gives.
//!
//! Four kinds: ML-KEM/ML-DSA public and private keys (each tied to a key in
//! the daemon), secret keys (their value held here, zeroized on drop, or held
//! by the daemon when sensitive), and the objects the application makes
//! itself, which are their attributes only (`stored.rs`: data objects,
//! certificates, imported public keys). A private key has no value on this
//! side at all: its CKA_VALUE and CKA_SEED read as sensitive. The templates
//! that make keys are checked in `template.rs`.

use cryptoki_sys::*;
use qkeyd_p11_proto::Algorithm;
use zeroize::Zeroizing;

use crate::stored::{self, Attrs};
pub(crate) use crate::template::{
    SHARED_SECRET_LEN, SecretSpec, key_pair_half, length_fits, secret_key,
};

/// A CK_RV error.
pub(crate) type Rv = CK_RV;

/// An attribute of a template: type and value bytes.
pub(crate) type Attr = (CK_ATTRIBUTE_TYPE, Vec<u8>);

/// Which kind of object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Class {
    Public,
    Private,
    Secret,
    Data,
    Certificate,
}

impl Class {
    pub(crate) fn code(self) -> CK_OBJECT_CLASS {
        match self {
            Self::Public => CKO_PUBLIC_KEY,
            Self::Private => CKO_PRIVATE_KEY,
            Self::Secret => CKO_SECRET_KEY,
            Self::Data => CKO_DATA,
            Self::Certificate => CKO_CERTIFICATE,
        }
    }
}

/// The daemon's key behind a public or private key object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// Reference in requests (`ID/VERSION` or `s/N`).
    pub(crate) key: String,
    /// Parameter set.
    pub(crate) alg: Algorithm,
    /// The daemon connection it belongs to (session keys die with it).
    pub(crate) epoch: u64,
}

/// Boolean attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Caps {
    pub(crate) encrypt: bool,
    pub(crate) decrypt: bool,
    pub(crate) sign: bool,
    pub(crate) verify: bool,
    pub(crate) wrap: bool,
    pub(crate) unwrap: bool,
    pub(crate) derive: bool,
    pub(crate) encapsulate: bool,
    pub(crate) decapsulate: bool,
    pub(crate) sensitive: bool,
    pub(crate) extractable: bool,
}

/// One object.
pub(crate) struct Object {
    pub(crate) class: Class,
    pub(crate) key_type: CK_KEY_TYPE,
    pub(crate) token: bool,
    pub(crate) private: bool,
    pub(crate) label: Vec<u8>,
    pub(crate) id: Vec<u8>,
    /// Public and private keys: the daemon's key.
    pub(crate) link: Option<Link>,
    /// Public key: its encoding; secret key: its value; private key: empty.
    pub(crate) value: Zeroizing<Vec<u8>>,
    pub(crate) caps: Caps,
    /// Session objects: the session that made it (closing it destroys them).
    pub(crate) owner: Option<CK_SESSION_HANDLE>,
    /// An object the application made: every attribute (empty otherwise).
    pub(crate) attrs: Attrs,
    /// A token object the application made: the daemon's id for it.
    pub(crate) store: Option<String>,
    /// A secret key the daemon holds for this connection (`k/N`), made on
    /// the connection of that epoch; its value is never on this side.
    pub(crate) held: Option<(String, u64)>,
    /// A secret key's history.
    pub(crate) origin: Origin,
}

/// How a secret key came to be: what CKA_LOCAL, CKA_KEY_GEN_MECHANISM,
/// CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE say, and its length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) local: bool,
    pub(crate) mechanism: Option<CK_MECHANISM_TYPE>,
    pub(crate) always_sensitive: bool,
    pub(crate) never_extractable: bool,
    pub(crate) len: usize,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("class", &self.class)
            .field("key_type", &self.key_type)
            .field("token", &self.token)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// What reading one attribute gives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    Value(Zeroizing<Vec<u8>>),
    /// CKR_ATTRIBUTE_SENSITIVE.
    Sensitive,
    /// CKR_ATTRIBUTE_TYPE_INVALID.
    Invalid,
}

/// A CK_ULONG attribute value.
pub(crate) fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn key_type_of(alg: Algorithm) -> CK_KEY_TYPE {
    if alg.is_kem() { CKK_ML_KEM } else { CKK_ML_DSA }
}

/// The mechanisms a key of this object can be used with.
fn allowed_mechanisms(o: &Object) -> Vec<u8> {
    let m: &[CK_MECHANISM_TYPE] = match (o.class, o.key_type) {
        (Class::Secret, _) => &[],
        (_, CKK_ML_KEM) => &[CKM_ML_KEM],
        _ => &[CKM_ML_DSA],
    };
    m.iter().flat_map(|t| t.to_ne_bytes()).collect()
}

impl Object {
    /// The object for a daemon key's public (`Class::Public`) or private half.
    pub(crate) fn key(
        class: Class,
        link: Link,
        token: bool,
        label: &[u8],
        id: &[u8],
        public_key: &[u8],
    ) -> Self {
        let kem = link.alg.is_kem();
        let private = class == Class::Private;
        let caps = Caps {
            sign: private && !kem,
            verify: !private && !kem,
            encapsulate: !private && kem,
            decapsulate: private && kem,
            sensitive: private,
            ..Caps::default()
        };
        Self {
            class,
            key_type: key_type_of(link.alg),
            token,
            private,
            label: label.to_vec(),
            id: id.to_vec(),
            value: Zeroizing::new(if private { Vec::new() } else { public_key.to_vec() }),
            link: Some(link),
            caps,
            owner: None,
            attrs: Attrs::new(),
            store: None,
            held: None,
            origin: Origin::default(),
        }
    }

    /// An object the application made from `attrs` (checked by `stored.rs`):
    /// a session object of `owner`, or a token object the daemon keeps as `store`.
    pub(crate) fn stored(
        class: Class,
        attrs: Attrs,
        owner: Option<CK_SESSION_HANDLE>,
        store: Option<String>,
    ) -> Self {
        let get = |t| attrs.get(&t).cloned().unwrap_or_default();
        Self {
            class,
            key_type: attrs.get(&CKA_KEY_TYPE).and_then(|v| as_ulong(v).ok()).unwrap_or(0),
            token: stored::flag(&attrs, CKA_TOKEN),
            private: stored::flag(&attrs, CKA_PRIVATE),
            label: get(CKA_LABEL),
            id: get(CKA_ID),
            link: None,
            value: Zeroizing::new(get(CKA_VALUE)),
            caps: Caps {
                verify: stored::flag(&attrs, CKA_VERIFY),
                encapsulate: stored::flag(&attrs, CKA_ENCAPSULATE),
                ..Caps::default()
            },
            owner,
            attrs,
            store,
            held: None,
            origin: Origin::default(),
        }
    }

    /// The daemon's key behind this object: a key pair's or a held secret's.
    pub(crate) fn daemon_key(&self) -> Option<&str> {
        match (&self.link, &self.held) {
            (Some(l), _) => Some(&l.key),
            (None, Some((k, _))) => Some(k),
            (None, None) => None,
        }
    }

    /// Made by the application: its attributes are all it is.
    pub(crate) fn is_stored(&self) -> bool {
        !self.attrs.is_empty()
    }

    /// The parameter set, for ML-KEM and ML-DSA keys.
    pub(crate) fn alg(&self) -> Option<Algorithm> {
        match &self.link {
            Some(l) => Some(l.alg),
            None => stored::public_alg(&self.attrs),
        }
    }

    /// Read attribute `t`.
    pub(crate) fn read(&self, t: CK_ATTRIBUTE_TYPE) -> Read {
        if self.is_stored() {
            return self
                .attrs
                .get(&t)
                .map_or(Read::Invalid, |v| Read::Value(Zeroizing::new(v.clone())));
        }
        let v = |b: Vec<u8>| Read::Value(Zeroizing::new(b));
        let b = |x: bool| Read::Value(Zeroizing::new(vec![CK_BBOOL::from(x)]));
        let c = &self.caps;
        let class = self.class;
        match t {
            CKA_CLASS => v(ulong(class.code())),
            CKA_TOKEN => b(self.token),
            CKA_PRIVATE => b(self.private),
            // A secret key's label, id, uses and latches may change; a
            // daemon key's attributes are the daemon's.
            CKA_MODIFIABLE => b(class == Class::Secret),
            CKA_COPYABLE => b(false),
            CKA_DESTROYABLE => b(true),
            CKA_LABEL => v(self.label.clone()),
            CKA_KEY_TYPE => v(ulong(self.key_type)),
            CKA_ID => v(self.id.clone()),
            CKA_START_DATE | CKA_END_DATE => v(Vec::new()),
            CKA_LOCAL if class == Class::Secret => b(self.origin.local),
            CKA_LOCAL => b(true),
            CKA_KEY_GEN_MECHANISM => v(ulong(match (class, self.key_type) {
                (Class::Secret, _) => self.origin.mechanism.unwrap_or(CK_UNAVAILABLE_INFORMATION),
                (_, CKK_ML_KEM) => CKM_ML_KEM_KEY_PAIR_GEN,
                _ => CKM_ML_DSA_KEY_PAIR_GEN,
            })),
            CKA_ALLOWED_MECHANISMS => v(allowed_mechanisms(self)),
            // Every key answers every capability, so a reader that asks for
            // all of them at once (python-pkcs11 does) gets a full answer.
            CKA_ENCRYPT => b(c.encrypt),
            CKA_DECRYPT => b(c.decrypt),
            CKA_SIGN => b(c.sign),
            CKA_VERIFY => b(c.verify),
            CKA_WRAP => b(c.wrap),
            CKA_UNWRAP => b(c.unwrap),
            CKA_DERIVE => b(c.derive),
            CKA_ENCAPSULATE => b(c.encapsulate),
            CKA_DECAPSULATE => b(c.decapsulate),
            CKA_SIGN_RECOVER | CKA_VERIFY_RECOVER => b(false),
            CKA_SUBJECT | CKA_PUBLIC_KEY_INFO if class != Class::Secret => v(Vec::new()),
            CKA_TRUSTED if class != Class::Private => b(false),
            CKA_PARAMETER_SET if class != Class::Secret => {
                self.alg().map_or(Read::Invalid, |a| v(ulong(a.parameter_set())))
            }
            CKA_VALUE if class == Class::Public => v(self.value.to_vec()),
            CKA_VALUE | CKA_SEED if class == Class::Private => Read::Sensitive,
            CKA_SENSITIVE if class != Class::Public => b(c.sensitive),
            CKA_EXTRACTABLE if class != Class::Public => b(c.extractable),
            // A private key never left the daemon; a secret key's history says.
            CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE if class == Class::Private => b(true),
            CKA_ALWAYS_SENSITIVE if class == Class::Secret => b(self.origin.always_sensitive),
            CKA_NEVER_EXTRACTABLE if class == Class::Secret => b(self.origin.never_extractable),
            CKA_ALWAYS_AUTHENTICATE | CKA_WRAP_WITH_TRUSTED if class == Class::Private => b(false),
            CKA_WRAP_WITH_TRUSTED if class == Class::Secret => b(false),
            CKA_VALUE_LEN if class == Class::Secret => v(ulong(self.origin.len as CK_ULONG)),
            CKA_VALUE if class == Class::Secret => {
                if c.sensitive || !c.extractable || self.held.is_some() {
                    Read::Sensitive
                } else {
                    v(self.value.to_vec())
                }
            }
            _ => Read::Invalid,
        }
    }

    /// C_SetAttributeValue on a secret key held here: the label, the id, the
    /// uses, and the latches (CKA_SENSITIVE only to true, CKA_EXTRACTABLE
    /// only to false). Returns the changed object's fields; nothing changes
    /// unless every attribute may.
    pub(crate) fn set_secret(&self, template: &[Attr]) -> Result<(Vec<u8>, Vec<u8>, Caps), Rv> {
        if self.class != Class::Secret {
            return Err(CKR_ACTION_PROHIBITED);
        }
        let (mut label, mut id, mut c) = (self.label.clone(), self.id.clone(), self.caps);
        for (t, v) in template {
            match *t {
                CKA_LABEL => label = v.clone(),
                CKA_ID => id = v.clone(),
                CKA_ENCRYPT => c.encrypt = as_bool(v)?,
                CKA_DECRYPT => c.decrypt = as_bool(v)?,
                CKA_SIGN => c.sign = as_bool(v)?,
                CKA_VERIFY => c.verify = as_bool(v)?,
                CKA_WRAP => c.wrap = as_bool(v)?,
                CKA_UNWRAP => c.unwrap = as_bool(v)?,
                CKA_DERIVE => c.derive = as_bool(v)?,
                CKA_SENSITIVE => {
                    if !as_bool(v)? && c.sensitive {
                        return Err(CKR_ATTRIBUTE_READ_ONLY);
                    }
                    c.sensitive = as_bool(v)?;
                }
                CKA_EXTRACTABLE => {
                    if as_bool(v)? && !c.extractable {
                        return Err(CKR_ATTRIBUTE_READ_ONLY);
                    }
                    c.extractable = as_bool(v)?;
                }
                CKA_START_DATE | CKA_END_DATE if v.is_empty() => {}
                _ if matches!(self.read(*t), Read::Invalid) => {
                    return Err(CKR_ATTRIBUTE_TYPE_INVALID);
                }
                _ => return Err(CKR_ATTRIBUTE_READ_ONLY),
            }
        }
        Ok((label, id, c))
    }

    /// Whether every attribute of `template` has exactly this value here.
    pub(crate) fn matches(&self, template: &[Attr]) -> bool {
        template.iter().all(|(t, want)| match self.read(*t) {
            Read::Value(have) => have.as_slice() == want.as_slice(),
            Read::Sensitive | Read::Invalid => false,
        })
    }
}

/// A boolean attribute value.
pub(crate) fn as_bool(v: &[u8]) -> Result<bool, Rv> {
    match v {
        [b] => Ok(*b != 0),
        _ => Err(CKR_ATTRIBUTE_VALUE_INVALID),
    }
}

/// A CK_ULONG attribute value.
pub(crate) fn as_ulong(v: &[u8]) -> Result<CK_ULONG, Rv> {
    <[u8; std::mem::size_of::<CK_ULONG>()]>::try_from(v)
        .map(CK_ULONG::from_ne_bytes)
        .map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(alg: Algorithm) -> Link {
        Link { key: "s/1".into(), alg, epoch: 1 }
    }

    #[test]
    fn private_values_never_read() {
        let o = Object::key(Class::Private, link(Algorithm::MlDsa65), false, b"l", b"", &[7; 1952]);
        assert_eq!(o.read(CKA_VALUE), Read::Sensitive);
        assert_eq!(o.read(CKA_SEED), Read::Sensitive);
        assert_eq!(o.read(CKA_SENSITIVE), Read::Value(Zeroizing::new(vec![1])));
        assert_eq!(o.read(CKA_EXTRACTABLE), Read::Value(Zeroizing::new(vec![0])));
        assert_eq!(o.read(CKA_PARAMETER_SET), Read::Value(Zeroizing::new(ulong(2))));
        assert!(o.value.is_empty());
        let p = Object::key(Class::Public, link(Algorithm::MlDsa65), false, b"l", b"", &[7; 1952]);
        assert_eq!(p.read(CKA_VALUE), Read::Value(Zeroizing::new(vec![7; 1952])));
        assert_eq!(p.read(CKA_SEED), Read::Invalid);
        assert_eq!(p.read(CKA_SENSITIVE), Read::Invalid);
    }

    #[test]
    fn every_key_answers_every_capability() {
        for class in [Class::Public, Class::Private] {
            for alg in [Algorithm::MlKem512, Algorithm::MlDsa44] {
                let o = Object::key(class, link(alg), true, b"", b"", &[1; 32]);
                for t in [
                    CKA_CLASS,
                    CKA_ENCRYPT,
                    CKA_DECRYPT,
                    CKA_SIGN,
                    CKA_VERIFY,
                    CKA_WRAP,
                    CKA_UNWRAP,
                    CKA_DERIVE,
                    CKA_ENCAPSULATE,
                    CKA_DECAPSULATE,
                    CKA_KEY_TYPE,
                ] {
                    assert!(matches!(o.read(t), Read::Value(_)), "{class:?} {alg:?} {t:#x}");
                }
                let usage = match (class, alg.is_kem()) {
                    (Class::Public, true) => CKA_ENCAPSULATE,
                    (Class::Public, false) => CKA_VERIFY,
                    (_, true) => CKA_DECAPSULATE,
                    (_, false) => CKA_SIGN,
                };
                assert_eq!(o.read(usage), Read::Value(Zeroizing::new(vec![1])));
            }
        }
    }

    #[test]
    fn templates_are_checked() {
        let ps = (CKA_PARAMETER_SET, ulong(2));
        let s = key_pair_half(&[ps.clone(), (CKA_TOKEN, vec![1])], Class::Public, false).unwrap();
        assert_eq!((s.parameter_set, s.token), (Some(2), Some(true)));
        let bad = |t: &[Attr], class| key_pair_half(t, class, false).unwrap_err();
        assert_eq!(
            bad(&[(CKA_CLASS, ulong(CKO_SECRET_KEY))], Class::Public),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert_eq!(
            bad(&[(CKA_KEY_TYPE, ulong(CKK_ML_KEM))], Class::Public),
            CKR_TEMPLATE_INCONSISTENT
        );
        assert_eq!(bad(&[(CKA_SENSITIVE, vec![0])], Class::Private), CKR_TEMPLATE_INCONSISTENT);
        assert_eq!(bad(&[(CKA_EXTRACTABLE, vec![1])], Class::Private), CKR_TEMPLATE_INCONSISTENT);
        assert_eq!(bad(&[(CKA_DECAPSULATE, vec![1])], Class::Private), CKR_TEMPLATE_INCONSISTENT);
        assert_eq!(bad(&[(CKA_VALUE, vec![1])], Class::Private), CKR_ATTRIBUTE_READ_ONLY);
        assert_eq!(bad(&[(CKA_TOKEN, vec![1, 0])], Class::Public), CKR_ATTRIBUTE_VALUE_INVALID);
        assert_eq!(
            bad(&[(CKA_PARAMETER_SET, vec![1])], Class::Public),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(bad(&[(0x8000_1234, vec![])], Class::Public), CKR_ATTRIBUTE_TYPE_INVALID);
        // python-pkcs11's defaults pass.
        let py = [
            (CKA_CLASS, ulong(CKO_PRIVATE_KEY)),
            (CKA_ID, vec![]),
            (CKA_LABEL, vec![]),
            (CKA_PRIVATE, vec![1]),
            (CKA_SENSITIVE, vec![1]),
            (CKA_DECRYPT, vec![0]),
            (CKA_UNWRAP, vec![0]),
            (CKA_SIGN, vec![1]),
            (CKA_DERIVE, vec![0]),
            (CKA_TOKEN, vec![0]),
        ];
        assert!(key_pair_half(&py, Class::Private, false).is_ok());
    }

    /// A session secret key of `template` holding `value` here.
    fn secret(template: &[Attr], value: &[u8]) -> Object {
        let origin = Origin { len: value.len(), ..Origin::default() };
        let t = secret_key(template, false).unwrap();
        let kt = t.key_type.unwrap_or(CKK_GENERIC_SECRET);
        t.object(kt, Zeroizing::new(value.to_vec()), None, origin, 1)
    }

    #[test]
    fn secret_templates_are_checked() {
        let s = secret_key(
            &[(CKA_KEY_TYPE, ulong(CKK_AES)), (CKA_VALUE_LEN, ulong(32)), (CKA_SENSITIVE, vec![0])],
            false,
        )
        .unwrap();
        assert_eq!((s.key_type, s.len, s.keep()), (Some(CKK_AES), Some(32), false));
        assert!(length_fits(CKK_AES, 24) && !length_fits(CKK_AES, 20));
        assert!(length_fits(CKK_GENERIC_SECRET, 64) && !length_fits(CKK_GENERIC_SECRET, 65));
        assert!(!length_fits(CKK_ML_KEM, 32));
        assert_eq!(
            secret_key(&[(CKA_TOKEN, vec![1])], false).unwrap_err(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(
            secret_key(&[(CKA_VALUE, vec![1])], false).unwrap_err(),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(
            secret_key(&[(CKA_VALUE_LEN, ulong(16))], true).unwrap_err(),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert!(secret_key(&[(CKA_VALUE, vec![1; 16])], true).unwrap().value.is_some());
        assert!(secret_key(&[(CKA_EXTRACTABLE, vec![0])], false).unwrap().keep());
        let o = secret(&[(CKA_SENSITIVE, vec![1])], &[9; 32]);
        assert_eq!(o.read(CKA_VALUE), Read::Sensitive);
        assert_eq!(o.read(CKA_VALUE_LEN), Read::Value(Zeroizing::new(ulong(32))));
        let o = secret(&[], &[9; 32]);
        assert_eq!(o.read(CKA_VALUE), Read::Value(Zeroizing::new(vec![9; 32])));
        assert!(o.matches(&[(CKA_CLASS, ulong(CKO_SECRET_KEY))]));
        assert!(!o.matches(&[(CKA_CLASS, ulong(CKO_PUBLIC_KEY))]));
        assert!(!o.matches(&[(0x8000_1234, vec![])]));
        // A key the daemon holds never reads here, whatever its attributes say.
        let origin = Origin { len: 32, always_sensitive: true, ..Origin::default() };
        let held = secret_key(&[(CKA_SENSITIVE, vec![0])], false).unwrap().object(
            CKK_AES,
            Zeroizing::new(Vec::new()),
            Some(("k/1".into(), 1)),
            origin,
            1,
        );
        assert_eq!(held.read(CKA_VALUE), Read::Sensitive);
        assert_eq!(held.read(CKA_ALWAYS_SENSITIVE), Read::Value(Zeroizing::new(vec![1])));
    }

    #[test]
    fn secret_keys_latch_sensitive_on_and_extractable_off() {
        let o = secret(&[], &[9; 32]);
        assert_eq!(o.read(CKA_MODIFIABLE), Read::Value(Zeroizing::new(vec![1])));
        let (label, _, c) =
            o.set_secret(&[(CKA_SENSITIVE, vec![1]), (CKA_LABEL, b"k".to_vec())]).unwrap();
        assert!(c.sensitive && label == b"k");
        let latched = secret(&[(CKA_SENSITIVE, vec![1]), (CKA_EXTRACTABLE, vec![0])], &[9; 32]);
        assert_eq!(
            latched.set_secret(&[(CKA_SENSITIVE, vec![0])]).unwrap_err(),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(
            latched.set_secret(&[(CKA_EXTRACTABLE, vec![1])]).unwrap_err(),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(
            latched.set_secret(&[(CKA_CLASS, ulong(CKO_DATA))]).unwrap_err(),
            CKR_ATTRIBUTE_READ_ONLY
        );
        assert_eq!(latched.set_secret(&[(999, vec![])]).unwrap_err(), CKR_ATTRIBUTE_TYPE_INVALID);
        let key = Object::key(Class::Private, link(Algorithm::MlDsa44), false, b"", b"", &[]);
        assert_eq!(key.set_secret(&[(CKA_LABEL, vec![])]).unwrap_err(), CKR_ACTION_PROHIBITED);
    }
}
