//! Object management functions: C_CreateObject, C_DestroyObject, C_GetObjectSize,
//! C_GetAttributeValue, C_SetAttributeValue, C_CopyObject, and
//! C_FindObjectsInit, C_FindObjects and C_FindObjectsFinal.

use std::ptr;

use cryptoki_sys::*;

use super::{guard, out, template_in};
use crate::{object::Read, token};

pub(super) unsafe extern "C" fn C_DestroyObject(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| token::destroy(h, o))
}

pub(super) unsafe extern "C" fn C_GetObjectSize(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    pul_size: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        token::get_attributes(h, o, &[])?;
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        *unsafe { out(pul_size) }? = CK_UNAVAILABLE_INFORMATION;
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_GetAttributeValue(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        if count > 0 && p_template.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        if count > (isize::MAX as usize / std::mem::size_of::<CK_ATTRIBUTE>()) as CK_ULONG {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let attrs: &mut [CK_ATTRIBUTE] = if count == 0 {
            &mut []
        } else {
            // SAFETY: non-NULL, and by the caller's contract `count` writable
            // attributes (bounded above to fit isize::MAX bytes).
            unsafe { std::slice::from_raw_parts_mut(p_template, count as usize) }
        };
        let types: Vec<CK_ATTRIBUTE_TYPE> = attrs.iter().map(|a| a.type_).collect();
        let reads = token::get_attributes(h, o, &types)?;
        let mut rv = CKR_OK;
        for (a, r) in attrs.iter_mut().zip(reads) {
            let value = match r {
                Read::Value(v) => v,
                Read::Sensitive => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = if rv == CKR_OK { CKR_ATTRIBUTE_SENSITIVE } else { rv };
                    continue;
                }
                Read::Invalid => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    rv = if rv == CKR_OK { CKR_ATTRIBUTE_TYPE_INVALID } else { rv };
                    continue;
                }
            };
            if a.pValue.is_null() {
                a.ulValueLen = value.len() as CK_ULONG;
            } else if (a.ulValueLen as usize) < value.len() {
                a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = if rv == CKR_OK { CKR_BUFFER_TOO_SMALL } else { rv };
            } else {
                // SAFETY: pValue is non-NULL and, by the caller's contract,
                // writable for ulValueLen ≥ value.len() bytes.
                unsafe {
                    ptr::copy_nonoverlapping(value.as_ptr(), a.pValue.cast::<u8>(), value.len())
                };
                a.ulValueLen = value.len() as CK_ULONG;
            }
        }
        if rv == CKR_OK { Ok(()) } else { Err(rv) }
    })
}

pub(super) unsafe extern "C" fn C_SetAttributeValue(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: the caller passes NULL or `count` readable attributes.
        let t = unsafe { template_in(p_template, count) }?;
        token::set_attributes(h, o, &t)
    })
}

pub(super) unsafe extern "C" fn C_CopyObject(
    h: CK_SESSION_HANDLE,
    o: CK_OBJECT_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    ph_new: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        // SAFETY: the caller passes NULL or `count` readable attributes.
        let t = unsafe { template_in(p_template, count) }?;
        // SAFETY: the caller passes NULL or a writable handle.
        let new = unsafe { out(ph_new) }?;
        *new = token::copy_object(h, o, &t)?;
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_CreateObject(
    h: CK_SESSION_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    ph_object: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        token::session_info(h)?;
        // SAFETY: the caller passes NULL or `count` readable attributes.
        let t = unsafe { template_in(p_template, count) }?;
        // SAFETY: the caller passes NULL or a writable handle.
        let new = unsafe { out(ph_object) }?;
        *new = token::create_object(h, &t)?;
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_FindObjectsInit(
    h: CK_SESSION_HANDLE,
    p_template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: the caller passes NULL or `count` readable attributes.
        let t = unsafe { template_in(p_template, count) }?;
        token::find_init(h, &t)
    })
}

pub(super) unsafe extern "C" fn C_FindObjects(
    h: CK_SESSION_HANDLE,
    ph_object: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    pul_count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        let count = unsafe { out(pul_count) }?;
        if ph_object.is_null() && max > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let found = token::find(h, max as usize)?;
        for (i, o) in found.iter().enumerate() {
            // SAFETY: the array holds `max` ≥ found.len() handles, by the caller's contract.
            unsafe { ph_object.add(i).write(*o) };
        }
        *count = found.len() as CK_ULONG;
        Ok(())
    })
}

pub(super) unsafe extern "C" fn C_FindObjectsFinal(h: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| token::find_final(h))
}
