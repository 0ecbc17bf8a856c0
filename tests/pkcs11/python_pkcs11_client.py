#!/usr/bin/env python3
"""qkeyd's PKCS#11 module driven by python-pkcs11 (0.10.1), a client written by
someone else: ML-DSA sign/verify with and without a context, ML-KEM
encapsulate/decapsulate, random, the login rules and sensitive attributes.

    python_pkcs11_client.py --module /path/libqkeyd_pkcs11.so --pin PIN

QKEYD_MODULE_SOCKET must name the running daemon's socket (the module reads it).
Each passed check prints one "ok: ..." line. The first failed check prints
"FAILED: ..." and the script exits 1. It exits 0 only when every check passed.

python-pkcs11 details this script relies on (read from its 0.10.1 source):
- generate_random() takes a length in BITS;
- a bytes mechanism_param is passed as it is (pParameter = the bytes, its length);
- verify() turns SignatureInvalid and SignatureLenRange into False;
- generate_keypair(ML_DSA/ML_KEM) raises ArgumentsBad itself when
  PARAMETER_SET is missing from public_template (the module never sees it);
- token.open(user_pin=...) is C_OpenSession + C_Login; if C_Login fails the
  session stays open (the handle is not returned to us).
"""

import argparse
import ctypes
import faulthandler
import struct
import sys
import traceback

import pkcs11
from pkcs11 import (
    Attribute,
    KeyType,
    Mechanism,
    MechanismFlag,
    MLDSAParameterSet,
    MLKEMParameterSet,
    ObjectClass,
    TokenFlag,
)
from pkcs11 import exceptions as p11e

# (parameter set, public key bytes, signature bytes), FIPS 204
ML_DSA_SETS = [
    (MLDSAParameterSet.ML_DSA_44, 1312, 2420),
    (MLDSAParameterSet.ML_DSA_65, 1952, 3309),
    (MLDSAParameterSet.ML_DSA_87, 2592, 4627),
]
# (parameter set, encapsulation key bytes, ciphertext bytes), FIPS 203
ML_KEM_SETS = [
    (MLKEMParameterSet.ML_KEM_512, 800, 768),
    (MLKEMParameterSet.ML_KEM_768, 1184, 1088),
    (MLKEMParameterSet.ML_KEM_1024, 1568, 1568),
]
SHARED_SECRET_LEN = 32

CKH_HEDGE_PREFERRED = 0
CKH_HEDGE_REQUIRED = 1
CKH_DETERMINISTIC_REQUIRED = 2

# A shared secret we may read back: python-pkcs11 defaults to SENSITIVE=True.
READABLE_SECRET = {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}

MESSAGE = b"qkeyd python-pkcs11 client: the message to sign"


class CheckFailed(Exception):
    pass


def check(cond, what):
    """Print "ok: what" if cond holds, else stop with "FAILED: what"."""
    if not cond:
        raise CheckFailed(what)
    print(f"ok: {what}", flush=True)


def check_eq(got, want, what):
    if got != want:
        raise CheckFailed(f"{what}: got {got!r}, want {want!r}")
    print(f"ok: {what}", flush=True)


def check_raises(exc_classes, fn, what):
    """fn() must raise one of exc_classes (a class or a tuple of them)."""
    if not isinstance(exc_classes, tuple):
        exc_classes = (exc_classes,)
    names = "/".join(c.__name__ for c in exc_classes)
    try:
        result = fn()
    except exc_classes as e:
        print(f"ok: {what} (raised {type(e).__name__})", flush=True)
        return
    except p11e.PKCS11Error as e:
        raise CheckFailed(f"{what}: raised {type(e).__name__} ({e}), want {names}") from e
    raise CheckFailed(f"{what}: returned {describe(result)}, want {names} raised")


def describe(value):
    """A short text for a value; never touches the token (a key's repr reads CKA_LABEL)."""
    if isinstance(value, (bytes, bool, int, str, type(None))):
        return repr(value)[:80]
    if isinstance(value, tuple):
        return "(" + ", ".join(describe(v) for v in value) + ")"
    return f"a {type(value).__name__}"


