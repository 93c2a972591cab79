#!/usr/bin/env python3
"""Wait for UDP datagrams on --port (IPv4 or IPv6: --bind, default ::, one
dual-stack socket) for at most --seconds or until --count arrived.  Prints JSON
{"received": N, "from": {"ADDR": N}, "payloads": [first 20 as text]};
--ready-file is written once bound.
"""
import argparse
import json
import socket
import sys

from common import readable, unmap


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", default="::")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    fam = socket.AF_INET6 if ":" in a.bind else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((a.bind, a.port))
    out = {"received": 0, "from": {}, "payloads": []}
    for _ in readable(s, a.seconds, a.ready_file):
        data, peer = s.recvfrom(65535)
        who = unmap(peer[0])
        out["received"] += 1
        out["from"][who] = out["from"].get(who, 0) + 1
        if len(out["payloads"]) < 20:
            out["payloads"].append(data.decode("utf-8", "replace"))
        if out["received"] >= a.count:
            break
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
