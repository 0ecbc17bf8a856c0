#!/usr/bin/env python3
"""A KMS v2 client in Python (grpcio), a second, independent client of qkeyd's
plugin: stubs are generated from daemon/proto/kms_v2.proto with grpcio-tools at
run time, and every rule kube-apiserver applies to a plugin's answers is
checked over the unix socket.

    grpcio_client.py --socket /path/kms.sock --proto daemon/proto/kms_v2.proto

Exit status 0 when every check passes; otherwise the failed check is printed.
"""

import argparse
import importlib
import os
import re
import sys
import tempfile

import grpc
from grpc_tools import protoc

FQDN_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def stubs(proto):
    """Generate and import the Python stubs for the proto."""
    out = tempfile.mkdtemp(prefix="kms-stubs-")
    include = os.path.dirname(os.path.abspath(proto))
    rc = protoc.main([
        "protoc",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.abspath(proto),
    ])
    if rc != 0:
        sys.exit(f"protoc failed ({rc})")
    sys.path.insert(0, out)
    name = os.path.splitext(os.path.basename(proto))[0]
    return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")


def is_lowercase_fqdn(key):
    labels = key.split(".")
    return len(key) <= 253 and len(labels) >= 2 and all(
        len(label) <= 63 and FQDN_LABEL.match(label) for label in labels
    )


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True, help="socket path, or @name")
    ap.add_argument("--proto", required=True)
    args = ap.parse_args()
    pb, pb_grpc = stubs(args.proto)
    target = (
        f"unix-abstract:{args.socket[1:]}" if args.socket.startswith("@") else f"unix://{args.socket}"
    )
    # tonic refuses a socket path as :authority; kube-apiserver sends "localhost" too.
    channel = grpc.insecure_channel(target, options=[("grpc.default_authority", "localhost")])
    kms = pb_grpc.KeyManagementServiceStub(channel)

    status = kms.Status(pb.StatusRequest(), timeout=3)
    check(status.version == "v2", f"version {status.version!r} is v2")
    check(status.healthz == "ok", f"healthz {status.healthz!r} is ok")
    check(0 < len(status.key_id.encode()) <= 1024, f"key_id {status.key_id!r} is 1..1024 bytes")

    seed = os.urandom(32)
    enc = kms.Encrypt(pb.EncryptRequest(plaintext=seed, uid="python-e2e"), timeout=3)
    check(enc.key_id == status.key_id, "Encrypt key_id equals Status key_id")
    check(0 < len(enc.ciphertext) <= 1024, f"ciphertext of {len(enc.ciphertext)} bytes is 1..1024")
    check(seed not in enc.ciphertext, "the seed is not in the ciphertext")
    total = 0
    for k, v in enc.annotations.items():
        check(is_lowercase_fqdn(k), f"annotation key {k!r} is a lowercase FQDN")
        total += len(k.encode()) + len(v)
    check(total <= 32 * 1024, f"annotations total {total} bytes <= 32 KiB")

    dec = kms.Decrypt(
        pb.DecryptRequest(
            ciphertext=enc.ciphertext,
            uid="python-e2e",
            key_id=enc.key_id,
            annotations=dict(enc.annotations),
        ),
        timeout=3,
    )
    check(dec.plaintext == seed, "the round trip returns the seed")

    # Bad input: a clear error with the right code, and the plugin keeps serving.
    bad = [
        (dict(key_id="qkeyd-kek-unknown"), grpc.StatusCode.NOT_FOUND),
        (dict(ciphertext=enc.ciphertext[:10]), grpc.StatusCode.INVALID_ARGUMENT),
        (dict(ciphertext=enc.ciphertext[:-1] + bytes([enc.ciphertext[-1] ^ 1])), grpc.StatusCode.INVALID_ARGUMENT),
        (dict(annotations={}), grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for change, code in bad:
        req = dict(ciphertext=enc.ciphertext, uid="python-e2e", key_id=enc.key_id,
                   annotations=dict(enc.annotations))
        req.update(change)
        try:
            kms.Decrypt(pb.DecryptRequest(**req), timeout=3)
            check(False, f"Decrypt with {list(change)} changed must fail")
        except grpc.RpcError as e:
            check(e.code() == code, f"{list(change)}: {e.code()} is {code}: {e.details()}")
            check(e.details(), "the error has a message")
    again = kms.Decrypt(pb.DecryptRequest(ciphertext=enc.ciphertext, key_id=enc.key_id,
                                          annotations=dict(enc.annotations)), timeout=3)
    check(again.plaintext == seed, "still serving after bad input")
    print(f"ok: key_id {status.key_id}, ciphertext {len(enc.ciphertext)} bytes, "
          f"annotations {dict((k, v.decode()) for k, v in enc.annotations.items())}")


if __name__ == "__main__":
    main()