class SignContext:
    """A CK_SIGN_ADDITIONAL_CONTEXT {CK_HEDGE_TYPE hedgeVariant; CK_BYTE_PTR pContext;
    CK_ULONG ulContextLen}, packed as native C (24 bytes on LP64), to pass as a raw
    mechanism_param. The context bytes live in a ctypes buffer kept alive by this
    object, so keep the object while the parameter is in use."""

    def __init__(self, context, hedge=CKH_HEDGE_PREFERRED):
        self.context = context
        if context:
            self._buf = ctypes.create_string_buffer(context, len(context))
            addr = ctypes.addressof(self._buf)
        else:
            self._buf = None
            addr = 0
        self.param = struct.pack("@LPL", hedge, addr, len(context))
        assert len(self.param) == 3 * ctypes.sizeof(ctypes.c_void_p)


def sign_ml_dsa(priv, data, ctx=None):
    if ctx is None:
        return priv.sign(data, mechanism=Mechanism.ML_DSA)
    return priv.sign(data, mechanism=Mechanism.ML_DSA, mechanism_param=ctx.param)


def verify_ml_dsa(pub, data, sig, ctx=None):
    if ctx is None:
        return pub.verify(data, sig, mechanism=Mechanism.ML_DSA)
    return pub.verify(data, sig, mechanism=Mechanism.ML_DSA, mechanism_param=ctx.param)


def flip(data, index):
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def wrong_pin_for(pin):
    """A PIN of the same length that differs from pin (so not a length error)."""
    if not pin:
        return "0000"
    return pin[:-1] + ("1" if pin[-1] == "0" else "0")


def check_library(lib):
    check_eq(lib.cryptoki_version, (3, 2), "C_GetInfo cryptokiVersion is 3.2")
    check_eq(lib.manufacturer_id, "qkeyd", "C_GetInfo manufacturerID is qkeyd")
    slots = lib.get_slots()
    check_eq([s.slot_id for s in slots], [0], "one slot, slot id 0")


def check_token(lib):
    token = lib.get_token(token_label="qkeyd")
    check_eq(token.label, "qkeyd", "token labelled qkeyd found")
    want = (
        TokenFlag.RNG
        | TokenFlag.LOGIN_REQUIRED
        | TokenFlag.USER_PIN_INITIALIZED
        | TokenFlag.TOKEN_INITIALIZED
    )
    check_eq(token.flags & want, want, "token flags have RNG|LOGIN_REQUIRED|USER_PIN_INITIALIZED|TOKEN_INITIALIZED")

    slot = token.slot
    mechs = {int(m) for m in slot.get_mechanisms()}
    check_eq(
        mechs,
        {
            int(Mechanism.ML_KEM_KEY_PAIR_GEN),
            int(Mechanism.ML_KEM),
            int(Mechanism.ML_DSA_KEY_PAIR_GEN),
            int(Mechanism.ML_DSA),
            int(Mechanism.SHA256),
            int(Mechanism.SHA384),
            int(Mechanism.SHA512),
            int(Mechanism.SHA3_256),
            int(Mechanism.SHA3_384),
            int(Mechanism.SHA3_512),
            int(Mechanism.AES_KEY_GEN),
            int(Mechanism.AES_GCM),
            0x402A,  # CKM_HKDF_DERIVE (python-pkcs11 0.10.1 has no name for it)
            0x402B,  # CKM_HKDF_DATA
        },
        "mechanism list is exactly ML-KEM keygen, ML-KEM, ML-DSA keygen, ML-DSA, the SHA-2/SHA-3 digests, AES keygen, AES-GCM and HKDF",
    )
    for mech, flags in [
        (Mechanism.ML_KEM_KEY_PAIR_GEN, MechanismFlag.GENERATE_KEY_PAIR),
        (Mechanism.ML_KEM, MechanismFlag.ENCAPSULATE | MechanismFlag.DECAPSULATE),
        (Mechanism.ML_DSA_KEY_PAIR_GEN, MechanismFlag.GENERATE_KEY_PAIR),
        (Mechanism.ML_DSA, MechanismFlag.SIGN | MechanismFlag.VERIFY),
    ]:
        info = slot.get_mechanism_info(mech)
        check_eq(info.flags & flags, flags, f"{mech.name} has flags 0x{int(flags):X}")
    check_raises(
        p11e.MechanismInvalid,
        lambda: slot.get_mechanism_info(Mechanism.SHA_1),
        "C_GetMechanismInfo(CKM_SHA_1) is MechanismInvalid",
    )
    return token


