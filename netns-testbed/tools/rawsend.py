#!/usr/bin/env python3
"""Send crafted (mostly malformed) Ethernet frames with an AF_PACKET socket, to
exercise a director's drop counters.  IPv4 frames go to VIP port --port (80);
with -6, IPv6 frames go to the IPv6 VIP (--vip), TCP port --port (80), from
--src-ip (the IPv6 classes below).

IPv4 classes:
  runt              Ethernet header + 10 bytes of IPv4-ish data (ethertype 0x0800)
  bad_ihl           IPv4 header with IHL=4, then a TCP SYN
  bad_total_length  IPv4 total length 100 bytes larger than the frame
  truncated_l4      valid IPv4 header, protocol TCP, only 8 bytes of TCP header
  ip_options        IHL=6 with a NOP/NOP/NOP/EOL option word, valid otherwise (TCP SYN)
  vlan              802.1Q tag (VLAN --vlan-id, 10) around a valid IPv4/TCP SYN
  fragment          UDP non-first fragments (offset != 0) with no first fragment
  bad_version       version nibble 6 in an 0x0800 frame, otherwise a valid header
  random            random bytes after an Ethernet header with ethertype 0x0800,
                    frame length random in 14..200 (reproducible with --seed)
  syn               a valid IPv4/TCP SYN (control sample, not malformed)
  all               each malformed class in turn

IPv6 (-6) classes (and the drop counter each must move):
  truncated           14 + 30 bytes: an IPv6 header cut short     v6_truncated
  bad_payload_length  payload length 100 bytes beyond the frame    v6_bad_payload_length
  ext_chain_too_long  nine destination-options headers, then a
                      TCP SYN (the walk takes at most eight)       v6_ext_chain_too_long
  jumbo               hop-by-hop jumbo payload option, payload
                      length 0 (jumbograms are refused)           v6_jumbo
  frag_no_transport   a first fragment (offset 0, M set) holding
                      only 4 bytes of the TCP header (RFC 7112)   v6_fragment_no_transport
  fragment            a later UDP fragment whose first fragment
                      never came                                   v6_fragment
  icmp_bad_quote      a Packet Too Big whose quote is 30 bytes
                      (no whole IPv6 header)                       v6_icmp_bad_quote
  random              EtherType 0x86dd then random bytes, frame
                      length random in 14..200 (--seed)            (any)
  syn                 a valid TCP SYN (control sample)

IPv4 header checksums (and TCP/UDP checksums) are correct wherever the class is
otherwise valid.  Prints JSON {"sent": {CLASS: N}, "total": N}.
"""
import argparse
import json
import random
import socket
import struct
import sys
import time

from common import csum

CLASSES = ["runt", "bad_ihl", "bad_total_length", "truncated_l4", "ip_options",
           "vlan", "fragment", "bad_version", "random"]
CLASSES6 = ["truncated", "bad_payload_length", "ext_chain_too_long", "jumbo",
            "frag_no_transport", "fragment", "icmp_bad_quote", "random"]

NH_HOP, NH_TCP, NH_UDP, NH_FRAG, NH_ICMP6, NH_DEST = 0, 6, 17, 44, 58, 60


def mac_bytes(s):
    parts = s.split(":")
    if len(parts) != 6:
        raise argparse.ArgumentTypeError("bad MAC %r" % s)
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError("bad MAC %r" % s)


def ip_bytes(s):
    try:
        return socket.inet_aton(s)
    except OSError:
        raise argparse.ArgumentTypeError("bad IPv4 address %r" % s)


def ip6_bytes(s):
    try:
        return socket.inet_pton(socket.AF_INET6, s)
    except OSError:
        raise argparse.ArgumentTypeError("bad IPv6 address %r" % s)


def ipv4(src, dst, proto, payload, *, ihl=5, options=b"", version=4, total_length=None,
         flags_frag=0x4000, ident=0, ttl=64):
    hdr_len = 20 + len(options)
    if total_length is None:
        total_length = hdr_len + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, total_length, ident, flags_frag,
                      ttl, proto, 0, src, dst) + options
    c = csum(hdr)
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def tcp_syn(src, dst, sport, dport, seq):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(hdr))
    c = csum(pseudo + hdr)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:]


