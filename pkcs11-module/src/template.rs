//! The templates that make keys: each half of a C_GenerateKeyPair template,
//! and the template of a new secret key (C_EncapsulateKey, C_DecapsulateKey,
//! C_GenerateKey, C_DeriveKey, C_CreateObject), checked into what they ask.

use cryptoki_sys::*;
use zeroize::Zeroizing;

use crate::{
    object::{Attr, Caps, Class, Object, Origin, Rv, as_bool, as_ulong},
    stored::Attrs,
};

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

/// What a template asks of a new secret key (C_EncapsulateKey,
/// C_DecapsulateKey, C_GenerateKey, C_DeriveKey, C_CreateObject).
#[derive(Debug)]
pub(crate) struct SecretSpec {
    /// CKA_KEY_TYPE, if given.
    pub(crate) key_type: Option<CK_KEY_TYPE>,
    pub(crate) private: bool,
    pub(crate) label: Vec<u8>,
    pub(crate) id: Vec<u8>,
    pub(crate) caps: Caps,
    /// CKA_VALUE_LEN, if given.
    pub(crate) len: Option<usize>,
    /// CKA_VALUE (C_CreateObject only).
    pub(crate) value: Option<Zeroizing<Vec<u8>>>,
}

/// The ML-KEM shared secret's length: its CKA_VALUE_LEN.
pub(crate) const SHARED_SECRET_LEN: usize = 32;

/// Check a secret-key template. Secret keys are session objects; CKA_VALUE
/// may be given only to C_CreateObject (`create`).
pub(crate) fn secret_key(template: &[Attr], create: bool) -> Result<SecretSpec, Rv> {
    let mut s = SecretSpec {
        key_type: None,
        private: true,
        label: Vec::new(),
        id: Vec::new(),
        caps: Caps { extractable: true, ..Caps::default() },
        len: None,
        value: None,
    };
    for (t, v) in template {
        match *t {
            CKA_CLASS if as_ulong(v)? != CKO_SECRET_KEY => return Err(CKR_TEMPLATE_INCONSISTENT),
            CKA_CLASS => {}
            CKA_KEY_TYPE => s.key_type = Some(as_ulong(v)?),
            CKA_VALUE_LEN if create => return Err(CKR_ATTRIBUTE_READ_ONLY),
            CKA_VALUE_LEN => s.len = Some(as_ulong(v)? as usize),
            CKA_VALUE if create => s.value = Some(Zeroizing::new(v.clone())),
            // Secret keys live in this process or the daemon's memory only:
            // no token objects.
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
            CKA_MODIFIABLE => {
                if !as_bool(v)? {
                    return Err(CKR_TEMPLATE_INCONSISTENT);
                }
            }
            CKA_COPYABLE
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

/// The lengths a key of `key_type` may have: AES 16, 24 or 32 bytes; a
/// generic secret or an HKDF key 1..=MAX_SECRET.
pub(crate) fn length_fits(key_type: CK_KEY_TYPE, len: usize) -> bool {
    match key_type {
        CKK_AES => matches!(len, 16 | 24 | 32),
        CKK_GENERIC_SECRET | CKK_HKDF => (1..=qkeyd_p11_proto::MAX_SECRET).contains(&len),
        _ => false,
    }
}

impl SecretSpec {
    /// Whether the new key must stay in the daemon: sensitive or unextractable.
    pub(crate) fn keep(&self) -> bool {
        self.caps.sensitive || !self.caps.extractable
    }

    /// The secret-key object of type `key_type` made by session `owner`:
    /// its `value` here, or the daemon's key `held`.
    pub(crate) fn object(
        self,
        key_type: CK_KEY_TYPE,
        value: Zeroizing<Vec<u8>>,
        held: Option<(String, u64)>,
        origin: Origin,
        owner: CK_SESSION_HANDLE,
    ) -> Object {
        Object {
            class: Class::Secret,
            key_type,
            token: false,
            private: self.private,
            label: self.label,
            id: self.id,
            link: None,
            value,
            caps: self.caps,
            owner: Some(owner),
            attrs: Attrs::new(),
            store: None,
            held,
            origin,
        }
    }
}
