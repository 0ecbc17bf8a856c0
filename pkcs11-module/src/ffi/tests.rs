//! FFI unit tests: what the C ABI does before C_Initialize, with no daemon to
//! talk to, and with bad pointers. (Everything with a daemon is in the e2e
//! tests, through real consumers.) The module state is process-wide, so the
//! tests take turns.

use std::sync::Mutex;

use super::{general::C_Finalize, lists::*, *};

static TURN: Mutex<()> = Mutex::new(());

/// Take a turn, with the module finalized and pointed at a socket that does not exist.
fn turn() -> std::sync::MutexGuard<'static, ()> {
    let g = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // SAFETY: the tests of this crate that touch the environment or the
    // module all hold TURN, and nothing else in this test binary reads the
    // environment, so no other thread reads or writes it meanwhile.
    unsafe { std::env::set_var("QKEYD_MODULE_SOCKET", "/nonexistent/qkeyd-test/p11.sock") };
    // SAFETY: NULL is a valid pReserved.
    let _ = unsafe { C_Finalize(ptr::null_mut()) };
    g
}

fn list32() -> &'static CK_FUNCTION_LIST_3_2 {
    let mut iface: *mut CK_INTERFACE = ptr::null_mut();
    // SAFETY: NULL name and version are allowed; `iface` is writable.
    assert_eq!(unsafe { C_GetInterface(ptr::null_mut(), ptr::null_mut(), &mut iface, 0) }, CKR_OK);
    // SAFETY: C_GetInterface returned a pointer into the static interface
    // table, whose default entry's list is the static 3.2 list.
    unsafe { &*(*iface).pFunctionList.cast::<CK_FUNCTION_LIST_3_2>() }
}

#[test]
fn every_slot_of_every_list_is_filled() {
    const N: usize = std::mem::size_of::<CK_FUNCTION_LIST_3_2>() / std::mem::size_of::<usize>();
    assert_eq!(N, 105, "version (padded to a word) + 104 functions");
    let l = list32();
    // SAFETY: CK_FUNCTION_LIST_3_2 is repr(C): a CK_VERSION padded to one word,
    // then 104 Option<fn> pointers, each one word; reading it as words is
    // reading its bytes.
    let words = unsafe { &*std::ptr::from_ref(l).cast::<[usize; N]>() };
    assert!(words[1..].iter().all(|w| *w != 0), "a NULL entry");
    assert_eq!((l.version.major, l.version.minor), (3, 2));
    let mut l240: *mut CK_FUNCTION_LIST = ptr::null_mut();
    // SAFETY: `l240` is writable.
    assert_eq!(unsafe { C_GetFunctionList(&mut l240) }, CKR_OK);
    // SAFETY: C_GetFunctionList returned the static 2.40 list.
    let l240 = unsafe { &*l240 };
    assert_eq!((l240.version.major, l240.version.minor), (2, 40));
    // SAFETY: NULL is refused, not written.
    assert_eq!(unsafe { C_GetFunctionList(ptr::null_mut()) }, CKR_ARGUMENTS_BAD);
}

