#!/usr/bin/env python3
"""Ask who has an IPv6 address with a Neighbor Solicitation on an interface
and list every answer within --timeout: the IPv6 twin of arpprobe.py.  By
default the solicitation goes to the target's solicited-node multicast group
(ff02::1:ffXX:XXXX, MAC 33:33:ff:XX:XX:XX), as a host resolving an address
sends it; --unicast MAC sends it to the target address itself at MAC, as a
host confirming reachability of a cached entry does.  The source is --src-ip
(an address of the interface) with the interface's MAC in the source
link-layer option.  Prints JSON {"ip": IP, "replies": [MAC, ...], "flags":
{MAC: "SO"...}, "answered": bool} where MAC is the advertisement's target
link-layer address (else its Ethernet source); exit 0 always (usage: 2).
"""
import argparse
import json
import socket
import struct
import sys

from common import csum, mac_str, probe

ETH_P_IPV6 = 0x86DD


def checksum(src, dst, msg):
    return csum(src + dst + struct.pack("!I3xB", len(msg), 58) + msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iface", required=True)
    ap.add_argument("--ip", required=True, help="the target address")
    ap.add_argument("--src-ip", required=True)
    ap.add_argument("--unicast", metavar="MAC", help="send to the target itself at MAC")
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--count", type=int, default=1, help="solicitations to send (one per 0.2 s)")
    a = ap.parse_args()
    with open("/sys/class/net/%s/address" % a.iface) as f:
        my_mac = bytes(int(x, 16) for x in f.read().strip().split(":"))
    tip = socket.inet_pton(socket.AF_INET6, a.ip)
    sip = socket.inet_pton(socket.AF_INET6, a.src_ip)
    if a.unicast:
        dip, dmac = tip, bytes(int(x, 16) for x in a.unicast.split(":"))
    else:
        dip = bytes.fromhex("ff0200000000000000000001ff") + tip[13:]
        dmac = b"\x33\x33" + dip[12:]
    body = struct.pack("!BBHI", 135, 0, 0, 0) + tip + bytes([1, 1]) + my_mac
    body = body[:2] + struct.pack("!H", checksum(sip, dip, body)) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + sip + dip
    req = dmac + my_mac + struct.pack("!H", ETH_P_IPV6) + ip6 + body
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
    s.bind((a.iface, ETH_P_IPV6))
    replies, flags = [], {}
    for data, addr in probe(s, req, a.count, a.timeout):
        # Our own frame (PACKET_OUTGOING) and anything short of an NA.
        if addr[2] == 4 or len(data) < 78 or data[20] != 58 or data[54] != 136:
            continue
        if data[62:78] != tip:
            continue
        m = mac_str(data[6:12])
        opts = data[78:]
        while len(opts) >= 8 and opts[1]:
            if opts[0] == 2:
                m = mac_str(opts[2:8])
                break
            opts = opts[opts[1] * 8:]
        if m not in replies:
            replies.append(m)
            flags[m] = ("R" if data[58] & 0x80 else "") + ("S" if data[58] & 0x40 else "") + \
                ("O" if data[58] & 0x20 else "")
    print(json.dumps({"ip": a.ip, "replies": replies, "flags": flags, "answered": bool(replies)}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
