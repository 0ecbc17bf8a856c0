#!/usr/bin/env python3
"""What applications keep in qkeyd's token besides keys, through python-pkcs11
(0.10.1): data objects and the attribute rules (CKA_MODIFIABLE, CKA_COPYABLE,
CKA_DESTROYABLE, sensitive and extractable latching), token objects that
outlive the session, a certificate issued over REST found by CKA_ID and by
subject beside its key, digests against hashlib, the PIN flags, and the
security officer's C_InitPIN and C_SetPIN.

    objects.py --module LIB --pin PIN --so-pin SO_PIN \
        [--cert-id HEX --cert-der FILE]

QKEYD_MODULE_SOCKET names the daemon's socket. Each passed check prints one
"ok: ..." line; the first failure prints "FAILED: ..." and exits 1.
"""

import argparse
import ctypes
import hashlib
import hmac
import sys
import traceback

import pkcs11
from pkcs11 import (
    Attribute,
    GCMParams,
    KeyType,
    Mechanism,
    MechanismFlag,
    MLDSAParameterSet,
    MLKEMParameterSet,
    ObjectClass,
    TokenFlag,
)
from pkcs11.constants import DEFAULT
from pkcs11 import exceptions as p11e

from python_pkcs11_client import CheckFailed, check, check_eq, check_raises, wrong_pin_for


def extend_enum(enum_cls, name, value):
    """Add a member to one of python-pkcs11's IntEnums (0.10.1 has no HKDF),
    which it insists mechanisms and key types are."""
    if value in enum_cls._value2member_map_:
        return enum_cls(value)
    member = int.__new__(enum_cls, value)
    member._name_ = name
    member._value_ = value
    member.__objclass__ = enum_cls
    enum_cls._member_map_[name] = member
    enum_cls._value2member_map_[value] = member
    enum_cls._member_names_.append(name)
    type.__setattr__(enum_cls, name, member)
    return member


HKDF_DERIVE = extend_enum(Mechanism, "HKDF_DERIVE", 0x402A)
HKDF_DATA = extend_enum(Mechanism, "HKDF_DATA", 0x402B)
CKF_HKDF_SALT_NULL, CKF_HKDF_SALT_DATA = 0x1, 0x2


class CK_HKDF_PARAMS(ctypes.Structure):
    _fields_ = [
        ("bExtract", ctypes.c_ubyte),
        ("bExpand", ctypes.c_ubyte),
        ("prfHashMechanism", ctypes.c_ulong),
        ("ulSaltType", ctypes.c_ulong),
        ("pSalt", ctypes.c_void_p),
        ("ulSaltLen", ctypes.c_ulong),
        ("hSaltKey", ctypes.c_ulong),
        ("pInfo", ctypes.c_void_p),
        ("ulInfoLen", ctypes.c_ulong),
    ]


class HkdfParams:
    """A CK_HKDF_PARAMS as bytes for mechanism_param; the salt and info
    buffers live as long as this object."""

    def __init__(self, salt, info, prf=Mechanism.SHA256):
        self._salt = ctypes.create_string_buffer(salt, len(salt)) if salt else None
        self._info = ctypes.create_string_buffer(info, len(info)) if info else None
        p = CK_HKDF_PARAMS()
        p.bExtract, p.bExpand, p.prfHashMechanism = 1, 1, int(prf)
        if salt:
            p.ulSaltType, p.pSalt, p.ulSaltLen = CKF_HKDF_SALT_DATA, ctypes.addressof(self._salt), len(salt)
        else:
            p.ulSaltType = CKF_HKDF_SALT_NULL
        if info:
            p.pInfo, p.ulInfoLen = ctypes.addressof(self._info), len(info)
        self.param = bytes(p)


