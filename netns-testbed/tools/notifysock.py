#!/usr/bin/env python3
"""Stand in for systemd's notification socket (sd_notify(3)), bounded in time.

  notifysock.py --socket PATH --log FILE [--seconds S] [--ready-file FILE]

Binds a Unix datagram socket at PATH and appends one JSON line per datagram
to FILE: {"t": WALL_CLOCK_SECONDS, "msg": ["READY=1", "STATUS=...", ...]}.
Stops after --seconds, or on SIGTERM/SIGINT. Exit 0 unless the usage is wrong.
"""
import argparse
import json
import os
import signal
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    if not 0 < a.seconds <= 3600:
        ap.error("need 0 < --seconds <= 3600")
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    try:
        os.unlink(a.socket)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(a.socket)
    s.settimeout(0.2)
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("%d\n" % os.getpid())
    end = time.time() + a.seconds
    with open(a.log, "a", buffering=1) as log:
        while not stop[0] and time.time() < end:
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            except InterruptedError:
                continue
            log.write(json.dumps({"t": time.time(), "msg": d.decode("utf-8", "replace").split("\n")[:-1]
                                  if d.endswith(b"\n") else d.decode("utf-8", "replace").split("\n")}) + "\n")
    s.close()
    os.unlink(a.socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
