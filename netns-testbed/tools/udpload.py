#!/usr/bin/env python3
"""Bounded UDP load for the ulvs test bed: N datagrams, each from a new socket
(so each has its own source port; all sockets stay open until the end, so the
ports are distinct), each waiting for its echo b"NAME:" + payload from the
address it was sent to.  Prints one JSON line:

  {"ok": N, "failed": N, "per_server": {NAME: N}, "errors": {REASON: N},
   "distinct_source_ports": N, "elapsed": S}

--addr may be an IPv6 address.
"""
import argparse
import json
import os
import resource
import select
import socket
import sys
import time

from common import family


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=2.0, help="per datagram, seconds")
    ap.add_argument("--max-seconds", type=float, default=60.0)
    a = ap.parse_args()
    if not 0 <= a.count <= 20000 or a.concurrency < 1 or a.timeout <= 0 or a.max_seconds <= 0:
        ap.error("--count 0..20000, --concurrency >= 1, --timeout > 0, --max-seconds > 0")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.count + 64
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        except (ValueError, OSError):
            pass

    nonce = os.urandom(4).hex().encode()
    ok = failed = 0
    per_server, errors = {}, {}
    ports = set()
    keep = []  # every socket stays open until the end: distinct source ports
    inflight = {}  # fd -> (sock, payload, sent_at)
    start = time.monotonic()
    deadline = start + a.max_seconds
    nxt = 0

    def err(reason):
        nonlocal failed
        failed += 1
        errors[reason] = errors.get(reason, 0) + 1

    while nxt < a.count or inflight:
        now = time.monotonic()
        while nxt < a.count and len(inflight) < a.concurrency and now < deadline:
            payload = b"ulvs-udpload %s %d" % (nonce, nxt)
            nxt += 1
            try:
                s = socket.socket(family(a.addr), socket.SOCK_DGRAM)
            except OSError as e:
                err(type(e).__name__)
                continue
            keep.append(s)
            try:
                s.connect((a.addr, a.port))
                ports.add(s.getsockname()[1])
                s.send(payload)
            except OSError as e:
                err(type(e).__name__)
                continue
            inflight[s.fileno()] = (s, payload, time.monotonic())
        if not inflight:
            if nxt < a.count and time.monotonic() >= deadline:
                break
            continue
        r, _, _ = select.select(list(inflight), [], [], 0.05)
        for fd in r:
            s, payload, _ = inflight.pop(fd)
            try:
                data = s.recv(65535)
            except ConnectionRefusedError:
                err("refused")
                continue
            except OSError as e:
                err(type(e).__name__)
                continue
            name, sep, echoed = data.partition(b":")
            if sep and echoed == payload:
                ok += 1
                n = name.decode("utf-8", "replace")
                per_server[n] = per_server.get(n, 0) + 1
            else:
                err("bad_reply")
        now = time.monotonic()
        for fd in [fd for fd, (_, _, t) in inflight.items() if now - t >= a.timeout or now >= deadline + a.timeout]:
            inflight.pop(fd)
            err("timeout")
    if nxt < a.count:
        errors["max_seconds"] = errors.get("max_seconds", 0) + a.count - nxt
        failed += a.count - nxt
    for s in keep:
        s.close()
    print(json.dumps({"ok": ok, "failed": failed, "per_server": dict(sorted(per_server.items())),
                      "errors": errors, "distinct_source_ports": len(ports),
                      "elapsed": round(time.monotonic() - start, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