#[test]
fn interfaces_are_found_by_exact_name_version_and_flags() {
    let _t = turn();
    let mut n: CK_ULONG = 0;
    // SAFETY: NULL list asks for the count into a writable `n`.
    assert_eq!(unsafe { C_GetInterfaceList(ptr::null_mut(), &mut n) }, CKR_OK);
    assert_eq!(n, 3);
    let mut one = [CK_INTERFACE {
        pInterfaceName: ptr::null_mut(),
        pFunctionList: ptr::null_mut(),
        flags: 0,
    }; 3];
    let mut small: CK_ULONG = 1;
    // SAFETY: `one` holds 3 ≥ `small` entries.
    assert_eq!(unsafe { C_GetInterfaceList(one.as_mut_ptr(), &mut small) }, CKR_BUFFER_TOO_SMALL);
    assert_eq!(small, 3);
    // SAFETY: `one` holds 3 entries.
    assert_eq!(unsafe { C_GetInterfaceList(one.as_mut_ptr(), &mut small) }, CKR_OK);
    // SAFETY: NULL count is refused, not written.
    assert_eq!(unsafe { C_GetInterfaceList(ptr::null_mut(), ptr::null_mut()) }, CKR_ARGUMENTS_BAD);
    let get = |name: Option<&[u8]>, v: Option<(u8, u8)>, flags| {
        let mut version = v.map(|(major, minor)| CK_VERSION { major, minor });
        let vp = version.as_mut().map_or(ptr::null_mut(), std::ptr::from_mut);
        let mut nm = name.map(<[u8]>::to_vec);
        let np = nm.as_mut().map_or(ptr::null_mut(), |n| n.as_mut_ptr());
        let mut iface: *mut CK_INTERFACE = ptr::null_mut();
        // SAFETY: the name is NUL-terminated or NULL, the version readable or NULL.
        let rv = unsafe { C_GetInterface(np, vp, &mut iface, flags) };
        // SAFETY: on success `iface` points into the static table, whose lists
        // all begin with a CK_VERSION.
        (rv, (rv == CKR_OK).then(|| unsafe { *(*iface).pFunctionList.cast::<CK_VERSION>() }))
    };
    let v = |r: (CK_RV, Option<CK_VERSION>)| (r.0, r.1.map(|v| (v.major, v.minor)));
    assert_eq!(v(get(None, None, 0)), (CKR_OK, Some((3, 2))));
    assert_eq!(v(get(Some(b"PKCS 11\0"), None, 0)), (CKR_OK, Some((3, 2))));
    assert_eq!(v(get(Some(b"PKCS 11\0"), Some((3, 0)), 0)), (CKR_OK, Some((3, 0))));
    assert_eq!(v(get(Some(b"PKCS 11\0"), Some((3, 2)), 0)), (CKR_OK, Some((3, 2))));
    assert_eq!(v(get(None, Some((2, 40)), 0)), (CKR_OK, Some((2, 40))));
    assert_eq!(get(None, Some((3, 1)), 0).0, CKR_ARGUMENTS_BAD);
    assert_eq!(get(Some(b"Vendor\0"), None, 0).0, CKR_ARGUMENTS_BAD);
    assert_eq!(get(None, None, CKF_INTERFACE_FORK_SAFE).0, CKR_ARGUMENTS_BAD);
    assert_eq!(
        // SAFETY: NULL ppInterface is refused, not written.
        unsafe { C_GetInterface(ptr::null_mut(), ptr::null_mut(), ptr::null_mut(), 0) },
        CKR_ARGUMENTS_BAD
    );
}

#[test]
fn initialize_checks_its_arguments() {
    let _t = turn();
    let l = list32();
    let init = l.C_Initialize.unwrap();
    let info = l.C_GetInfo.unwrap();
    let mut i = std::mem::MaybeUninit::<CK_INFO>::zeroed();
    // SAFETY: `i` is a writable CK_INFO.
    assert_eq!(unsafe { info(i.as_mut_ptr()) }, CKR_CRYPTOKI_NOT_INITIALIZED);
    // SAFETY: NULL pReserved is valid.
    assert_eq!(unsafe { (l.C_Finalize.unwrap())(ptr::null_mut()) }, CKR_CRYPTOKI_NOT_INITIALIZED);
    let mut reserved = 0u8;
    let mut args = CK_C_INITIALIZE_ARGS {
        CreateMutex: None,
        DestroyMutex: None,
        LockMutex: None,
        UnlockMutex: None,
        flags: CKF_OS_LOCKING_OK,
        pReserved: (&raw mut reserved).cast(),
    };
    // SAFETY: `args` is a valid CK_C_INITIALIZE_ARGS.
    assert_eq!(unsafe { init((&raw mut args).cast()) }, CKR_ARGUMENTS_BAD);
    args.pReserved = ptr::null_mut();
    extern "C" fn create(_: *mut *mut std::ffi::c_void) -> CK_RV {
        CKR_OK
    }
    extern "C" fn other(_: *mut std::ffi::c_void) -> CK_RV {
        CKR_OK
    }
    args.CreateMutex = Some(create);
    // SAFETY: as above.
    assert_eq!(unsafe { init((&raw mut args).cast()) }, CKR_ARGUMENTS_BAD, "some callbacks only");
    args.DestroyMutex = Some(other);
    args.LockMutex = Some(other);
    args.UnlockMutex = Some(other);
    args.flags = 0;
    // SAFETY: as above.
    assert_eq!(unsafe { init((&raw mut args).cast()) }, CKR_CANT_LOCK);
    args.flags = CKF_OS_LOCKING_OK;
    // SAFETY: as above.
    assert_eq!(unsafe { init((&raw mut args).cast()) }, CKR_OK);
    // SAFETY: NULL args are valid.
    assert_eq!(unsafe { init(ptr::null_mut()) }, CKR_CRYPTOKI_ALREADY_INITIALIZED);
    // SAFETY: `i` is writable.
    assert_eq!(unsafe { info(i.as_mut_ptr()) }, CKR_OK);
    // SAFETY: C_GetInfo wrote the whole CK_INFO.
    let i = unsafe { i.assume_init() };
    assert_eq!((i.cryptokiVersion.major, i.cryptokiVersion.minor), (3, 2));
    assert_eq!(&i.manufacturerID[..6], b"qkeyd ");
    // SAFETY: NULL is refused, not written.
    assert_eq!(unsafe { info(ptr::null_mut()) }, CKR_ARGUMENTS_BAD);
    // SAFETY: a non-NULL pReserved is refused, not read.
    assert_eq!(unsafe { (l.C_Finalize.unwrap())((&raw mut reserved).cast()) }, CKR_ARGUMENTS_BAD);
}