def check_random(session, where):
    a = session.generate_random(256)  # bits
    b = session.generate_random(256)
    check_eq(len(a), 32, f"{where}: generate_random(256 bits) gives 32 bytes")
    check(a != b, f"{where}: two generate_random(256) differ")
    big = session.generate_random(8 * 4096)
    check_eq(len(big), 4096, f"{where}: generate_random of 4096 bytes")
    check(len(set(big)) > 200, f"{where}: 4096 random bytes use more than 200 byte values")


def check_public_session(token):
    """Random works without login; key generation does not."""
    with token.open() as s:
        check_random(s, "public RO session")
        check_raises(
            p11e.RandomSeedNotSupported,
            lambda: s.seed_random(b"0123456789abcdef"),
            "C_SeedRandom is RandomSeedNotSupported",
        )
        check_raises(
            p11e.UserNotLoggedIn,
            lambda: s.generate_keypair(
                KeyType.ML_DSA, public_template={Attribute.PARAMETER_SET: MLDSAParameterSet.ML_DSA_44}
            ),
            "ML-DSA key generation without login is UserNotLoggedIn",
        )
        check_raises(
            p11e.UserNotLoggedIn,
            lambda: s.generate_keypair(
                KeyType.ML_KEM, public_template={Attribute.PARAMETER_SET: MLKEMParameterSet.ML_KEM_512}
            ),
            "ML-KEM key generation without login is UserNotLoggedIn",
        )


def check_login_rules(token, pin):
    # No session is logged in here, so a wrong PIN must be PinIncorrect (not
    # UserAlreadyLoggedIn). The failed open leaves its session open; harmless.
    check_raises(
        p11e.PinIncorrect,
        lambda: token.open(user_pin=wrong_pin_for(pin)),
        "C_Login with a wrong PIN is PinIncorrect",
    )
    with token.open(user_pin=pin) as ro:
        check_raises(
            p11e.SessionReadOnly,
            lambda: ro.generate_keypair(
                KeyType.ML_DSA,
                store=True,
                public_template={Attribute.PARAMETER_SET: MLDSAParameterSet.ML_DSA_44},
            ),
            "token (CKA_TOKEN=true) key pair in a RO session is SessionReadOnly",
        )
        pub, priv = ro.generate_keypair(
            KeyType.ML_DSA, public_template={Attribute.PARAMETER_SET: MLDSAParameterSet.ML_DSA_44}
        )
        check_eq(pub[Attribute.TOKEN], False, "session key pair generated in a RO session")
        sig = sign_ml_dsa(priv, MESSAGE)
        check(verify_ml_dsa(pub, MESSAGE, sig), "RO session: ML-DSA-44 signature verifies")
        # Login state is per token: a second C_Login while logged in.
        check_raises(
            p11e.UserAlreadyLoggedIn,
            lambda: token.open(user_pin=pin),
            "a second C_Login while logged in is UserAlreadyLoggedIn",
        )
    # Closing the session logged out: key generation needs login again.
    with token.open() as s:
        check_raises(
            p11e.UserNotLoggedIn,
            lambda: s.generate_keypair(
                KeyType.ML_DSA, public_template={Attribute.PARAMETER_SET: MLDSAParameterSet.ML_DSA_44}
            ),
            "after C_Logout key generation is UserNotLoggedIn again",
        )


