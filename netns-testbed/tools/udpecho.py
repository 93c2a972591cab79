#!/usr/bin/env python3
"""UDP echo real server for the ulvs test bed: answers each datagram with
b"NAME:" + payload.

The reply leaves from the address the datagram was sent to (IP_PKTINFO), so a
direct-routing server bound to 0.0.0.0 answers from the VIP, not from its own
interface address.
"""
import argparse
import os
import signal
import socket
import struct
import sys

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=53)
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--pidfile")
    a = ap.parse_args()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    cmsg_space = socket.CMSG_SPACE(12)
    try:
        while True:
            data, anc, flags, peer = s.recvmsg(65535, cmsg_space)
            out_anc = []
            for level, ctype, cdata in anc:
                if level == socket.IPPROTO_IP and ctype == IP_PKTINFO and len(cdata) >= 12:
                    # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
                    _ifindex, _spec, dst = struct.unpack("i4s4s", cdata[:12])
                    out_anc = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("i4s4s", 0, dst, b"\0" * 4))]
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
