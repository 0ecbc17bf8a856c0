//! Objects as the application sees them, and the templates that make them.
//!
//! Three kinds: ML-KEM/ML-DSA public and private keys (each tied to a key in
//! the daemon) and the secret keys C_EncapsulateKey/C_DecapsulateKey make
//! (their 32-byte value held here, zeroized on drop). A private key has no
//! value on this side at all: its CKA_VALUE and CKA_SEED read as sensitive.

use cryptoki_sys::*;
use qkeyd_p11_proto::Algorithm;
use zeroize::Zeroizing;

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
}

impl Class {
    fn code(self) -> CK_OBJECT_CLASS {
        match self {
            Self::Public => CKO_PUBLIC_KEY,
            Self::Private => CKO_PRIVATE_KEY,
            Self::Secret => CKO_SECRET_KEY,
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
        }
    }

    /// The parameter set, for ML-KEM and ML-DSA keys.
    pub(crate) fn alg(&self) -> Option<Algorithm> {
        self.link.as_ref().map(|l| l.alg)
    }

    /// Read attribute `t`.
    pub(crate) fn read(&self, t: CK_ATTRIBUTE_TYPE) -> Read {
        let v = |b: Vec<u8>| Read::Value(Zeroizing::new(b));
        let b = |x: bool| Read::Value(Zeroizing::new(vec![CK_BBOOL::from(x)]));
        let c = &self.caps;
        let class = self.class;
        match t {
            CKA_CLASS => v(ulong(class.code())),
            CKA_TOKEN => b(self.token),
            CKA_PRIVATE => b(self.private),
            CKA_MODIFIABLE | CKA_COPYABLE => b(false),
            CKA_DESTROYABLE => b(true),
            CKA_LABEL => v(self.label.clone()),
            CKA_KEY_TYPE => v(ulong(self.key_type)),
            CKA_ID => v(self.id.clone()),
            CKA_START_DATE | CKA_END_DATE => v(Vec::new()),
            CKA_LOCAL => b(class != Class::Secret),
            CKA_KEY_GEN_MECHANISM => v(ulong(match (class, self.key_type) {
                (Class::Secret, _) => CK_UNAVAILABLE_INFORMATION,
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
            // A private key never left the daemon; a shared secret came out of
            // the daemon to this process, like an unwrapped key.
            CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE if class == Class::Private => b(true),
            CKA_ALWAYS_SENSITIVE | CKA_NEVER_EXTRACTABLE if class == Class::Secret => b(false),
            CKA_ALWAYS_AUTHENTICATE | CKA_WRAP_WITH_TRUSTED if class == Class::Private => b(false),
            CKA_WRAP_WITH_TRUSTED if class == Class::Secret => b(false),
            CKA_VALUE_LEN if class == Class::Secret => v(ulong(self.value.len() as CK_ULONG)),
            CKA_VALUE if class == Class::Secret => {
                if c.sensitive || !c.extractable {
                    Read::Sensitive
                } else {
                    v(self.value.to_vec())
                }
            }
            _ => Read::Invalid,
        }
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

/// What a key-pair template asks for, checked.
#[derive(Debug, Default)]
pub(crate) struct HalfSpec {
    pub(crate) token: Option<bool>,
    pub(crate) private: Option<bool>,
    pub(crate) label: Option<Vec<u8>>,
    pub(crate) id: Option<Vec<u8>>,
    pub(crate) parameter_set: Option<CK_ULONG>,
    /// SIGN/VERIFY or ENCAPSULATE/DECAPSULATE, if given.
    pub(crate) usage: Option<bool>,
}

/// Check one half of a C_GenerateKeyPair template for an ML-KEM (`kem`) or
/// ML-DSA key of class `class`.
pub(crate) fn key_pair_half(template: &[Attr], class: Class, kem: bool) -> Result<HalfSpec, Rv> {
    let mut s = HalfSpec::default();
    let (use_attr, other_use) = match (class, kem) {
        (Class::Public, false) => (CKA_VERIFY, CKA_ENCAPSULATE),
        (Class::Public, true) => (CKA_ENCAPSULATE, CKA_VERIFY),
        (_, false) => (CKA_SIGN, CKA_DECAPSULATE),
        (_, true) => (CKA_DECAPSULATE, CKA_SIGN),
    };
    for (t, v) in template {
        match *t {
            CKA_CLASS if as_ulong(v)? != class.code() => return Err(CKR_TEMPLATE_INCONSISTENT),
            CKA_KEY_TYPE if as_ulong(v)? != if kem { CKK_ML_KEM } else { CKK_ML_DSA } => {
                return Err(CKR_TEMPLATE_INCONSISTENT);
            }
            CKA_CLASS | CKA_KEY_TYPE => {}
            CKA_TOKEN => s.token = Some(as_bool(v)?),
            CKA_PRIVATE => s.private = Some(as_bool(v)?),
            CKA_LABEL => s.label = Some(v.clone()),
            CKA_ID => s.id = Some(v.clone()),
            CKA_PARAMETER_SET => s.parameter_set = Some(as_ulong(v)?),
            a if a == use_attr => s.usage = Some(as_bool(v)?),
            // Capabilities these keys do not have may be asked for only as false.
            CKA_ENCRYPT
            | CKA_DECRYPT
            | CKA_WRAP
            | CKA_UNWRAP
            | CKA_DERIVE
            | CKA_SIGN_RECOVER
            | CKA_VERIFY_RECOVER
            | CKA_TRUSTED
            | CKA_ALWAYS_AUTHENTICATE
            | CKA_WRAP_WITH_TRUSTED
            | CKA_MODIFIABLE
            | CKA_COPYABLE => {
                if as_bool(v)? {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
            a if a == other_use || a == CKA_SIGN || a == CKA_VERIFY => {
                if as_bool(v)? {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
            CKA_DESTROYABLE => {
                if !as_bool(v)? {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
            // The private half never leaves the daemon.
            CKA_SENSITIVE if class == Class::Private => {
                if !as_bool(v)? {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
            CKA_EXTRACTABLE if class == Class::Private => {
                if as_bool(v)? {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
            CKA_START_DATE | CKA_END_DATE | CKA_SUBJECT => {
                if !v.is_empty() {
                    return Err(CKR_ATTRIBUTE_VALUE_INVALID);
                }
            }
            CKA_VALUE
            | CKA_SEED
            | CKA_LOCAL
            | CKA_KEY_GEN_MECHANISM
            | CKA_ALWAYS_SENSITIVE
            | CKA_NEVER_EXTRACTABLE
            | CKA_PUBLIC_KEY_INFO
            | CKA_UNIQUE_ID => {
                return Err(CKR_ATTRIBUTE_READ_ONLY);
            }
            _ => return Err(CKR_ATTRIBUTE_TYPE_INVALID),
        }
    }
    Ok(s)
}

/// What a C_EncapsulateKey/C_DecapsulateKey template asks of the new secret key.
#[derive(Debug)]
pub(crate) struct SecretSpec {
    pub(crate) key_type: CK_KEY_TYPE,
    pub(crate) private: bool,
    pub(crate) label: Vec<u8>,
    pub(crate) id: Vec<u8>,
    pub(crate) caps: Caps,
}

/// The ML-KEM shared secret's length: its CKA_VALUE_LEN.
pub(crate) const SHARED_SECRET_LEN: usize = 32;

/// Check a secret-key template. The key is a session object of type
/// CKK_GENERIC_SECRET (the default) or CKK_AES; its value is the 32-byte
/// shared secret, so CKA_VALUE_LEN may only say 32.
pub(crate) fn secret_key(template: &[Attr]) -> Result<SecretSpec, Rv> {
    let mut s = SecretSpec {
        key_type: CKK_GENERIC_SECRET,
        private: true,
        label: Vec::new(),
        id: Vec::new(),
        caps: Caps { extractable: true, ..Caps::default() },
    };
    for (t, v) in template {
        match *t {
            CKA_CLASS if as_ulong(v)? != CKO_SECRET_KEY => return Err(CKR_TEMPLATE_INCONSISTENT),
            CKA_CLASS => {}
            CKA_KEY_TYPE => {
                s.key_type = as_ulong(v)?;
                if s.key_type != CKK_GENERIC_SECRET && s.key_type != CKK_AES {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
            CKA_VALUE_LEN if as_ulong(v)? != SHARED_SECRET_LEN as CK_ULONG => {
                return Err(CKR_ATTRIBUTE_VALUE_INVALID);
            }
            CKA_VALUE_LEN => {}
            // Secret keys live in this process only: no token objects.
            CKA_TOKEN if as_bool(v)? => return Err(CKR_ATTRIBUTE_VALUE_INVALID),
            CKA_TOKEN => {}
            CKA_PRIVATE => s.private = as_bool(v)?,
            CKA_LABEL => s.label = v.clone(),
            CKA_ID => s.id = v.clone(),
            CKA_SENSITIVE => s.caps.sensitive = as_bool(v)?,
            CKA_EXTRACTABLE => s.caps.extractable = as_bool(v)?,
            CKA_ENCRYPT => s.caps.encrypt = as_bool(v)?,
            CKA_DECRYPT => s.caps.decrypt = as_bool(v)?,
            CKA_SIGN => s.caps.sign = as_bool(v)?,
            CKA_VERIFY => s.caps.verify = as_bool(v)?,
            CKA_WRAP => s.caps.wrap = as_bool(v)?,
            CKA_UNWRAP => s.caps.unwrap = as_bool(v)?,
            CKA_DERIVE => s.caps.derive = as_bool(v)?,
            CKA_MODIFIABLE
            | CKA_COPYABLE
            | CKA_TRUSTED
            | CKA_WRAP_WITH_TRUSTED
            | CKA_ENCAPSULATE
            | CKA_DECAPSULATE => {
                if as_bool(v)? {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
            CKA_DESTROYABLE => {
                if !as_bool(v)? {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
            CKA_START_DATE | CKA_END_DATE => {
                if !v.is_empty() {
                    return Err(CKR_ATTRIBUTE_VALUE_INVALID);
                }
            }
            CKA_VALUE
            | CKA_LOCAL
            | CKA_KEY_GEN_MECHANISM
            | CKA_ALWAYS_SENSITIVE
            | CKA_NEVER_EXTRACTABLE
            | CKA_UNIQUE_ID => return Err(CKR_ATTRIBUTE_READ_ONLY),
            _ => return Err(CKR_ATTRIBUTE_TYPE_INVALID),
        }
    }
    Ok(s)
}

impl SecretSpec {
    /// The secret-key object holding `value`, made by session `owner`.
    pub(crate) fn object(self, value: Zeroizing<Vec<u8>>, owner: CK_SESSION_HANDLE) -> Object {
        Object {
            class: Class::Secret,
            key_type: self.key_type,
            token: false,
            private: self.private,
            label: self.label,
            id: self.id,
            link: None,
            value,
            caps: self.caps,
            owner: Some(owner),
        }
    }
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

    #[test]
    fn secret_templates_are_checked() {
        let s = secret_key(&[
            (CKA_KEY_TYPE, ulong(CKK_AES)),
            (CKA_VALUE_LEN, ulong(32)),
            (CKA_SENSITIVE, vec![0]),
        ])
        .unwrap();
        assert_eq!(s.key_type, CKK_AES);
        assert_eq!(
            secret_key(&[(CKA_VALUE_LEN, ulong(16))]).unwrap_err(),
            CKR_ATTRIBUTE_VALUE_INVALID
        );
        assert_eq!(secret_key(&[(CKA_TOKEN, vec![1])]).unwrap_err(), CKR_ATTRIBUTE_VALUE_INVALID);
        assert_eq!(
            secret_key(&[(CKA_KEY_TYPE, ulong(CKK_ML_KEM))]).unwrap_err(),
            CKR_TEMPLATE_INCONSISTENT
        );
        let o =
            secret_key(&[(CKA_SENSITIVE, vec![1])]).unwrap().object(Zeroizing::new(vec![9; 32]), 1);
        assert_eq!(o.read(CKA_VALUE), Read::Sensitive);
        assert_eq!(o.read(CKA_VALUE_LEN), Read::Value(Zeroizing::new(ulong(32))));
        let o = secret_key(&[]).unwrap().object(Zeroizing::new(vec![9; 32]), 1);
        assert_eq!(o.read(CKA_VALUE), Read::Value(Zeroizing::new(vec![9; 32])));
        assert!(o.matches(&[(CKA_CLASS, ulong(CKO_SECRET_KEY))]));
        assert!(!o.matches(&[(CKA_CLASS, ulong(CKO_PUBLIC_KEY))]));
        assert!(!o.matches(&[(0x8000_1234, vec![])]));
    }
}