def check_templates(s):
    check_raises(
        p11e.AttributeValueInvalid,
        lambda: s.generate_keypair(KeyType.ML_DSA, public_template={Attribute.PARAMETER_SET: 4}),
        "ML-DSA PARAMETER_SET 4 is AttributeValueInvalid",
    )
    check_raises(
        p11e.AttributeValueInvalid,
        lambda: s.generate_keypair(KeyType.ML_KEM, public_template={Attribute.PARAMETER_SET: 0}),
        "ML-KEM PARAMETER_SET 0 is AttributeValueInvalid",
    )
    # python-pkcs11 refuses ML_DSA/ML_KEM without PARAMETER_SET before calling the
    # module, so name another key type and give the mechanism and capabilities
    # explicitly: the module then gets python-pkcs11's usual template (no
    # KEY_TYPE, no PARAMETER_SET) with CKM_ML_DSA_KEY_PAIR_GEN.
    check_raises(
        p11e.TemplateIncomplete,
        lambda: s.generate_keypair(
            KeyType.EC,
            mechanism=Mechanism.ML_DSA_KEY_PAIR_GEN,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
        ),
        "ML-DSA key generation without PARAMETER_SET is TemplateIncomplete",
    )


def check_ml_dsa(s, pset, pk_len, sig_len):
    name = pset.name
    pub, priv = s.generate_keypair(KeyType.ML_DSA, public_template={Attribute.PARAMETER_SET: pset})
    check_eq(pub[Attribute.CLASS], ObjectClass.PUBLIC_KEY, f"{name}: public key CLASS")
    check_eq(priv[Attribute.CLASS], ObjectClass.PRIVATE_KEY, f"{name}: private key CLASS")
    check_eq(pub[Attribute.KEY_TYPE], KeyType.ML_DSA, f"{name}: public KEY_TYPE is CKK_ML_DSA")
    check_eq(priv[Attribute.KEY_TYPE], KeyType.ML_DSA, f"{name}: private KEY_TYPE is CKK_ML_DSA")
    check_eq(pub[Attribute.PARAMETER_SET], int(pset), f"{name}: public PARAMETER_SET")
    check_eq(priv[Attribute.PARAMETER_SET], int(pset), f"{name}: private PARAMETER_SET")
    value = pub[Attribute.VALUE]
    check_eq(len(value), pk_len, f"{name}: public CKA_VALUE is {pk_len} bytes")
    check(len(set(value)) > 100, f"{name}: public CKA_VALUE is not a constant filler")
    check_raises(p11e.AttributeSensitive, lambda: priv[Attribute.VALUE], f"{name}: private CKA_VALUE is sensitive")
    check_raises(p11e.AttributeSensitive, lambda: priv[Attribute.SEED], f"{name}: private CKA_SEED is sensitive")

    sig = priv.sign(MESSAGE)  # the default mechanism for ML_DSA, no parameter
    check_eq(len(sig), sig_len, f"{name}: signature is {sig_len} bytes")
    check(pub.verify(MESSAGE, sig) is True, f"{name}: signature verifies")
    check(pub.verify(flip(MESSAGE, 0), sig) is False, f"{name}: tampered message does not verify")
    check(pub.verify(MESSAGE, flip(sig, 100)) is False, f"{name}: tampered signature does not verify")
    check(pub.verify(MESSAGE, sig[:-1]) is False, f"{name}: a signature one byte short does not verify")
    empty_sig = sign_ml_dsa(priv, b"")
    check(verify_ml_dsa(pub, b"", empty_sig), f"{name}: signature of the empty message verifies")
    check(verify_ml_dsa(pub, MESSAGE, empty_sig) is False, f"{name}: it does not verify another message")

    other_pub, _ = s.generate_keypair(KeyType.ML_DSA, public_template={Attribute.PARAMETER_SET: pset})
    check(other_pub.verify(MESSAGE, sig) is False, f"{name}: another key's public key does not verify it")

    ctx_a = SignContext(b"qkeyd context A")
    ctx_b = SignContext(b"qkeyd context B")
    sig_a = sign_ml_dsa(priv, MESSAGE, ctx_a)
    check_eq(len(sig_a), sig_len, f"{name}: signature with a context is {sig_len} bytes")
    check(verify_ml_dsa(pub, MESSAGE, sig_a, ctx_a) is True, f"{name}: verifies with the same context")
    check(verify_ml_dsa(pub, MESSAGE, sig_a, ctx_b) is False, f"{name}: does not verify with a different context")
    check(verify_ml_dsa(pub, MESSAGE, sig_a) is False, f"{name}: does not verify with no context")
    check(verify_ml_dsa(pub, MESSAGE, sig, ctx_a) is False, f"{name}: a no-context signature fails with a context")
    # An empty context passed explicitly is the same as no parameter.
    check(
        verify_ml_dsa(pub, MESSAGE, sig, SignContext(b"")) is True,
        f"{name}: a no-context signature verifies with an explicit empty context",
    )
    return pub, priv


