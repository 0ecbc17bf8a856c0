//! The C ABI: the only place with `unsafe`. Every function here checks each
//! pointer it is given, copies inputs into Rust values, calls the safe core
//! in `token`, and writes results back, all under `catch_unwind` so a panic
//! is CKR_GENERAL_ERROR and never unwinds into the host.
//!
//! Only `C_GetFunctionList`, `C_GetInterfaceList` and `C_GetInterface` are
//! exported; everything else is reached through the function lists, so this
//! module's entry points cannot be confused with another module's loaded in
//! the same process.
//!
//! The entry points are in files by PKCS#11 function family: `general`
//! (C_Initialize, C_Finalize, info, slots, tokens, mechanisms), `session`
//! (sessions, login), `objects` (find, attributes, destroy), `keygen`,
//! `sign` (sign, verify), `kem` (encapsulate, decapsulate) and `random`;
//! `lists` has the function lists and the exported entry points. This file
//! holds the helpers they share.
#![allow(unsafe_code)]
// The C names of the PKCS#11 functions, so each reads as the spec names it.
#![allow(non_snake_case)]

mod cipher;
mod digest;
#[cfg(fuzzing)]
pub mod fuzzing;
mod general;
mod kem;
mod keygen;
pub(crate) mod lists;
mod objects;
mod random;
mod session;
mod sign;

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    ptr,
};

use cryptoki_sys::*;

use crate::{
    object::{Attr, Rv},
    token::{Mech, Out, Param},
};

/// Run `f` in an initialised module, turning a panic into CKR_GENERAL_ERROR:
/// before C_Initialize (or in a fork's child) every function answers
/// CKR_CRYPTOKI_NOT_INITIALIZED before it looks at its arguments.
fn guard(f: impl FnOnce() -> Result<(), Rv>) -> CK_RV {
    guard_any(|| {
        crate::token::initialized()?;
        f()
    })
}

/// Run `f`, initialised or not (C_Initialize and the function-list entry
/// points), turning a panic into CKR_GENERAL_ERROR.
fn guard_any(f: impl FnOnce() -> Result<(), Rv>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(rv)) => rv,
        Err(_) => CKR_GENERAL_ERROR,
    }
}

/// `p` as a place to write one `T`.
///
/// # Safety
/// `p` is NULL or valid for writing a `T` (the PKCS#11 caller's contract).
unsafe fn out<'a, T>(p: *mut T) -> Result<&'a mut T, Rv> {
    // SAFETY: by this function's contract, a non-NULL `p` is valid and aligned
    // for a `T`; `as_mut` checks for NULL.
    unsafe { p.as_mut() }.ok_or(CKR_ARGUMENTS_BAD)
}

/// `len` input bytes at `p` (NULL is allowed only for length 0).
///
/// # Safety
/// `p` is NULL or valid for reading `len` bytes.
unsafe fn bytes_in<'a>(p: *const u8, len: CK_ULONG) -> Result<&'a [u8], Rv> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() || len > isize::MAX as CK_ULONG {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL, and by this function's contract readable for `len`
    // (≤ isize::MAX) bytes that nobody writes during the call.
    Ok(unsafe { std::slice::from_raw_parts(p, len as usize) })
}

