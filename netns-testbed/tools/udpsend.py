#!/usr/bin/env python3
"""Send UDP datagrams with a chosen source port through the kernel's routing
(a raw IPv4 socket with IP_HDRINCL; stdlib only).  Used to forge a "reply"
that no flow explains, e.g. from a NAT real server's namespace (whose default
gateway is the director) to the client:

  udpsend.py --dst 198.18.1.2 --dport 40000 --sport 5300 [--src IP] [--count 5]

The source address defaults to the one the kernel would pick for --dst.  The
UDP checksum is correct.  Prints JSON {"sent": N, "src": IP, "dst": IP,
"sport": P, "dport": P}.
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
    ap.add_argument("--dst", required=True)
    ap.add_argument("--dport", type=int, required=True)
    ap.add_argument("--sport", type=int, required=True)
    ap.add_argument("--src")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--payload", default="ulvs-udpsend stray datagram")
    a = ap.parse_args()
    if not 0 < a.count <= 1000 or not 0 <= a.sport <= 65535 or not 0 < a.dport <= 65535:
        ap.error("--count 1..1000, ports 0..65535")
    if a.src is None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect((a.dst, a.dport))
        a.src = probe.getsockname()[0]
        probe.close()
    src, dst = socket.inet_aton(a.src), socket.inet_aton(a.dst)
    body = a.payload.encode()
    ulen = 8 + len(body)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, ulen)
    udp = struct.pack("!HHHH", a.sport, a.dport, ulen, 0) + body
    c = csum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except OSError as e:
        sys.exit("udpsend.py: cannot open a raw socket: %s" % e)
    sent = 0
    for i in range(a.count):
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0x4000 + i, 0, 64, 17, 0, src, dst)
        hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
        try:
            s.sendto(hdr + udp, (a.dst, 0))
            sent += 1
        except OSError as e:
            sys.stderr.write("udpsend.py: %s\n" % e)
        if a.interval and i + 1 < a.count:
            time.sleep(a.interval)
    s.close()
    print(json.dumps({"sent": sent, "src": a.src, "dst": a.dst, "sport": a.sport, "dport": a.dport}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
