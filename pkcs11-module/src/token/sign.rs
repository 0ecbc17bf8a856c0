//! ML-DSA signing and verification: C_Sign* and C_Verify* (including the
//! PKCS#11 3.2 C_VerifySignature* family), single-part and multi-part.

use cryptoki_sys::*;
use qkeyd_p11_proto::{Request, Response};

use super::{
    MAX_DATA, Mech, Out, Param, SignOp, VerifyKey, VerifyOp, check_epoch, daemon_call, with,
};
use crate::object::{Class, Rv};

/// ML-DSA parameter: (context, deterministic).
fn dsa_param(p: &Param) -> Result<(Vec<u8>, bool), Rv> {
    match p {
        Param::None => Ok((Vec::new(), false)),
        Param::SignContext { hedge, context } => {
            if context.len() > 255 {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            match *hedge {
                CKH_HEDGE_PREFERRED | CKH_HEDGE_REQUIRED => Ok((context.clone(), false)),
                CKH_DETERMINISTIC_REQUIRED => Ok((context.clone(), true)),
                _ => Err(CKR_MECHANISM_PARAM_INVALID),
            }
        }
        Param::Gcm { .. } | Param::Hkdf { .. } | Param::Other => Err(CKR_MECHANISM_PARAM_INVALID),
    }
}

/// C_SignInit.
pub(crate) fn sign_init(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
) -> Result<(), Rv> {
    with(|s| {
        let logged_in = s.logged_in;
        if s.session(h)?.sign.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        if mech.mtype != CKM_ML_DSA {
            return Err(CKR_MECHANISM_INVALID);
        }
        let (ctx, deterministic) = dsa_param(&mech.param)?;
        let obj = s.key(key)?;
        if obj.class != Class::Private || obj.key_type != CKK_ML_DSA {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        if !obj.caps.sign {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        if !logged_in {
            return Err(CKR_USER_NOT_LOGGED_IN);
        }
        let link = obj.link.clone().ok_or(CKR_KEY_HANDLE_INVALID)?;
        s.session(h)?.sign =
            Some(SignOp { link, ctx, deterministic, data: Vec::new(), multipart: false });
        Ok(())
    })
}

/// End a signing operation (a NULL mechanism, or a C_Sign refused for its arguments).
pub(crate) fn end_sign(h: CK_SESSION_HANDLE) {
    let _ = with(|s| {
        s.session(h)?.sign = None;
        Ok(())
    });
}

/// End a verification operation.
pub(crate) fn end_verify(h: CK_SESSION_HANDLE) {
    let _ = with(|s| {
        s.session(h)?.verify = None;
        Ok(())
    });
}

/// C_SignUpdate.
pub(crate) fn sign_update(h: CK_SESSION_HANDLE, part: &[u8]) -> Result<(), Rv> {
    with(|s| {
        let x = s.session(h)?;
        let op = x.sign.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if op.data.len() + part.len() > MAX_DATA {
            x.sign = None;
            return Err(CKR_DATA_LEN_RANGE);
        }
        op.multipart = true;
        op.data.extend_from_slice(part);
        Ok(())
    })
}

/// C_Sign (`data` given) or C_SignFinal (`None`). `out` of `None` asks for
/// the length; a short buffer gets the length and keeps the operation.
pub(crate) fn sign(
    h: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    out: Option<&mut [u8]>,
) -> Result<Out, Rv> {
    let op = with(|s| {
        let x = s.session(h)?;
        let op = x.sign.as_ref().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if data.is_some() && op.multipart {
            x.sign = None;
            return Err(CKR_OPERATION_ACTIVE);
        }
        let len = op.link.alg.output_len();
        match &out {
            None => return Ok(Err(Out::Length(len))),
            Some(o) if o.len() < len => return Ok(Err(Out::TooSmall(len))),
            Some(_) => {}
        }
        if data.is_some_and(|d| d.len() > MAX_DATA) {
            x.sign = None;
            return Err(CKR_DATA_LEN_RANGE);
        }
        Ok(Ok(x.sign.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?))
    })?;
    let mut op = match op {
        Ok(op) => op,
        Err(answer) => return Ok(answer),
    };
    check_epoch(&op.link)?;
    let msg = match data {
        Some(d) => d.to_vec(),
        None => std::mem::take(&mut op.data),
    };
    let req = Request::Sign {
        key: op.link.key.clone(),
        msg,
        ctx: op.ctx.clone(),
        deterministic: op.deterministic,
    };
    let sig = match daemon_call(&req, CKR_ARGUMENTS_BAD)? {
        Response::Signature(sig) if sig.len() == op.link.alg.output_len() => sig,
        _ => return Err(CKR_DEVICE_ERROR),
    };
    let out = out.ok_or(CKR_GENERAL_ERROR)?;
    out[..sig.len()].copy_from_slice(&sig);
    Ok(Out::Written(sig.len()))
}

/// C_VerifyInit, or C_VerifySignatureInit with the signature up front.
pub(crate) fn verify_init(
    h: CK_SESSION_HANDLE,
    mech: &Mech,
    key: CK_OBJECT_HANDLE,
    signature: Option<&[u8]>,
) -> Result<(), Rv> {
    with(|s| {
        if s.session(h)?.verify.is_some() {
            return Err(CKR_OPERATION_ACTIVE);
        }
        if mech.mtype != CKM_ML_DSA {
            return Err(CKR_MECHANISM_INVALID);
        }
        let (ctx, _) = dsa_param(&mech.param)?;
        let obj = s.key(key)?;
        if obj.class != Class::Public || obj.key_type != CKK_ML_DSA {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        if !obj.caps.verify {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        let (key, alg) = match &obj.link {
            Some(link) => (VerifyKey::Daemon(link.clone()), link.alg),
            None => {
                let alg = obj.alg().ok_or(CKR_KEY_HANDLE_INVALID)?;
                (VerifyKey::Imported(obj.value.to_vec(), alg), alg)
            }
        };
        if signature.is_some_and(|sig| sig.len() != alg.output_len()) {
            return Err(CKR_SIGNATURE_LEN_RANGE);
        }
        let signature = signature.map(<[u8]>::to_vec);
        s.session(h)?.verify =
            Some(VerifyOp { key, ctx, data: Vec::new(), multipart: false, signature });
        Ok(())
    })
}

/// C_VerifyUpdate / C_VerifySignatureUpdate.
pub(crate) fn verify_update(h: CK_SESSION_HANDLE, part: &[u8]) -> Result<(), Rv> {
    with(|s| {
        let x = s.session(h)?;
        let op = x.verify.as_mut().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if op.data.len() + part.len() > MAX_DATA {
            x.verify = None;
            return Err(CKR_DATA_LEN_RANGE);
        }
        op.multipart = true;
        op.data.extend_from_slice(part);
        Ok(())
    })
}

/// Finish a verification: C_Verify (`data` and `signature`), C_VerifyFinal
/// (`signature`), C_VerifySignature (`data`), C_VerifySignatureFinal (neither).
/// The operation ends whatever the outcome.
pub(crate) fn verify(
    h: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    signature: Option<&[u8]>,
) -> Result<(), Rv> {
    let mut op = with(|s| {
        let x = s.session(h)?;
        let op = x.verify.take().ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        // The signature comes at init or at the end, not both or neither.
        if op.signature.is_some() == signature.is_some() || (data.is_some() && op.multipart) {
            return Err(if op.signature.is_some() {
                CKR_OPERATION_ACTIVE
            } else {
                CKR_ARGUMENTS_BAD
            });
        }
        Ok(op)
    })?;
    let sig = match signature {
        Some(sig) => sig.to_vec(),
        None => op.signature.take().unwrap_or_default(),
    };
    let alg = match &op.key {
        VerifyKey::Daemon(link) => link.alg,
        VerifyKey::Imported(_, alg) => *alg,
    };
    if sig.len() != alg.output_len() {
        return Err(CKR_SIGNATURE_LEN_RANGE);
    }
    let msg = match data {
        Some(d) if d.len() > MAX_DATA => return Err(CKR_DATA_LEN_RANGE),
        Some(d) => d.to_vec(),
        None => std::mem::take(&mut op.data),
    };
    let ctx = op.ctx.clone();
    let req = match op.key {
        VerifyKey::Daemon(link) => {
            check_epoch(&link)?;
            Request::Verify { key: link.key, msg, ctx, sig }
        }
        VerifyKey::Imported(public_key, alg) => {
            Request::VerifyWith { alg, public_key, msg, ctx, sig }
        }
    };
    match daemon_call(&req, CKR_ARGUMENTS_BAD)? {
        Response::Verified(true) => Ok(()),
        Response::Verified(false) => Err(CKR_SIGNATURE_INVALID),
        _ => Err(CKR_DEVICE_ERROR),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_parameters_follow_the_hedge() {
        assert_eq!(dsa_param(&Param::None), Ok((vec![], false)));
        let p = |hedge, context: &[u8]| {
            dsa_param(&Param::SignContext { hedge, context: context.to_vec() })
        };
        assert_eq!(p(CKH_DETERMINISTIC_REQUIRED, b"c"), Ok((b"c".to_vec(), true)));
        assert_eq!(p(CKH_HEDGE_REQUIRED, b""), Ok((vec![], false)));
        assert_eq!(p(7, b""), Err(CKR_MECHANISM_PARAM_INVALID));
        assert_eq!(p(CKH_HEDGE_PREFERRED, &[0; 256]), Err(CKR_MECHANISM_PARAM_INVALID));
        assert_eq!(dsa_param(&Param::Other), Err(CKR_MECHANISM_PARAM_INVALID));
    }
}