/// An output buffer of `len` bytes at `p`; NULL means "length only".
///
/// # Safety
/// `p` is NULL or valid for writing `len` bytes.
unsafe fn bytes_out<'a>(p: *mut u8, len: CK_ULONG) -> Result<Option<&'a mut [u8]>, Rv> {
    if p.is_null() {
        return Ok(None);
    }
    if len > isize::MAX as CK_ULONG {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL, and by this function's contract writable for `len`
    // (≤ isize::MAX) bytes not aliased during the call.
    Ok(Some(unsafe { std::slice::from_raw_parts_mut(p, len as usize) }))
}

/// Copy an input template.
///
/// # Safety
/// `p` is NULL or points to `n` CK_ATTRIBUTEs, each with `pValue` NULL or
/// readable for `ulValueLen` bytes.
unsafe fn template_in(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Vec<Attr>, Rv> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() || n > (isize::MAX as usize / std::mem::size_of::<CK_ATTRIBUTE>()) as CK_ULONG {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // SAFETY: non-NULL and, by this function's contract, `n` readable
    // attributes; `n` bounds the byte size below isize::MAX.
    let attrs = unsafe { std::slice::from_raw_parts(p, n as usize) };
    attrs
        .iter()
        .map(|a| {
            // SAFETY: by this function's contract, each pValue is NULL or
            // readable for ulValueLen bytes; bytes_in checks the NULL case.
            let v = unsafe { bytes_in(a.pValue.cast::<u8>(), a.ulValueLen) }?;
            Ok((a.type_, v.to_vec()))
        })
        .collect()
}

/// Copy a mechanism, reading a CK_SIGN_ADDITIONAL_CONTEXT parameter of
/// CKM_ML_DSA, a CK_GCM_PARAMS of CKM_AES_GCM and a CK_HKDF_PARAMS of
/// CKM_HKDF_DERIVE and CKM_HKDF_DATA.
///
/// # Safety
/// `p` is NULL or a valid CK_MECHANISM whose parameter is NULL or readable
/// for `ulParameterLen` bytes, and whose buffers (the ML-DSA context, the GCM
/// IV and AAD, the HKDF salt and info) are NULL or readable for their lengths.
unsafe fn mechanism_in(p: *const CK_MECHANISM) -> Result<Mech, Rv> {
    // SAFETY: by this function's contract, a non-NULL `p` is a valid mechanism.
    let m = unsafe { p.as_ref() }.ok_or(CKR_ARGUMENTS_BAD)?;
    let param = if m.pParameter.is_null() || m.ulParameterLen == 0 {
        Param::None
    } else if m.mechanism == CKM_ML_DSA
        && m.ulParameterLen as usize == std::mem::size_of::<CK_SIGN_ADDITIONAL_CONTEXT>()
    {
        // SAFETY: the parameter is non-NULL and exactly one
        // CK_SIGN_ADDITIONAL_CONTEXT long; read_unaligned makes no alignment claim.
        let c = unsafe { ptr::read_unaligned(m.pParameter.cast::<CK_SIGN_ADDITIONAL_CONTEXT>()) };
        if c.ulContextLen > 255 {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        // SAFETY: by this function's contract the context is NULL or readable
        // for ulContextLen (≤ 255) bytes; bytes_in checks the NULL case.
        let context = unsafe { bytes_in(c.pContext, c.ulContextLen) }
            .map_err(|_| CKR_MECHANISM_PARAM_INVALID)?
            .to_vec();
        Param::SignContext { hedge: c.hedgeVariant, context }
    } else if m.mechanism == CKM_AES_GCM
        && m.ulParameterLen as usize == std::mem::size_of::<CK_GCM_PARAMS>()
    {
        // SAFETY: the parameter is non-NULL and exactly one CK_GCM_PARAMS long;
        // read_unaligned makes no alignment claim.
        let g = unsafe { ptr::read_unaligned(m.pParameter.cast::<CK_GCM_PARAMS>()) };
        if g.ulIvLen > 256 || g.ulAADLen > crate::token::MAX_DATA as CK_ULONG {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        // SAFETY: by this function's contract the IV and AAD are NULL or
        // readable for their lengths (bounded above); bytes_in checks NULL.
        let iv = unsafe { bytes_in(g.pIv, g.ulIvLen) }.map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
        // SAFETY: as above.
        let aad =
            unsafe { bytes_in(g.pAAD, g.ulAADLen) }.map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
        Param::Gcm { iv: iv.to_vec(), aad: aad.to_vec(), tag_bits: g.ulTagBits }
    } else if matches!(m.mechanism, CKM_HKDF_DERIVE | CKM_HKDF_DATA)
        && m.ulParameterLen as usize == std::mem::size_of::<CK_HKDF_PARAMS>()
    {
        // SAFETY: the parameter is non-NULL and exactly one CK_HKDF_PARAMS long;
        // read_unaligned makes no alignment claim.
        let k = unsafe { ptr::read_unaligned(m.pParameter.cast::<CK_HKDF_PARAMS>()) };
        const MAX: CK_ULONG = 1024;
        if k.ulSaltLen > MAX || k.ulInfoLen > MAX {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        let salt = match k.ulSaltType {
            CKF_HKDF_SALT_NULL => None,
            // SAFETY: by this function's contract the salt is NULL or readable
            // for ulSaltLen (≤ 1024) bytes; bytes_in checks NULL.
            CKF_HKDF_SALT_DATA => Some(
                unsafe { bytes_in(k.pSalt, k.ulSaltLen) }
                    .map_err(|_| CKR_MECHANISM_PARAM_INVALID)?
                    .to_vec(),
            ),
            _ => return Err(CKR_MECHANISM_PARAM_INVALID),
        };
        // SAFETY: as above, for the info.
        let info =
            unsafe { bytes_in(k.pInfo, k.ulInfoLen) }.map_err(|_| CKR_MECHANISM_PARAM_INVALID)?;
        Param::Hkdf {
            extract: k.bExtract != 0,
            expand: k.bExpand != 0,
            prf: k.prfHashMechanism,
            salt,
            info: info.to_vec(),
        }
    } else {
        Param::Other
    };
    Ok(Mech { mtype: m.mechanism, param })
}

/// Write a length-or-bytes answer: `Out` into `*len_ptr`, with the PKCS#11 rvs.
fn answer(o: Out, len: &mut CK_ULONG) -> Result<(), Rv> {
    match o {
        Out::Length(n) | Out::Written(n) => {
            *len = n as CK_ULONG;
            Ok(())
        }
        Out::TooSmall(n) => {
            *len = n as CK_ULONG;
            Err(CKR_BUFFER_TOO_SMALL)
        }
    }
}

/// A call that finishes an operation with an output (C_Sign, C_Digest,
/// C_Encrypt, their Final forms): the input, if any, is copied first (the
/// caller may work in place), then `call` gives the length-or-bytes answer. A
/// bad pointer ends the operation (`end`), as PKCS#11 says.
///
/// # Safety
/// `input` is `None` or a pointer NULL or readable for its length;
/// `pul_out` is NULL or a writable CK_ULONG; `p_out` is NULL or writable for
/// `*pul_out` bytes.
unsafe fn output_call(
    input: Option<(*const u8, CK_ULONG)>,
    p_out: *mut u8,
    pul_out: *mut CK_ULONG,
    end: impl Fn(),
    call: impl FnOnce(Option<&[u8]>, Option<&mut [u8]>) -> Result<Out, Rv>,
) -> Result<(), Rv> {
    let data = match input {
        // SAFETY: by this function's contract, NULL or readable for `n` bytes.
        Some((p, n)) => Some(unsafe { bytes_in(p, n) }.inspect_err(|_| end())?.to_vec()),
        None => None,
    };
    // SAFETY: by this function's contract, NULL or a writable CK_ULONG.
    let len = unsafe { out(pul_out) }.inspect_err(|_| end())?;
    // SAFETY: by this function's contract, NULL or writable for *len bytes;
    // nothing else borrowed from the caller is alive (the input was copied).
    let dst = unsafe { bytes_out(p_out, *len) }.inspect_err(|_| end())?;
    answer(call(data.as_deref(), dst)?, len)
}

pub use lists::{C_GetFunctionList, C_GetInterface, C_GetInterfaceList};

#[cfg(test)]
mod tests;
