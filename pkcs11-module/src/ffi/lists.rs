//! The three function lists (PKCS#11 2.40, 3.0 and 3.2), the interfaces that
//! name them, the three exported entry points, and the functions this token
//! does not support (CKR_FUNCTION_NOT_SUPPORTED: every slot of every list is
//! filled, since some callers call through pointers without checking them).
#![allow(non_snake_case)]

use std::ffi::c_void;

use cryptoki_sys::*;

use super::{
    cipher::{
        C_Decrypt, C_DecryptFinal, C_DecryptInit, C_DecryptUpdate, C_Encrypt, C_EncryptFinal,
        C_EncryptInit, C_EncryptUpdate,
    },
    digest::{C_Digest, C_DigestFinal, C_DigestInit, C_DigestKey, C_DigestUpdate},
    general::{
        C_CancelFunction, C_Finalize, C_GetFunctionStatus, C_GetInfo, C_GetMechanismInfo,
        C_GetMechanismList, C_GetSlotInfo, C_GetSlotList, C_GetTokenInfo, C_Initialize,
    },
    guard, guard_any,
    kem::{C_DecapsulateKey, C_EncapsulateKey},
    keygen::{C_DeriveKey, C_GenerateKey, C_GenerateKeyPair},
    objects::{
        C_CopyObject, C_CreateObject, C_DestroyObject, C_FindObjects, C_FindObjectsFinal,
        C_FindObjectsInit, C_GetAttributeValue, C_GetObjectSize, C_SetAttributeValue,
    },
    out,
    random::{C_GenerateRandom, C_SeedRandom},
    session::{
        C_CloseAllSessions, C_CloseSession, C_GetSessionInfo, C_InitPIN, C_Login, C_Logout,
        C_OpenSession, C_SessionCancel, C_SetPIN,
    },
    sign::{
        C_Sign, C_SignFinal, C_SignInit, C_SignUpdate, C_Verify, C_VerifyFinal, C_VerifyInit,
        C_VerifySignature, C_VerifySignatureFinal, C_VerifySignatureInit, C_VerifySignatureUpdate,
        C_VerifyUpdate,
    },
};

/// Functions this token does not have, each with its C signature. Like
/// every other function, they answer CKR_CRYPTOKI_NOT_INITIALIZED first.
macro_rules! not_supported {
    ($($name:ident($($t:ty),*);)*) => {$(
        extern "C" fn $name($(_: $t),*) -> CK_RV {
            guard(|| Err(CKR_FUNCTION_NOT_SUPPORTED))
        }
    )*};
}

type Ses = CK_SESSION_HANDLE;
type Obj = CK_OBJECT_HANDLE;
type Ul = CK_ULONG;
type Bytes = *mut CK_BYTE;
type UlP = *mut CK_ULONG;
type Mechp = *mut CK_MECHANISM;
type Attrs = *mut CK_ATTRIBUTE;
type ObjP = *mut CK_OBJECT_HANDLE;

not_supported! {
    C_InitToken(CK_SLOT_ID, *mut CK_UTF8CHAR, Ul, *mut CK_UTF8CHAR);
    C_GetOperationState(Ses, Bytes, UlP);
    C_SetOperationState(Ses, Bytes, Ul, Obj, Obj);
    C_SignRecoverInit(Ses, Mechp, Obj);
    C_SignRecover(Ses, Bytes, Ul, Bytes, UlP);
    C_VerifyRecoverInit(Ses, Mechp, Obj);
    C_VerifyRecover(Ses, Bytes, Ul, Bytes, UlP);
    C_DigestEncryptUpdate(Ses, Bytes, Ul, Bytes, UlP);
    C_DecryptDigestUpdate(Ses, Bytes, Ul, Bytes, UlP);
    C_SignEncryptUpdate(Ses, Bytes, Ul, Bytes, UlP);
    C_DecryptVerifyUpdate(Ses, Bytes, Ul, Bytes, UlP);
    C_WrapKey(Ses, Mechp, Obj, Obj, Bytes, UlP);
    C_UnwrapKey(Ses, Mechp, Obj, Bytes, Ul, Attrs, Ul, ObjP);
    C_WaitForSlotEvent(CK_FLAGS, *mut CK_SLOT_ID, *mut c_void);
    C_LoginUser(Ses, CK_USER_TYPE, *mut CK_UTF8CHAR, Ul, *mut CK_UTF8CHAR, Ul);
    C_MessageEncryptInit(Ses, Mechp, Obj);
    C_EncryptMessage(Ses, *mut c_void, Ul, Bytes, Ul, Bytes, Ul, Bytes, UlP);
    C_EncryptMessageBegin(Ses, *mut c_void, Ul, Bytes, Ul);
    C_EncryptMessageNext(Ses, *mut c_void, Ul, Bytes, Ul, Bytes, UlP, CK_FLAGS);
    C_MessageEncryptFinal(Ses);
    C_MessageDecryptInit(Ses, Mechp, Obj);
    C_DecryptMessage(Ses, *mut c_void, Ul, Bytes, Ul, Bytes, Ul, Bytes, UlP);
    C_DecryptMessageBegin(Ses, *mut c_void, Ul, Bytes, Ul);
    C_DecryptMessageNext(Ses, *mut c_void, Ul, Bytes, Ul, Bytes, UlP, CK_FLAGS);
    C_MessageDecryptFinal(Ses);
    C_MessageSignInit(Ses, Mechp, Obj);
    C_SignMessage(Ses, *mut c_void, Ul, Bytes, Ul, Bytes, UlP);
    C_SignMessageBegin(Ses, *mut c_void, Ul);
    C_SignMessageNext(Ses, *mut c_void, Ul, Bytes, Ul, Bytes, UlP);
    C_MessageSignFinal(Ses);
    C_MessageVerifyInit(Ses, Mechp, Obj);
    C_VerifyMessage(Ses, *mut c_void, Ul, Bytes, Ul, Bytes, Ul);
    C_VerifyMessageBegin(Ses, *mut c_void, Ul);
    C_VerifyMessageNext(Ses, *mut c_void, Ul, Bytes, Ul, Bytes, Ul);
    C_MessageVerifyFinal(Ses);
    C_GetSessionValidationFlags(Ses, CK_SESSION_VALIDATION_FLAGS_TYPE, *mut CK_FLAGS);
    C_AsyncComplete(Ses, *mut CK_UTF8CHAR, *mut CK_ASYNC_DATA);
    C_AsyncGetID(Ses, *mut CK_UTF8CHAR, UlP);
    C_AsyncJoin(Ses, *mut CK_UTF8CHAR, Ul, Bytes, Ul);
    C_WrapKeyAuthenticated(Ses, Mechp, Obj, Obj, Bytes, Ul, Bytes, UlP);
    C_UnwrapKeyAuthenticated(Ses, Mechp, Obj, Bytes, Ul, Attrs, Ul, Bytes, Ul, ObjP);
}

