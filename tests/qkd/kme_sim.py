#!/usr/bin/env python3
"""Simulator of a pair of ETSI GS QKD 014 v1.1.1 Key Management Entities.

One process serves two KMEs, KME_A and KME_B, that are the two ends of one QKD
link: they share one key stream. A master SAE asks its KME for keys with
enc_keys; the slave SAE fetches the same keys (same key_ID, byte-identical
material) once from the KME at the other end with dec_keys. Either KME can be
the master's side.

Each KME listens on its own 127.0.0.1 port with mutual TLS: the client
certificate must be issued by the CA in --certs, and its subject CN is the
caller's SAE ID. A plain-HTTP control port (127.0.0.1 too) injects faults and
reports counters:

    POST /fault  {"mode": "...", ...params}   set a fault ({"mode": "none"} clears)
    GET  /fault                               the fault in force
    GET  /stats                               counters
    GET  /key/<key_ID>                        a key issued, with its material (for
                                              tests that recompute what an SAE got)

Fault modes and their parameters:

    stall           seconds=3600, then="error"|"serve": requests are accepted and
                    read, then left unanswered for `seconds` (or until the fault
                    is changed); afterwards they get 503 ("error") or are served.
    repeat_key      count=1: the first key of each of the next `count` enc_keys
                    calls repeats the material of the key issued before it
                    (new key_ID); both KMEs hand out that repeated material.
    bias            p (required): every key bit is 1 with probability p.
    drift           start=0.5, step=0.0005, max=0.75: the probability of a 1 bit
                    is start for the first key issued after the fault is set and
                    moves by step per key until it reaches max.
    key_id_reuse    count=1, key_ID=<optional>: the first key of each of the next
                    `count` enc_keys calls gets a key_ID already issued before
                    (the latest one, or the given one) with new material.
    drop_after_enc  the next enc_keys is answered normally, then the link is
                    down: every request to either KME gets 503 "link down" until
                    the fault is changed, and the keys of that enc_keys never
                    become available at the other KME.

One-shot faults (repeat_key, key_id_reuse) fall back to mode "none" once used.

Usage:

    python3 tests/qkd/kme_sim.py --certs DIR [--port-a 0] [--port-b 0]
        [--control-port 0] [--key-size 256] [--seed N] ...

On start it prints one JSON line {"kme_a": PORT, "kme_b": PORT, "control": PORT}
to stdout. Port 0 picks a free port. Standard library only.
"""

import argparse
import base64
import json
import os
import random
import signal
import ssl
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

HOST = "127.0.0.1"
KME_IDS = ("KME_A", "KME_B")
API_PREFIX = "/api/v1/keys/"
MAX_BODY = 1 << 20
FAULT_MODES = (
    "none",
    "stall",
    "repeat_key",
    "bias",
    "drift",
    "key_id_reuse",
    "drop_after_enc",
)


class ApiError(Exception):
    """An error answered as ETSI 014 error JSON: {message, details}."""

    def __init__(self, status, message, **details):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details

    def body(self):
        return {"message": self.message, "details": [self.details] if self.details else []}


# ---------------------------------------------------------------------------
# The link: shared key stream, key store, key pool, faults and counters.
# ---------------------------------------------------------------------------


class KeyRecord:
    __slots__ = ("key_id", "material", "master", "slave", "source", "target", "fetched", "lost")

    def __init__(self, key_id, material, master, slave, source, target):
        self.key_id = key_id
        self.material = material
        self.master = master
        self.slave = slave
        self.source = source
        self.target = target
        self.fetched = False
        self.lost = False