def check_ml_dsa_params(pub, priv):
    """Context length limits and the hedge variants (on one key)."""
    max_ctx = SignContext(bytes(range(255)))
    sig = sign_ml_dsa(priv, MESSAGE, max_ctx)
    check(verify_ml_dsa(pub, MESSAGE, sig, max_ctx), "a 255-byte context signs and verifies")
    long_ctx = SignContext(bytes(256))
    check_raises(
        p11e.MechanismParamInvalid,
        lambda: sign_ml_dsa(priv, MESSAGE, long_ctx),
        "a 256-byte context is MechanismParamInvalid",
    )
    det = SignContext(b"det", CKH_DETERMINISTIC_REQUIRED)
    d1 = sign_ml_dsa(priv, MESSAGE, det)
    d2 = sign_ml_dsa(priv, MESSAGE, det)
    check(d1 == d2, "CKH_DETERMINISTIC_REQUIRED: two signatures of one message are identical")
    check(verify_ml_dsa(pub, MESSAGE, d1, SignContext(b"det")), "the deterministic signature verifies")
    hedged = SignContext(b"det", CKH_HEDGE_REQUIRED)
    h1 = sign_ml_dsa(priv, MESSAGE, hedged)
    h2 = sign_ml_dsa(priv, MESSAGE, hedged)
    check(h1 != h2, "CKH_HEDGE_REQUIRED: two signatures of one message differ")
    check(h1 != d1, "the hedged signature differs from the deterministic one")
    check(
        verify_ml_dsa(pub, MESSAGE, h1, det) and verify_ml_dsa(pub, MESSAGE, h2, det),
        "both hedged signatures verify (the hedge is ignored on verify)",
    )


def check_token_object(s):
    """A token key pair in the RW session, then destroyed."""
    pub, priv = s.generate_keypair(
        KeyType.ML_DSA,
        store=True,
        label="qkeyd-python-pkcs11-test",
        public_template={Attribute.PARAMETER_SET: MLDSAParameterSet.ML_DSA_44},
    )
    try:
        check_eq(pub[Attribute.TOKEN], True, "RW session: token public key has CKA_TOKEN true")
        check_eq(priv[Attribute.TOKEN], True, "RW session: token private key has CKA_TOKEN true")
        sig = priv.sign(MESSAGE)
        check(pub.verify(MESSAGE, sig), "token ML-DSA-44 key signs and verifies")
    finally:
        priv.destroy()
        pub.destroy()
    print("ok: token key pair destroyed", flush=True)


