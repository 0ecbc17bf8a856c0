#!/usr/bin/env python3
"""Robustness of qkeyd's PKCS#11 module at the C ABI, with nothing but ctypes:
calls before C_Initialize, NULL pointers, short buffers, invalid handles,
operation state, login, C_EncapsulateKey/C_DecapsulateKey edge cases and
C_Finalize. The function table is the 3.2 one from C_GetInterface(NULL, NULL).

    robustness.py --module /path/libqkeyd_pkcs11.so --pin PIN

QKEYD_MODULE_SOCKET must name the running daemon's socket (the module reads it).
Each passed check prints one "ok: ..." line. The first failed check prints
"FAILED: ..." and the script exits 1. It exits 0 only when every check passed.
A crash of the module kills this process, which is a failure too.
"""

import argparse
import ctypes
import faulthandler
import sys
import traceback
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    byref,
    c_char,
    c_char_p,
    c_ubyte,
    c_ulong,
    c_void_p,
    cast,
    create_string_buffer,
    sizeof,
)

# ---------------------------------------------------------------- types

CK_ULONG = c_ulong  # LP64: 8 bytes
CK_RV = CK_ULONG
CK_BBOOL = c_ubyte
CK_UNAVAILABLE_INFORMATION = CK_ULONG(-1).value


class CK_VERSION(Structure):
    _fields_ = [("major", c_ubyte), ("minor", c_ubyte)]


class CK_INFO(Structure):
    _fields_ = [
        ("cryptokiVersion", CK_VERSION),
        ("manufacturerID", c_char * 32),
        ("flags", CK_ULONG),
        ("libraryDescription", c_char * 32),
        ("libraryVersion", CK_VERSION),
    ]


class CK_SLOT_INFO(Structure):
    _fields_ = [
        ("slotDescription", c_char * 64),
        ("manufacturerID", c_char * 32),
        ("flags", CK_ULONG),
        ("hardwareVersion", CK_VERSION),
        ("firmwareVersion", CK_VERSION),
    ]


class CK_TOKEN_INFO(Structure):
    _fields_ = [
        ("label", c_char * 32),
        ("manufacturerID", c_char * 32),
        ("model", c_char * 16),
        ("serialNumber", c_char * 16),
        ("flags", CK_ULONG),
        ("ulMaxSessionCount", CK_ULONG),
        ("ulSessionCount", CK_ULONG),
        ("ulMaxRwSessionCount", CK_ULONG),
        ("ulRwSessionCount", CK_ULONG),
        ("ulMaxPinLen", CK_ULONG),
        ("ulMinPinLen", CK_ULONG),
        ("ulTotalPublicMemory", CK_ULONG),
        ("ulFreePublicMemory", CK_ULONG),
        ("ulTotalPrivateMemory", CK_ULONG),
        ("ulFreePrivateMemory", CK_ULONG),
        ("hardwareVersion", CK_VERSION),
        ("firmwareVersion", CK_VERSION),
        ("utcTime", c_char * 16),
    ]


class CK_SESSION_INFO(Structure):
    _fields_ = [
        ("slotID", CK_ULONG),
        ("state", CK_ULONG),
        ("flags", CK_ULONG),
        ("ulDeviceError", CK_ULONG),
    ]


class CK_MECHANISM_INFO(Structure):
    _fields_ = [("ulMinKeySize", CK_ULONG), ("ulMaxKeySize", CK_ULONG), ("flags", CK_ULONG)]