def udp(src, dst, sport, dport, data):
    length = 8 + len(data)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    c = csum(src + dst + struct.pack("!BBH", 0, 17, length) + hdr + data) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, c) + data


def build(cls, i, a, rng):
    eth = a.dst_mac + a.src_mac
    src, dst = a.src_ip, a.vip
    sport = rng.randint(20000, 60000)
    seq = rng.getrandbits(32)
    ident = rng.getrandbits(16)
    syn = tcp_syn(src, dst, sport, a.port, seq)
    if cls == "syn":
        return eth + b"\x08\x00" + ipv4(src, dst, 6, syn, ident=ident)
    if cls == "runt":
        return eth + b"\x08\x00" + ipv4(src, dst, 6, syn, ident=ident)[:10]
    if cls == "bad_ihl":
        return eth + b"\x08\x00" + ipv4(src, dst, 6, syn, ihl=4, ident=ident)
    if cls == "bad_total_length":
        return eth + b"\x08\x00" + ipv4(src, dst, 6, syn, total_length=20 + len(syn) + 100, ident=ident)
    if cls == "truncated_l4":
        return eth + b"\x08\x00" + ipv4(src, dst, 6, syn[:8], ident=ident)
    if cls == "ip_options":
        return eth + b"\x08\x00" + ipv4(src, dst, 6, syn, ihl=6, options=b"\x01\x01\x01\x00", ident=ident)
    if cls == "vlan":
        return eth + b"\x81\x00" + struct.pack("!H", a.vlan_id & 0x0FFF) + b"\x08\x00" + \
            ipv4(src, dst, 6, syn, ident=ident)
    if cls == "fragment":
        data = bytes(rng.getrandbits(8) for _ in range(16))
        # A later fragment whose first fragment never came (offset 3 = 24
        # bytes, MF clear, payload only): the director cannot know its server.
        return eth + b"\x08\x00" + ipv4(src, dst, 17, data, flags_frag=0x0003, ident=ident)
    if cls == "bad_version":
        return eth + b"\x08\x00" + ipv4(src, dst, 6, syn, version=6, ident=ident)
    if cls == "random":
        n = rng.randint(14, 200)
        return eth + b"\x08\x00" + bytes(rng.getrandbits(8) for _ in range(n - 14))
    raise ValueError(cls)


# IPv6 (-6).

def ipv6(src, dst, nh, payload, plen=None, hop_limit=64):
    if plen is None:
        plen = len(payload)
    return struct.pack("!IHBB16s16s", 6 << 28, plen, nh, hop_limit, src, dst) + payload


def l4_csum(src, dst, nh, seg):
    return csum(src + dst + struct.pack("!IxxxB", len(seg), nh) + seg) or 0xFFFF


def tcp_syn6(src, dst, sport, dport, seq):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    c = l4_csum(src, dst, NH_TCP, hdr)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:]


def dest_opts(nh):
    # 8 bytes: next header, length 0, a PadN option of 4 bytes.
    return struct.pack("!BB", nh, 0) + b"\x01\x04\x00\x00\x00\x00"