def hkdf_sha256(salt, ikm, info, length):
    """RFC 5869 with the standard library's HMAC, to check the token's."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm, i = okm + t, i + 1
    return okm[:length]


def check_unmapped(code, name, fn, what):
    """fn() must fail with CK_RV `code`, which python-pkcs11 0.10.1 has no
    exception class for: it raises PKCS11Error("Unmapped error code 0x..")."""
    try:
        result = fn()
    except p11e.PKCS11Error as e:
        if type(e) is p11e.PKCS11Error and f"{code:#x}" in str(e).lower():
            print(f"ok: {what} ({name})", flush=True)
            return
        raise CheckFailed(f"{what}: raised {type(e).__name__} ({e}), want {name}") from e
    raise CheckFailed(f"{what}: returned {result!r}, want {name}")


def check_prohibited(fn, what):
    check_unmapped(0x1B, "CKR_ACTION_PROHIBITED", fn, what)


def data_object(session, label, extra=None):
    attrs = {
        Attribute.CLASS: ObjectClass.DATA,
        Attribute.TOKEN: False,
        Attribute.PRIVATE: False,
        Attribute.APPLICATION: "qkeyd-tests",
        Attribute.LABEL: label,
        Attribute.VALUE: b"\xde\xad\xbe\xef",
    }
    attrs.update(extra or {})
    return session.create_object(attrs)


def find(session, template):
    return list(session.get_objects(template))


def check_data_objects(token, pin):
    with token.open(rw=True) as s:
        o = data_object(s, "d1")
        check_eq(o[Attribute.VALUE], b"\xde\xad\xbe\xef", "data object: CKA_VALUE reads back")
        check_eq(o[Attribute.APPLICATION], "qkeyd-tests", "data object: CKA_APPLICATION reads back")
        check(o[Attribute.MODIFIABLE] and o[Attribute.COPYABLE] and o[Attribute.DESTROYABLE],
              "data object: modifiable, copyable and destroyable by default")
        o[Attribute.LABEL] = "d1-renamed"
        check_eq(o[Attribute.LABEL], "d1-renamed", "C_SetAttributeValue changes CKA_LABEL")
        check_raises(p11e.AttributeReadOnly, lambda: o.__setitem__(Attribute.CLASS, ObjectClass.CERTIFICATE),
                     "C_SetAttributeValue(CKA_CLASS) is read-only")
        found = find(s, {Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: "d1-renamed"})
        check_eq(len(found), 1, "the data object is found by class and label")
        c = o.copy({Attribute.LABEL: "d1-copy", Attribute.MODIFIABLE: False, Attribute.COPYABLE: False})
        check_eq(c[Attribute.VALUE], b"\xde\xad\xbe\xef", "C_CopyObject copies CKA_VALUE")
        check_prohibited(lambda: c.__setitem__(Attribute.LABEL, "x"),
                         "a copy made unmodifiable refuses C_SetAttributeValue")
        check_prohibited(lambda: c.copy({}), "a copy made uncopyable refuses C_CopyObject")
        check_raises(p11e.AttributeReadOnly, lambda: o.copy({Attribute.CLASS: ObjectClass.PUBLIC_KEY}),
                     "C_CopyObject may not change CKA_CLASS")
        fixed = data_object(s, "fixed", {Attribute.DESTROYABLE: False})
        check_prohibited(fixed.destroy, "a non-destroyable object refuses C_DestroyObject")
        c.destroy()
        check_eq(len(find(s, {Attribute.LABEL: "d1-copy"})), 0, "C_DestroyObject removes the copy")
        # A private object needs the user; a token object needs a login and a R/W session.
        check_raises(p11e.UserNotLoggedIn, lambda: data_object(s, "p", {Attribute.PRIVATE: True}),
                     "a private data object without a login is refused")
        check_raises(p11e.UserNotLoggedIn, lambda: data_object(s, "t", {Attribute.TOKEN: True}),
                     "a token data object without a login is refused")
    with token.open() as ro:
        check_eq(len(find(ro, {Attribute.LABEL: "d1-renamed"})), 0,
                 "session objects die with their session")
        check_raises(p11e.SessionReadOnly, lambda: data_object(ro, "t", {Attribute.TOKEN: True}),
                     "a token object in a R/O session is refused")
    with token.open(rw=True, user_pin=pin) as s:
        t = data_object(s, "kept", {Attribute.TOKEN: True, Attribute.PRIVATE: True})
        uid = t[Attribute.UNIQUE_ID]
        check(uid.startswith("o"), f"a token object's CKA_UNIQUE_ID is the daemon's id ({uid})")
    with token.open() as ro:
        check_eq(len(find(ro, {Attribute.LABEL: "kept"})), 0, "a private token object is hidden without a login")
    with token.open(rw=True, user_pin=pin) as s:
        kept = find(s, {Attribute.LABEL: "kept"})
        check_eq(len(kept), 1, "the private token object outlives its session")
        kept[0][Attribute.VALUE] = b"changed"
    with token.open(rw=True, user_pin=pin) as s:
        kept = find(s, {Attribute.LABEL: "kept"})
        check_eq(kept[0][Attribute.VALUE], b"changed", "a change to a token object is kept")
        kept[0].destroy()
        check_eq(len(find(s, {Attribute.LABEL: "kept"})), 0, "a destroyed token object is gone")


def check_latches(token, pin):
    """A decapsulated secret (a secret key this process holds) latches."""
    from python_pkcs11_client import READABLE_SECRET
    from pkcs11 import KeyType, MLKEMParameterSet
    with token.open(rw=True, user_pin=pin) as s:
        pub, priv = s.generate_keypair(
            KeyType.ML_KEM,
            public_template={Attribute.PARAMETER_SET: MLKEMParameterSet.ML_KEM_768},
            private_template={},
        )
        _, secret = pub.encapsulate_key(KeyType.GENERIC_SECRET, template=READABLE_SECRET)
        check(not secret[Attribute.SENSITIVE], "an encapsulated secret asked readable is not sensitive")
        secret[Attribute.SENSITIVE] = True
        check_raises(p11e.AttributeSensitive, lambda: secret[Attribute.VALUE],
                     "made sensitive, its CKA_VALUE no longer reads")
        check_raises(p11e.AttributeReadOnly, lambda: secret.__setitem__(Attribute.SENSITIVE, False),
                     "CKA_SENSITIVE does not go back to false")
        secret[Attribute.EXTRACTABLE] = False
        check_raises(p11e.AttributeReadOnly, lambda: secret.__setitem__(Attribute.EXTRACTABLE, True),
                     "CKA_EXTRACTABLE does not go back to true")


def check_kem_hkdf_gcm(token, pin):
    """A peer's ML-KEM public key imported and encapsulated to; the secret
    decapsulated, derived with HKDF into an AES key, used for AES-GCM; with
    the secrets sensitive, nothing of them ever reads."""
    with token.open(rw=True, user_pin=pin) as s:
        # The peer: a key pair whose public half we only hand over as bytes.
        peer_pub, peer_priv = s.generate_keypair(
            KeyType.ML_KEM, public_template={Attribute.PARAMETER_SET: MLKEMParameterSet.ML_KEM_768}
        )
        ek = peer_pub[Attribute.VALUE]
        imported = s.create_object({
            Attribute.CLASS: ObjectClass.PUBLIC_KEY,
            Attribute.KEY_TYPE: KeyType.ML_KEM,
            Attribute.PARAMETER_SET: MLKEMParameterSet.ML_KEM_768,
            Attribute.VALUE: ek,
            Attribute.TOKEN: False,
            Attribute.LABEL: "peer-ml-kem",
        })
        check(imported[Attribute.ENCAPSULATE], "an imported ML-KEM public key may encapsulate")
        # An ML-DSA public key imported as bytes verifies what its private half signed.
        dsa_pub, dsa_priv = s.generate_keypair(
            KeyType.ML_DSA, public_template={Attribute.PARAMETER_SET: MLDSAParameterSet.ML_DSA_44}
        )
        dsa_imported = s.create_object({
            Attribute.CLASS: ObjectClass.PUBLIC_KEY,
            Attribute.KEY_TYPE: KeyType.ML_DSA,
            Attribute.PARAMETER_SET: MLDSAParameterSet.ML_DSA_44,
            Attribute.VALUE: dsa_pub[Attribute.VALUE],
            Attribute.TOKEN: False,
        })
        signed = b"a message signed by the peer"
        sig = dsa_priv.sign(signed, mechanism=Mechanism.ML_DSA)
        check(dsa_imported.verify(signed, sig, mechanism=Mechanism.ML_DSA),
              "an imported ML-DSA public key verifies its private half's signature")
        check(not dsa_imported.verify(signed + b"!", sig, mechanism=Mechanism.ML_DSA),
              "and refuses it over another message")
        check_raises(p11e.AttributeValueInvalid, lambda: s.create_object({
            Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.KEY_TYPE: KeyType.ML_KEM,
            Attribute.PARAMETER_SET: MLKEMParameterSet.ML_KEM_768, Attribute.VALUE: ek[:-1]}),
            "an ML-KEM public key of the wrong length is refused")
        readable = {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}
        ct, mine = imported.encapsulate_key(KeyType.GENERIC_SECRET, capabilities=MechanismFlag.DERIVE, template=readable)
        check_eq(len(ct), 1088, "encapsulation to the imported key gives an ML-KEM-768 ciphertext")
        theirs = peer_priv.decapsulate_key(ct, KeyType.GENERIC_SECRET, capabilities=MechanismFlag.DERIVE, template=readable)
        check_eq(mine[Attribute.VALUE], theirs[Attribute.VALUE], "the peer decapsulates the same secret")

        # HKDF from a readable secret, checked against RFC 5869 with hashlib.
        p = HkdfParams(b"salt", b"qkeyd aes key")
        aes = mine.derive_key(KeyType.AES, 256, mechanism=HKDF_DERIVE, mechanism_param=p.param,
                              capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT, template=readable)
        check_eq(aes[Attribute.VALUE], hkdf_sha256(b"salt", mine[Attribute.VALUE], b"qkeyd aes key", 32),
                 "CKM_HKDF_DERIVE equals RFC 5869 HKDF-SHA256")
        p_data = HkdfParams(None, b"data")
        data = mine.derive_key(KeyType.GENERIC_SECRET, 160, mechanism=HKDF_DATA, mechanism_param=p_data.param,
                               capabilities=0,
                               template={Attribute.CLASS: ObjectClass.DATA, Attribute.KEY_TYPE: DEFAULT,
                                         Attribute.PRIVATE: DEFAULT, Attribute.SENSITIVE: DEFAULT,
                                         Attribute.ID: DEFAULT, Attribute.ENCRYPT: DEFAULT,
                                         Attribute.DECRYPT: DEFAULT, Attribute.WRAP: DEFAULT,
                                         Attribute.UNWRAP: DEFAULT, Attribute.SIGN: DEFAULT,
                                         Attribute.VERIFY: DEFAULT, Attribute.DERIVE: DEFAULT,
                                         Attribute.EXTRACTABLE: DEFAULT})
        check_eq(data[Attribute.VALUE], hkdf_sha256(None, mine[Attribute.VALUE], b"data", 20),
                 "CKM_HKDF_DATA gives a data object with the HKDF output")

        # The same with the secrets sensitive (python-pkcs11's default): held by the daemon.
        ct, _ = imported.encapsulate_key(KeyType.GENERIC_SECRET, capabilities=MechanismFlag.DERIVE)
        secret = peer_priv.decapsulate_key(ct, KeyType.GENERIC_SECRET, capabilities=MechanismFlag.DERIVE)
        check_raises(p11e.AttributeSensitive, lambda: secret[Attribute.VALUE], "a sensitive decapsulated secret does not read")
        key = secret.derive_key(KeyType.AES, 256, mechanism=HKDF_DERIVE, mechanism_param=p.param,
                                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT)
        check_raises(p11e.AttributeSensitive, lambda: key[Attribute.VALUE], "the derived AES key does not read")
        check(not key[Attribute.ALWAYS_SENSITIVE], "derived from a secret that came from a KEM: not always sensitive")
        check_raises(p11e.KeyIndigestible, lambda: s.digest(key, mechanism=Mechanism.SHA256),
                     "a key held by the daemon is not digested here")
        iv = s.generate_random(96)
        gcm = GCMParams(iv, aad=b"header", tag_bits=128)
        message = b"qkeyd AES-GCM message " * 50
        ct = key.encrypt(message, mechanism=Mechanism.AES_GCM, mechanism_param=gcm)
        check_eq(len(ct), len(message) + 16, "AES-GCM output is the message and a 16-byte tag")
        check_eq(key.decrypt(ct, mechanism=Mechanism.AES_GCM, mechanism_param=gcm), message,
                 "AES-GCM single-part round trip with the derived key")
        parts = b"".join(key.encrypt(iter([message[:7], message[7:500], message[500:]]),
                                     mechanism=Mechanism.AES_GCM, mechanism_param=gcm))
        check_eq(parts, ct, "multi-part encryption equals single-part")
        back = b"".join(key.decrypt(iter([ct[:100], ct[100:]]), mechanism=Mechanism.AES_GCM, mechanism_param=gcm))
        check_eq(back, message, "multi-part decryption gives the message")
        bad = bytearray(ct)
        bad[-1] ^= 1
        check_raises(p11e.EncryptedDataInvalid,
                     lambda: key.decrypt(bytes(bad), mechanism=Mechanism.AES_GCM, mechanism_param=gcm),
                     "a changed tag is refused")
        check_raises(p11e.MechanismParamInvalid,
                     lambda: key.encrypt(message, mechanism=Mechanism.AES_GCM,
                                         mechanism_param=GCMParams(iv[:8], tag_bits=128)),
                     "an IV that is not 96 bits is refused")

        # AES-GCM against a published vector (McGrew and Viega, test case 3).
        kat = s.create_object({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES, Attribute.TOKEN: False,
            Attribute.VALUE: bytes.fromhex("feffe9928665731c6d6a8f9467308308"),
            Attribute.ENCRYPT: True, Attribute.SENSITIVE: False,
        })
        pt = bytes.fromhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                           "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255")
        want = ("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
                "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
                "4d5c2af327cd64a62cf35abd2ba6fab4")
        got = kat.encrypt(pt, mechanism=Mechanism.AES_GCM,
                          mechanism_param=GCMParams(bytes.fromhex("cafebabefacedbaddecaf888"), tag_bits=128))
        check_eq(got.hex(), want, "AES-128-GCM equals the published test vector")

        # An AES key the daemon makes (CKM_AES_KEY_GEN), sensitive by default.
        gen = s.generate_key(KeyType.AES, 128, capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT)
        check(gen[Attribute.LOCAL] and gen[Attribute.ALWAYS_SENSITIVE], "a generated AES key is local and always sensitive")
        check_eq(gen[Attribute.VALUE_LEN], 16, "CKA_VALUE_LEN is the requested 128 bits")
        ct = gen.encrypt(b"x" * 33, mechanism=Mechanism.AES_GCM, mechanism_param=gcm)
        check_eq(gen.decrypt(ct, mechanism=Mechanism.AES_GCM, mechanism_param=gcm), b"x" * 33,
                 "AES-GCM round trip with a generated key")


def check_digests(token):
    data = bytes(range(256)) * 100
    with token.open() as s:
        for mech, ref in [
            (Mechanism.SHA256, hashlib.sha256),
            (Mechanism.SHA384, hashlib.sha384),
            (Mechanism.SHA512, hashlib.sha512),
            (Mechanism.SHA3_256, hashlib.sha3_256),
            (Mechanism.SHA3_384, hashlib.sha3_384),
            (Mechanism.SHA3_512, hashlib.sha3_512),
        ]:
            check_eq(s.digest(data, mechanism=mech), ref(data).digest(), f"{mech.name} equals hashlib")
            parts = iter([data[:1], data[1:1000], b"", data[1000:]])
            check_eq(s.digest(parts, mechanism=mech), ref(data).digest(),
                     f"{mech.name} in parts equals hashlib")
        check_raises(p11e.MechanismInvalid, lambda: s.digest(data, mechanism=Mechanism.SHA_1),
                     "an unoffered digest (SHA-1) is MechanismInvalid")


def check_certificate(token, cert_id, cert_der):
    with token.open() as s:
        certs = find(s, {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: cert_id})
        check_eq(len(certs), 1, "the issued certificate is found by CKA_ID without a login")
        cert = certs[0]
        check_eq(cert[Attribute.VALUE], cert_der, "its CKA_VALUE is the certificate REST returned")
        subject = cert[Attribute.SUBJECT]
        check_eq(cert[Attribute.ISSUER], subject, "self-signed: CKA_ISSUER equals CKA_SUBJECT")
        by_subject = find(s, {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.SUBJECT: subject})
        check_eq([c.handle for c in by_subject], [cert.handle], "the certificate is found by CKA_SUBJECT")
        serial = cert[Attribute.SERIAL_NUMBER]
        check(serial[0] == 0x02 and len(serial) == 18, "CKA_SERIAL_NUMBER is a DER INTEGER of 16 bytes")
        pubs = find(s, {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: cert_id})
        check_eq(len(pubs), 1, "its key's public half has the same CKA_ID")
        check(pubs[0][Attribute.VALUE] in cert_der, "the certificate holds that public key")


def check_pins(token, pin, so_pin):
    lib_token = token
    # python-pkcs11 leaves the session of a refused login open: make it R/W, or
    # it would keep the SO out below (the SO needs every session R/W).
    check_raises(p11e.PinIncorrect, lambda: lib_token.open(rw=True, user_pin=wrong_pin_for(pin)),
                 "a wrong user PIN is PinIncorrect")
    # python-pkcs11 reads the flags once per Token: ask again each time.
    flags = lib_token.slot.get_token().flags
    check(flags & TokenFlag.USER_PIN_COUNT_LOW, "after a wrong PIN the token says USER_PIN_COUNT_LOW")
    with lib_token.open(user_pin=pin):
        pass
    flags = lib_token.slot.get_token().flags
    check(not flags & TokenFlag.USER_PIN_COUNT_LOW, "a right PIN clears USER_PIN_COUNT_LOW")
    # The SO: only with every session R/W, not beside the user, and sets the user PIN.
    with lib_token.open() as ro:
        check_raises(p11e.SessionReadOnlyExists, lambda: lib_token.open(rw=True, so_pin=so_pin),
                     "the SO cannot log in while a R/O session exists")
    with lib_token.open(rw=True, so_pin=so_pin) as so:
        check_raises(p11e.SessionReadWriteSOExists, lambda: lib_token.open(),
                     "with the SO logged in, no R/O session opens")
        so.init_pin("user-pin-from-so")
        so.set_pin(so_pin, so_pin + "-2")
    check_raises(p11e.PinIncorrect, lambda: lib_token.open(rw=True, user_pin=pin),
                 "after C_InitPIN the old user PIN is refused")
    with lib_token.open(rw=True, user_pin="user-pin-from-so") as s:
        s.set_pin("user-pin-from-so", pin)
    with lib_token.open(rw=True, so_pin=so_pin + "-2") as so:
        so.set_pin(so_pin + "-2", so_pin)
    with lib_token.open(user_pin=pin):
        pass
    print("ok: the user and SO PINs are back as they were", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", required=True)
    ap.add_argument("--pin", required=True)
    ap.add_argument("--so-pin", required=True)
    ap.add_argument("--cert-id")
    ap.add_argument("--cert-der")
    a = ap.parse_args()
    lib = pkcs11.lib(a.module)
    token = lib.get_token(token_label="qkeyd")
    try:
        check_digests(token)
        check_data_objects(token, a.pin)
        check_latches(token, a.pin)
        check_kem_hkdf_gcm(token, a.pin)
        if a.cert_id:
            with open(a.cert_der, "rb") as f:
                check_certificate(token, bytes.fromhex(a.cert_id), f.read())
        check_pins(token, a.pin, a.so_pin)
    except CheckFailed as e:
        print(f"FAILED: {e}", flush=True)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        print("FAILED: unexpected exception", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
