#!/usr/bin/env python3
"""Ask who has an IPv4 address with a broadcast ARP request on an interface and
list every MAC that answers within --timeout.  Prints JSON
{"ip": IP, "replies": [MAC, ...], "answered": bool}; exit 0 always (usage: 2).
The request's sender protocol address is --src-ip (e.g. 198.18.0.1 on the
router's eth1); its sender MAC is the interface's own.
"""
import argparse
import json
import socket
import struct
import sys

from common import mac_str, probe

ETH_P_ARP = 0x0806


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iface", required=True)
    ap.add_argument("--ip", required=True)
    ap.add_argument("--src-ip", required=True)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--count", type=int, default=1, help="requests to send (one per 0.2 s)")
    a = ap.parse_args()
    with open("/sys/class/net/%s/address" % a.iface) as f:
        my_mac = bytes(int(x, 16) for x in f.read().strip().split(":"))
    tip, sip = socket.inet_aton(a.ip), socket.inet_aton(a.src_ip)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    s.bind((a.iface, ETH_P_ARP))
    req = b"\xff" * 6 + my_mac + struct.pack("!H", ETH_P_ARP) + \
        struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + my_mac + sip + b"\0" * 6 + tip
    replies = []
    for data, addr in probe(s, req, a.count, a.timeout):
        if addr[2] == 4 or len(data) < 42:
            continue
        op = struct.unpack("!H", data[20:22])[0]
        if op == 2 and data[28:32] == tip:
            m = mac_str(data[22:28])
            if m not in replies:
                replies.append(m)
    print(json.dumps({"ip": a.ip, "replies": replies, "answered": bool(replies)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