class CK_MECHANISM(Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", c_void_p), ("ulParameterLen", CK_ULONG)]


class CK_ATTRIBUTE(Structure):
    _fields_ = [("type", CK_ULONG), ("pValue", c_void_p), ("ulValueLen", CK_ULONG)]


class CK_C_INITIALIZE_ARGS(Structure):
    _fields_ = [
        ("CreateMutex", c_void_p),
        ("DestroyMutex", c_void_p),
        ("LockMutex", c_void_p),
        ("UnlockMutex", c_void_p),
        ("flags", CK_ULONG),
        ("pReserved", c_void_p),
    ]


class CK_INTERFACE(Structure):
    _fields_ = [("pInterfaceName", c_char_p), ("pFunctionList", c_void_p), ("flags", CK_ULONG)]


# The PKCS#11 3.2 function list, in pkcs11f.h order: 68 (2.40) + 24 (3.0) + 12 (3.2).
FUNCTIONS_2_40 = """
C_Initialize C_Finalize C_GetInfo C_GetFunctionList C_GetSlotList C_GetSlotInfo
C_GetTokenInfo C_GetMechanismList C_GetMechanismInfo C_InitToken C_InitPIN C_SetPIN
C_OpenSession C_CloseSession C_CloseAllSessions C_GetSessionInfo C_GetOperationState
C_SetOperationState C_Login C_Logout C_CreateObject C_CopyObject C_DestroyObject
C_GetObjectSize C_GetAttributeValue C_SetAttributeValue C_FindObjectsInit C_FindObjects
C_FindObjectsFinal C_EncryptInit C_Encrypt C_EncryptUpdate C_EncryptFinal C_DecryptInit
C_Decrypt C_DecryptUpdate C_DecryptFinal C_DigestInit C_Digest C_DigestUpdate C_DigestKey
C_DigestFinal C_SignInit C_Sign C_SignUpdate C_SignFinal C_SignRecoverInit C_SignRecover
C_VerifyInit C_Verify C_VerifyUpdate C_VerifyFinal C_VerifyRecoverInit C_VerifyRecover
C_DigestEncryptUpdate C_DecryptDigestUpdate C_SignEncryptUpdate C_DecryptVerifyUpdate
C_GenerateKey C_GenerateKeyPair C_WrapKey C_UnwrapKey C_DeriveKey C_SeedRandom
C_GenerateRandom C_GetFunctionStatus C_CancelFunction C_WaitForSlotEvent
""".split()
FUNCTIONS_3_0 = """
C_GetInterfaceList C_GetInterface C_LoginUser C_SessionCancel C_MessageEncryptInit
C_EncryptMessage C_EncryptMessageBegin C_EncryptMessageNext C_MessageEncryptFinal
C_MessageDecryptInit C_DecryptMessage C_DecryptMessageBegin C_DecryptMessageNext
C_MessageDecryptFinal C_MessageSignInit C_SignMessage C_SignMessageBegin C_SignMessageNext
C_MessageSignFinal C_MessageVerifyInit C_VerifyMessage C_VerifyMessageBegin
C_VerifyMessageNext C_MessageVerifyFinal
""".split()
FUNCTIONS_3_2 = """
C_EncapsulateKey C_DecapsulateKey C_VerifySignatureInit C_VerifySignature
C_VerifySignatureUpdate C_VerifySignatureFinal C_GetSessionValidationFlags C_AsyncComplete
C_AsyncGetID C_AsyncJoin C_WrapKeyAuthenticated C_UnwrapKeyAuthenticated
""".split()
FUNCTION_NAMES = FUNCTIONS_2_40 + FUNCTIONS_3_0 + FUNCTIONS_3_2
assert (len(FUNCTIONS_2_40), len(FUNCTIONS_3_0), len(FUNCTIONS_3_2)) == (68, 24, 12)
assert len(set(FUNCTION_NAMES)) == 104


class CK_FUNCTION_LIST_3_2(Structure):
    _fields_ = [("version", CK_VERSION)] + [(name, c_void_p) for name in FUNCTION_NAMES]


assert sizeof(CK_FUNCTION_LIST_3_2) == 8 + 104 * sizeof(c_void_p)

# Every pointer argument is a c_void_p, so None (NULL), byref(x), arrays and
# string buffers can all be passed.
P = c_void_p
U = CK_ULONG
PROTOTYPES = {
    "C_Initialize": (P,),
    "C_Finalize": (P,),
    "C_GetInfo": (P,),
    "C_GetFunctionList": (P,),
    "C_GetSlotList": (CK_BBOOL, P, P),
    "C_GetSlotInfo": (U, P),
    "C_GetTokenInfo": (U, P),
    "C_GetMechanismList": (U, P, P),
    "C_GetMechanismInfo": (U, U, P),
    "C_OpenSession": (U, U, P, P, P),
    "C_CloseSession": (U,),
    "C_CloseAllSessions": (U,),
    "C_GetSessionInfo": (U, P),
    "C_Login": (U, U, P, U),
    "C_Logout": (U,),
    "C_DestroyObject": (U, U),
    "C_GetAttributeValue": (U, U, P, U),
    "C_FindObjectsInit": (U, P, U),
    "C_FindObjects": (U, P, U, P),
    "C_FindObjectsFinal": (U,),
    "C_SignInit": (U, P, U),
    "C_Sign": (U, P, U, P, P),
    "C_VerifyInit": (U, P, U),
    "C_Verify": (U, P, U, P, U),
    "C_GenerateKeyPair": (U, P, P, U, P, U, P, P),
    "C_SeedRandom": (U, P, U),
    "C_GenerateRandom": (U, P, U),
    "C_GetInterfaceList": (P, P),
    "C_GetInterface": (P, P, P, U),
    "C_EncapsulateKey": (U, P, U, P, U, P, P, P),
    "C_DecapsulateKey": (U, P, U, P, U, P, U, P),
}

# ---------------------------------------------------------------- constants

CKR = {
    0x000: "CKR_OK",
    0x003: "CKR_SLOT_ID_INVALID",
    0x005: "CKR_GENERAL_ERROR",
    0x006: "CKR_FUNCTION_FAILED",
    0x007: "CKR_ARGUMENTS_BAD",
    0x011: "CKR_ATTRIBUTE_SENSITIVE",
    0x012: "CKR_ATTRIBUTE_TYPE_INVALID",
    0x013: "CKR_ATTRIBUTE_VALUE_INVALID",
    0x040: "CKR_ENCRYPTED_DATA_INVALID",
    0x041: "CKR_ENCRYPTED_DATA_LEN_RANGE",
    0x054: "CKR_FUNCTION_NOT_SUPPORTED",
    0x060: "CKR_KEY_HANDLE_INVALID",
    0x063: "CKR_KEY_TYPE_INCONSISTENT",
    0x068: "CKR_KEY_FUNCTION_NOT_PERMITTED",
    0x070: "CKR_MECHANISM_INVALID",
    0x071: "CKR_MECHANISM_PARAM_INVALID",
    0x082: "CKR_OBJECT_HANDLE_INVALID",
    0x090: "CKR_OPERATION_ACTIVE",
    0x091: "CKR_OPERATION_NOT_INITIALIZED",
    0x0A0: "CKR_PIN_INCORRECT",
    0x0B3: "CKR_SESSION_HANDLE_INVALID",
    0x0B4: "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
    0x0B5: "CKR_SESSION_READ_ONLY",
    0x0C0: "CKR_SIGNATURE_INVALID",
    0x0C1: "CKR_SIGNATURE_LEN_RANGE",
    0x0D0: "CKR_TEMPLATE_INCOMPLETE",
    0x0D1: "CKR_TEMPLATE_INCONSISTENT",
    0x100: "CKR_USER_ALREADY_LOGGED_IN",
    0x101: "CKR_USER_NOT_LOGGED_IN",
    0x110: "CKR_WRAPPED_KEY_INVALID",
    0x112: "CKR_WRAPPED_KEY_LEN_RANGE",
    0x120: "CKR_RANDOM_SEED_NOT_SUPPORTED",
    0x150: "CKR_BUFFER_TOO_SMALL",
    0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
    0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
}
OK = 0x000
SLOT_ID_INVALID = 0x003
ARGUMENTS_BAD = 0x007
ATTRIBUTE_SENSITIVE = 0x011
ATTRIBUTE_VALUE_INVALID = 0x013
ENCRYPTED_DATA_LEN_RANGE = 0x041  # (0x040 is CKR_ENCRYPTED_DATA_INVALID)
KEY_HANDLE_INVALID = 0x060
KEY_TYPE_INCONSISTENT = 0x063
KEY_FUNCTION_NOT_PERMITTED = 0x068
MECHANISM_INVALID = 0x070
OBJECT_HANDLE_INVALID = 0x082
OPERATION_ACTIVE = 0x090
OPERATION_NOT_INITIALIZED = 0x091
PIN_INCORRECT = 0x0A0
SESSION_HANDLE_INVALID = 0x0B3
SESSION_PARALLEL_NOT_SUPPORTED = 0x0B4
SESSION_READ_ONLY = 0x0B5
SIGNATURE_INVALID = 0x0C0
SIGNATURE_LEN_RANGE = 0x0C1
TEMPLATE_INCOMPLETE = 0x0D0
USER_ALREADY_LOGGED_IN = 0x100
USER_NOT_LOGGED_IN = 0x101
WRAPPED_KEY_LEN_RANGE = 0x112
RANDOM_SEED_NOT_SUPPORTED = 0x120
BUFFER_TOO_SMALL = 0x150
CRYPTOKI_NOT_INITIALIZED = 0x190
CRYPTOKI_ALREADY_INITIALIZED = 0x191

CKF_RNG = 0x001
CKF_LOGIN_REQUIRED = 0x004
CKF_USER_PIN_INITIALIZED = 0x008
CKF_TOKEN_INITIALIZED = 0x400
CKF_TOKEN_PRESENT = 0x001
CKF_RW_SESSION = 0x2
CKF_SERIAL_SESSION = 0x4
CKF_GENERATE_KEY_PAIR = 0x10000
CKF_SIGN = 0x800
CKF_VERIFY = 0x2000
CKF_ENCAPSULATE = 0x10000000
CKF_DECAPSULATE = 0x20000000

CKS_RO_PUBLIC_SESSION = 0
CKS_RO_USER_FUNCTIONS = 1
CKS_RW_PUBLIC_SESSION = 2
CKS_RW_USER_FUNCTIONS = 3

CKU_USER = 1

CKO_PUBLIC_KEY = 2
CKO_PRIVATE_KEY = 3
CKO_SECRET_KEY = 4
CKK_GENERIC_SECRET = 0x10
CKK_ML_KEM = 0x49
CKK_ML_DSA = 0x4A

CKA_CLASS = 0x000
CKA_TOKEN = 0x001
CKA_VALUE = 0x011
CKA_KEY_TYPE = 0x100
CKA_SENSITIVE = 0x103
CKA_SIGN = 0x108
CKA_VERIFY = 0x10A
CKA_EXTRACTABLE = 0x162
CKA_PARAMETER_SET = 0x61D
CKA_ENCAPSULATE = 0x633
CKA_DECAPSULATE = 0x634
CKA_SEED = 0x637

CKM_SHA256_RSA_PKCS = 0x040
CKM_SHA256 = 0x250
CKM_ML_KEM_KEY_PAIR_GEN = 0x0F
CKM_ML_KEM = 0x17
CKM_ML_DSA_KEY_PAIR_GEN = 0x1C
CKM_ML_DSA = 0x1D
CKM_SHA_1 = 0x220
CKM_SHA384 = 0x260
CKM_SHA512 = 0x270
CKM_SHA3_256 = 0x2B0
CKM_SHA3_384 = 0x2C0
CKM_SHA3_512 = 0x2D0
DIGESTS = {CKM_SHA256, CKM_SHA384, CKM_SHA512, CKM_SHA3_256, CKM_SHA3_384, CKM_SHA3_512}
SECRET_KEYS = {0x1080, 0x1087, 0x402A, 0x402B}  # AES keygen, AES-GCM, HKDF derive and data
MECHANISMS = {CKM_ML_KEM_KEY_PAIR_GEN, CKM_ML_KEM, CKM_ML_DSA_KEY_PAIR_GEN, CKM_ML_DSA} | DIGESTS | SECRET_KEYS

CKP_ML_DSA_65 = 2
CKP_ML_KEM_768 = 2
ML_DSA_65_PK_LEN = 1952
ML_DSA_65_SIG_LEN = 3309
ML_KEM_768_EK_LEN = 1184
ML_KEM_768_CT_LEN = 1088
SHARED_SECRET_LEN = 32

BAD_HANDLE = 0xDEADBEEF
MESSAGE = b"qkeyd robustness: the message to sign"

# ---------------------------------------------------------------- checks


class CheckFailed(Exception):
    pass


def rv_name(rv):
    return f"{CKR.get(rv, 'CKR_?')} (0x{rv:X})"


def ok(what):
    print(f"ok: {what}", flush=True)


def check(cond, what):
    if not cond:
        raise CheckFailed(what)
    ok(what)


def check_eq(got, want, what):
    if got != want:
        raise CheckFailed(f"{what}: got {got!r}, want {want!r}")
    ok(what)


def expect(rv, want, what):
    """rv must be want, or one of want when it is a tuple."""
    wants = want if isinstance(want, tuple) else (want,)
    if rv not in wants:
        raise CheckFailed(f"{what}: returned {rv_name(rv)}, want {' or '.join(rv_name(w) for w in wants)}")
    ok(f"{what} -> {CKR.get(rv, hex(rv))}")
    return rv


class Module:
    """The .so, its 3.2 function table, and typed callers for its entries."""

    def __init__(self, path):
        self.dll = ctypes.CDLL(path)
        get_interface = self.dll.C_GetInterface
        get_interface.argtypes = [P, P, P, U]
        get_interface.restype = CK_RV
        iface = POINTER(CK_INTERFACE)()
        expect(get_interface(None, None, byref(iface), 0), OK, "C_GetInterface(NULL, NULL, &iface, 0) symbol")
        check(bool(iface), "C_GetInterface gave a non-NULL CK_INTERFACE")
        self.default_iface = iface.contents
        check(bool(self.default_iface.pFunctionList), "the default interface has a function list")
        self.fl = cast(self.default_iface.pFunctionList, POINTER(CK_FUNCTION_LIST_3_2)).contents
        self._fns = {}

    def __getattr__(self, name):
        if not name.startswith("C_"):
            raise AttributeError(name)
        fn = self._fns.get(name)
        if fn is None:
            addr = getattr(self.fl, name)
            if not addr:
                raise CheckFailed(f"{name} is NULL in the 3.2 function list")
            fn = CFUNCTYPE(CK_RV, *PROTOTYPES[name])(addr)
            self._fns[name] = fn
        return fn


def ulongs(*values, n=None):
    arr = (CK_ULONG * (n if n is not None else max(len(values), 1)))()
    for i, v in enumerate(values):
        arr[i] = v
    return arr


class Template:
    """A CK_ATTRIBUTE array built from (type, value) pairs: bool -> CK_BBOOL,
    int -> CK_ULONG, bytes -> a byte buffer. The value buffers stay alive with it."""

    def __init__(self, *pairs):
        self.arr = (CK_ATTRIBUTE * max(len(pairs), 1))()
        self.count = len(pairs)
        self._keep = []
        for i, (typ, value) in enumerate(pairs):
            if isinstance(value, bool):
                buf = CK_BBOOL(1 if value else 0)
            elif isinstance(value, int):
                buf = CK_ULONG(value)
            else:
                buf = create_string_buffer(bytes(value), len(value))
            self._keep.append(buf)
            self.arr[i].type = typ
            self.arr[i].pValue = ctypes.addressof(buf)
            self.arr[i].ulValueLen = sizeof(buf)


class ReadTemplate:
    """A CK_ATTRIBUTE array for C_GetAttributeValue: (type, buffer size or None)."""

    def __init__(self, *pairs):
        self.arr = (CK_ATTRIBUTE * len(pairs))()
        self.count = len(pairs)
        self.bufs = []
        for i, (typ, size) in enumerate(pairs):
            buf = create_string_buffer(size) if size is not None else None
            self.bufs.append(buf)
            self.arr[i].type = typ
            self.arr[i].pValue = ctypes.addressof(buf) if buf is not None else None
            self.arr[i].ulValueLen = size if size is not None else 0

    def length(self, i):
        return self.arr[i].ulValueLen

    def raw(self, i):
        return self.bufs[i].raw[: self.arr[i].ulValueLen]

    def ulong(self, i):
        return CK_ULONG.from_buffer_copy(self.bufs[i].raw[: sizeof(CK_ULONG)]).value


def mechanism(mech_type):
    return CK_MECHANISM(mech_type, None, 0)


# ---------------------------------------------------------------- helpers over the module


def open_session(m, rw, what):
    h = CK_ULONG(0)
    flags = CKF_SERIAL_SESSION | (CKF_RW_SESSION if rw else 0)
    expect(m.C_OpenSession(0, flags, None, None, byref(h)), OK, what)
    check(h.value != 0, f"{what}: session handle is non-zero")
    return h.value


def session_state(m, h):
    info = CK_SESSION_INFO()
    expect(m.C_GetSessionInfo(h, byref(info)), OK, "C_GetSessionInfo")
    return info


def find(m, h, template=None):
    """All object handles matching template (None: every object)."""
    t = template or Template()
    expect(m.C_FindObjectsInit(h, t.arr if template else None, t.count if template else 0), OK, "C_FindObjectsInit")
    found = []
    batch = ulongs(n=16)
    while True:
        count = CK_ULONG(0)
        rv = m.C_FindObjects(h, batch, 16, byref(count))
        if rv != OK:
            raise CheckFailed(f"C_FindObjects returned {rv_name(rv)}")
        if count.value > 16:
            raise CheckFailed(f"C_FindObjects returned {count.value} objects for a 16-slot array")
        if count.value == 0:
            break
        found.extend(batch[: count.value])
    expect(m.C_FindObjectsFinal(h), OK, "C_FindObjectsFinal")
    return found


def count_secret_keys(m, h):
    return len(find(m, h, Template((CKA_CLASS, CKO_SECRET_KEY))))


def generate_key_pair(m, h, mech_type, pub_template, priv_template, want=OK, what="C_GenerateKeyPair"):
    mech = mechanism(mech_type)
    pub = CK_ULONG(0)
    priv = CK_ULONG(0)
    rv = m.C_GenerateKeyPair(
        h, byref(mech), pub_template.arr, pub_template.count, priv_template.arr, priv_template.count,
        byref(pub), byref(priv),
    )
    expect(rv, want, what)
    if rv == OK:
        check(pub.value != 0 and priv.value != 0 and pub.value != priv.value, f"{what}: two distinct handles")
    return pub.value, priv.value


def ml_dsa_templates(param_set, token=False):
    pub = Template((CKA_TOKEN, token), (CKA_PARAMETER_SET, param_set), (CKA_VERIFY, True))
    priv = Template((CKA_TOKEN, token), (CKA_SIGN, True))
    return pub, priv


def ml_kem_templates(param_set, token=False):
    pub = Template((CKA_TOKEN, token), (CKA_PARAMETER_SET, param_set), (CKA_ENCAPSULATE, True))
    priv = Template((CKA_TOKEN, token), (CKA_DECAPSULATE, True))
    return pub, priv


def secret_template(readable=False):
    pairs = [(CKA_CLASS, CKO_SECRET_KEY), (CKA_KEY_TYPE, CKK_GENERIC_SECRET), (CKA_TOKEN, False)]
    if readable:
        pairs += [(CKA_SENSITIVE, False), (CKA_EXTRACTABLE, True)]
    return Template(*pairs)


def sign(m, h, key, data, what):
    """One full C_SignInit + length query + C_Sign; returns the signature."""
    mech = mechanism(CKM_ML_DSA)
    expect(m.C_SignInit(h, byref(mech), key), OK, f"{what}: C_SignInit")
    n = CK_ULONG(0)
    expect(m.C_Sign(h, data, len(data), None, byref(n)), OK, f"{what}: C_Sign length query")
    buf = create_string_buffer(n.value)
    expect(m.C_Sign(h, data, len(data), buf, byref(n)), OK, f"{what}: C_Sign")
    return buf.raw[: n.value]


def verify(m, h, key, data, sig):
    mech = mechanism(CKM_ML_DSA)
    rv = m.C_VerifyInit(h, byref(mech), key)
    if rv != OK:
        raise CheckFailed(f"C_VerifyInit returned {rv_name(rv)}")
    return m.C_Verify(h, data, len(data), sig, len(sig))


def end_sign_operation(m, h):
    """Finish whatever signing operation is active (if any), so the session is clean."""
    n = CK_ULONG(ML_DSA_65_SIG_LEN)
    buf = create_string_buffer(ML_DSA_65_SIG_LEN)
    m.C_Sign(h, MESSAGE, len(MESSAGE), buf, byref(n))


def get_value(m, h, obj, attr):
    t = ReadTemplate((attr, None))
    expect(m.C_GetAttributeValue(h, obj, t.arr, 1), OK, f"C_GetAttributeValue(0x{attr:X}) length")
    n = t.length(0)
    t = ReadTemplate((attr, n))
    expect(m.C_GetAttributeValue(h, obj, t.arr, 1), OK, f"C_GetAttributeValue(0x{attr:X}) value")
    return t.raw(0)


# ---------------------------------------------------------------- the checks


def check_interfaces(m):
    iface = m.default_iface
    check_eq(iface.pInterfaceName, b"PKCS 11", "default interface is named \"PKCS 11\"")
    check_eq(iface.flags, 0, "default interface flags are 0")
    check_eq((m.fl.version.major, m.fl.version.minor), (3, 2), "default function list is version 3.2")

    lists = {}
    for major, minor in [(3, 0), (3, 2)]:
        ver = CK_VERSION(major, minor)
        p = POINTER(CK_INTERFACE)()
        expect(m.C_GetInterface(b"PKCS 11", byref(ver), byref(p), 0), OK, f"C_GetInterface(\"PKCS 11\", {major}.{minor})")
        fl = cast(p.contents.pFunctionList, POINTER(CK_VERSION)).contents
        check_eq((fl.major, fl.minor), (major, minor), f"the {major}.{minor} interface's list has version {major}.{minor}")
        lists[(major, minor)] = p.contents.pFunctionList
    check(lists[(3, 0)] != lists[(3, 2)], "the 3.0 and 3.2 function lists are distinct")

    get_function_list = m.dll.C_GetFunctionList
    get_function_list.argtypes = [P]
    get_function_list.restype = CK_RV
    fl240 = c_void_p()
    expect(get_function_list(byref(fl240)), OK, "C_GetFunctionList")
    v = cast(fl240, POINTER(CK_VERSION)).contents
    check_eq((v.major, v.minor), (2, 40), "C_GetFunctionList gives a 2.40 list")

    count = CK_ULONG(0)
    expect(m.C_GetInterfaceList(None, byref(count)), OK, "C_GetInterfaceList(NULL, &count)")
    check_eq(count.value, 3, "C_GetInterfaceList counts 3 interfaces")
    one = (CK_INTERFACE * 1)()
    count = CK_ULONG(1)
    expect(m.C_GetInterfaceList(one, byref(count)), BUFFER_TOO_SMALL, "C_GetInterfaceList with a 1-entry buffer")
    check_eq(count.value, 3, "C_GetInterfaceList BUFFER_TOO_SMALL writes back count 3")
    three = (CK_INTERFACE * 3)()
    count = CK_ULONG(3)
    expect(m.C_GetInterfaceList(three, byref(count)), OK, "C_GetInterfaceList with 3 entries")
    got = []
    for entry in three[: count.value]:
        ver = cast(entry.pFunctionList, POINTER(CK_VERSION)).contents
        got.append((entry.pInterfaceName, (ver.major, ver.minor), entry.flags))
    check_eq(
        got,
        [(b"PKCS 11", (3, 2), 0), (b"PKCS 11", (3, 0), 0), (b"PKCS 11", (2, 40), 0)],
        "interfaces are PKCS 11 3.2, 3.0, 2.40 in that order, flags 0",
    )


def check_before_initialize(m):
    info = CK_INFO()
    expect(m.C_GetInfo(byref(info)), CRYPTOKI_NOT_INITIALIZED, "C_GetInfo before C_Initialize")
    count = CK_ULONG(0)
    expect(m.C_GetSlotList(0, None, byref(count)), CRYPTOKI_NOT_INITIALIZED, "C_GetSlotList before C_Initialize")
    h = CK_ULONG(0)
    expect(
        m.C_OpenSession(0, CKF_SERIAL_SESSION, None, None, byref(h)),
        CRYPTOKI_NOT_INITIALIZED,
        "C_OpenSession before C_Initialize",
    )
    buf = create_string_buffer(16)
    expect(m.C_GenerateRandom(1, buf, 16), CRYPTOKI_NOT_INITIALIZED, "C_GenerateRandom before C_Initialize")
    expect(m.C_Finalize(None), CRYPTOKI_NOT_INITIALIZED, "C_Finalize before C_Initialize")

    reserved = CK_ULONG(0)
    args = CK_C_INITIALIZE_ARGS()
    args.pReserved = ctypes.addressof(reserved)
    expect(m.C_Initialize(byref(args)), ARGUMENTS_BAD, "C_Initialize with pReserved non-NULL")

    # A dummy mutex callback; the module must refuse before ever calling it.
    mutex_fn = CFUNCTYPE(CK_RV, c_void_p)(lambda p: 0)
    args = CK_C_INITIALIZE_ARGS()
    args.CreateMutex = cast(mutex_fn, c_void_p).value
    args.LockMutex = cast(mutex_fn, c_void_p).value
    expect(m.C_Initialize(byref(args)), ARGUMENTS_BAD, "C_Initialize with only 2 of 4 mutex callbacks")
    expect(m.C_GetInfo(byref(info)), CRYPTOKI_NOT_INITIALIZED, "still not initialized after the refused calls")

    expect(m.C_Initialize(None), OK, "C_Initialize(NULL)")
    expect(m.C_Initialize(None), CRYPTOKI_ALREADY_INITIALIZED, "C_Initialize(NULL) again")


def check_info(m):
    info = CK_INFO()
    expect(m.C_GetInfo(byref(info)), OK, "C_GetInfo")
    v = info.cryptokiVersion
    check_eq((v.major, v.minor), (3, 2), "cryptokiVersion is 3.2")
    raw = ctypes.string_at(ctypes.addressof(info) + CK_INFO.manufacturerID.offset, 32)
    check_eq(raw, b"qkeyd".ljust(32), "manufacturerID is \"qkeyd\" space padded to 32")

    count = CK_ULONG(0)
    expect(m.C_GetSlotList(0, None, byref(count)), OK, "C_GetSlotList(NULL, &count)")
    check_eq(count.value, 1, "one slot")
    count = CK_ULONG(0)
    one = ulongs(n=1)
    one[0] = 0x5A5A
    expect(m.C_GetSlotList(0, one, byref(count)), BUFFER_TOO_SMALL, "C_GetSlotList with count 0 and an array")
    check_eq(count.value, 1, "C_GetSlotList BUFFER_TOO_SMALL writes back count 1")
    for present in (0, 1):
        count = CK_ULONG(1)
        expect(m.C_GetSlotList(present, one, byref(count)), OK, f"C_GetSlotList(tokenPresent={present})")
        check_eq((count.value, one[0]), (1, 0), f"C_GetSlotList(tokenPresent={present}) lists slot 0")

    sinfo = CK_SLOT_INFO()
    expect(m.C_GetSlotInfo(0, byref(sinfo)), OK, "C_GetSlotInfo(0)")
    check(sinfo.flags & CKF_TOKEN_PRESENT, "slot 0 has CKF_TOKEN_PRESENT")
    tinfo = CK_TOKEN_INFO()
    expect(m.C_GetTokenInfo(0, byref(tinfo)), OK, "C_GetTokenInfo(0)")
    label = ctypes.string_at(ctypes.addressof(tinfo) + CK_TOKEN_INFO.label.offset, 32)
    check_eq(label, b"qkeyd".ljust(32), "token label is \"qkeyd\" space padded")
    want = CKF_RNG | CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED
    check_eq(tinfo.flags & want, want, "token flags have RNG|LOGIN_REQUIRED|USER_PIN_INITIALIZED|TOKEN_INITIALIZED")

    count = CK_ULONG(0)
    expect(m.C_GetMechanismList(0, None, byref(count)), OK, "C_GetMechanismList(0, NULL, &count)")
    check_eq(count.value, 14, "14 mechanisms")
    one = ulongs(n=1)
    count = CK_ULONG(1)
    expect(m.C_GetMechanismList(0, one, byref(count)), BUFFER_TOO_SMALL, "C_GetMechanismList with a 1-element array")
    check_eq(count.value, 14, "C_GetMechanismList BUFFER_TOO_SMALL writes back count 14")
    all14 = ulongs(n=14)
    count = CK_ULONG(14)
    expect(m.C_GetMechanismList(0, all14, byref(count)), OK, "C_GetMechanismList with 14 entries")
    check_eq(set(all14[: count.value]), MECHANISMS, "mechanisms are ML-KEM/ML-DSA, six digests, AES keygen, AES-GCM and HKDF")
    for mech, flags in [
        (CKM_ML_KEM_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR),
        (CKM_ML_KEM, CKF_ENCAPSULATE | CKF_DECAPSULATE),
        (CKM_ML_DSA_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR),
        (CKM_ML_DSA, CKF_SIGN | CKF_VERIFY),
    ]:
        minfo = CK_MECHANISM_INFO()
        expect(m.C_GetMechanismInfo(0, mech, byref(minfo)), OK, f"C_GetMechanismInfo(0x{mech:X})")
        check_eq(minfo.flags & flags, flags, f"mechanism 0x{mech:X} has flags 0x{flags:X}")
    minfo = CK_MECHANISM_INFO()
    expect(m.C_GetMechanismInfo(0, CKM_SHA_1, byref(minfo)), MECHANISM_INVALID, "C_GetMechanismInfo(CKM_SHA_1)")


def check_null_pointers_global(m):
    expect(m.C_GetInfo(None), ARGUMENTS_BAD, "C_GetInfo(NULL)")
    expect(m.C_GetSlotList(0, None, None), ARGUMENTS_BAD, "C_GetSlotList(NULL, NULL)")
    expect(m.C_GetSlotList(0, ulongs(n=1), None), ARGUMENTS_BAD, "C_GetSlotList(array, NULL count)")
    expect(m.C_GetSlotInfo(0, None), ARGUMENTS_BAD, "C_GetSlotInfo(0, NULL)")
    expect(m.C_GetTokenInfo(0, None), ARGUMENTS_BAD, "C_GetTokenInfo(0, NULL)")
    expect(m.C_GetMechanismList(0, None, None), ARGUMENTS_BAD, "C_GetMechanismList(0, NULL, NULL)")
    expect(m.C_GetMechanismInfo(0, CKM_ML_DSA, None), ARGUMENTS_BAD, "C_GetMechanismInfo(0, CKM_ML_DSA, NULL)")
    expect(
        m.C_OpenSession(0, CKF_SERIAL_SESSION, None, None, None), ARGUMENTS_BAD, "C_OpenSession(..., NULL phSession)"
    )
    expect(m.C_GetInterfaceList(None, None), ARGUMENTS_BAD, "C_GetInterfaceList(NULL, NULL)")
    ver = CK_VERSION(3, 2)
    expect(m.C_GetInterface(b"PKCS 11", byref(ver), None, 0), ARGUMENTS_BAD, "C_GetInterface(..., NULL ppInterface)")
    expect(m.C_GetInterface(None, None, None, 0), ARGUMENTS_BAD, "C_GetInterface(NULL, NULL, NULL)")


def check_invalid_slots(m):
    sinfo = CK_SLOT_INFO()
    expect(m.C_GetSlotInfo(7, byref(sinfo)), SLOT_ID_INVALID, "C_GetSlotInfo(7)")
    tinfo = CK_TOKEN_INFO()
    expect(m.C_GetTokenInfo(7, byref(tinfo)), SLOT_ID_INVALID, "C_GetTokenInfo(7)")
    count = CK_ULONG(0)
    expect(m.C_GetMechanismList(7, None, byref(count)), SLOT_ID_INVALID, "C_GetMechanismList(7)")
    minfo = CK_MECHANISM_INFO()
    expect(m.C_GetMechanismInfo(7, CKM_ML_DSA, byref(minfo)), SLOT_ID_INVALID, "C_GetMechanismInfo(7)")
    h = CK_ULONG(0)
    expect(m.C_OpenSession(7, CKF_SERIAL_SESSION, None, None, byref(h)), SLOT_ID_INVALID, "C_OpenSession(7)")
    expect(
        m.C_OpenSession(0, CKF_RW_SESSION, None, None, byref(h)),
        SESSION_PARALLEL_NOT_SUPPORTED,
        "C_OpenSession without CKF_SERIAL_SESSION",
    )


def check_invalid_sessions(m):
    buf = create_string_buffer(16)
    for bad in (0, BAD_HANDLE):
        info = CK_SESSION_INFO()
        expect(m.C_GetSessionInfo(bad, byref(info)), SESSION_HANDLE_INVALID, f"C_GetSessionInfo(0x{bad:X})")
        expect(m.C_GenerateRandom(bad, buf, 16), SESSION_HANDLE_INVALID, f"C_GenerateRandom(0x{bad:X})")
        expect(m.C_CloseSession(bad), SESSION_HANDLE_INVALID, f"C_CloseSession(0x{bad:X})")


def check_public_session(m, h):
    """Before login: random, seed, session state, and what needs a login."""
    info = session_state(m, h)
    check_eq((info.slotID, info.state), (0, CKS_RW_PUBLIC_SESSION), "RW session before login is CKS_RW_PUBLIC_SESSION")
    check_eq(info.flags & (CKF_SERIAL_SESSION | CKF_RW_SESSION), CKF_SERIAL_SESSION | CKF_RW_SESSION, "session flags")
    expect(m.C_GetSessionInfo(h, None), ARGUMENTS_BAD, "C_GetSessionInfo(h, NULL)")

    a = create_string_buffer(32)
    b = create_string_buffer(32)
    expect(m.C_GenerateRandom(h, a, 32), OK, "C_GenerateRandom(32) without login")
    expect(m.C_GenerateRandom(h, b, 32), OK, "C_GenerateRandom(32) again")
    check(a.raw != b.raw and a.raw != bytes(32), "two 32-byte randoms differ and are not zero")
    expect(m.C_GenerateRandom(h, None, 16), ARGUMENTS_BAD, "C_GenerateRandom(h, NULL, 16)")
    marker = create_string_buffer(b"\xa5" * 8, 8)
    expect(m.C_GenerateRandom(h, marker, 0), OK, "C_GenerateRandom(h, buf, 0)")
    check_eq(marker.raw, b"\xa5" * 8, "C_GenerateRandom(len 0) writes nothing")
    seed = create_string_buffer(b"0123456789abcdef", 16)
    expect(m.C_SeedRandom(h, seed, 16), RANDOM_SEED_NOT_SUPPORTED, "C_SeedRandom")

    pub_t, priv_t = ml_dsa_templates(CKP_ML_DSA_65)
    generate_key_pair(m, h, CKM_ML_DSA_KEY_PAIR_GEN, pub_t, priv_t, USER_NOT_LOGGED_IN, "ML-DSA keygen without login")
    pub_t, priv_t = ml_kem_templates(CKP_ML_KEM_768)
    generate_key_pair(m, h, CKM_ML_KEM_KEY_PAIR_GEN, pub_t, priv_t, USER_NOT_LOGGED_IN, "ML-KEM keygen without login")


def check_login(m, h, pin):
    pin_b = pin.encode()
    expect(m.C_Login(h, CKU_USER, None, 4), ARGUMENTS_BAD, "C_Login with a NULL PIN and length 4")
    wrong = (pin_b[:-1] + (b"1" if pin_b[-1:] == b"0" else b"0")) if pin_b else b"0000"
    expect(m.C_Login(h, CKU_USER, wrong, len(wrong)), PIN_INCORRECT, "C_Login with a wrong PIN")
    check_eq(session_state(m, h).state, CKS_RW_PUBLIC_SESSION, "still public after the wrong PIN")
    expect(m.C_Login(h, CKU_USER, pin_b, len(pin_b)), OK, "C_Login with the right PIN")
    expect(m.C_Login(h, CKU_USER, pin_b, len(pin_b)), USER_ALREADY_LOGGED_IN, "C_Login again")
    check_eq(session_state(m, h).state, CKS_RW_USER_FUNCTIONS, "RW session after login is CKS_RW_USER_FUNCTIONS")


def check_keygen_templates(m, h):
    no_set = Template((CKA_TOKEN, False), (CKA_VERIFY, True))
    _, priv_t = ml_dsa_templates(CKP_ML_DSA_65)
    generate_key_pair(m, h, CKM_ML_DSA_KEY_PAIR_GEN, no_set, priv_t, TEMPLATE_INCOMPLETE, "ML-DSA keygen without CKA_PARAMETER_SET")
    pub_t, priv_t = ml_dsa_templates(4)
    generate_key_pair(m, h, CKM_ML_DSA_KEY_PAIR_GEN, pub_t, priv_t, ATTRIBUTE_VALUE_INVALID, "ML-DSA keygen with parameter set 4")
    pub_t, priv_t = ml_kem_templates(0)
    generate_key_pair(m, h, CKM_ML_KEM_KEY_PAIR_GEN, pub_t, priv_t, ATTRIBUTE_VALUE_INVALID, "ML-KEM keygen with parameter set 0")


def check_ro_session(m):
    """Token objects need a RW session; session objects do not. (The token is already logged in.)"""
    ro = open_session(m, False, "C_OpenSession RO")
    check_eq(session_state(m, ro).state, CKS_RO_USER_FUNCTIONS, "RO session while logged in is CKS_RO_USER_FUNCTIONS")
    pub_t, priv_t = ml_dsa_templates(CKP_ML_DSA_65, token=True)
    generate_key_pair(m, ro, CKM_ML_DSA_KEY_PAIR_GEN, pub_t, priv_t, SESSION_READ_ONLY, "token key pair in a RO session")
    pub_t, priv_t = ml_dsa_templates(CKP_ML_DSA_65, token=False)
    pub, priv = generate_key_pair(m, ro, CKM_ML_DSA_KEY_PAIR_GEN, pub_t, priv_t, OK, "session key pair in a RO session")
    sig = sign(m, ro, priv, MESSAGE, "RO session")
    expect(verify(m, ro, pub, MESSAGE, sig), OK, "RO session: C_Verify")
    expect(m.C_DestroyObject(ro, priv), OK, "C_DestroyObject(session private key) in a RO session")
    expect(m.C_DestroyObject(ro, pub), OK, "C_DestroyObject(session public key) in a RO session")
    expect(m.C_CloseSession(ro), OK, "C_CloseSession(RO)")
    info = CK_SESSION_INFO()
    expect(m.C_GetSessionInfo(ro, byref(info)), SESSION_HANDLE_INVALID, "C_GetSessionInfo on the closed session")


def check_null_pointers_session(m, h, dsa_pub, dsa_priv):
    # C_FindObjectsInit with a NULL template but a count
    expect(m.C_FindObjectsInit(h, None, 1), ARGUMENTS_BAD, "C_FindObjectsInit(NULL template, count 1)")
    # C_FindObjects NULL outputs, inside an active search
    expect(m.C_FindObjectsInit(h, None, 0), OK, "C_FindObjectsInit(NULL, 0) (match all)")
    count = CK_ULONG(0)
    expect(m.C_FindObjects(h, None, 4, byref(count)), ARGUMENTS_BAD, "C_FindObjects(NULL array)")
    expect(m.C_FindObjects(h, ulongs(n=4), 4, None), ARGUMENTS_BAD, "C_FindObjects(NULL count)")
    expect(m.C_FindObjectsFinal(h), (OK, OPERATION_NOT_INITIALIZED), "C_FindObjectsFinal after them")

    expect(m.C_GetAttributeValue(h, dsa_pub, None, 1), ARGUMENTS_BAD, "C_GetAttributeValue(NULL template, 1)")

    before = len(find(m, h))
    pub_t, priv_t = ml_dsa_templates(CKP_ML_DSA_65)
    mech = mechanism(CKM_ML_DSA_KEY_PAIR_GEN)
    pub = CK_ULONG(0)
    priv = CK_ULONG(0)
    expect(
        m.C_GenerateKeyPair(h, None, pub_t.arr, pub_t.count, priv_t.arr, priv_t.count, byref(pub), byref(priv)),
        ARGUMENTS_BAD,
        "C_GenerateKeyPair(NULL mechanism)",
    )
    expect(
        m.C_GenerateKeyPair(h, byref(mech), pub_t.arr, pub_t.count, priv_t.arr, priv_t.count, None, byref(priv)),
        ARGUMENTS_BAD,
        "C_GenerateKeyPair(NULL phPublicKey)",
    )
    expect(
        m.C_GenerateKeyPair(h, byref(mech), pub_t.arr, pub_t.count, priv_t.arr, priv_t.count, byref(pub), None),
        ARGUMENTS_BAD,
        "C_GenerateKeyPair(NULL phPrivateKey)",
    )
    expect(
        m.C_GenerateKeyPair(h, byref(mech), None, 2, priv_t.arr, priv_t.count, byref(pub), byref(priv)),
        ARGUMENTS_BAD,
        "C_GenerateKeyPair(NULL public template, count 2)",
    )
    check_eq(len(find(m, h)), before, "no object created by the refused C_GenerateKeyPair calls")

    # PKCS#11 3.x: C_SignInit with a NULL mechanism ends the active operation.
    mech = mechanism(CKM_ML_DSA)
    expect(m.C_SignInit(h, byref(mech), dsa_priv), OK, "C_SignInit")
    expect(m.C_SignInit(h, None, dsa_priv), OK, "C_SignInit(NULL mechanism) ends it")
    n = CK_ULONG(ML_DSA_65_SIG_LEN)
    buf = create_string_buffer(ML_DSA_65_SIG_LEN)
    expect(m.C_Sign(h, MESSAGE, len(MESSAGE), buf, byref(n)), OPERATION_NOT_INITIALIZED, "no operation after a NULL-mechanism C_SignInit")
    expect(m.C_SignInit(h, byref(mech), dsa_priv), OK, "C_SignInit again")
    expect(m.C_Sign(h, MESSAGE, len(MESSAGE), buf, None), ARGUMENTS_BAD, "C_Sign(NULL pulSignatureLen)")
    # The spec ends the operation on any C_Sign error other than BUFFER_TOO_SMALL;
    # a module that checks pointers first may keep it. Either way, clean up.
    rv = m.C_SignInit(h, byref(mech), dsa_priv)
    expect(rv, (OK, OPERATION_ACTIVE), "C_SignInit after C_Sign(NULL length)")
    end_sign_operation(m, h)


def check_short_buffers(m, h, dsa_pub, dsa_priv):
    mech = mechanism(CKM_ML_DSA)
    expect(m.C_SignInit(h, byref(mech), dsa_priv), OK, "C_SignInit(ML-DSA-65)")
    n = CK_ULONG(0)
    expect(m.C_Sign(h, MESSAGE, len(MESSAGE), None, byref(n)), OK, "C_Sign(NULL) length query")
    check_eq(n.value, ML_DSA_65_SIG_LEN, "C_Sign length query gives 3309")
    small = create_string_buffer(10)
    n = CK_ULONG(10)
    expect(m.C_Sign(h, MESSAGE, len(MESSAGE), small, byref(n)), BUFFER_TOO_SMALL, "C_Sign with a 10-byte buffer")
    check_eq(n.value, ML_DSA_65_SIG_LEN, "C_Sign BUFFER_TOO_SMALL writes back 3309")
    buf = create_string_buffer(4096)
    n = CK_ULONG(4096)
    expect(m.C_Sign(h, MESSAGE, len(MESSAGE), buf, byref(n)), OK, "C_Sign with a big buffer, same operation")
    check_eq(n.value, ML_DSA_65_SIG_LEN, "signature is 3309 bytes")
    sig = buf.raw[: n.value]
    expect(verify(m, h, dsa_pub, MESSAGE, sig), OK, "the signature verifies")
    bad = bytearray(sig)
    bad[7] ^= 1
    expect(verify(m, h, dsa_pub, MESSAGE, bytes(bad)), SIGNATURE_INVALID, "a flipped signature")
    expect(verify(m, h, dsa_pub, MESSAGE + b"!", sig), SIGNATURE_INVALID, "another message")
    expect(
        verify(m, h, dsa_pub, MESSAGE, sig[:-1]), (SIGNATURE_LEN_RANGE, SIGNATURE_INVALID), "a signature one byte short"
    )
    expect(m.C_Sign(h, MESSAGE, len(MESSAGE), buf, byref(n)), OPERATION_NOT_INITIALIZED, "C_Sign after the operation ended")

    # Signing in place: the signature buffer is the message buffer.
    inplace = create_string_buffer(MESSAGE, 4096)
    expect(m.C_SignInit(h, byref(mech), dsa_priv), OK, "C_SignInit for an in-place signature")
    n = CK_ULONG(4096)
    expect(m.C_Sign(h, inplace, len(MESSAGE), inplace, byref(n)), OK, "C_Sign with pSignature == pData")
    expect(verify(m, h, dsa_pub, MESSAGE, inplace.raw[: n.value]), OK, "the in-place signature verifies")

    t = ReadTemplate((CKA_CLASS, 8), (CKA_VALUE, 10), (CKA_PARAMETER_SET, 8), (CKA_KEY_TYPE, 8))
    expect(m.C_GetAttributeValue(h, dsa_pub, t.arr, t.count), BUFFER_TOO_SMALL, "C_GetAttributeValue with a 10-byte CKA_VALUE")
    check_eq(t.length(1), CK_UNAVAILABLE_INFORMATION, "the short CKA_VALUE gets CK_UNAVAILABLE_INFORMATION")
    check_eq((t.length(0), t.ulong(0)), (8, CKO_PUBLIC_KEY), "CKA_CLASS in the same call is CKO_PUBLIC_KEY")
    check_eq((t.length(2), t.ulong(2)), (8, CKP_ML_DSA_65), "CKA_PARAMETER_SET in the same call is 2")
    check_eq((t.length(3), t.ulong(3)), (8, CKK_ML_DSA), "CKA_KEY_TYPE in the same call is CKK_ML_DSA")
    value = get_value(m, h, dsa_pub, CKA_VALUE)
    check_eq(len(value), ML_DSA_65_PK_LEN, "ML-DSA-65 public CKA_VALUE is 1952 bytes")

    t = ReadTemplate((CKA_VALUE, None), (CKA_CLASS, 8), (CKA_SEED, 64))
    expect(m.C_GetAttributeValue(h, dsa_priv, t.arr, t.count), ATTRIBUTE_SENSITIVE, "private key CKA_VALUE and CKA_SEED")
    check_eq(t.length(0), CK_UNAVAILABLE_INFORMATION, "private CKA_VALUE length is CK_UNAVAILABLE_INFORMATION")
    check_eq(t.length(2), CK_UNAVAILABLE_INFORMATION, "private CKA_SEED length is CK_UNAVAILABLE_INFORMATION")
    check_eq(t.bufs[2].raw, bytes(64), "nothing written into the CKA_SEED buffer")
    check_eq((t.length(1), t.ulong(1)), (8, CKO_PRIVATE_KEY), "CKA_CLASS in the same call is CKO_PRIVATE_KEY")
    for attr, name in ((CKA_VALUE, "CKA_VALUE"), (CKA_SEED, "CKA_SEED")):
        t = ReadTemplate((attr, None))
        expect(m.C_GetAttributeValue(h, dsa_priv, t.arr, 1), ATTRIBUTE_SENSITIVE, f"private key {name} alone")
        check_eq(t.length(0), CK_UNAVAILABLE_INFORMATION, f"private {name} alone: CK_UNAVAILABLE_INFORMATION")


def check_invalid_objects(m, h, dsa_priv, kem_pub, kem_priv):
    t = ReadTemplate((CKA_CLASS, 8))
    expect(m.C_GetAttributeValue(h, BAD_HANDLE, t.arr, 1), OBJECT_HANDLE_INVALID, "C_GetAttributeValue(0xDEADBEEF)")
    expect(m.C_DestroyObject(h, BAD_HANDLE), OBJECT_HANDLE_INVALID, "C_DestroyObject(0xDEADBEEF)")
    mech = mechanism(CKM_ML_DSA)
    expect(m.C_SignInit(h, byref(mech), BAD_HANDLE), KEY_HANDLE_INVALID, "C_SignInit(key 0xDEADBEEF)")
    expect(m.C_VerifyInit(h, byref(mech), BAD_HANDLE), KEY_HANDLE_INVALID, "C_VerifyInit(key 0xDEADBEEF)")
    other = mechanism(CKM_SHA256_RSA_PKCS)
    expect(m.C_SignInit(h, byref(other), dsa_priv), MECHANISM_INVALID, "C_SignInit(CKM_SHA256_RSA_PKCS, ML-DSA key)")
    expect(
        m.C_SignInit(h, byref(mech), kem_priv),
        (KEY_TYPE_INCONSISTENT, KEY_FUNCTION_NOT_PERMITTED),
        "C_SignInit(CKM_ML_DSA, ML-KEM private key)",
    )
    expect(
        m.C_VerifyInit(h, byref(mech), kem_pub),
        (KEY_TYPE_INCONSISTENT, KEY_FUNCTION_NOT_PERMITTED),
        "C_VerifyInit(CKM_ML_DSA, ML-KEM public key)",
    )
    # None of the refused inits may have left an operation behind.
    buf = create_string_buffer(16)
    n = CK_ULONG(16)
    expect(m.C_Sign(h, MESSAGE, len(MESSAGE), buf, byref(n)), OPERATION_NOT_INITIALIZED, "no sign operation active")


def check_operation_state(m, h, dsa_priv):
    buf = create_string_buffer(ML_DSA_65_SIG_LEN)
    n = CK_ULONG(ML_DSA_65_SIG_LEN)
    expect(m.C_Sign(h, MESSAGE, len(MESSAGE), buf, byref(n)), OPERATION_NOT_INITIALIZED, "C_Sign without C_SignInit")
    mech = mechanism(CKM_ML_DSA)
    expect(m.C_SignInit(h, byref(mech), dsa_priv), OK, "C_SignInit")
    expect(m.C_SignInit(h, byref(mech), dsa_priv), OPERATION_ACTIVE, "C_SignInit twice")
    n = CK_ULONG(ML_DSA_65_SIG_LEN)
    expect(m.C_Sign(h, MESSAGE, len(MESSAGE), buf, byref(n)), OK, "C_Sign ends the first operation")
    check_eq(n.value, ML_DSA_65_SIG_LEN, "its signature is 3309 bytes")


def check_kem(m, h, kem_pub, kem_priv, dsa_pub):
    value = get_value(m, h, kem_pub, CKA_VALUE)
    check_eq(len(value), ML_KEM_768_EK_LEN, "ML-KEM-768 public CKA_VALUE is 1184 bytes")
    mech = mechanism(CKM_ML_KEM)
    tmpl = secret_template()
    secrets0 = count_secret_keys(m, h)

    ct_len = CK_ULONG(0)
    hkey = CK_ULONG(0)
    expect(
        m.C_EncapsulateKey(h, byref(mech), kem_pub, tmpl.arr, tmpl.count, None, byref(ct_len), byref(hkey)),
        OK,
        "C_EncapsulateKey(NULL ciphertext) length query",
    )
    check_eq(ct_len.value, ML_KEM_768_CT_LEN, "the length query gives 1088")
    check_eq(count_secret_keys(m, h), secrets0, "the length query created no secret key")

    small = create_string_buffer(10)
    ct_len = CK_ULONG(10)
    expect(
        m.C_EncapsulateKey(h, byref(mech), kem_pub, tmpl.arr, tmpl.count, small, byref(ct_len), byref(hkey)),
        BUFFER_TOO_SMALL,
        "C_EncapsulateKey with a 10-byte ciphertext buffer",
    )
    check_eq(ct_len.value, ML_KEM_768_CT_LEN, "BUFFER_TOO_SMALL writes back 1088")
    check_eq(count_secret_keys(m, h), secrets0, "BUFFER_TOO_SMALL created no secret key")

    ct = create_string_buffer(ML_KEM_768_CT_LEN)
    ct_len = CK_ULONG(ML_KEM_768_CT_LEN)
    expect(
        m.C_EncapsulateKey(h, byref(mech), kem_pub, tmpl.arr, tmpl.count, ct, byref(ct_len), None),
        ARGUMENTS_BAD,
        "C_EncapsulateKey(NULL phKey)",
    )
    expect(
        m.C_EncapsulateKey(h, byref(mech), kem_pub, tmpl.arr, tmpl.count, ct, None, byref(hkey)),
        ARGUMENTS_BAD,
        "C_EncapsulateKey(NULL pulCiphertextLen)",
    )
    expect(
        m.C_EncapsulateKey(h, byref(mech), dsa_pub, tmpl.arr, tmpl.count, ct, byref(ct_len), byref(hkey)),
        (KEY_TYPE_INCONSISTENT, KEY_FUNCTION_NOT_PERMITTED),
        "C_EncapsulateKey with an ML-DSA public key",
    )
    check_eq(count_secret_keys(m, h), secrets0, "the refused encapsulations created no secret key")

    readable = secret_template(readable=True)
    ct_len = CK_ULONG(ML_KEM_768_CT_LEN)
    hkey = CK_ULONG(0)
    expect(
        m.C_EncapsulateKey(h, byref(mech), kem_pub, readable.arr, readable.count, ct, byref(ct_len), byref(hkey)),
        OK,
        "C_EncapsulateKey",
    )
    check_eq(ct_len.value, ML_KEM_768_CT_LEN, "ciphertext is 1088 bytes")
    check(hkey.value != 0, "C_EncapsulateKey gave a key handle")
    check_eq(count_secret_keys(m, h), secrets0 + 1, "C_EncapsulateKey created one secret key")
    ss1 = get_value(m, h, hkey.value, CKA_VALUE)
    check_eq(len(ss1), SHARED_SECRET_LEN, "the encapsulated secret is 32 bytes")

    ctb = ct.raw[:ML_KEM_768_CT_LEN]
    dkey = CK_ULONG(0)
    expect(
        m.C_DecapsulateKey(h, byref(mech), kem_priv, tmpl.arr, tmpl.count, ctb, len(ctb) - 1, byref(dkey)),
        # The 3.2 text lists CKR_WRAPPED_KEY_LEN_RANGE for C_DecapsulateKey.
        (ENCRYPTED_DATA_LEN_RANGE, ARGUMENTS_BAD, WRAPPED_KEY_LEN_RANGE),
        "C_DecapsulateKey with a ciphertext one byte short",
    )
    expect(
        m.C_DecapsulateKey(h, byref(mech), kem_priv, tmpl.arr, tmpl.count, ctb, len(ctb), None),
        ARGUMENTS_BAD,
        "C_DecapsulateKey(NULL phKey)",
    )
    check_eq(count_secret_keys(m, h), secrets0 + 1, "the refused decapsulations created no secret key")
    dkey = CK_ULONG(0)
    expect(
        m.C_DecapsulateKey(h, byref(mech), kem_priv, readable.arr, readable.count, ctb, len(ctb), byref(dkey)),
        OK,
        "C_DecapsulateKey",
    )
    check(dkey.value not in (0, hkey.value), "C_DecapsulateKey gave a new key handle")
    check_eq(get_value(m, h, dkey.value, CKA_VALUE), ss1, "the decapsulated secret equals the encapsulated one")
    check_eq(count_secret_keys(m, h), secrets0 + 2, "C_DecapsulateKey created one secret key")
    expect(m.C_DestroyObject(h, dkey.value), OK, "C_DestroyObject(decapsulated secret)")
    expect(m.C_DestroyObject(h, hkey.value), OK, "C_DestroyObject(encapsulated secret)")
    check_eq(count_secret_keys(m, h), secrets0, "both secrets destroyed")
    t = ReadTemplate((CKA_CLASS, 8))
    expect(m.C_GetAttributeValue(h, hkey.value, t.arr, 1), OBJECT_HANDLE_INVALID, "a destroyed object's handle")


def check_finalize(m, h):
    reserved = CK_ULONG(0)
    expect(m.C_Finalize(ctypes.addressof(reserved)), ARGUMENTS_BAD, "C_Finalize(non-NULL)")
    expect(m.C_Finalize(None), OK, "C_Finalize(NULL)")
    info = CK_INFO()
    expect(m.C_GetInfo(byref(info)), CRYPTOKI_NOT_INITIALIZED, "C_GetInfo after C_Finalize")
    buf = create_string_buffer(16)
    expect(m.C_GenerateRandom(h, buf, 16), CRYPTOKI_NOT_INITIALIZED, "C_GenerateRandom on the old session after C_Finalize")
    expect(m.C_Finalize(None), CRYPTOKI_NOT_INITIALIZED, "C_Finalize twice")
    # A library can be initialized again; the old session is gone.
    expect(m.C_Initialize(None), OK, "C_Initialize(NULL) after C_Finalize")
    sinfo = CK_SESSION_INFO()
    expect(m.C_GetSessionInfo(h, byref(sinfo)), SESSION_HANDLE_INVALID, "the old session after re-initialization")
    expect(m.C_Finalize(None), OK, "C_Finalize(NULL) at the end")


def run(module, pin):
    m = Module(module)
    ok(f"loaded {module} and its 3.2 function list")
    check_interfaces(m)  # all allowed before C_Initialize
    check_before_initialize(m)
    check_info(m)
    check_null_pointers_global(m)
    check_invalid_slots(m)
    check_invalid_sessions(m)

    h = open_session(m, True, "C_OpenSession RW")
    check_public_session(m, h)
    check_login(m, h, pin)
    check_keygen_templates(m, h)
    check_ro_session(m)

    pub_t, priv_t = ml_dsa_templates(CKP_ML_DSA_65)
    dsa_pub, dsa_priv = generate_key_pair(m, h, CKM_ML_DSA_KEY_PAIR_GEN, pub_t, priv_t, OK, "ML-DSA-65 C_GenerateKeyPair")
    pub_t, priv_t = ml_kem_templates(CKP_ML_KEM_768)
    kem_pub, kem_priv = generate_key_pair(m, h, CKM_ML_KEM_KEY_PAIR_GEN, pub_t, priv_t, OK, "ML-KEM-768 C_GenerateKeyPair")

    check_null_pointers_session(m, h, dsa_pub, dsa_priv)
    check_short_buffers(m, h, dsa_pub, dsa_priv)
    check_invalid_objects(m, h, dsa_priv, kem_pub, kem_priv)
    check_operation_state(m, h, dsa_priv)
    check_kem(m, h, kem_pub, kem_priv, dsa_pub)
    ok("the process is still running after every NULL-pointer and bad-handle call")
    check_finalize(m, h)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", required=True, help="path of libqkeyd_pkcs11.so")
    ap.add_argument("--pin", required=True, help="the user PIN")
    args = ap.parse_args()
    faulthandler.enable()  # a crash in the module prints the Python line that called it
    try:
        run(args.module, args.pin)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception:
        print("FAILED: unexpected exception", file=sys.stderr, flush=True)
        traceback.print_exc()
        return 1
    print("ok: every check passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
