#!/usr/bin/env python3
"""ICMP for the ulvs test bed, over raw IPv4 sockets (stdlib only).

  icmpsend.py error --dst VIP --quote-src VIP --quote-dst CLIENT
                    --quote-sport 80 --quote-dport CPORT [--proto tcp|udp]
                    [--type 3] [--code 4] [--mtu 1400] [--count 1] [--interval 0.05]
      Send ICMP error(s) to --dst that quote a packet
      quote-src:quote-sport -> quote-dst:quote-dport (an IPv4 header plus the
      first 8 bytes of its TCP/UDP header, as RFC 792 asks).  Type 3 code 4 is
      "fragmentation needed" (with --mtu as the next-hop MTU); type 3 code 3
      "port unreachable"; type 11 code 0 "time exceeded".  The kernel writes
      the outer IPv4 header (source: the routing choice of this namespace).
      Prints JSON {"sent": N, "type": T, "code": C, "quote": "..."}.

  icmpsend.py ping --dst VIP [--count 5] [--timeout 1] [--size 56]
      Echo requests with a random identifier; every echo reply carrying that
      identifier is counted per source address.  Prints JSON
      {"sent": N, "replies": N, "sources": {IP: N}, "ok": bool,
       "bad_payload": N} (ok: every request answered, and only by --dst).

Exit status 0 unless the usage is wrong or a socket cannot be opened.
"""
import argparse
import json
import os
import random
import select
import socket
import struct
import sys
import time

from common import csum


def ip_arg(s):
    try:
        socket.inet_aton(s)
    except OSError:
        raise argparse.ArgumentTypeError("bad IPv4 address %r" % s)
    return s


def port_arg(s):
    v = int(s)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError("port out of range: %r" % s)
    return v


def quoted_packet(a):
    """The packet the error complains about: IPv4 header + 8 bytes of L4."""
    proto = 6 if a.proto == "tcp" else 17
    if proto == 6:
        l4 = struct.pack("!HHI", a.quote_sport, a.quote_dport, a.quote_seq)
        total = a.quote_len
    else:
        udp_len = max(a.quote_len - 20, 8)
        l4 = struct.pack("!HHHH", a.quote_sport, a.quote_dport, udp_len, 0)
        total = udp_len + 20
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, a.quote_id, 0x4000, 63, proto, 0,
                      socket.inet_aton(a.quote_src), socket.inet_aton(a.quote_dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + l4


def do_error(a):
    quote = quoted_packet(a)
    if a.type == 3 and a.code == 4:
        rest = struct.pack("!HH", 0, a.mtu)
    else:
        rest = b"\0\0\0\0"
    msg = struct.pack("!BBH", a.type, a.code, 0) + rest + quote
    msg = msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except OSError as e:
        sys.exit("icmpsend.py: cannot open a raw ICMP socket: %s" % e)
    sent, errors = 0, {}
    for i in range(a.count):
        try:
            s.sendto(msg, (a.dst, 0))
            sent += 1
        except OSError as e:
            k = e.strerror or str(e)
            errors[k] = errors.get(k, 0) + 1
        if a.interval and i + 1 < a.count:
            time.sleep(a.interval)
    s.close()
    out = {"sent": sent, "type": a.type, "code": a.code, "dst": a.dst,
           "quote": "%s:%d>%s:%d/%s" % (a.quote_src, a.quote_sport, a.quote_dst, a.quote_dport, a.proto)}
    if errors:
        out["errors"] = errors
    print(json.dumps(out), flush=True)
    return 0


def do_ping(a):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    except OSError as e:
        sys.exit("icmpsend.py: cannot open a raw ICMP socket: %s" % e)
    ident = random.randrange(1, 0xFFFF)
    payloads = {}
    sources = {}
    replies = bad = sent = 0
    answered = set()
    for seq in range(1, a.count + 1):
        payload = os.urandom(a.size)
        payloads[seq] = payload
        msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
        msg = msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
        try:
            s.sendto(msg, (a.dst, 0))
            sent += 1
        except OSError:
            continue
        deadline = time.monotonic() + a.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or seq in answered:
                break
            r, _, _ = select.select([s], [], [], left)
            if not r:
                break
            data, addr = s.recvfrom(65535)
            ihl = (data[0] & 0x0F) * 4
            icmp = data[ihl:]
            if len(icmp) < 8 or icmp[0] != 0:
                continue
            rid, rseq = struct.unpack("!HH", icmp[4:8])
            if rid != ident:
                continue
            replies += 1
            src = socket.inet_ntoa(data[12:16])
            sources[src] = sources.get(src, 0) + 1
            if rseq in payloads and icmp[8:] == payloads[rseq] and csum(icmp) == 0:
                answered.add(rseq)
            else:
                bad += 1
    s.close()
    ok = sent == a.count and len(answered) == a.count and list(sources) == [a.dst] and bad == 0
    print(json.dumps({"sent": sent, "replies": replies, "answered": len(answered), "sources": sources,
                      "bad_payload": bad, "ok": ok}), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("error", help="send ICMP errors quoting a packet")
    e.add_argument("--dst", type=ip_arg, required=True)
    e.add_argument("--quote-src", type=ip_arg, required=True)
    e.add_argument("--quote-dst", type=ip_arg, required=True)
    e.add_argument("--quote-sport", type=port_arg, required=True)
    e.add_argument("--quote-dport", type=port_arg, required=True)
    e.add_argument("--quote-seq", type=int, default=1)
    e.add_argument("--quote-id", type=int, default=0x1234)
    e.add_argument("--quote-len", type=int, default=1500, help="total length of the quoted packet")
    e.add_argument("--proto", choices=["tcp", "udp"], default="tcp")
    e.add_argument("--type", type=int, default=3)
    e.add_argument("--code", type=int, default=4)
    e.add_argument("--mtu", type=int, default=1400)
    e.add_argument("--count", type=int, default=1)
    e.add_argument("--interval", type=float, default=0.05)
    p = sub.add_parser("ping", help="echo requests; count the replies per source")
    p.add_argument("--dst", type=ip_arg, required=True)
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--size", type=int, default=56)
    a = ap.parse_args()
    if a.cmd == "error":
        if not 0 < a.count <= 1000 or a.type not in (3, 4, 5, 11, 12):
            ap.error("--count 1..1000; --type one of 3, 4, 5, 11, 12 (ICMP errors)")
        return do_error(a)
    if not 0 < a.count <= 1000 or not 0 <= a.size <= 1400 or a.timeout <= 0:
        ap.error("--count 1..1000, --size 0..1400, --timeout > 0")
    return do_ping(a)


if __name__ == "__main__":
    sys.exit(main())
