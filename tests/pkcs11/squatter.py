"""A process that takes the module's socket before qkeyd does.

Listens on argv[1] (a path, or @name for an abstract socket) and answers the
module's wire protocol just well enough to be sent a PIN: a Hello for a Hello,
zero bytes for a Seed, Done for anything else. Each line on stdin asks for a
report since the last one, printed as one JSON line: how many connections it
accepted and the hex of every byte it received. Ends at the end of stdin.
"""

import json
import select
import socket
import struct
import sys

addr = sys.argv[1]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("\0" + addr[1:] if addr.startswith("@") else addr)
server.listen(16)
print("listening", flush=True)


def text(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b


def answer(payload):
    tag = payload[0] if payload else 0
    if tag == 1:
        body = b"\x01" + struct.pack(">I", 1) + text("0.1.0") + text("squatter")
    elif tag == 2 and len(payload) >= 5:
        n = struct.unpack(">I", payload[1:5])[0]
        body = b"\x02" + struct.pack(">I", n) + bytes(n)
    else:
        body = b"\x03"
    return struct.pack(">I", len(body)) + body


conns, pending = [], {}
accepted, received = 0, bytearray()


def serve(timeout):
    """Serve what is ready; False once nothing was within `timeout`."""
    global accepted
    ready, _, _ = select.select([server] + conns, [], [], timeout)
    if server in ready:
        c, _ = server.accept()
        conns.append(c)
        pending[c] = bytearray()
        accepted += 1
    for c in [c for c in conns if c in ready]:
        try:
            data = c.recv(65536)
        except OSError:
            data = b""
        if not data:
            conns.remove(c)
            c.close()
            continue
        received.extend(data)
        buf = pending[c]
        buf.extend(data)
        while len(buf) >= 4:
            n = struct.unpack(">I", buf[:4])[0]
            if len(buf) < 4 + n:
                break
            try:
                c.sendall(answer(bytes(buf[4 : 4 + n])))
            except OSError:
                pass
            del buf[: 4 + n]
    return bool(ready)


while True:
    ready, _, _ = select.select([server, sys.stdin] + conns, [], [])
    if sys.stdin in ready:
        line = sys.stdin.readline()
        # Whatever already arrived is counted before the report.
        while serve(0.2):
            pass
        print(json.dumps({"connections": accepted, "received": received.hex()}), flush=True)
        accepted, received = 0, bytearray()
        if not line:
            break
    else:
        serve(0)