#[test]
fn without_a_daemon_there_is_no_token_and_nothing_to_open() {
    let _t = turn();
    let l = list32();
    // SAFETY: NULL args are valid.
    assert_eq!(unsafe { (l.C_Initialize.unwrap())(ptr::null_mut()) }, CKR_OK);
    let mut slots = [99 as CK_SLOT_ID; 2];
    let mut n: CK_ULONG = 2;
    // SAFETY: `slots` holds `n` entries.
    assert_eq!(unsafe { (l.C_GetSlotList.unwrap())(1, slots.as_mut_ptr(), &mut n) }, CKR_OK);
    assert_eq!(n, 0, "no token present");
    n = 2;
    // SAFETY: as above.
    assert_eq!(unsafe { (l.C_GetSlotList.unwrap())(0, slots.as_mut_ptr(), &mut n) }, CKR_OK);
    assert_eq!((n, slots[0]), (1, 0));
    assert_eq!(
        // SAFETY: NULL count is refused.
        unsafe { (l.C_GetSlotList.unwrap())(0, slots.as_mut_ptr(), ptr::null_mut()) },
        CKR_ARGUMENTS_BAD
    );
    let mut si = std::mem::MaybeUninit::<CK_SLOT_INFO>::zeroed();
    // SAFETY: `si` is writable.
    assert_eq!(unsafe { (l.C_GetSlotInfo.unwrap())(0, si.as_mut_ptr()) }, CKR_OK);
    // SAFETY: written whole by C_GetSlotInfo.
    assert_eq!(unsafe { si.assume_init() }.flags & CKF_TOKEN_PRESENT, 0);
    // SAFETY: `si` is writable.
    assert_eq!(unsafe { (l.C_GetSlotInfo.unwrap())(7, si.as_mut_ptr()) }, CKR_SLOT_ID_INVALID);
    let mut ti = std::mem::MaybeUninit::<CK_TOKEN_INFO>::zeroed();
    // SAFETY: `ti` is writable.
    assert_eq!(unsafe { (l.C_GetTokenInfo.unwrap())(0, ti.as_mut_ptr()) }, CKR_TOKEN_NOT_PRESENT);
    let mut h: CK_SESSION_HANDLE = 0;
    let open = l.C_OpenSession.unwrap();
    assert_eq!(
        // SAFETY: `h` is writable; no application pointer or callback.
        unsafe { open(0, CKF_SERIAL_SESSION, ptr::null_mut(), None, &mut h) },
        CKR_TOKEN_NOT_PRESENT
    );
    assert_eq!(
        // SAFETY: as above.
        unsafe { open(0, 0, ptr::null_mut(), None, &mut h) },
        CKR_SESSION_PARALLEL_NOT_SUPPORTED
    );
    assert_eq!(
        // SAFETY: NULL phSession is refused.
        unsafe { open(0, CKF_SERIAL_SESSION, ptr::null_mut(), None, ptr::null_mut()) },
        CKR_ARGUMENTS_BAD
    );
    let mut buf = [0u8; 16];
    assert_eq!(
        // SAFETY: `buf` holds 16 bytes.
        unsafe { (l.C_GenerateRandom.unwrap())(1, buf.as_mut_ptr(), 16) },
        CKR_SESSION_HANDLE_INVALID
    );
    assert_eq!(buf, [0; 16], "nothing written");
    assert_eq!(
        // SAFETY: a NULL buffer is refused.
        unsafe { (l.C_GenerateRandom.unwrap())(1, ptr::null_mut(), 16) },
        CKR_SESSION_HANDLE_INVALID
    );
    // SAFETY: no pointers.
    assert_eq!(unsafe { (l.C_CloseSession.unwrap())(1) }, CKR_SESSION_HANDLE_INVALID);
    assert_eq!(
        // SAFETY: unsupported functions ignore their arguments.
        unsafe { (l.C_SignRecoverInit.unwrap())(1, ptr::null_mut(), 0) },
        CKR_FUNCTION_NOT_SUPPORTED
    );
    let mut mech = [0 as CK_MECHANISM_TYPE; 14];
    let mut n: CK_ULONG = 1;
    assert_eq!(
        // SAFETY: `mech` holds 14 ≥ n entries.
        unsafe { (l.C_GetMechanismList.unwrap())(0, mech.as_mut_ptr(), &mut n) },
        CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(n, 14);
    // SAFETY: `mech` holds 14 entries.
    assert_eq!(unsafe { (l.C_GetMechanismList.unwrap())(0, mech.as_mut_ptr(), &mut n) }, CKR_OK);
    assert_eq!(
        mech[..4],
        [CKM_ML_KEM_KEY_PAIR_GEN, CKM_ML_KEM, CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_DSA]
    );
    assert_eq!(
        mech[4..10],
        [CKM_SHA256, CKM_SHA384, CKM_SHA512, CKM_SHA3_256, CKM_SHA3_384, CKM_SHA3_512]
    );
    assert_eq!(mech[10..], [CKM_AES_KEY_GEN, CKM_AES_GCM, CKM_HKDF_DERIVE, CKM_HKDF_DATA]);
    let mut mi = CK_MECHANISM_INFO { ulMinKeySize: 0, ulMaxKeySize: 0, flags: 0 };
    assert_eq!(
        // SAFETY: `mi` is writable.
        unsafe { (l.C_GetMechanismInfo.unwrap())(0, CKM_SHA_1, &mut mi) },
        CKR_MECHANISM_INVALID
    );
    // SAFETY: `mi` is writable.
    assert_eq!(unsafe { (l.C_GetMechanismInfo.unwrap())(0, CKM_SHA3_256, &mut mi) }, CKR_OK);
    assert_eq!(mi.flags, CKF_DIGEST);
    // SAFETY: `mi` is writable.
    assert_eq!(unsafe { (l.C_GetMechanismInfo.unwrap())(0, CKM_ML_KEM, &mut mi) }, CKR_OK);
    assert_eq!(
        (mi.ulMinKeySize, mi.ulMaxKeySize, mi.flags),
        (800, 1568, CKF_ENCAPSULATE | CKF_DECAPSULATE)
    );
}

#[test]
fn a_panic_becomes_a_general_error() {
    assert_eq!(guard_any(|| panic!("boom")), CKR_GENERAL_ERROR);
    assert_eq!(guard_any(|| Err(CKR_PIN_INCORRECT)), CKR_PIN_INCORRECT);
    assert_eq!(guard_any(|| Ok(())), CKR_OK);
}

#[test]
fn before_initialize_every_function_says_so_first() {
    let _t = turn();
    let l = list32();
    let mut h: CK_SESSION_HANDLE = 0;
    let mut n: CK_ULONG = 0;
    // SAFETY: each call gets NULL or writable pointers, and none is read
    // before the initialisation check.
    let rvs = unsafe {
        [
            (l.C_EncryptInit.unwrap())(1, ptr::null_mut(), 0),
            (l.C_InitToken.unwrap())(0, ptr::null_mut(), 0, ptr::null_mut()),
            (l.C_WaitForSlotEvent.unwrap())(0, ptr::null_mut(), ptr::null_mut()),
            (l.C_CreateObject.unwrap())(1, ptr::null_mut(), 1, ptr::null_mut()),
            (l.C_InitPIN.unwrap())(1, ptr::null_mut(), 4),
            (l.C_SetPIN.unwrap())(1, ptr::null_mut(), 4, ptr::null_mut(), 4),
            (l.C_DigestInit.unwrap())(1, ptr::null_mut()),
            (l.C_Digest.unwrap())(1, ptr::null_mut(), 4, ptr::null_mut(), ptr::null_mut()),
            (l.C_GetAttributeValue.unwrap())(1, 1, ptr::null_mut(), 1),
            (l.C_GenerateRandom.unwrap())(1, ptr::null_mut(), 16),
            (l.C_Login.unwrap())(1, CKU_USER, ptr::null_mut(), 1000),
            (l.C_OpenSession.unwrap())(0, CKF_SERIAL_SESSION, ptr::null_mut(), None, &mut h),
            (l.C_GetSlotList.unwrap())(0, ptr::null_mut(), &mut n),
            (l.C_Finalize.unwrap())(ptr::dangling_mut::<std::ffi::c_void>()),
            (l.C_EncapsulateKey.unwrap())(
                1,
                ptr::null_mut(),
                0,
                ptr::null_mut(),
                0,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            ),
        ]
    };
    for (i, rv) in rvs.into_iter().enumerate() {
        assert_eq!(rv, CKR_CRYPTOKI_NOT_INITIALIZED, "call {i}");
    }
}
