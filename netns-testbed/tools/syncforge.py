#!/usr/bin/env python3
"""Forge ulvs flow-sync datagrams (docs/sync-protocol.md, version 1), stdlib only.

Written from the protocol document alone, with Python's hmac/hashlib as the
independent oracle for the MAC: a datagram this tool builds "valid" is one
the document says a director must accept, so a director that counts it as
bad_mac (or malformed) disagrees with its own specification.

  syncforge.py --to 198.18.0.2:8848 --bind 198.18.0.3:8850 --key-file K \\
      --type flows --sender 3232235523 --boot 1 --seq 1 \\
      --record client=198.18.1.2:40000,vip=198.18.100.1:80,server=198.18.0.11,state=established \\
      [--wrong-key] [--no-mac] [--times N] [--version 1]

--record (repeatable, 0..19 for --type flows) takes comma-separated
key=value: client=IP:PORT, vip=IP:PORT, server=IP[:PORT] (the port only for
a NAT server with a port), state=syn|established|closing|udp|other,
kind=new|change|copy, proto=tcp|udp|N, idle=MS, creator=ID (default
--sender).

--times N sends the identical bytes N times (0.05 s apart): a replay.
--wrong-key MACs with a key that differs from the file's in one bit.
--no-mac sends no MAC (flag bit 0 clear). --bind sets the source address
(a peer is recognised by its source IP and port).

--verify-hex HEX checks a captured datagram instead of sending: prints its
header fields and whether its MAC verifies under --key-file.

Prints one JSON line {"sent": N, "length": L, "count": C, "seq": S,
"boot": B, "mac": HEX|null}.
"""
import argparse
import hashlib
import hmac
import ipaddress
import json
import socket
import struct
import sys
import time

MAGIC = b"ULVS"
TYPES = {"flows": 1, "bulk-request": 2, "bulk-done": 3}
STATES = {"syn": 1, "established": 2, "closing": 3, "udp": 4, "other": 5}
KINDS = {"new": 0, "change": 1, "copy": 2}
PROTOS = {"tcp": 6, "udp": 17, "icmp": 1}
HEADER = ">4sBBBBIHHQQ"   # magic, version, type, flags, reserved, sender, count, reserved, boot, seq
RECORD = ">BBBB16s16s16sHHHII2x"
assert struct.calcsize(HEADER) == 32 and struct.calcsize(RECORD) == 68


def addr16(ip):
    a = ipaddress.ip_address(ip)
    if a.version == 4:
        return a.packed.ljust(16, b"\0"), 4
    return a.packed, 6


def hostport(s, need_port=True):
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif s.count(":") == 1:
        host, port = s.split(":")
    else:
        host, port = s, ""
    if need_port and not port:
        raise ValueError("%s: needs :PORT" % s)
    return host, int(port) if port else 0


def record(spec, sender):
    kv = dict(p.split("=", 1) for p in spec.split(","))
    unknown = set(kv) - {"client", "vip", "server", "state", "kind", "proto", "idle", "creator"}
    if unknown:
        raise ValueError("unknown record keys %s" % sorted(unknown))
    chost, cport = hostport(kv["client"])
    vhost, vport = hostport(kv["vip"])
    shost, sport = hostport(kv["server"], need_port=False)
    c, fam = addr16(chost)
    v, fam2 = addr16(vhost)
    s, fam3 = addr16(shost)
    if not fam == fam2 == fam3:
        raise ValueError("client, vip and server must be of one family")
    proto = kv.get("proto", "tcp")
    proto = PROTOS[proto] if proto in PROTOS else int(proto)
    return struct.pack(RECORD, fam, proto, STATES[kv.get("state", "established")], KINDS[kv.get("kind", "new")],
                       c, v, s, cport, vport, sport, int(kv.get("idle", 0)), int(kv.get("creator", sender)))


def build(a, key):
    recs = [record(r, a.sender) for r in a.record]
    flags = 0 if a.no_mac else 0x01
    hdr = struct.pack(HEADER, MAGIC, a.version, TYPES[a.type], flags, 0, a.sender, len(recs), 0, a.boot, a.seq)
    body = hdr + b"".join(recs)
    if a.no_mac:
        return body, None
    if a.wrong_key:
        key = bytes([key[0] ^ 0x01]) + key[1:]
    mac = hmac.new(key, body, hashlib.sha256).digest()
    return body + mac, mac


def verify(hexs, key):
    d = bytes.fromhex(hexs)
    magic, ver, typ, flags, _, sender, count, _, boot, seq = struct.unpack(HEADER, d[:32])
    body_len = 32 + 68 * count
    out = {"magic": magic.decode("ascii", "replace"), "version": ver, "type": typ, "flags": flags,
           "sender": sender, "count": count, "boot": boot, "seq": seq, "length": len(d),
           "length_ok": len(d) == body_len + (32 if flags & 1 else 0)}
    if flags & 1 and key is not None:
        want = hmac.new(key, d[:body_len], hashlib.sha256).digest()
        out["mac_ok"] = hmac.compare_digest(want, d[body_len:body_len + 32])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--to")
    ap.add_argument("--bind", help="IP:PORT to send from")
    ap.add_argument("--key-file")
    ap.add_argument("--type", choices=sorted(TYPES), default="flows")
    ap.add_argument("--version", type=int, default=1)
    ap.add_argument("--sender", type=int, default=0)
    ap.add_argument("--boot", type=int, default=1)
    ap.add_argument("--seq", type=int, default=1)
    ap.add_argument("--record", action="append", default=[])
    ap.add_argument("--wrong-key", action="store_true")
    ap.add_argument("--no-mac", action="store_true")
    ap.add_argument("--times", type=int, default=1)
    ap.add_argument("--verify-hex")
    a = ap.parse_args()
    key = open(a.key_file, "rb").read() if a.key_file else None
    if a.verify_hex:
        print(json.dumps(verify(a.verify_hex, key)))
        return 0
    if not a.to or not 1 <= a.times <= 100 or len(a.record) > 19:
        ap.error("--to is required; --times 1..100; at most 19 --record")
    if key is None and not a.no_mac:
        ap.error("--key-file is required unless --no-mac")
    try:
        dgram, mac = build(a, key)
    except (ValueError, KeyError) as e:
        ap.error("bad --record: %s" % e)
    host, port = hostport(a.to)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if a.bind:
        bh, bp = hostport(a.bind)
        s.bind((bh, bp))
    for i in range(a.times):
        s.sendto(dgram, (host, port))
        if i + 1 < a.times:
            time.sleep(0.05)
    print(json.dumps({"sent": a.times, "length": len(dgram), "count": len(a.record), "seq": a.seq,
                      "boot": a.boot, "mac": mac.hex() if mac else None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
