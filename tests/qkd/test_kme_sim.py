"""Self-test of kme_sim.py (python3 -m unittest, stdlib only).

Run from the repository root:

    python3 -m unittest discover -s tests/qkd -v
"""

import base64
import http.client
import json
import os
import select
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SIM = os.path.join(HERE, "kme_sim.py")
MAKE_CERTS = os.path.join(HERE, "make_certs.sh")
SAES = ("sae-a", "sae-b", "sae-other")


def make_certs(directory, *saes):
    subprocess.run(["bash", MAKE_CERTS, directory, *saes], check=True, capture_output=True)


class Sim:
    """A kme_sim.py subprocess and clients for it."""

    def __init__(self, certs, *args):
        self.certs = certs
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, SIM, "--certs", certs, *args],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            self.log.seek(0)
            raise RuntimeError(f"simulator did not start: {self.log.read().decode(errors='replace')}")
        self.ports = json.loads(line)
        self._contexts = {}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()

    def context(self, sae):
        if sae not in self._contexts:
            ctx = ssl.create_default_context(cafile=os.path.join(self.certs, "ca.pem"))
            if sae is not None:
                ctx.load_cert_chain(
                    os.path.join(self.certs, f"{sae}.pem"), os.path.join(self.certs, f"{sae}.key")
                )
            self._contexts[sae] = ctx
        return self._contexts[sae]

    def call(self, kme, sae, method, path, body=None, timeout=10, ctx=None):
        """(status, JSON body) of one request to KME "a" or "b" as SAE `sae`."""
        port = self.ports["kme_" + kme]
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx or self.context(sae), timeout=timeout)
        try:
            headers = {}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def control(self, method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.ports["control"], timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    # Shorthands for the API.

    def enc_get(self, kme, master, slave, **params):
        query = "&".join(f"{k}={v}" for k, v in params.items())
        path = f"/api/v1/keys/{slave}/enc_keys" + (f"?{query}" if query else "")
        return self.call(kme, master, "GET", path)

    def enc_post(self, kme, master, slave, body):
        return self.call(kme, master, "POST", f"/api/v1/keys/{slave}/enc_keys", body)

    def dec_get(self, kme, slave, master, key_id):
        return self.call(kme, slave, "GET", f"/api/v1/keys/{master}/dec_keys?key_ID={key_id}")

    def dec_post(self, kme, slave, master, key_ids):
        body = {"key_IDs": [{"key_ID": k} for k in key_ids]}
        return self.call(kme, slave, "POST", f"/api/v1/keys/{master}/dec_keys", body)


def ones_fraction(keys):
    data = b"".join(base64.b64decode(k["key"]) for k in keys)
    return sum(bin(b).count("1") for b in data) / (8 * len(data))


class SimTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kme-sim-test-")
        cls.certs = os.path.join(cls.tmp, "certs")
        make_certs(cls.certs, *SAES)
        cls.sim = Sim(cls.certs)

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.addCleanup(self.sim.control, "POST", "/fault", {"mode": "none"})

    def set_fault(self, **fault):
        status, view = self.sim.control("POST", "/fault", fault)
        self.assertEqual(status, 200, view)
        return view

    def assertError(self, result, status):
        code, body = result
        self.assertEqual(code, status, body)
        self.assertIsInstance(body["message"], str)
        self.assertIsInstance(body["details"], list)
        return body

    def issue(self, number=1, size=None, kme="a", master="sae-a", slave="sae-b"):
        params = {"number": number}
        if size is not None:
            params["size"] = size
        status, body = self.sim.enc_get(kme, master, slave, **params)
        self.assertEqual(status, 200, body)
        self.assertEqual(len(body["keys"]), number)
        return body["keys"]


class TestApi(SimTestCase):
    def test_status_fields(self):
        status, body = self.sim.call("a", "sae-a", "GET", "/api/v1/keys/sae-b/status")
        self.assertEqual(status, 200, body)
        self.assertEqual(
            body,
            {
                "source_KME_ID": "KME_A",
                "target_KME_ID": "KME_B",
                "master_SAE_ID": "sae-a",
                "slave_SAE_ID": "sae-b",
                "key_size": 256,
                "stored_key_count": 100000,
                "max_key_count": 100000,
                "max_key_per_request": 128,
                "max_key_size": 1024,
                "min_key_size": 64,
                "max_SAE_ID_count": 0,
            },
        )
        status, body = self.sim.call("b", "sae-b", "GET", "/api/v1/keys/sae-a/status")
        self.assertEqual(status, 200, body)
        self.assertEqual(
            (body["source_KME_ID"], body["target_KME_ID"], body["master_SAE_ID"], body["slave_SAE_ID"]),
            ("KME_B", "KME_A", "sae-b", "sae-a"),
        )

    def test_enc_get_then_dec_get_and_post(self):
        keys = self.issue(number=3, size=512)
        for k in keys:
            self.assertEqual(str(uuid.UUID(k["key_ID"])), k["key_ID"])
            self.assertEqual(len(base64.b64decode(k["key"])), 64)
        self.assertEqual(len({k["key_ID"] for k in keys}), 3)
        status, body = self.sim.dec_get("b", "sae-b", "sae-a", keys[0]["key_ID"])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["keys"], keys[:1])
        status, body = self.sim.dec_post("b", "sae-b", "sae-a", [k["key_ID"] for k in keys[1:]])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["keys"], keys[1:])

    def test_enc_post_then_dec(self):
        status, body = self.sim.enc_post(
            "a",
            "sae-a",
            "sae-b",
            {
                "number": 2,
                "size": 128,
                "additional_slave_SAE_IDs": [],
                "extension_mandatory": [],
                "extension_optional": [{"vendor_hint": True}],
            },
        )
        self.assertEqual(status, 200, body)
        keys = body["keys"]
        self.assertEqual([len(base64.b64decode(k["key"])) for k in keys], [16, 16])
        status, body = self.sim.dec_post("b", "sae-b", "sae-a", [k["key_ID"] for k in keys])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["keys"], keys)

    def test_enc_defaults(self):
        status, body = self.sim.enc_get("a", "sae-a", "sae-b")
        self.assertEqual(status, 200, body)
        self.assertEqual(len(body["keys"]), 1)
        self.assertEqual(len(base64.b64decode(body["keys"][0]["key"])), 32)
        status, body = self.sim.enc_post("a", "sae-a", "sae-b", {})
        self.assertEqual(status, 200, body)
        self.assertEqual(len(body["keys"]), 1)

    def test_master_at_kme_b(self):
        keys = self.issue(kme="b", master="sae-b", slave="sae-a")
        status, body = self.sim.dec_get("a", "sae-a", "sae-b", keys[0]["key_ID"])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["keys"], keys)

    def test_second_dec_is_400(self):
        key_id = self.issue()[0]["key_ID"]
        self.assertEqual(self.sim.dec_get("b", "sae-b", "sae-a", key_id)[0], 200)
        self.assertError(self.sim.dec_get("b", "sae-b", "sae-a", key_id), 400)
        self.assertError(self.sim.dec_post("b", "sae-b", "sae-a", [key_id]), 400)

    def test_dec_by_other_sae_is_401(self):
        keys = self.issue()
        key_id = keys[0]["key_ID"]
        self.assertError(self.sim.dec_get("b", "sae-other", "sae-a", key_id), 401)
        # The right slave naming the wrong master is refused as well.
        self.assertError(self.sim.dec_get("b", "sae-b", "sae-other", key_id), 401)
        # Neither attempt used the key up.
        status, body = self.sim.dec_get("b", "sae-b", "sae-a", key_id)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["keys"], keys)

    def test_dec_at_issuing_kme_is_refused(self):
        key_id = self.issue()[0]["key_ID"]
        self.assertError(self.sim.dec_get("a", "sae-b", "sae-a", key_id), 400)
        self.assertEqual(self.sim.dec_get("b", "sae-b", "sae-a", key_id)[0], 200)

    def test_dec_unknown_or_missing_key_id_is_400(self):
        self.assertError(self.sim.dec_get("b", "sae-b", "sae-a", str(uuid.uuid4())), 400)
        self.assertError(self.sim.call("b", "sae-b", "GET", "/api/v1/keys/sae-a/dec_keys"), 400)
        self.assertError(self.sim.call("b", "sae-b", "POST", "/api/v1/keys/sae-a/dec_keys", {"key_IDs": []}), 400)

    def test_enc_bad_requests_are_400(self):
        cases = [
            {"size": 255},
            {"size": 32},
            {"size": 2048},
            {"number": 129},
            {"number": 0},
            {"number": "x"},
        ]
        for params in cases:
            with self.subTest(get=params):
                self.assertError(self.sim.enc_get("a", "sae-a", "sae-b", **params), 400)
        posts = [
            {"size": 255},
            {"number": 129},
            {"number": True},
            {"extension_mandatory": [{"vendor_feature": 1}]},
            {"additional_slave_SAE_IDs": ["sae-other"]},
        ]
        for body in posts:
            with self.subTest(post=body):
                self.assertError(self.sim.enc_post("a", "sae-a", "sae-b", body), 400)
        body = self.assertError(self.sim.enc_get("a", "sae-a", "sae-b", size=255), 400)
        self.assertEqual(body["details"][0]["parameter"], "size")

    def test_unknown_path_is_404(self):
        self.assertError(self.sim.call("a", "sae-a", "GET", "/api/v1/keys/sae-b/nothing"), 404)
        self.assertError(self.sim.call("a", "sae-a", "GET", "/api/v2/keys/sae-b/status"), 404)
        self.assertError(self.sim.call("a", "sae-a", "GET", "/"), 404)

    def test_no_client_cert_is_refused(self):
        with self.assertRaises(OSError):
            self.sim.call("a", None, "GET", "/api/v1/keys/sae-b/status", timeout=5)

    def test_cert_from_another_ca_is_refused(self):
        rogue = os.path.join(self.tmp, "rogue")
        make_certs(rogue, "sae-a")
        ctx = ssl.create_default_context(cafile=os.path.join(self.certs, "ca.pem"))
        ctx.load_cert_chain(os.path.join(rogue, "sae-a.pem"), os.path.join(rogue, "sae-a.key"))
        with self.assertRaises(OSError):
            self.sim.call("a", None, "GET", "/api/v1/keys/sae-b/status", timeout=5, ctx=ctx)

    def test_stats(self):
        _, before = self.sim.control("GET", "/stats")
        keys = self.issue(number=2)
        self.sim.dec_post("b", "sae-b", "sae-a", [k["key_ID"] for k in keys])
        self.sim.enc_get("a", "sae-a", "sae-b", size=255)
        status, after = self.sim.control("GET", "/stats")
        self.assertEqual(status, 200)
        self.assertEqual(after["keys_issued"] - before["keys_issued"], 2)
        self.assertEqual(after["keys_fetched"] - before["keys_fetched"], 2)
        enc = after["requests"]["KME_A"]["enc_keys"]
        self.assertGreaterEqual(enc["200"], 1)
        self.assertGreaterEqual(enc["400"], 1)
        self.assertGreaterEqual(after["requests"]["KME_B"]["dec_keys"]["200"], 1)
        self.assertEqual(after["fault"], {"mode": "none"})

    def test_bad_fault_is_400(self):
        self.assertEqual(self.sim.control("POST", "/fault", {"mode": "nope"})[0], 400)
        self.assertEqual(self.sim.control("POST", "/fault", {"mode": "bias"})[0], 400)
        self.assertEqual(self.sim.control("POST", "/fault", {"mode": "bias", "p": 2})[0], 400)
        self.assertEqual(self.sim.control("POST", "/fault", {"mode": "stall", "secs": 1})[0], 400)


