#!/usr/bin/env python3
"""After fork(), a child's C_GenerateRandom never repeats its parent's.

Loads libqkeyd_pkcs11.so with ctypes (QKEYD_MODULE_SOCKET names the daemon), draws
random bytes in the parent, forks, and draws the same amount in the parent
and in the child. The child must call C_Initialize again (which must
succeed: the inherited state is the parent's), and before it does, the
module must refuse it (CKR_CRYPTOKI_NOT_INITIALIZED). Prints one "ok:" line
per check and exits non-zero on the first failure.

  python3 tests/pkcs11/fork.py --module PATH --pin PIN
"""
import argparse
import ctypes
import os
import sys

CK_ULONG = ctypes.c_ulong
CKR_OK = 0
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190
CKF_SERIAL_SESSION = 0x4


class CK_VERSION(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


# The 2.40 list: version, then the functions in the spec's order. Only the
# ones used here are named; the rest are placeholders of the same size.
NAMES = ["C_Initialize", "C_Finalize", "C_GetInfo", "C_GetFunctionList", "C_GetSlotList",
         "C_GetSlotInfo", "C_GetTokenInfo", "C_GetMechanismList", "C_GetMechanismInfo",
         "C_InitToken", "C_InitPIN", "C_SetPIN", "C_OpenSession", "C_CloseSession"]
NAMES += [f"_f{i}" for i in range(len(NAMES), 64)] + ["C_GenerateRandom"] + [f"_g{i}" for i in range(3)]


class FunctionList(ctypes.Structure):
    _fields_ = [("version", CK_VERSION)] + [(n, ctypes.c_void_p) for n in NAMES]


def fn(table, name, *argtypes):
    return ctypes.CFUNCTYPE(CK_ULONG, *argtypes)(getattr(table, name))


def fail(msg):
    print(f"FAILED: {msg}", flush=True)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", required=True)
    ap.add_argument("--pin", required=True)
    args = ap.parse_args()
    lib = ctypes.CDLL(args.module)
    table_p = ctypes.POINTER(FunctionList)()
    if lib.C_GetFunctionList(ctypes.byref(table_p)) != CKR_OK:
        fail("C_GetFunctionList")
    t = table_p.contents
    init = fn(t, "C_Initialize", ctypes.c_void_p)
    open_session = fn(t, "C_OpenSession", CK_ULONG, CK_ULONG, ctypes.c_void_p, ctypes.c_void_p,
                      ctypes.POINTER(CK_ULONG))
    random = fn(t, "C_GenerateRandom", CK_ULONG, ctypes.c_char_p, CK_ULONG)

    def draw(session, n=64):
        buf = ctypes.create_string_buffer(n)
        rv = random(session, buf, n)
        return rv, buf.raw

    if init(None) != CKR_OK:
        fail("C_Initialize in the parent")
    h = CK_ULONG()
    if open_session(0, CKF_SERIAL_SESSION, None, None, ctypes.byref(h)) != CKR_OK:
        fail("C_OpenSession in the parent")
    rv, _ = draw(h.value)
    if rv != CKR_OK:
        fail(f"parent C_GenerateRandom: {rv:#x}")
    print("ok: parent draws random bytes", flush=True)

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            rv, _ = draw(h.value)
            if rv != CKR_CRYPTOKI_NOT_INITIALIZED:
                code = 2
            elif init(None) != CKR_OK:
                code = 3
            else:
                hc = CK_ULONG()
                if open_session(0, CKF_SERIAL_SESSION, None, None, ctypes.byref(hc)) != CKR_OK:
                    code = 4
                else:
                    rv, data = draw(hc.value, 4096)
                    if rv != CKR_OK:
                        code = 5
                    else:
                        os.write(w, data)
        finally:
            os.close(w)
            os._exit(code)
    os.close(w)
    parent_rv, parent = draw(h.value, 4096)
    child = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        child += chunk
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    reasons = {2: "the child used the parent's state without C_Initialize",
               3: "C_Initialize failed in the child", 4: "C_OpenSession failed in the child",
               5: "C_GenerateRandom failed in the child"}
    if code != 0:
        fail(reasons.get(code, f"child exited {code}"))
    print("ok: the child is refused until it calls C_Initialize, which succeeds", flush=True)
    if parent_rv != CKR_OK or len(parent) != 4096:
        fail(f"parent after fork: {parent_rv:#x}")
    if len(child) != 4096:
        fail(f"the child sent {len(child)} bytes")
    if child == parent:
        fail("the child repeated the parent's stream")
    # No 16-byte block of either appears in the other.
    blocks = {parent[i:i + 16] for i in range(0, 4096, 16)}
    if any(child[i:i + 16] in blocks for i in range(0, 4096, 16)):
        fail("a 16-byte block of the parent's output appears in the child's")
    print("ok: after fork the parent and the child draw different streams", flush=True)
    print("ok: every check passed", flush=True)


if __name__ == "__main__":
    main()
