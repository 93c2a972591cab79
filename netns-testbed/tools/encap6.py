#!/usr/bin/env python3
"""Send IPv6-in-IPv6 (next header 41) packets as a TUN-mode director would:
each an inner IPv6 UDP datagram --src [--sport] -> --dst --dport (payload
"encap6 I"), wrapped by the kernel in an outer IPv6 header to --to (a real
server's own address).  Tests a real server's decapsulation (ulvs-decap)
without a director.  Prints JSON {"sent": N}; exit 0 (usage: 2).
"""
import argparse
import json
import socket
import struct
import sys
import time

from common import csum


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--to", required=True, help="outer destination (the real server)")
    ap.add_argument("--src", required=True, help="inner source (the client)")
    ap.add_argument("--dst", required=True, help="inner destination (the VIP)")
    ap.add_argument("--sport", type=int, default=40053)
    ap.add_argument("--dport", type=int, default=53)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--interval", type=float, default=0.05)
    a = ap.parse_args()
    if not 0 < a.count <= 1000:
        ap.error("--count 1..1000")
    src = socket.inet_pton(socket.AF_INET6, a.src)
    dst = socket.inet_pton(socket.AF_INET6, a.dst)
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 41)
    for i in range(a.count):
        payload = b"encap6 %d" % i
        udp = struct.pack("!HHHH", a.sport, a.dport, 8 + len(payload), 0) + payload
        c = csum(src + dst + struct.pack("!I3xB", len(udp), 17) + udp) or 0xFFFF
        udp = udp[:6] + struct.pack("!H", c) + udp[8:]
        inner = struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + src + dst + udp
        s.sendto(inner, (a.to, 0))
        time.sleep(a.interval)
    print(json.dumps({"sent": a.count}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