/// Build a function list from names, in the order the spec lays them out.
macro_rules! list {
    ($ty:ident [$major:literal $minor:literal] $($f:ident)*) => {
        $ty { version: CK_VERSION { major: $major, minor: $minor }, $($f: Some($f)),* }
    };
}

/// The 2.40 functions, passed on to `$cb` after `$args`.
macro_rules! names_240 {
    ($cb:ident $($args:tt)*) => {
        $cb!($($args)* C_Initialize C_Finalize C_GetInfo C_GetFunctionList C_GetSlotList
            C_GetSlotInfo C_GetTokenInfo C_GetMechanismList C_GetMechanismInfo C_InitToken
            C_InitPIN C_SetPIN C_OpenSession C_CloseSession C_CloseAllSessions C_GetSessionInfo
            C_GetOperationState C_SetOperationState C_Login C_Logout C_CreateObject C_CopyObject
            C_DestroyObject C_GetObjectSize C_GetAttributeValue C_SetAttributeValue
            C_FindObjectsInit C_FindObjects C_FindObjectsFinal C_EncryptInit C_Encrypt
            C_EncryptUpdate C_EncryptFinal C_DecryptInit C_Decrypt C_DecryptUpdate C_DecryptFinal
            C_DigestInit C_Digest C_DigestUpdate C_DigestKey C_DigestFinal C_SignInit C_Sign
            C_SignUpdate C_SignFinal C_SignRecoverInit C_SignRecover C_VerifyInit C_Verify
            C_VerifyUpdate C_VerifyFinal C_VerifyRecoverInit C_VerifyRecover
            C_DigestEncryptUpdate C_DecryptDigestUpdate C_SignEncryptUpdate
            C_DecryptVerifyUpdate C_GenerateKey C_GenerateKeyPair C_WrapKey C_UnwrapKey
            C_DeriveKey C_SeedRandom C_GenerateRandom C_GetFunctionStatus C_CancelFunction
            C_WaitForSlotEvent)
    };
}

/// The functions 3.0 added.
macro_rules! names_30 {
    ($cb:ident $($args:tt)*) => {
        $cb!($($args)* C_GetInterfaceList C_GetInterface C_LoginUser C_SessionCancel
            C_MessageEncryptInit C_EncryptMessage C_EncryptMessageBegin C_EncryptMessageNext
            C_MessageEncryptFinal C_MessageDecryptInit C_DecryptMessage C_DecryptMessageBegin
            C_DecryptMessageNext C_MessageDecryptFinal C_MessageSignInit C_SignMessage
            C_SignMessageBegin C_SignMessageNext C_MessageSignFinal C_MessageVerifyInit
            C_VerifyMessage C_VerifyMessageBegin C_VerifyMessageNext C_MessageVerifyFinal)
    };
}

/// The functions 3.2 added.
macro_rules! names_32 {
    ($cb:ident $($args:tt)*) => {
        $cb!($($args)* C_EncapsulateKey C_DecapsulateKey C_VerifySignatureInit
            C_VerifySignature C_VerifySignatureUpdate C_VerifySignatureFinal
            C_GetSessionValidationFlags C_AsyncComplete C_AsyncGetID C_AsyncJoin
            C_WrapKeyAuthenticated C_UnwrapKeyAuthenticated)
    };
}

