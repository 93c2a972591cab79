#!/usr/bin/env python3
"""Large UDP datagrams against a udpecho.py service: N datagrams of --size
bytes (random payload), one at a time, each from a new connected socket (its
own source port; only replies from ADDR:PORT are delivered), each waiting for
the echo b"NAME:" + payload.  A datagram bigger than the path MTU leaves the
client fragmented by its kernel, and the echo, as big, comes back fragmented
too; a matching echo means one server reassembled the whole datagram.

--pmtudisc sets IP_MTU_DISCOVER on the sockets: "want" (Linux default: DF on
unfragmented packets, fragments have none), "dont" (never DF), "do" (DF, never
fragment locally: a datagram above the path MTU fails with EMSGSIZE).

Prints one JSON line
  {"ok": N, "failed": N, "per_server": {NAME: N}, "errors": {REASON: N},
   "size": S, "elapsed": S}
"""
import argparse
import errno
import json
import os
import socket
import sys
import time

IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
MODES = {"dont": 0, "want": 1, "do": 2}  # the same values for IPV6_MTU_DISCOVER


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--size", type=int, default=3000)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=2.0, help="per datagram, seconds")
    ap.add_argument("--pmtudisc", choices=sorted(MODES), default="want")
    ap.add_argument("--interval", type=float, default=0.02)
    a = ap.parse_args()
    if not 1 <= a.size <= 60000 or not 0 <= a.count <= 1000 or a.timeout <= 0:
        ap.error("--size 1..60000, --count 0..1000, --timeout > 0")
    ok = failed = 0
    per_server, errors = {}, {}
    start = time.monotonic()

    def err(reason):
        nonlocal failed
        failed += 1
        errors[reason] = errors.get(reason, 0) + 1

    for i in range(a.count):
        payload = os.urandom(a.size)
        six = ":" in a.addr  # IPv6: the sending host fragments (routers never do)
        s = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if six:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, MODES[a.pmtudisc])
            else:
                s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, MODES[a.pmtudisc])
            s.settimeout(a.timeout)
            s.connect((a.addr, a.port))
            s.send(payload)
            deadline = time.monotonic() + a.timeout
            while True:
                s.settimeout(max(deadline - time.monotonic(), 0.001))
                data = s.recv(65535)
                name, sep, echoed = data.partition(b":")
                if sep and echoed == payload:
                    ok += 1
                    n = name.decode("utf-8", "replace")
                    per_server[n] = per_server.get(n, 0) + 1
                    break
                # a stray or corrupt reply: keep waiting for the right one
                errors["bad_reply_seen"] = errors.get("bad_reply_seen", 0) + 1
        except socket.timeout:
            err("timeout")
        except OSError as e:
            err(errno.errorcode.get(e.errno, type(e).__name__))
        finally:
            s.close()
        if a.interval:
            time.sleep(a.interval)
    print(json.dumps({"ok": ok, "failed": failed, "per_server": dict(sorted(per_server.items())),
                      "errors": errors, "size": a.size, "elapsed": round(time.monotonic() - start, 3)}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
