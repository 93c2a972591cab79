#!/usr/bin/env python3
"""UDP echo real server for the ulvs test bed: answers each datagram with
b"NAME:" + payload.

The reply leaves from the address the datagram was sent to (IP_PKTINFO), so a
direct-routing server bound to 0.0.0.0 answers from the VIP, not from its own
interface address.  --bind :: takes IPv6 and IPv4 on one dual-stack socket
and answers from the destination address the same way (IPV6_PKTINFO; an IPv4
datagram's is ::ffff:a.b.c.d, which the kernel also honours).
"""
import argparse
import os
import signal
import socket
import struct
import sys

from common import family

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--pidfile")
    a = ap.parse_args()
    fam = family(a.bind)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
    else:
        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    try:
        s.bind((a.bind, a.port))
    except OSError as e:
        sys.exit("udpecho.py: cannot bind %s:%d: %s" % (a.bind, a.port, e))
    prefix = a.name.encode() + b":"

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if a.pidfile:
        tmp = a.pidfile + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % os.getpid())
        os.replace(tmp, a.pidfile)
    cmsg_space = socket.CMSG_SPACE(20)
    try:
        while True:
            data, anc, flags, peer = s.recvmsg(65535, cmsg_space)
            out_anc = []
            for level, ctype, cdata in anc:
                if level == socket.IPPROTO_IP and ctype == IP_PKTINFO and len(cdata) >= 12:
                    # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
                    _ifindex, _spec, dst = struct.unpack("i4s4s", cdata[:12])
                    out_anc = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("i4s4s", 0, dst, b"\0" * 4))]
                elif level == socket.IPPROTO_IPV6 and ctype == IPV6_PKTINFO and len(cdata) >= 20:
                    # struct in6_pktinfo { in6_addr addr; int ifindex; }: reply
                    # from that address, out of whichever interface routes back
                    out_anc = [(socket.IPPROTO_IPV6, IPV6_PKTINFO, cdata[:16] + struct.pack("i", 0))]
            try:
                s.sendmsg([prefix + data], out_anc, 0, peer)
            except OSError as e:
                sys.stderr.write("udpecho.py: send to %s failed: %s\n" % (peer, e))
    except KeyboardInterrupt:
        pass
    finally:
        s.close()
        if a.pidfile:
            try:
                os.unlink(a.pidfile)
            except OSError:
                pass


if __name__ == "__main__":
    main()
