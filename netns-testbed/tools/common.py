"""Helpers shared by the testbed tools (stdlib only).  A tool imports this
module by name: python3 puts the tool's own directory first on sys.path."""
import os
import select
import signal
import struct
import time


def csum(data):
    """The Internet checksum (RFC 1071) of `data`, padded to even length."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def mac_str(b):
    return ":".join("%02x" % x for x in b)


def readable(s, seconds, ready_file=None):
    """Yield each time socket `s` has data, until `seconds` pass or SIGTERM
    arrives.  Once SIGTERM is handled, writes our pid to `ready_file`."""
    stop = {"now": False}

    def on_term(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    if ready_file:
        with open(ready_file, "w") as f:
            f.write("%d\n" % os.getpid())
    deadline = time.monotonic() + seconds
    while not stop["now"]:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            r, _, _ = select.select([s], [], [], min(left, 0.2))
        except InterruptedError:
            continue
        if r:
            yield


def family(addr):
    """socket.AF_INET6 for an IPv6 address (it has a colon), else AF_INET."""
    import socket
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def split_hostport(s, default_port=0):
    """"[2001:db8::1]:80", "2001:db8::1", "198.18.0.1:80" or "198.18.0.1"
    -> (host, port); a bare IPv6 address has no port (its colons are its own)."""
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if s.count(":") > 1:
        return s, default_port
    host, _, p = s.partition(":")
    return host, int(p) if p else default_port


def unmap(addr):
    """A dual-stack socket names an IPv4 peer ::ffff:a.b.c.d: give a.b.c.d."""
    return addr[7:] if addr.startswith("::ffff:") and "." in addr else addr


def probe(s, req, count, timeout):
    """Send frame `req` on packet socket `s` `count` times, 0.2 s apart, and
    yield each (frame, address) it receives until `timeout` seconds after
    the last send (ARP and neighbour-solicitation probes share this)."""
    import socket
    sent = 0
    next_send = time.monotonic()
    deadline = time.monotonic() + timeout + 0.2 * max(count - 1, 0)
    while True:
        now = time.monotonic()
        if sent < count and now >= next_send:
            s.send(req)
            sent += 1
            next_send = now + 0.2
        if now >= deadline:
            return
        left = min(deadline, next_send if sent < count else deadline) - now
        s.settimeout(max(left, 0.001))
        try:
            yield s.recvfrom(2048)
        except socket.timeout:
            continue