def check_ml_kem(s, pset, ek_len, ct_len):
    name = pset.name
    pub, priv = s.generate_keypair(KeyType.ML_KEM, public_template={Attribute.PARAMETER_SET: pset})
    check_eq(pub[Attribute.KEY_TYPE], KeyType.ML_KEM, f"{name}: public KEY_TYPE is CKK_ML_KEM")
    check_eq(priv[Attribute.KEY_TYPE], KeyType.ML_KEM, f"{name}: private KEY_TYPE is CKK_ML_KEM")
    check_eq(pub[Attribute.PARAMETER_SET], int(pset), f"{name}: public PARAMETER_SET")
    check_eq(priv[Attribute.PARAMETER_SET], int(pset), f"{name}: private PARAMETER_SET")
    value = pub[Attribute.VALUE]
    check_eq(len(value), ek_len, f"{name}: public CKA_VALUE (ek) is {ek_len} bytes")
    check(len(set(value)) > 100, f"{name}: public CKA_VALUE is not a constant filler")
    check_raises(p11e.AttributeSensitive, lambda: priv[Attribute.VALUE], f"{name}: private CKA_VALUE is sensitive")
    check_raises(p11e.AttributeSensitive, lambda: priv[Attribute.SEED], f"{name}: private CKA_SEED is sensitive")

    ct, ss1 = pub.encapsulate_key(KeyType.GENERIC_SECRET, template=READABLE_SECRET)
    check_eq(len(ct), ct_len, f"{name}: ciphertext is {ct_len} bytes")
    check_eq(ss1[Attribute.CLASS], ObjectClass.SECRET_KEY, f"{name}: encapsulated secret is a secret key")
    check_eq(ss1[Attribute.KEY_TYPE], KeyType.GENERIC_SECRET, f"{name}: secret has the template's KEY_TYPE")
    k1 = ss1[Attribute.VALUE]
    check_eq(len(k1), SHARED_SECRET_LEN, f"{name}: shared secret is 32 bytes")

    ss2 = priv.decapsulate_key(ct, KeyType.GENERIC_SECRET, template=READABLE_SECRET)
    check_eq(ss2[Attribute.VALUE], k1, f"{name}: decapsulation gives the encapsulated secret")

    ss3 = priv.decapsulate_key(flip(ct, 5), KeyType.GENERIC_SECRET, template=READABLE_SECRET)
    k3 = ss3[Attribute.VALUE]
    check_eq(len(k3), SHARED_SECRET_LEN, f"{name}: a flipped ciphertext still decapsulates (implicit rejection)")
    check(k3 != k1, f"{name}: a flipped ciphertext gives a different secret")
    k3b = priv.decapsulate_key(flip(ct, 5), KeyType.GENERIC_SECRET, template=READABLE_SECRET)[Attribute.VALUE]
    check_eq(k3b, k3, f"{name}: implicit rejection is deterministic for one ciphertext")

    ct2, ss4 = pub.encapsulate_key(KeyType.GENERIC_SECRET, template=READABLE_SECRET)
    check(ct2 != ct, f"{name}: two encapsulations give different ciphertexts")
    check(ss4[Attribute.VALUE] != k1, f"{name}: two encapsulations give different secrets")

    _, other_priv = s.generate_keypair(KeyType.ML_KEM, public_template={Attribute.PARAMETER_SET: pset})
    k5 = other_priv.decapsulate_key(ct, KeyType.GENERIC_SECRET, template=READABLE_SECRET)[Attribute.VALUE]
    check(k5 != k1, f"{name}: another private key does not recover the secret")

    sensitive = priv.decapsulate_key(ct, KeyType.GENERIC_SECRET)  # python-pkcs11 default: SENSITIVE=True
    check_raises(
        p11e.AttributeSensitive,
        lambda: sensitive[Attribute.VALUE],
        f"{name}: a secret decapsulated with SENSITIVE=true is not readable",
    )


def run(module, pin):
    lib = pkcs11.lib(module)
    print(f"ok: loaded {module}", flush=True)
    check_library(lib)
    token = check_token(lib)
    check_public_session(token)
    check_login_rules(token, pin)

    with token.open(rw=True, user_pin=pin) as s:
        print("ok: RW session opened and logged in", flush=True)
        check_random(s, "logged-in RW session")
        check_templates(s)
        keys = {}
        for pset, pk_len, sig_len in ML_DSA_SETS:
            keys[pset] = check_ml_dsa(s, pset, pk_len, sig_len)
        check_ml_dsa_params(*keys[MLDSAParameterSet.ML_DSA_65])
        check_token_object(s)
        for pset, ek_len, ct_len in ML_KEM_SETS:
            check_ml_kem(s, pset, ek_len, ct_len)
    print("ok: session logged out and closed", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--module", required=True, help="path of libqkeyd_pkcs11.so")
    ap.add_argument("--pin", required=True, help="the user PIN")
    args = ap.parse_args()
    faulthandler.enable()  # a crash in the module prints where it happened
    try:
        run(args.module, args.pin)
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        return 1
    except Exception:  # an unexpected PKCS11Error or a bug: also a failure
        print("FAILED: unexpected exception", file=sys.stderr, flush=True)
        traceback.print_exc()
        return 1
    print("ok: every check passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
