#!/usr/bin/env python3
"""Ask who has an IPv6 address with a Neighbor Solicitation on an interface
(the IPv6 arpprobe.py) and list every MAC that answers with a Neighbor
Advertisement within --timeout.  Prints JSON
{"ip": IP, "replies": [MAC, ...], "answered": bool, "sent": N}; exit 0 always
(usage: 2).

The solicitation goes to the target's solicited-node multicast group
(ff02::1:ffXX:XXXX, MAC 33:33:ff:XX:XX:XX), as a host resolving an address
sends it, or with --to-mac M as a unicast one to that MAC (a host checking a
cached entry).  Its source address is --src-ip (e.g. 2001:db8:2::1 on the
router's eth1), its source link-layer option the interface's MAC.  The MAC
listed for a reply is its target link-layer option, else its Ethernet source.
"""
import argparse
import json
import socket
import struct
import sys
import time

from common import csum, mac_str

ETH_P_IPV6 = 0x86DD


def icmp6_csum(src, dst, msg):
    pseudo = src + dst + struct.pack("!I3xB", len(msg), 58)
    return csum(pseudo + msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iface", required=True)
    ap.add_argument("--ip", required=True, help="target address")
    ap.add_argument("--src-ip", required=True)
    ap.add_argument("--to-mac", help="unicast the solicitation to this MAC")
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--count", type=int, default=1, help="solicitations to send (one per 0.2 s)")
    a = ap.parse_args()
    with open("/sys/class/net/%s/address" % a.iface) as f:
        my_mac = bytes(int(x, 16) for x in f.read().strip().split(":"))
    tip = socket.inet_pton(socket.AF_INET6, a.ip)
    sip = socket.inet_pton(socket.AF_INET6, a.src_ip)
    if a.to_mac:
        dmac = bytes(int(x, 16) for x in a.to_mac.split(":"))
        dip = tip
    else:
        dip = socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:0")[:13] + tip[13:]
        dmac = b"\x33\x33" + dip[12:]
    # NS: type 135, code 0, checksum, reserved, target, option 1 (source
    # link-layer address, 8 bytes)
    body = struct.pack("!BBHI", 135, 0, 0, 0) + tip + struct.pack("!BB", 1, 1) + my_mac
    body = body[:2] + struct.pack("!H", icmp6_csum(sip, dip, body)) + body[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + sip + dip
    frame = dmac + my_mac + struct.pack("!H", ETH_P_IPV6) + ip6 + body
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
    s.bind((a.iface, ETH_P_IPV6))
    replies = []
    sent = 0
    next_send = time.monotonic()
    deadline = time.monotonic() + a.timeout + 0.2 * max(a.count - 1, 0)
    while True:
        now = time.monotonic()
        if sent < a.count and now >= next_send:
            s.send(frame)
            sent += 1
            next_send = now + 0.2
        if now >= deadline:
            break
        left = min(deadline, next_send if sent < a.count else deadline) - now
        s.settimeout(max(left, 0.001))
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        # an NA (type 136) for our target: Ethernet 14 + IPv6 40 + NA 24
        if addr[2] == 4 or len(data) < 78 or data[20] != 58 or data[54] != 136:
            continue
        if data[62:78] != tip:
            continue
        mac = mac_str(data[6:12])
        opt = 78
        while opt + 8 <= len(data) and data[opt + 1]:
            if data[opt] == 2:  # target link-layer address
                mac = mac_str(data[opt + 2:opt + 8])
            opt += data[opt + 1] * 8
        if mac not in replies:
            replies.append(mac)
    print(json.dumps({"ip": a.ip, "replies": replies, "answered": bool(replies), "sent": sent}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
