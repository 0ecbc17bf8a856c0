//! The fuzzing hook (built only with `--cfg fuzzing`, for `fuzz/`): a
//! mechanism and two attribute templates are laid out in C structures as an
//! application passes them, copied in by this module's own `mechanism_in`
//! and `template_in`, and checked by its own template code, as
//! C_GenerateKeyPair, C_EncapsulateKey and C_FindObjectsInit check them.
//!
//! The input, read front to back (missing bytes end it early):
//! `mechanism: u32 LE`, `param: u8` (0 none, 1 a CK_SIGN_ADDITIONAL_CONTEXT
//! `hedge: u8, flags: u8, len: u8, context`, else `len: u8, bytes`, never
//! of a CK_SIGN_ADDITIONAL_CONTEXT's length for CKM_ML_DSA), then two
//! templates, each `count: u8` and `count` attributes `type: u32 LE, flags:
//! u8, len: u8, value`. A flags bit 0 passes a NULL pointer with the length.

use std::ptr;

use cryptoki_sys::*;
use qkeyd_p11_proto::Algorithm;

use super::{mechanism_in, template_in};
use crate::{
    object::{self, Class, Link, Object},
    token::{self, Param},
};

/// Most attributes one template of the input holds.
const MAX_ATTRIBUTES: usize = 32;

/// The fuzz input's reader.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        let b = self.0.get(..4)?;
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        self.0 = &self.0[4..];
        Some(v)
    }
    /// Up to `n` bytes (fewer if the input ends).
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// One attribute of the input: its value, or NULL with a claimed length.
struct RawAttr<'a> {
    type_: CK_ATTRIBUTE_TYPE,
    value: Result<&'a [u8], CK_ULONG>,
}

fn template<'a>(input: &mut Input<'a>) -> Vec<RawAttr<'a>> {
    let n = input.u8().map_or(0, usize::from).min(MAX_ATTRIBUTES);
    let mut t = Vec::with_capacity(n);
    for _ in 0..n {
        let (Some(type_), Some(flags), Some(len)) = (input.u32(), input.u8(), input.u8()) else {
            break;
        };
        let value =
            if flags & 1 == 1 { Err(CK_ULONG::from(len)) } else { Ok(input.bytes(len.into())) };
        t.push(RawAttr { type_: CK_ATTRIBUTE_TYPE::from(type_), value });
    }
    t
}

