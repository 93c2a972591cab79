#!/usr/bin/env python3
"""Bounded AF_PACKET capture (ETH_P_ALL) on one interface, summarised as JSON.

For each direction ("incoming": frames received on the interface, "outgoing":
frames it sent; from sll_pkttype) it reports:
  frames              all frames
  ipv4                per source MAC: IPv4 frames (only those whose IPv4 source
                      is --src-ip, when given)
  ipv4_all            per source MAC: all IPv4 frames
  tcp_rst, icmp       per source MAC: TCP frames with RST set, ICMP frames
  tcp_rst_src, icmp_src  the same per "MAC IPv4-source"
  arp                 per source MAC: ARP frames
  ipv6, ipv6_all      as ipv4 and ipv4_all, for IPv6 frames (--src-ip may be
                      an IPv6 address; tcp_rst/tcp_rst_src count IPv6 too)
  icmp6, icmp6_src    per source MAC / "MAC IPv6-source": ICMPv6 other than
                      neighbour discovery and MLD (those are in "ndp")
  ndp                 per source MAC: NS/NA/RS/RA/redirect and MLD frames
  vlan                frames whose 802.1Q tag was stripped into metadata
  csum_not_ready      frames with a partial (offloaded) checksum
  max_len             the longest frame (above the MTU means GSO/GRO frames)
--ready-file is created once the socket is bound.
"""
import argparse
import json
import os
import socket
import struct
import sys
import time

from common import mac_str

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_CSUMNOTREADY = 0x8
TP_STATUS_VLAN_VALID = 0x10
PACKET_OUTGOING = 4


def new_dir():
    return {"frames": 0, "ipv4": {}, "ipv4_all": {}, "tcp_rst": {}, "icmp": {},
            "tcp_rst_src": {}, "icmp_src": {}, "arp": {}, "vlan": 0, "csum_not_ready": 0,
            "max_len": 0, "ipv6": {}, "ipv6_all": {}, "icmp6": {}, "icmp6_src": {}, "ndp": {}}


# ICMPv6 types of neighbour discovery (133-137) and MLD (130-132, 143): the
# kernel of every IPv6 host sends these; they are not replies or errors
NDP_MLD = {130, 131, 132, 133, 134, 135, 136, 137, 143}
# IPv6 extension headers walked to reach TCP/ICMPv6 (hop-by-hop, routing,
# destination options); a fragment header ends the walk
EXT = {0, 43, 60}


def ipv6(d, data, off, src_mac, want_src):
    if len(data) < off + 40:
        return
    src_ip = data[off + 8:off + 24]
    src_ip_s = socket.inet_ntop(socket.AF_INET6, src_ip)
    inc(d["ipv6_all"], src_mac)
    if want_src is None or src_ip == want_src:
        inc(d["ipv6"], src_mac)
    nh, l4 = data[off + 6], off + 40
    for _ in range(8):
        if nh not in EXT or len(data) < l4 + 8:
            break
        nh, l4 = data[l4], l4 + (data[l4 + 1] + 1) * 8
    if nh == 6 and len(data) >= l4 + 14 and data[l4 + 13] & 0x04:
        inc(d["tcp_rst"], src_mac)
        inc(d["tcp_rst_src"], "%s %s" % (src_mac, src_ip_s))
    elif nh == 58 and len(data) > l4:
        if data[l4] in NDP_MLD:
            inc(d["ndp"], src_mac)
        else:
            inc(d["icmp6"], src_mac)
            inc(d["icmp6_src"], "%s %s" % (src_mac, src_ip_s))


def inc(d, k, n=1):
    d[k] = d.get(k, 0) + n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iface", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--src-ip")
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    if not 0 < a.seconds <= 3600:
        ap.error("--seconds must be in (0, 3600]")
    want_src = None
    if a.src_ip:
        want_src = socket.inet_pton(socket.AF_INET6 if ":" in a.src_ip else socket.AF_INET, a.src_ip)
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        s.bind((a.iface, ETH_P_ALL))
    except OSError as e:
        sys.exit("sniff.py: cannot capture on %s: %s" % (a.iface, e))
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("%d\n" % os.getpid())
    out = {"iface": a.iface, "seconds": a.seconds, "src_ip": a.src_ip,
           "incoming": new_dir(), "outgoing": new_dir()}
    anc_space = socket.CMSG_SPACE(32)
    deadline = time.monotonic() + a.seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data, anc, _flags, addr = s.recvmsg(262144, anc_space)
        except socket.timeout:
            break
        except InterruptedError:
            continue
        d = out["outgoing" if addr[2] == PACKET_OUTGOING else "incoming"]
        d["frames"] += 1
        d["max_len"] = max(d["max_len"], len(data))
        for level, ctype, cdata in anc:
            if level == SOL_PACKET and ctype == PACKET_AUXDATA and len(cdata) >= 4:
                status = struct.unpack("I", cdata[:4])[0]
                if status & TP_STATUS_VLAN_VALID:
                    d["vlan"] += 1
                if status & TP_STATUS_CSUMNOTREADY:
                    d["csum_not_ready"] += 1
        if len(data) < 14:
            continue
        src_mac = mac_str(data[6:12])
        etype = struct.unpack("!H", data[12:14])[0]
        off = 14
        while etype in (0x8100, 0x88A8) and len(data) >= off + 4:
            etype = struct.unpack("!H", data[off + 2:off + 4])[0]
            off += 4
        if etype == 0x0806:
            inc(d["arp"], src_mac)
            continue
        if etype == 0x86DD:
            ipv6(d, data, off, src_mac, want_src)
            continue
        if etype != 0x0800 or len(data) < off + 20 or data[off] >> 4 != 4:
            continue
        ihl = (data[off] & 0x0F) * 4
        proto = data[off + 9]
        src_ip = data[off + 12:off + 16]
        src_ip_s = socket.inet_ntoa(src_ip)
        inc(d["ipv4_all"], src_mac)
        if want_src is None or src_ip == want_src:
            inc(d["ipv4"], src_mac)
        frag_off = struct.unpack("!H", data[off + 6:off + 8])[0] & 0x1FFF
        l4 = off + max(ihl, 20)
        if proto == 6 and frag_off == 0 and len(data) >= l4 + 14 and data[l4 + 13] & 0x04:
            inc(d["tcp_rst"], src_mac)
            inc(d["tcp_rst_src"], "%s %s" % (src_mac, src_ip_s))
        elif proto == 1:
            inc(d["icmp"], src_mac)
            inc(d["icmp_src"], "%s %s" % (src_mac, src_ip_s))
    s.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