class Link:
    def __init__(self, cfg):
        self.cfg = cfg
        self.cond = threading.Condition(threading.RLock())
        if cfg.seed is None:
            self._rng = None
            self._id_rng = None
        else:
            self._rng = random.Random(cfg.seed)
            self._id_rng = random.Random(f"key-ids-{cfg.seed}")
        self.keys = {}
        self.last_key_id = None
        self.last_material = None
        self.fault = {"mode": "none"}
        self.fault_epoch = 0
        self.link_down = False
        self.drift_keys = 0
        # The pool of generated, not yet issued key bits.
        self.pool_cap = cfg.max_key_count * cfg.key_size
        initial = cfg.max_key_count if cfg.initial_key_count is None else cfg.initial_key_count
        self.pool_bits = min(initial, cfg.max_key_count) * cfg.key_size
        self.pool_time = time.monotonic()
        # Counters.
        self.requests = {k: {} for k in KME_IDS}
        self.tls_failures = {k: 0 for k in KME_IDS}
        self.issued = {k: 0 for k in KME_IDS}
        self.fetched = {k: 0 for k in KME_IDS}
        self.keys_lost = 0
        self.stalled = 0
        self.faults_fired = {}

    # -- randomness ---------------------------------------------------------

    def _rand(self, n):
        if self._rng is None:
            return os.urandom(n)
        return self._rng.randbytes(n)

    def _new_key_id(self):
        if self._id_rng is None:
            return str(uuid.uuid4())
        return str(uuid.UUID(bytes=self._id_rng.randbytes(16), version=4))

    def _biased(self, nbits, p):
        """nbits bits, each 1 with probability p, packed big-endian."""
        threshold = min(max(round(p * 4294967296), 0), 4294967296)
        words = struct.unpack(f"<{nbits}I", self._rand(4 * nbits))
        bits = "".join("1" if w < threshold else "0" for w in words)
        return int(bits, 2).to_bytes(nbits // 8, "big")

    def _next_material(self, nbits):
        mode = self.fault["mode"]
        if mode == "bias":
            return self._biased(nbits, self.fault["p"])
        if mode == "drift":
            f = self.fault
            p = f["start"] + f["step"] * self.drift_keys
            p = min(p, f["max"]) if f["step"] >= 0 else max(p, f["max"])
            self.drift_keys += 1
            return self._biased(nbits, p)
        return self._rand(nbits // 8)

    # -- key pool -----------------------------------------------------------

    def _refill(self):
        now = time.monotonic()
        rate = self.cfg.key_rate
        if rate is not None:
            added = (now - self.pool_time) * rate * self.cfg.key_size
            self.pool_bits = min(self.pool_cap, self.pool_bits + added)
        self.pool_time = now

    def stored_key_count(self):
        with self.cond:
            if self.cfg.key_rate is None:
                return self.cfg.max_key_count
            self._refill()
            return int(self.pool_bits // self.cfg.key_size)

    # -- faults -------------------------------------------------------------

    def set_fault(self, fault):
        with self.cond:
            self.fault = fault
            self.fault_epoch += 1
            self.link_down = False
            self.drift_keys = 0
            self.cond.notify_all()

    def fault_view(self):
        with self.cond:
            view = dict(self.fault)
            view["link_down"] = self.link_down
            return view

    def _fired(self, mode):
        self.faults_fired[mode] = self.faults_fired.get(mode, 0) + 1

    def _use_one_shot(self):
        self.fault["count"] -= 1
        if self.fault["count"] <= 0:
            self.fault = {"mode": "none"}
            self.fault_epoch += 1

    def stall(self):
        """Block while a stall fault is in force; return what to do next."""
        with self.cond:
            if self.fault["mode"] != "stall":
                return None
            epoch = self.fault_epoch
            then = self.fault["then"]
            deadline = time.monotonic() + self.fault["seconds"]
            self.stalled += 1
            self._fired("stall")
            while self.fault_epoch == epoch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return then

    def check_up(self):
        with self.cond:
            if self.link_down:
                raise ApiError(503, "link down", reason="the QKD link is down")

    # -- the API operations -------------------------------------------------

    def status(self, kme, caller, slave):
        cfg = self.cfg
        return {
            "source_KME_ID": kme,
            "target_KME_ID": other_kme(kme),
            "master_SAE_ID": caller,
            "slave_SAE_ID": slave,
            "key_size": cfg.key_size,
            "stored_key_count": self.stored_key_count(),
            "max_key_count": cfg.max_key_count,
            "max_key_per_request": cfg.max_key_per_request,
            "max_key_size": cfg.max_key_size,
            "min_key_size": cfg.min_key_size,
            "max_SAE_ID_count": 0,
        }

    def enc_keys(self, kme, caller, slave, number, size):
        cfg = self.cfg
        need = number * size
        if need > self.pool_cap:
            raise ApiError(
                400,
                "request exceeds the KME's key capacity",
                parameter="number",
                requested_bits=need,
                capacity_bits=self.pool_cap,
            )
        out = []
        with self.cond:
            self.check_up()
            if cfg.key_rate is not None:
                self._refill()
                if need > self.pool_bits:
                    raise ApiError(
                        503,
                        "not enough key material stored",
                        requested_keys=number,
                        size=size,
                        stored_key_count=int(self.pool_bits // cfg.key_size),
                    )
                self.pool_bits -= need
            mode = self.fault["mode"]
            records = []
            for i in range(number):
                if i == 0 and mode == "repeat_key" and self.last_material is not None:
                    prev = self.last_material
                    nbytes = size // 8
                    material = (prev + self._next_material(max(0, nbytes - len(prev)) * 8))[:nbytes]
                    self._fired("repeat_key")
                    self._use_one_shot()
                else:
                    material = self._next_material(size)
                key_id = None
                if i == 0 and mode == "key_id_reuse":
                    key_id = self.fault.get("key_ID") or self.last_key_id
                    if key_id is not None:
                        self._fired("key_id_reuse")
                        self._use_one_shot()
                if key_id is None:
                    key_id = self._new_key_id()
                    while key_id in self.keys:
                        key_id = self._new_key_id()
                rec = KeyRecord(key_id, material, caller, slave, kme, other_kme(kme))
                self.keys[key_id] = rec
                self.last_key_id = key_id
                self.last_material = material
                records.append(rec)
                out.append({"key_ID": key_id, "key": base64.b64encode(material).decode("ascii")})
            self.issued[kme] += number
            if mode == "drop_after_enc" and not self.link_down:
                for rec in records:
                    rec.lost = True
                self.keys_lost += len(records)
                self.link_down = True
                self._fired("drop_after_enc")
        return {"keys": out}

    def dec_keys(self, kme, caller, master, key_ids):
        with self.cond:
            self.check_up()
            if len(set(key_ids)) != len(key_ids):
                raise ApiError(400, "duplicate key_ID in request", parameter="key_IDs")
            records = []
            for key_id in key_ids:
                rec = self.keys.get(key_id)
                if rec is None:
                    raise ApiError(400, "unknown key_ID", key_ID=key_id)
                if rec.slave != caller or rec.master != master:
                    raise ApiError(
                        401,
                        "key_ID was not issued to this SAE pair",
                        key_ID=key_id,
                        caller=caller,
                        master_SAE_ID=master,
                    )
                if rec.target != kme:
                    raise ApiError(
                        400,
                        "key_ID is not available at this KME (it was issued here)",
                        key_ID=key_id,
                        available_at=rec.target,
                    )
                if rec.lost:
                    raise ApiError(400, "key_ID never reached this KME (link went down)", key_ID=key_id)
                if rec.fetched:
                    raise ApiError(400, "key_ID already fetched", key_ID=key_id)
                records.append(rec)
            for rec in records:
                rec.fetched = True
            self.fetched[kme] += len(records)
            return {
                "keys": [
                    {"key_ID": rec.key_id, "key": base64.b64encode(rec.material).decode("ascii")}
                    for rec in records
                ]
            }

    # -- counters -----------------------------------------------------------

    def count_request(self, kme, endpoint, status):
        with self.cond:
            per = self.requests[kme].setdefault(endpoint, {})
            per[str(status)] = per.get(str(status), 0) + 1

    def count_tls_failure(self, kme):
        with self.cond:
            self.tls_failures[kme] += 1

    def stats(self):
        stored = self.stored_key_count()
        with self.cond:
            return {
                "requests": json.loads(json.dumps(self.requests)),
                "tls_failures": dict(self.tls_failures),
                "keys_issued": sum(self.issued.values()),
                "keys_fetched": sum(self.fetched.values()),
                "keys_issued_by_kme": dict(self.issued),
                "keys_fetched_by_kme": dict(self.fetched),
                "keys_lost": self.keys_lost,
                "stalled_requests": self.stalled,
                "faults_fired": dict(self.faults_fired),
                "fault": dict(self.fault),
                "link_down": self.link_down,
                "stored_key_count": stored,
            }


def other_kme(kme):
    return KME_IDS[1] if kme == KME_IDS[0] else KME_IDS[0]


# ---------------------------------------------------------------------------
# Request parsing helpers.
# ---------------------------------------------------------------------------


def _as_int(value, name):
    if isinstance(value, bool):
        raise ApiError(400, f"{name} must be an integer", parameter=name)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 10)
        except ValueError:
            pass
    raise ApiError(400, f"{name} must be an integer", parameter=name, value=str(value))


def _non_empty(value):
    return value is not None and value != [] and value != {} and value != ""


def parse_enc_request(cfg, method, query, body):
    if method == "GET":
        number = query["number"][0] if "number" in query else None
        size = query["size"][0] if "size" in query else None
        extra = {}
    else:
        extra = body
        number = body.get("number")
        size = body.get("size")
    number = 1 if number is None else _as_int(number, "number")
    size = cfg.key_size if size is None else _as_int(size, "size")
    if size % 8 != 0:
        raise ApiError(400, "size must be a multiple of 8", parameter="size", value=size)
    if not cfg.min_key_size <= size <= cfg.max_key_size:
        raise ApiError(
            400,
            "size out of range",
            parameter="size",
            value=size,
            min_key_size=cfg.min_key_size,
            max_key_size=cfg.max_key_size,
        )
    if not 1 <= number <= cfg.max_key_per_request:
        raise ApiError(
            400,
            "number out of range",
            parameter="number",
            value=number,
            max_key_per_request=cfg.max_key_per_request,
        )
    mandatory = extra.get("extension_mandatory")
    if mandatory is not None and not isinstance(mandatory, (list, dict)):
        raise ApiError(400, "extension_mandatory must be an array", parameter="extension_mandatory")
    if _non_empty(mandatory):
        raise ApiError(
            400,
            "mandatory extension not supported",
            parameter="extension_mandatory",
            value=mandatory,
        )
    additional = extra.get("additional_slave_SAE_IDs")
    if additional is not None and not isinstance(additional, list):
        raise ApiError(400, "additional_slave_SAE_IDs must be an array", parameter="additional_slave_SAE_IDs")
    if _non_empty(additional):
        raise ApiError(
            400,
            "additional slave SAEs not supported (max_SAE_ID_count is 0)",
            parameter="additional_slave_SAE_IDs",
            max_SAE_ID_count=0,
        )
    return number, size


def parse_dec_request(cfg, method, query, body):
    if method == "GET":
        ids = query.get("key_ID", [])
    else:
        items = body.get("key_IDs")
        if not isinstance(items, list):
            raise ApiError(400, "key_IDs must be an array", parameter="key_IDs")
        ids = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("key_ID"), str):
                raise ApiError(400, "each key_IDs entry needs a key_ID string", parameter="key_IDs")
            ids.append(item["key_ID"])
    if not ids:
        raise ApiError(400, "no key_ID given", parameter="key_ID")
    if len(ids) > cfg.max_key_per_request:
        raise ApiError(
            400,
            "too many key_IDs",
            parameter="key_IDs",
            max_key_per_request=cfg.max_key_per_request,
        )
    return ids


def route(path):
    """(endpoint, sae_id) for an API path, or ("unknown", None)."""
    if not path.startswith(API_PREFIX):
        return "unknown", None
    rest = path[len(API_PREFIX):].split("/")
    if len(rest) != 2 or not rest[0] or rest[1] not in ("status", "enc_keys", "dec_keys"):
        return "unknown", None
    return rest[1], unquote(rest[0])


# ---------------------------------------------------------------------------
# HTTP servers.
# ---------------------------------------------------------------------------


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kme-sim/1.0"
    sys_version = ""
    timeout = 120
    # Headers and body go out in separate writes; without TCP_NODELAY the
    # second one waits for the peer's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write(f"[{self.server.name}] {self.address_string()} {fmt % args}\n")

    def send_json(self, status, payload):
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(400, "chunked request bodies are not supported")
        try:
            length = int(self.headers.get("Content-Length", "0") or "0")
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "bad Content-Length")
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            raise ApiError(400, "request body too large or bad length")
        return self.rfile.read(length) if length else b""

    @staticmethod
    def parse_json(raw):
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise ApiError(400, "request body is not valid JSON", error=str(e))
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body


class KmeHandler(JsonHandler):
    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def caller(self):
        cert = self.connection.getpeercert()
        if not cert:
            raise ApiError(401, "client certificate required")
        cn = None
        for rdn in cert.get("subject", ()):
            for attr, value in rdn:
                if attr == "commonName":
                    cn = value
        if not cn:
            raise ApiError(401, "client certificate has no subject CN")
        allowed = self.server.cfg.sae_ids
        if allowed is not None and cn not in allowed:
            raise ApiError(401, "SAE not registered at this KME", SAE_ID=cn)
        return cn

    def dispatch(self, method):
        kme = self.server.name
        link = self.server.link
        cfg = self.server.cfg
        endpoint = "unknown"
        status = 500
        try:
            url = urlsplit(self.path)
            endpoint, sae = route(url.path)
            raw = self.read_body()
            then = link.stall()
            if then == "error":
                raise ApiError(503, "KME stalled", reason="stall fault")
            link.check_up()
            if endpoint == "unknown":
                raise ApiError(404, "not found", path=url.path)
            allowed = ("GET",) if endpoint == "status" else ("GET", "POST")
            if method not in allowed:
                raise ApiError(405, "method not allowed", method=method)
            caller = self.caller()
            if cfg.sae_ids is not None and sae not in cfg.sae_ids:
                raise ApiError(400, "unknown SAE ID in path", SAE_ID=sae)
            query = parse_qs(url.query, keep_blank_values=True)
            body = self.parse_json(raw) if method == "POST" else {}
            if endpoint == "status":
                payload = link.status(kme, caller, sae)
            elif endpoint == "enc_keys":
                number, size = parse_enc_request(cfg, method, query, body)
                payload = link.enc_keys(kme, caller, sae, number, size)
            else:
                ids = parse_dec_request(cfg, method, query, body)
                payload = link.dec_keys(kme, caller, sae, ids)
            status = 200
            self.send_json(200, payload)
        except ApiError as e:
            status = e.status
            self.send_json(e.status, e.body())
        except Exception as e:  # keep serving; report as a KME error
            status = 500
            self.send_json(500, {"message": "internal error", "details": [{"error": repr(e)}]})
        finally:
            link.count_request(kme, endpoint, status)


class ControlHandler(JsonHandler):
    def do_GET(self):
        path = urlsplit(self.path).path
        link = self.server.link
        if path == "/stats":
            self.send_json(200, link.stats())
        elif path == "/fault":
            self.send_json(200, link.fault_view())
        elif path == "/health":
            self.send_json(200, {"ok": True})
        elif path.startswith("/key/"):
            with link.cond:
                rec = link.keys.get(path[len("/key/"):])
                view = None if rec is None else {
                    "key_ID": rec.key_id,
                    "key": base64.b64encode(rec.material).decode("ascii"),
                    "master_SAE_ID": rec.master,
                    "slave_SAE_ID": rec.slave,
                    "fetched": rec.fetched,
                }
            if view is None:
                self.send_json(404, {"message": "unknown key_ID", "details": []})
            else:
                self.send_json(200, view)
        else:
            self.send_json(404, {"message": "not found", "details": []})

    def do_POST(self):
        path = urlsplit(self.path).path
        try:
            body = self.parse_json(self.read_body())
            if path != "/fault":
                raise ApiError(404, "not found")
            fault = parse_fault(body)
            self.server.link.set_fault(fault)
            self.send_json(200, self.server.link.fault_view())
        except ApiError as e:
            self.send_json(e.status, e.body())


def _number(body, name, default, lo=None, hi=None):
    value = body.get(name, default)
    if value is None:
        raise ApiError(400, f"{name} is required", parameter=name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"{name} must be a number", parameter=name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ApiError(400, f"{name} out of range", parameter=name, min=lo, max=hi)
    return value


def parse_fault(body):
    mode = body.get("mode")
    if mode not in FAULT_MODES:
        raise ApiError(400, "unknown fault mode", mode=mode, modes=list(FAULT_MODES))
    known = {
        "none": (),
        "stall": ("seconds", "then"),
        "repeat_key": ("count",),
        "bias": ("p",),
        "drift": ("start", "step", "max"),
        "key_id_reuse": ("count", "key_ID"),
        "drop_after_enc": (),
    }[mode]
    unknown = sorted(set(body) - set(known) - {"mode"})
    if unknown:
        raise ApiError(400, "unknown fault parameters", mode=mode, parameters=unknown)
    fault = {"mode": mode}
    if mode == "stall":
        fault["seconds"] = _number(body, "seconds", 3600, lo=0)
        fault["then"] = body.get("then", "error")
        if fault["then"] not in ("error", "serve"):
            raise ApiError(400, "then must be error or serve", parameter="then")
    elif mode in ("repeat_key", "key_id_reuse"):
        count = _number(body, "count", 1, lo=1)
        if not isinstance(count, int):
            raise ApiError(400, "count must be an integer", parameter="count")
        fault["count"] = count
        if mode == "key_id_reuse" and body.get("key_ID") is not None:
            if not isinstance(body["key_ID"], str):
                raise ApiError(400, "key_ID must be a string", parameter="key_ID")
            fault["key_ID"] = body["key_ID"]
    elif mode == "bias":
        fault["p"] = float(_number(body, "p", None, lo=0, hi=1))
    elif mode == "drift":
        fault["start"] = float(_number(body, "start", 0.5, lo=0, hi=1))
        fault["step"] = float(_number(body, "step", 0.0005))
        fault["max"] = float(_number(body, "max", 0.75, lo=0, hi=1))
    return fault


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port, handler, name, link, cfg, ssl_ctx=None):
        self.name = name
        self.link = link
        self.cfg = cfg
        self.verbose = cfg.verbose
        self.ssl_ctx = ssl_ctx
        super().__init__((HOST, port), handler)

    def finish_request(self, request, client_address):
        if self.ssl_ctx is None:
            super().finish_request(request, client_address)
            return
        # The TLS handshake runs here, in the connection's own thread, so a
        # slow or failing client does not hold up the accept loop.
        request.settimeout(10)
        try:
            conn = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.link.count_tls_failure(self.name)
            if self.verbose:
                sys.stderr.write(f"[{self.name}] TLS handshake with {client_address[0]} failed: {e}\n")
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def make_tls_context(certs, name):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(os.path.join(certs, f"{name}.pem"), os.path.join(certs, f"{name}.key"))
    ctx.load_verify_locations(cafile=os.path.join(certs, "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="ETSI GS QKD 014 v1.1.1 KME pair simulator")
    ap.add_argument("--certs", required=True, help="dir with ca.pem, kme-a.pem/.key, kme-b.pem/.key")
    ap.add_argument("--port-a", type=int, default=0)
    ap.add_argument("--port-b", type=int, default=0)
    ap.add_argument("--control-port", type=int, default=0)
    ap.add_argument("--key-size", type=int, default=256, help="default key size in bits")
    ap.add_argument("--min-key-size", type=int, default=64)
    ap.add_argument("--max-key-size", type=int, default=1024)
    ap.add_argument("--max-key-per-request", type=int, default=128)
    ap.add_argument("--max-key-count", type=int, default=100000)
    ap.add_argument(
        "--key-rate",
        type=float,
        default=None,
        help="keys of key_size generated per second (default: unlimited, the store stays full)",
    )
    ap.add_argument(
        "--initial-key-count",
        type=int,
        default=None,
        help="keys stored at start when --key-rate is set (default: max_key_count)",
    )
    ap.add_argument("--seed", type=int, default=None, help="seed the key stream and key_IDs")
    ap.add_argument(
        "--sae-ids",
        default=None,
        help="comma-separated SAE IDs allowed as callers and in paths (default: any CA-issued cert)",
    )
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    cfg = ap.parse_args(argv)
    if cfg.sae_ids is not None:
        cfg.sae_ids = {s.strip() for s in cfg.sae_ids.split(",") if s.strip()}
    for name in ("key_size", "min_key_size", "max_key_size"):
        if getattr(cfg, name) % 8 or getattr(cfg, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be a positive multiple of 8")
    if not cfg.min_key_size <= cfg.key_size <= cfg.max_key_size:
        ap.error("need min-key-size <= key-size <= max-key-size")
    if cfg.max_key_per_request < 1 or cfg.max_key_count < 1:
        ap.error("--max-key-per-request and --max-key-count must be >= 1")
    if cfg.key_rate is not None and cfg.key_rate < 0:
        ap.error("--key-rate must be >= 0")
    return cfg


def main(argv=None):
    cfg = parse_args(argv)
    link = Link(cfg)
    servers = [
        SimServer(cfg.port_a, KmeHandler, "KME_A", link, cfg, make_tls_context(cfg.certs, "kme-a")),
        SimServer(cfg.port_b, KmeHandler, "KME_B", link, cfg, make_tls_context(cfg.certs, "kme-b")),
        SimServer(cfg.control_port, ControlHandler, "control", link, cfg),
    ]
    for srv in servers:
        threading.Thread(target=srv.serve_forever, args=(0.2,), name=srv.name, daemon=True).start()
    ports = {
        "kme_a": servers[0].server_address[1],
        "kme_b": servers[1].server_address[1],
        "control": servers[2].server_address[1],
    }
    sys.stdout.write(json.dumps(ports) + "\n")
    sys.stdout.flush()

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1):
        pass
    stoppers = [threading.Thread(target=srv.shutdown) for srv in servers]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    for srv in servers:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