class TestFaults(SimTestCase):
    def test_bias(self):
        self.set_fault(mode="bias", p=0.6)
        keys = []
        while len(keys) < 2000:
            keys += self.issue(number=min(128, 2000 - len(keys)))
        self.assertAlmostEqual(ones_fraction(keys), 0.6, delta=0.01)
        # The slave gets the same biased bits.
        status, body = self.sim.dec_post("b", "sae-b", "sae-a", [k["key_ID"] for k in keys[:128]])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["keys"], keys[:128])
        self.set_fault(mode="none")
        fair = self.issue(number=128) + self.issue(number=128)
        self.assertAlmostEqual(ones_fraction(fair), 0.5, delta=0.02)

    def test_drift(self):
        self.set_fault(mode="drift", step=0.0005, max=0.75)
        fractions = [ones_fraction(self.issue(number=100, size=1024)) for _ in range(7)]
        # Per-key p is 0.5 + 0.0005*k, capped at 0.75 from key 500 on.
        self.assertAlmostEqual(fractions[0], 0.525, delta=0.015)
        for earlier, later in zip(fractions[:5], fractions[1:5]):
            self.assertGreater(later, earlier + 0.02)
        self.assertAlmostEqual(fractions[-1], 0.75, delta=0.015)

    def test_repeat_key(self):
        first = self.issue()[0]
        self.set_fault(mode="repeat_key")
        repeated, fresh = self.issue(number=2)
        self.assertEqual(repeated["key"], first["key"])
        self.assertNotEqual(repeated["key_ID"], first["key_ID"])
        self.assertNotEqual(fresh["key"], first["key"])
        # One-shot: the next enc_keys is fresh again.
        self.assertEqual(self.sim.control("GET", "/fault")[1]["mode"], "none")
        self.assertNotEqual(self.issue()[0]["key"], first["key"])
        # The other side sees the repeated material too.
        status, body = self.sim.dec_post("b", "sae-b", "sae-a", [first["key_ID"], repeated["key_ID"]])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["keys"][0]["key"], body["keys"][1]["key"])

    def test_key_id_reuse(self):
        earlier = self.issue(number=2)
        self.set_fault(mode="key_id_reuse")
        reused = self.issue()[0]
        self.assertIn(reused["key_ID"], {k["key_ID"] for k in earlier})
        self.assertNotIn(reused["key"], {k["key"] for k in earlier})
        status, body = self.sim.dec_get("b", "sae-b", "sae-a", reused["key_ID"])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["keys"], [reused])
        self.assertNotIn(self.issue()[0]["key_ID"], {k["key_ID"] for k in earlier})

    def test_stall(self):
        self.set_fault(mode="stall")
        for kme, sae, path in (
            ("a", "sae-a", "/api/v1/keys/sae-b/status"),
            ("b", "sae-b", "/api/v1/keys/sae-a/enc_keys"),
        ):
            t0 = time.monotonic()
            with self.assertRaises(TimeoutError):
                self.sim.call(kme, sae, "GET", path, timeout=1)
            self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.set_fault(mode="none")
        self.assertEqual(self.sim.call("a", "sae-a", "GET", "/api/v1/keys/sae-b/status")[0], 200)

    def test_drop_after_enc(self):
        self.set_fault(mode="drop_after_enc")
        status, body = self.sim.enc_get("a", "sae-a", "sae-b", number=2)
        self.assertEqual(status, 200, body)
        dropped = [k["key_ID"] for k in body["keys"]]
        for result in (
            self.sim.call("a", "sae-a", "GET", "/api/v1/keys/sae-b/status"),
            self.sim.enc_get("a", "sae-a", "sae-b"),
            self.sim.enc_get("b", "sae-b", "sae-a"),
            self.sim.dec_get("b", "sae-b", "sae-a", dropped[0]),
        ):
            self.assertEqual(self.assertError(result, 503)["message"], "link down")
        self.assertTrue(self.sim.control("GET", "/stats")[1]["link_down"])
        self.set_fault(mode="none")
        # The keys issued just before the drop never reach KME_B.
        self.assertError(self.sim.dec_get("b", "sae-b", "sae-a", dropped[0]), 400)
        key = self.issue()[0]
        self.assertEqual(self.sim.dec_get("b", "sae-b", "sae-a", key["key_ID"])[1]["keys"], [key])