/// The CK_ATTRIBUTE array an application would pass for `t`. The values
/// stay in the input; the pointers are only read through.
fn c_template(t: &[RawAttr<'_>]) -> Vec<CK_ATTRIBUTE> {
    t.iter()
        .map(|a| match a.value {
            Ok(v) => CK_ATTRIBUTE {
                type_: a.type_,
                pValue: v.as_ptr().cast_mut().cast(),
                ulValueLen: v.len() as CK_ULONG,
            },
            Err(len) => CK_ATTRIBUTE { type_: a.type_, pValue: ptr::null_mut(), ulValueLen: len },
        })
        .collect()
}

/// Run the module's template checks on the fuzzer's bytes.
///
/// Panics if a copied template differs from what was passed, if a NULL
/// value with a length is accepted, or if C_GenerateKeyPair's checks pass a
/// template that the per-half check refuses.
pub fn templates(data: &[u8]) {
    let mut input = Input(data);
    let Some(mtype) = input.u32() else { return };
    let mtype = CK_MECHANISM_TYPE::from(mtype);
    let mut context_owned: Vec<u8>;
    let mut sign_context =
        CK_SIGN_ADDITIONAL_CONTEXT { hedgeVariant: 0, pContext: ptr::null_mut(), ulContextLen: 0 };
    let mut mech =
        CK_MECHANISM { mechanism: mtype, pParameter: ptr::null_mut(), ulParameterLen: 0 };
    let mut null_context = false;
    match input.u8() {
        None | Some(0) => {}
        Some(1) => {
            let hedge = input.u8().unwrap_or(0);
            let flags = input.u8().unwrap_or(0);
            let len = input.u8().unwrap_or(0);
            sign_context.hedgeVariant = CK_ULONG::from(hedge);
            if flags & 1 == 1 {
                sign_context.ulContextLen = CK_ULONG::from(len);
                null_context = len > 0;
            } else {
                context_owned = input.bytes(len.into()).to_vec();
                sign_context.pContext = context_owned.as_mut_ptr();
                sign_context.ulContextLen = context_owned.len() as CK_ULONG;
            }
            mech.pParameter = ptr::from_mut(&mut sign_context).cast();
            mech.ulParameterLen = std::mem::size_of::<CK_SIGN_ADDITIONAL_CONTEXT>() as CK_ULONG;
        }
        Some(_) => {
            let len = input.u8().unwrap_or(0);
            let mut other = input.bytes(len.into());
            if mtype == CKM_ML_DSA
                && other.len() == std::mem::size_of::<CK_SIGN_ADDITIONAL_CONTEXT>()
            {
                // The module reads a parameter of this length as a
                // CK_SIGN_ADDITIONAL_CONTEXT and follows its pointer, as
                // PKCS#11 lets it: bytes that are not one break the caller's
                // side of the contract (case 1 makes real ones).
                other = &other[1..];
            }
            mech.pParameter = other.as_ptr().cast_mut().cast();
            mech.ulParameterLen = other.len() as CK_ULONG;
        }
    }
    let public = template(&mut input);
    let private = template(&mut input);
    let (c_public, c_private) = (c_template(&public), c_template(&private));

    // SAFETY: `mech` is a valid CK_MECHANISM; its parameter is NULL, or
    // `sign_context` (exactly one CK_SIGN_ADDITIONAL_CONTEXT whose context is
    // `context_owned`, readable for ulContextLen bytes, or NULL), or a slice
    // of the input readable for ulParameterLen bytes. All outlive the call.
    let m = unsafe { mechanism_in(&mech) };
    if let (Ok(m), true) = (&m, null_context) {
        assert!(!matches!(m.param, Param::SignContext { .. }), "a NULL context was read");
    }
    // SAFETY: each array holds exactly its length of attributes, and each
    // pValue is NULL or points into the input (or its copy) with ulValueLen
    // readable bytes; both outlive the calls.
    let copied = unsafe {
        (
            template_in(c_public.as_ptr(), c_public.len() as CK_ULONG),
            template_in(c_private.as_ptr(), c_private.len() as CK_ULONG),
        )
    };
    for (raw, copy) in [(&public, &copied.0), (&private, &copied.1)] {
        let null_with_len = raw.iter().any(|a| matches!(a.value, Err(n) if n > 0));
        match copy {
            Ok(t) => {
                assert!(!null_with_len, "a NULL value with a length was accepted");
                for (a, (ty, v)) in raw.iter().zip(t) {
                    assert_eq!(a.type_, *ty);
                    assert_eq!(a.value.unwrap_or_default(), v.as_slice(), "a value changed");
                }
            }
            Err(rv) => {
                assert!(null_with_len, "a readable template was refused: {rv:#x}");
                assert_eq!(*rv, CKR_ARGUMENTS_BAD);
            }
        }
    }
    let (Ok(public), Ok(private)) = copied else { return };
    let _ = object::secret_key(&public, false);
    let _ = object::secret_key(&public, true);
    // Objects the application makes, then changed and copied by the other template.
    if let Ok((class, attrs)) = crate::stored::create(&public, false) {
        let _ = crate::stored::set(class, &attrs, &private);
        let _ = crate::stored::copy(class, &attrs, &private);
        let o = Object::stored(class, attrs, Some(1), None);
        let _ = o.matches(&private);
    }
    for kem in [false, true] {
        let _ = object::key_pair_half(&public, Class::Public, kem);
        let _ = object::key_pair_half(&private, Class::Private, kem);
    }
    if let Ok(m) = &m {
        // The template checks come first; with no C_Initialize in this
        // process, a pair they accept ends at CKR_CRYPTOKI_NOT_INITIALIZED
        // without reaching the daemon.
        if token::generate_key_pair(0, m, &public, &private) == Err(CKR_CRYPTOKI_NOT_INITIALIZED) {
            let kem = m.mtype == CKM_ML_KEM_KEY_PAIR_GEN;
            assert!(object::key_pair_half(&public, Class::Public, kem).is_ok());
            assert!(object::key_pair_half(&private, Class::Private, kem).is_ok());
        }
    }
    // Reading attributes and matching a find template, on one object of each kind.
    for alg in [Algorithm::MlKem768, Algorithm::MlDsa44] {
        for class in [Class::Public, Class::Private] {
            let link = Link { key: "s/1".into(), alg, epoch: 1 };
            let o = Object::key(class, link, false, b"label", b"id", &[7; 16]);
            let _ = o.matches(&public);
            for (t, _) in &private {
                let _ = o.read(*t);
            }
        }
    }
    if let Ok(spec) = object::secret_key(&private, false) {
        let origin = object::Origin { len: object::SHARED_SECRET_LEN, ..object::Origin::default() };
        let value = zeroize::Zeroizing::new(vec![9; object::SHARED_SECRET_LEN]);
        let o = spec.object(CKK_GENERIC_SECRET, value, None, origin, 1);
        let _ = o.matches(&public);
    }
}

/// The input [`templates`] reads for a mechanism without a parameter and two
/// templates, so seed files are real templates.
pub fn encode(
    mechanism: CK_MECHANISM_TYPE,
    public: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    private: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> Vec<u8> {
    let mut out = (mechanism as u32).to_le_bytes().to_vec();
    out.push(0);
    for t in [public, private] {
        out.push(t.len() as u8);
        for (ty, v) in t {
            out.extend_from_slice(&(*ty as u32).to_le_bytes());
            out.push(0);
            out.push(v.len() as u8);
            out.extend_from_slice(v);
        }
    }
    out
}