def build6(cls, a, rng):
    eth = a.dst_mac + a.src_mac + b"\x86\xdd"
    src, dst = a.src_ip, a.vip
    sport = rng.randint(20000, 60000)
    syn = tcp_syn6(src, dst, sport, a.port, rng.getrandbits(32))
    ident = rng.getrandbits(32)
    if cls == "syn":
        return eth + ipv6(src, dst, NH_TCP, syn)
    if cls == "truncated":
        return eth + ipv6(src, dst, NH_TCP, syn)[:30]
    if cls == "bad_payload_length":
        return eth + ipv6(src, dst, NH_TCP, syn, plen=len(syn) + 100)
    if cls == "ext_chain_too_long":
        chain = b"".join(dest_opts(NH_DEST) for _ in range(8)) + dest_opts(NH_TCP)
        return eth + ipv6(src, dst, NH_DEST, chain + syn)
    if cls == "jumbo":
        # Hop-by-hop: jumbo payload option (type 0xc2, 4 bytes of length).
        hbh = struct.pack("!BBBBI", NH_TCP, 0, 0xC2, 4, 8 + len(syn))
        return eth + ipv6(src, dst, NH_HOP, hbh + syn, plen=0)
    if cls == "frag_no_transport":
        frag = struct.pack("!BBHI", NH_TCP, 0, 0 | 1, ident)
        return eth + ipv6(src, dst, NH_FRAG, frag + syn[:4])
    if cls == "fragment":
        frag = struct.pack("!BBHI", NH_UDP, 0, (3 << 3), ident)  # offset 24 bytes, M clear
        return eth + ipv6(src, dst, NH_FRAG, frag + bytes(rng.getrandbits(8) for _ in range(16)))
    if cls == "icmp_bad_quote":
        quote = ipv6(dst, src, NH_TCP, syn)[:30]
        msg = struct.pack("!BBHI", 2, 0, 0, 1280) + quote
        c = l4_csum(src, dst, NH_ICMP6, msg)
        msg = msg[:2] + struct.pack("!H", c) + msg[4:]
        return eth + ipv6(src, dst, NH_ICMP6, msg)
    if cls == "random":
        n = rng.randint(14, 200)
        return eth + bytes(rng.getrandbits(8) for _ in range(n - 14))
    raise ValueError(cls)



def iface_mac(iface):
    try:
        with open("/sys/class/net/%s/address" % iface) as f:
            return mac_bytes(f.read().strip())
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-6", dest="v6", action="store_true", help="IPv6 frames (the IPv6 classes)")
    ap.add_argument("--iface", required=True)
    ap.add_argument("--dst-mac", required=True, type=mac_bytes)
    ap.add_argument("--src-mac", type=mac_bytes, help="default: the interface's MAC")
    ap.add_argument("--vip", required=True)
    ap.add_argument("--src-ip", help="default: 198.18.0.1 (-6: 2001:db8:ffff::1)")
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--class", dest="cls", required=True,
                    help="one of the family's classes (above), syn, all; or a comma-separated list")
    ap.add_argument("--count", type=int, default=1, help="frames per class (max 100000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vlan-id", type=int, default=10, help="the vlan class's tag (IPv4)")
    ap.add_argument("--interval", type=float, default=0.0, help="seconds between frames")
    a = ap.parse_args()
    known, addr = (CLASSES6, ip6_bytes) if a.v6 else (CLASSES, ip_bytes)
    try:
        a.vip = addr(a.vip)
        a.src_ip = addr(a.src_ip or ("2001:db8:ffff::1" if a.v6 else "198.18.0.1"))
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    classes = known if a.cls == "all" else a.cls.split(",")
    for c in classes:
        if c not in known + ["syn"]:
            ap.error("unknown class %r" % c)
    if not 0 <= a.count <= 100000:
        ap.error("--count must be 0..100000")
    if a.src_mac is None:
        a.src_mac = iface_mac(a.iface)
        if a.src_mac is None:
            ap.error("no such interface %r (and no --src-mac)" % a.iface)
    rng = random.Random(a.seed)
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s.bind((a.iface, 0))
    except OSError as e:
        sys.exit("rawsend.py: cannot open AF_PACKET socket on %s: %s" % (a.iface, e))
    sent = {}
    errors = {}
    for c in classes:
        sent[c] = 0
        for i in range(a.count):
            frame = build6(c, a, rng) if a.v6 else build(c, i, a, rng)
            try:
                s.send(frame)
                sent[c] += 1
            except OSError as e:
                key = "%s: %s" % (c, e.strerror or e)
                errors[key] = errors.get(key, 0) + 1
            if a.interval:
                time.sleep(a.interval)
    s.close()
    out = {"sent": sent, "total": sum(sent.values())}
    if errors:
        out["errors"] = errors
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