static LIST_240: CK_FUNCTION_LIST = names_240!(list CK_FUNCTION_LIST [2 40]);
static LIST_30: CK_FUNCTION_LIST_3_0 = names_240!(names_30 list CK_FUNCTION_LIST_3_0 [3 0]);
static LIST_32: CK_FUNCTION_LIST_3_2 =
    names_240!(names_30 names_32 list CK_FUNCTION_LIST_3_2 [3 2]);

/// The standard interface name.
const PKCS11: &[u8] = b"PKCS 11\0";

/// The interfaces, default (3.2) first.
struct Interfaces([CK_INTERFACE; 3]);

// SAFETY: the pointers in the table point to immutable statics (the name and
// the function lists), which are never written through, so sharing the table
// between threads shares only read-only data.
unsafe impl Sync for Interfaces {}

static INTERFACES: Interfaces = Interfaces([
    CK_INTERFACE {
        pInterfaceName: PKCS11.as_ptr().cast_mut(),
        pFunctionList: (&raw const LIST_32).cast_mut().cast::<c_void>(),
        flags: 0,
    },
    CK_INTERFACE {
        pInterfaceName: PKCS11.as_ptr().cast_mut(),
        pFunctionList: (&raw const LIST_30).cast_mut().cast::<c_void>(),
        flags: 0,
    },
    CK_INTERFACE {
        pInterfaceName: PKCS11.as_ptr().cast_mut(),
        pFunctionList: (&raw const LIST_240).cast_mut().cast::<c_void>(),
        flags: 0,
    },
]);

/// The version each interface's function list starts with.
fn interface_version(i: usize) -> CK_VERSION {
    match i {
        0 => LIST_32.version,
        1 => LIST_30.version,
        _ => LIST_240.version,
    }
}

/// The PKCS#11 2.40 entry point: the 2.40 function list.
///
/// # Safety
/// `pp_function_list` is NULL or valid for writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(pp_function_list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guard_any(|| {
        // SAFETY: the caller passes NULL or a writable pointer.
        let dst = unsafe { out(pp_function_list) }?;
        // The caller must not write through it (PKCS#11: the list is the library's).
        *dst = (&raw const LIST_240).cast_mut();
        Ok(())
    })
}

/// PKCS#11 3.x: the interfaces this module offers.
///
/// # Safety
/// `pul_count` is NULL or valid for one CK_ULONG; `p_interfaces_list` is NULL
/// or valid for `*pul_count` CK_INTERFACEs.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterfaceList(
    p_interfaces_list: *mut CK_INTERFACE,
    pul_count: *mut CK_ULONG,
) -> CK_RV {
    guard_any(|| {
        // SAFETY: the caller passes NULL or a writable CK_ULONG.
        let count = unsafe { out(pul_count) }?;
        let n = INTERFACES.0.len();
        if p_interfaces_list.is_null() {
            *count = n as CK_ULONG;
            return Ok(());
        }
        if (*count as usize) < n {
            *count = n as CK_ULONG;
            return Err(CKR_BUFFER_TOO_SMALL);
        }
        for (i, iface) in INTERFACES.0.iter().enumerate() {
            // SAFETY: the list holds *count ≥ n entries, by the caller's contract.
            unsafe { p_interfaces_list.add(i).write(*iface) };
        }
        *count = n as CK_ULONG;
        Ok(())
    })
}

/// PKCS#11 3.x: one interface by name (NULL: "PKCS 11") and version (NULL:
/// the default, 3.2). No interface offers flags, so asking for any fails.
///
/// # Safety
/// `p_interface_name` is NULL or a NUL-terminated string; `p_version` is NULL
/// or a readable CK_VERSION; `pp_interface` is NULL or valid for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterface(
    p_interface_name: *mut CK_UTF8CHAR,
    p_version: *mut CK_VERSION,
    pp_interface: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    guard_any(|| {
        // SAFETY: the caller passes NULL or a writable pointer.
        let dst = unsafe { out(pp_interface) }?;
        if !p_interface_name.is_null() {
            // SAFETY: a non-NULL name is NUL-terminated, by the caller's contract.
            let name =
                unsafe { std::ffi::CStr::from_ptr(p_interface_name.cast::<std::ffi::c_char>()) };
            if name.to_bytes_with_nul() != PKCS11 {
                return Err(CKR_ARGUMENTS_BAD);
            }
        }
        // SAFETY: the caller passes NULL or a readable CK_VERSION.
        let want = unsafe { p_version.as_ref() };
        let found = (0..INTERFACES.0.len())
            .find(|&i| {
                let v = interface_version(i);
                want.is_none_or(|w| w.major == v.major && w.minor == v.minor)
                    && INTERFACES.0[i].flags & flags == flags
            })
            .ok_or(CKR_ARGUMENTS_BAD)?;
        *dst = (&raw const INTERFACES.0[found]).cast_mut();
        Ok(())
    })
}
