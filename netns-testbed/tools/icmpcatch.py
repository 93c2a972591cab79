#!/usr/bin/env python3
"""Collect the ICMP errors this host's IP stack receives, for --seconds, with a
raw IPv4 ICMP socket (it sees every ICMP packet delivered locally: to an
address on lo such as a DR/TUN VIP, to the host's own address as in NAT, and
packets re-injected by a userspace IP-in-IP decapsulator).  Prints JSON

  {"errors": N, "by_key": {"SRC>DST TYPE/CODE quote QSRC:QSPORT>QDST:QDPORT/PROTO": N},
   "mtus": {MTU: N}, "echo_requests": N, "other": N}

--ready-file is created once the socket is open; SIGTERM ends the capture
early (the summary is still printed).
"""
import argparse
import json
import socket
import struct
import sys

from common import readable

ERROR_TYPES = (3, 4, 5, 11, 12)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    if not 0 < a.seconds <= 3600:
        ap.error("--seconds must be in (0, 3600]")
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except OSError as e:
        sys.exit("icmpcatch.py: cannot open a raw ICMP socket: %s" % e)
    out = {"errors": 0, "by_key": {}, "mtus": {}, "echo_requests": 0, "other": 0}
    for _ in readable(s, a.seconds, a.ready_file):
        data = s.recv(65535)
        if len(data) < 28:
            continue
        ihl = (data[0] & 0x0F) * 4
        src, dst = socket.inet_ntoa(data[12:16]), socket.inet_ntoa(data[16:20])
        icmp = data[ihl:]
        t, c = icmp[0], icmp[1]
        if t == 8:
            out["echo_requests"] += 1
            continue
        if t not in ERROR_TYPES or len(icmp) < 8 + 20 + 4:
            out["other"] += 1
            continue
        q = icmp[8:]
        qihl = (q[0] & 0x0F) * 4
        qproto = q[9]
        qsrc, qdst = socket.inet_ntoa(q[12:16]), socket.inet_ntoa(q[16:20])
        qs = qd = 0
        if len(q) >= qihl + 4:
            qs, qd = struct.unpack("!HH", q[qihl:qihl + 4])
        pname = {6: "tcp", 17: "udp"}.get(qproto, str(qproto))
        key = "%s>%s %d/%d quote %s:%d>%s:%d/%s" % (src, dst, t, c, qsrc, qs, qdst, qd, pname)
        out["errors"] += 1
        out["by_key"][key] = out["by_key"].get(key, 0) + 1
        if t == 3 and c == 4:
            mtu = str(struct.unpack("!H", icmp[6:8])[0])
            out["mtus"][mtu] = out["mtus"].get(mtu, 0) + 1
    s.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
