#!/usr/bin/env python3
"""Bounded AF_PACKET capture on one interface with a per-packet-kind summary
(an extension of sniff.py for the nat/tun/icmp/frag scenarios).  For each
direction ("incoming", "outgoing") it reports:

  frames     all frames;  max_len  the longest frame
  icmp       {"SRCMAC SRC>DST TYPE/CODE": N}  ICMP messages; those inside
             IP-in-IP are keyed "ipip SRCMAC SRC>DST TYPE/CODE" (inner addresses)
  tcp_rst    {"SRCMAC SRC": N}  TCP segments with RST (also inside IP-in-IP)
  udp        {"SRCMAC SRC:SPORT>DST:DPORT": N}  UDP datagrams (unfragmented or
             first fragments), only those with --udp-port as either port when given
  fragments  {"SRCMAC SRC>DST": N}  IPv4 fragments (MF set or offset != 0)
  ipip       {"SRCMAC OUTERSRC>OUTERDST": N}  IP-in-IP packets
  ipv4_src   {"SRCMAC SRC": N}  IPv4 packets by source
IPv6 (the dual-stack bed) goes to maps of its own, keyed the same way with
IPv6 addresses (UDP as "SRCMAC [SRC]:SPORT>[DST]:DPORT"):
  icmp6      ICMPv6 other than neighbour discovery/MLD (also inside
             IPv6-in-IPv6, keyed "ip6ip6 ...");  ndp  NS/NA/RS/RA/MLD by MAC
  ip6ip6     {"SRCMAC OUTERSRC>OUTERDST": N}  IPv6-in-IPv6 packets
  fragments6 {"SRCMAC SRC>DST": N}  packets with a fragment header
  ipv6_src   {"SRCMAC SRC": N}  IPv6 packets by source
  tcp_rst and udp take IPv6 segments and datagrams too.

Each map keeps at most 400 keys (the rest is summed under "other").
--ready-file is created once the socket is bound; SIGTERM ends the capture
early (the summary is still printed).
"""
import argparse
import json
import socket
import struct
import sys

from common import mac_str, readable

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_KEYS = 400


def new_dir():
    return {"frames": 0, "max_len": 0, "icmp": {}, "tcp_rst": {}, "udp": {}, "fragments": {},
            "ipip": {}, "ipv4_src": {}, "icmp6": {}, "ndp": {}, "ip6ip6": {}, "fragments6": {},
            "ipv6_src": {}}


NDP_MLD = {130, 131, 132, 133, 134, 135, 136, 137, 143}
EXT = {0, 43, 60}  # hop-by-hop, routing, destination options


def ipv6(d, data, off, mac, udp_port, prefix=""):
    if len(data) < off + 40 or data[off] >> 4 != 6:
        return
    src = socket.inet_ntop(socket.AF_INET6, data[off + 8:off + 24])
    dst = socket.inet_ntop(socket.AF_INET6, data[off + 24:off + 40])
    if not prefix:
        inc(d["ipv6_src"], "%s %s" % (mac, src))
    nh, l4 = data[off + 6], off + 40
    for _ in range(8):
        if nh not in EXT or len(data) < l4 + 8:
            break
        nh, l4 = data[l4], l4 + (data[l4 + 1] + 1) * 8
    if nh == 44 and len(data) >= l4 + 8:
        inc(d["fragments6"], "%s%s %s>%s" % (prefix, mac, src, dst))
        if struct.unpack("!H", data[l4 + 2:l4 + 4])[0] >> 3:
            return  # a later fragment: no transport header
        nh, l4 = data[l4], l4 + 8
    if nh == 41 and not prefix:
        inc(d["ip6ip6"], "%s %s>%s" % (mac, src, dst))
        ipv6(d, data, l4, mac, udp_port, prefix="ip6ip6 ")
    elif nh == 58 and len(data) >= l4 + 2:
        if data[l4] in NDP_MLD:
            inc(d["ndp"], "%s%s" % (prefix, mac))
        else:
            inc(d["icmp6"], "%s%s %s>%s %d/%d" % (prefix, mac, src, dst, data[l4], data[l4 + 1]))
    elif nh == 6 and len(data) >= l4 + 14 and data[l4 + 13] & 0x04:
        inc(d["tcp_rst"], "%s%s %s" % (prefix, mac, src))
    elif nh == 17 and len(data) >= l4 + 4:
        sp, dp = struct.unpack("!HH", data[l4:l4 + 4])
        if udp_port is None or udp_port in (sp, dp):
            inc(d["udp"], "%s%s [%s]:%d>[%s]:%d" % (prefix, mac, src, sp, dst, dp))


def inc(d, k):
    if k not in d and len(d) >= MAX_KEYS:
        k = "other"
    d[k] = d.get(k, 0) + 1


def ipv4(d, data, off, mac, udp_port, prefix=""):
    if len(data) < off + 20 or data[off] >> 4 != 4:
        return
    ihl = (data[off] & 0x0F) * 4
    proto = data[off + 9]
    src, dst = socket.inet_ntoa(data[off + 12:off + 16]), socket.inet_ntoa(data[off + 16:off + 20])
    ff = struct.unpack("!H", data[off + 6:off + 8])[0]
    frag_off, mf = ff & 0x1FFF, ff & 0x2000
    if not prefix:
        inc(d["ipv4_src"], "%s %s" % (mac, src))
    if frag_off or mf:
        inc(d["fragments"], "%s%s %s>%s" % (prefix, mac, src, dst))
    if frag_off:
        return
    l4 = off + ihl
    if proto == 4 and not prefix:
        inc(d["ipip"], "%s %s>%s" % (mac, src, dst))
        ipv4(d, data, l4, mac, udp_port, prefix="ipip ")
    elif proto == 1 and len(data) >= l4 + 2:
        inc(d["icmp"], "%s%s %s>%s %d/%d" % (prefix, mac, src, dst, data[l4], data[l4 + 1]))
    elif proto == 6 and len(data) >= l4 + 14 and data[l4 + 13] & 0x04:
        inc(d["tcp_rst"], "%s%s %s" % (prefix, mac, src))
    elif proto == 17 and len(data) >= l4 + 4:
        sp, dp = struct.unpack("!HH", data[l4:l4 + 4])
        if udp_port is None or udp_port in (sp, dp):
            inc(d["udp"], "%s%s %s:%d>%s:%d" % (prefix, mac, src, sp, dst, dp))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iface", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--udp-port", type=int)
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    if not 0 < a.seconds <= 3600:
        ap.error("--seconds must be in (0, 3600]")
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        s.bind((a.iface, ETH_P_ALL))
    except OSError as e:
        sys.exit("sniffx.py: cannot capture on %s: %s" % (a.iface, e))
    out = {"iface": a.iface, "seconds": a.seconds, "incoming": new_dir(), "outgoing": new_dir()}
    for _ in readable(s, a.seconds, a.ready_file):
        try:
            data, addr = s.recvfrom(262144)
        except InterruptedError:
            continue
        d = out["outgoing" if addr[2] == PACKET_OUTGOING else "incoming"]
        d["frames"] += 1
        d["max_len"] = max(d["max_len"], len(data))
        if len(data) < 14:
            continue
        mac = mac_str(data[6:12])
        etype = struct.unpack("!H", data[12:14])[0]
        off = 14
        while etype in (0x8100, 0x88A8) and len(data) >= off + 4:
            etype = struct.unpack("!H", data[off + 2:off + 4])[0]
            off += 4
        if etype == 0x0800:
            ipv4(d, data, off, mac, a.udp_port)
        elif etype == 0x86DD:
            ipv6(d, data, off, mac, a.udp_port)
    s.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
