#!/usr/bin/env python3
"""Misbehaving clients of a slow-path listener, bounded in count and time.

  slowclients.py (--tcp HOST:PORT | --unix PATH) [--idle N] [--tricklers N]
                 [--trickle-interval S] [--big-line BYTES] [--seconds S]
                 [--ready-file FILE]

- --idle N: N connections that send nothing; one the server closes is opened
  again at once (so the pressure stays on for --seconds).
- --tricklers N: N connections that send one byte of a never-ending request
  (an HTTP head for --tcp, a JSON line without its newline for --unix) every
  --trickle-interval seconds; reopened when the server closes them.
- --big-line BYTES: once, one line of BYTES bytes without a newline; records
  how much went in before the server stopped it and the reply it read.

--ready-file is written once every connection was opened the first time.
stdout gets one JSON line at the end:

  {"opened": N, "reopened": N, "connect_failed": N, "trickled_bytes": N,
   "closed_by_server": N, "big_line": {"sent": N, "reply": "...", "error": ...} | null}

Exit 0 unless the usage is wrong.
"""
import argparse
import errno
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time

HTTP_HEAD = b"GET /metrics HTTP/1.1\r\nHost: ulvs\r\nX-Slow: " + b"a" * 100000
JSON_LINE = b'{"cmd":"list"' + b" " * 100000


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--tcp", help="HOST:PORT")
    g.add_argument("--unix", help="socket path")
    ap.add_argument("--idle", type=int, default=0)
    ap.add_argument("--tricklers", type=int, default=0)
    ap.add_argument("--trickle-interval", type=float, default=0.4)
    ap.add_argument("--big-line", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    if not (0 <= a.idle <= 1000 and 0 <= a.tricklers <= 100 and 0 < a.seconds <= 600
            and 0 <= a.big_line <= 64 << 20 and a.trickle_interval >= 0.01):
        ap.error("need --idle <= 1000, --tricklers <= 100, 0 < --seconds <= 600, --big-line <= 64 MiB")
    if a.tcp:
        host, port = a.tcp.rsplit(":", 1)
        host = host.strip("[]")  # [2001:db8::1]:9100
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        addr, payload = (host, int(port)), HTTP_HEAD
    else:
        family, addr, payload = socket.AF_UNIX, a.unix, JSON_LINE

    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    res = {"opened": 0, "reopened": 0, "connect_failed": 0, "trickled_bytes": 0, "closed_by_server": 0,
           "big_line": None}
    sel = selectors.DefaultSelector()
    t_start = time.time()
    end = t_start + a.seconds
    # socket -> [kind, bytes trickled, connected?, connect deadline]
    conns = {}
    want = {"trickle": a.tricklers, "idle": a.idle}
    first_round = {"trickle": 0, "idle": 0}

    def drop(s, by_server):
        if by_server:
            res["closed_by_server"] += 1
        sel.unregister(s)
        conns.pop(s, None)
        s.close()

    def open_one(kind):
        # non-blocking: a listener whose backlog is full must not stall the
        # tricklers already connected
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            s.close()
            res["connect_failed"] += 1
            return False
        conns[s] = [kind, 0, err == 0, time.time() + 1.0]
        sel.register(s, selectors.EVENT_READ | (0 if err == 0 else selectors.EVENT_WRITE))
        if err == 0:
            res["opened"] += 1
        if first_round[kind] < want[kind]:
            first_round[kind] += 1
        else:
            res["reopened"] += 1
        return True

    big = []
    if a.big_line:
        th = threading.Thread(target=lambda: big.append(big_line(family, addr, a.big_line)), daemon=True)
        th.start()
    ready_written = False
    next_trickle = time.time()
    while not stop[0] and time.time() < end:
        now = time.time()
        # keep the pressure on: (re)open what is missing, a bounded batch per round
        budget = 50
        for kind in ("trickle", "idle"):
            have = sum(1 for st in conns.values() if st[0] == kind)
            for _ in range(min(budget, want[kind] - have)):
                budget -= 1
                if not open_one(kind):
                    break
        if not ready_written and a.ready_file and (
                first_round == want or time.time() - t_start > 3.0):
            with open(a.ready_file, "w") as f:
                f.write("%d\n" % os.getpid())
            ready_written = True
        timeout = max(0.0, min(next_trickle, end, now + 0.05) - time.time())
        for key, ev in sel.select(timeout):
            s = key.fileobj
            st = conns.get(s)
            if st is None:
                continue
            if not st[2]:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    res["connect_failed"] += 1
                    drop(s, False)
                    continue
                st[2] = True
                res["opened"] += 1
                sel.modify(s, selectors.EVENT_READ)
                if not ev & selectors.EVENT_READ:
                    continue
            try:
                data = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                # closed by the server (deadline, refusal)
                drop(s, True)
        # connects that never completed (a full backlog)
        for s, st in list(conns.items()):
            if not st[2] and time.time() > st[3]:
                res["connect_failed"] += 1
                drop(s, False)
        if time.time() >= next_trickle:
            next_trickle += a.trickle_interval
            for s, st in list(conns.items()):
                if st[0] != "trickle" or not st[2]:
                    continue
                try:
                    s.send(payload[st[1] % len(payload):][:1])
                    st[1] += 1
                    res["trickled_bytes"] += 1
                except BlockingIOError:
                    pass
                except OSError:
                    drop(s, True)
    for s in list(conns):
        s.close()
    if a.big_line:
        th.join(timeout=15)
        res["big_line"] = big[0] if big else {"sent": 0, "reply": "", "error": "unfinished", "seconds": None}
    print(json.dumps(res))
    return 0


def big_line(family, addr, n):
    """One line of n bytes without a newline; how much went in, and the reply."""
    out = {"sent": 0, "reply": "", "error": None, "seconds": 0.0}
    t0 = time.time()
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5.0)
    try:
        s.connect(addr)
        chunk = b"x" * 65536
        while out["sent"] < n:
            out["sent"] += s.send(chunk[:n - out["sent"]])
    except OSError as e:
        out["error"] = type(e).__name__
    try:
        buf = b""
        while b"\n" not in buf and len(buf) < 65536:
            d = s.recv(4096)
            if not d:
                break
            buf += d
        out["reply"] = buf.decode("utf-8", "replace").strip()
    except OSError as e:
        out["error"] = out["error"] or type(e).__name__
    s.close()
    out["seconds"] = round(time.time() - t0, 3)
    return out


if __name__ == "__main__":
    sys.exit(main())