class TestKeyPoolAndSeed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="kme-sim-test-")
        cls.certs = os.path.join(cls.tmp, "certs")
        make_certs(cls.certs, "sae-a", "sae-b")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_pool_exhaustion_is_503(self):
        sim = Sim(self.certs, "--max-key-count", "10", "--key-rate", "0")
        self.addCleanup(sim.stop)
        self.assertEqual(sim.enc_get("a", "sae-a", "sae-b", number=8)[0], 200)
        status, body = sim.call("a", "sae-a", "GET", "/api/v1/keys/sae-b/status")
        self.assertEqual(body["stored_key_count"], 2)
        status, body = sim.enc_get("a", "sae-a", "sae-b", number=3)
        self.assertEqual(status, 503, body)
        # More than the store can ever hold is a bad request, not a wait.
        self.assertEqual(sim.enc_get("a", "sae-a", "sae-b", number=11)[0], 400)
        self.assertEqual(sim.enc_get("a", "sae-a", "sae-b", number=2)[0], 200)

    def test_seed_reproduces_stream(self):
        runs = []
        for _ in range(2):
            sim = Sim(self.certs, "--seed", "7")
            try:
                runs.append(sim.enc_get("a", "sae-a", "sae-b", number=3)[1]["keys"])
            finally:
                sim.stop()
        self.assertEqual(runs[0], runs[1])


if __name__ == "__main__":
    unittest.main()
