//! AES-GCM: C_EncryptInit, C_Encrypt, C_EncryptUpdate, C_EncryptFinal and the
//! C_Decrypt* family, single-part and multi-part, done by the daemon (a
//! held key never leaves it; a key held here is sent with the request).
//! Multi-part input is gathered here and processed at the final call, so no
//! plaintext is released before its tag is checked; updates write nothing.

use cryptoki_sys::*;
use qkeyd_p11_proto::{KeySource, Request, Response, Secret};

use super::{MAX_DATA, Mech, Out, Param, check_held, daemon_call, with};
use crate::object::{Class, Rv};

/// AES-GCM's tag: 128 bits, the only length offered.
const TAG: usize = 16;
/// AES-GCM's IV: 96 bits, the only length offered.
const IV: usize = 12;

/// An encryption or decryption in progress.
pub(super) struct CryptOp {
    key: KeySource,
    iv: Vec<u8>,
    aad: Vec<u8>,
    data: Vec<u8>,
    multipart: bool,
    /// C_Encrypt or C_Decrypt was called (to ask the length): only it ends the operation.
    single: bool,
}

/// A session's operation of that direction.
fn slot(x: &mut super::Session, encrypt: bool) -> &mut Option<CryptOp> {
    if encrypt { &mut x.encrypt } else { &mut x.decrypt }
}

/// C_EncryptInit / C_DecryptInit with CKM_AES_GCM.
pub(crate) fn crypt_init(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    encrypt: bool,
) -> Result<(), Rv> {
    with(|s| {
        if slot(s.session(h)?, encrypt).is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        let Param::Gcm { iv, aad, tag_bits } = &mech.param else {
            return Err(if mech.mtype == CKM_AES_GCM {
                CKR_MECHANISM_PARAM_INVALID
            } else {
                CKR_MECHANISM_INVALID
            });
        };
        if iv.len() != IV || *tag_bits != (TAG * 8) as CK_ULONG {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        let o = s.key(key)?;
        if o.class != Class::Secret || o.key_type != CKK_AES {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        if !(if encrypt { o.caps.encrypt } else { o.caps.decrypt }) {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        let key = match &o.held {
            Some(held) => {
                check_held(held)?;
                KeySource::Held(held.0.clone())
            }
            None => KeySource::Value(Secret::new(o.value.to_vec())),
        };
        let op = CryptOp {
            key,
            iv: iv.clone(),
            aad: aad.clone(),
            data: Vec::new(),
            multipart: false,
            single: false,
        };
        *slot(s.session(h)?, encrypt) = Some(op);
        Ok(())
    })
}

/// End an operation (a NULL mechanism, or arguments refused).
pub(crate) fn end_crypt(h: CK_SESSION_HANDLE, encrypt: bool) {
    let _ = with(|s| {
        *slot(s.session(h)?, encrypt) = None;
        Ok(())
    });
}

/// C_EncryptUpdate / C_DecryptUpdate: the part is kept for the final call;
/// nothing is output now. `take` of false only asks for the output length
/// (a NULL output buffer), which is 0, and keeps nothing.
pub(crate) fn crypt_update(
    h: CK_SESSION_HANDLE,
    part: &[u8],
    encrypt: bool,
    take: bool,
) -> Result<(), Rv> {
    with(|s| {
        let x = s.session(h)?;
        let op = slot(x, encrypt).as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if op.single {
            *slot(x, encrypt) = None;
            return Err(CKR_OPERATION_ACTIVE);
        }
        if !take {
            return Ok(());
        }
        if op.data.len() + part.len() > MAX_DATA + TAG {
            *slot(x, encrypt) = None;
            return Err(CKR_DATA_LEN_RANGE);
        }
        op.multipart = true;
        op.data.extend_from_slice(part);
        Ok(())
    })
}

/// C_Encrypt / C_Decrypt (`data` given) or the Final call (`None`). `out` of
/// `None` asks for the length; a short buffer gets it; both keep the operation.
pub(crate) fn crypt(
    h: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    out: Option<&mut [u8]>,
    encrypt: bool,
) -> Result<Out, Rv> {
    let op = with(|s| {
        let x = s.session(h)?;
        let op = slot(x, encrypt).as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if (data.is_some() && op.multipart) || (data.is_none() && op.single) {
            *slot(x, encrypt) = None;
            return Err(CKR_OPERATION_ACTIVE);
        }
        op.single |= data.is_some();
        let input = data.map_or(op.data.len(), <[u8]>::len);
        let len = if encrypt {
            if input > MAX_DATA {
                *slot(x, encrypt) = None;
                return Err(CKR_DATA_LEN_RANGE);
            }
            input + TAG
        } else {
            if !(TAG..=MAX_DATA + TAG).contains(&input) {
                *slot(x, encrypt) = None;
                return Err(CKR_ENCRYPTED_DATA_LEN_RANGE);
            }
            input - TAG
        };
        match &out {
            None => return Ok(Err(Out::Length(len))),
            Some(o) if o.len() < len => return Ok(Err(Out::TooSmall(len))),
            Some(_) => {}
        }
        Ok(Ok(slot(x, encrypt).take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?))
    })?;
    let op = match op {
        Ok(op) => op,
        Err(answer) => return Ok(answer),
    };
    let data = match data {
        Some(d) => d.to_vec(),
        None => op.data,
    };
    let req = Request::AesGcm { key: op.key, encrypt, iv: op.iv, aad: op.aad, data };
    let bad = if encrypt { CKR_DATA_LEN_RANGE } else { CKR_ENCRYPTED_DATA_INVALID };
    let result = match daemon_call(&req, bad)? {
        Response::Output(o) => o,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    let out = out.ok_or(CKR_GENERAL_ERROR)?;
    let n = result.len();
    out.get_mut(..n).ok_or(CKR_DEVICE_ERROR)?.copy_from_slice(&result);
    Ok(Out::Written(n))
}
