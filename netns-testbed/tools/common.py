"""Helpers shared by the testbed tools (stdlib only).  A tool imports this
module by name: python3 puts the tool's own directory first on sys.path."""
import struct


def csum(data):
    """The Internet checksum (RFC 1071) of `data`, padded to even length."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF
