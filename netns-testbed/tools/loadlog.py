#!/usr/bin/env python3
"""Continuous, bounded HTTP load for the ulvs test bed, with a per-request log.

Starts GET requests at a fixed --rate, each on a fresh TCP connection
(Connection: close), at most --concurrency in flight, until --count requests
were started, --max-seconds passed, or the --stop-file exists (or SIGTERM /
SIGINT arrives).  Requests in flight are then given --timeout to finish.

--log FILE gets one JSON line per finished request (wall-clock times, so a
scenario can relate them to `date +%s.%N`):

  {"i": N, "t0": START, "t1": END, "ok": bool, "server": NAME|null,
   "err": REASON|null, "sport": LOCAL_PORT|null}

stdout gets one JSON summary line at the end:

  {"ok": N, "failed": N, "started": N, "per_server": {NAME: N},
   "errors": {REASON: N}, "first_fail": T|null, "last_fail": T|null,
   "max_latency": S, "elapsed": S}

Exit 0 unless the usage is wrong.
"""
import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--rate", type=float, default=20.0, help="requests started per second")
    ap.add_argument("--count", type=int, default=1000, help="at most this many requests")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="stop starting requests after this")
    ap.add_argument("--concurrency", type=int, default=8, help="at most this many in flight")
    ap.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    ap.add_argument("--log", help="JSON lines, one per request")
    ap.add_argument("--stop-file", help="stop starting requests once this file exists")
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    if u.scheme != "http" or not u.hostname:
        ap.error("--url must be http://HOST[:PORT]/PATH")
    if not (0 < a.rate <= 1000 and 0 <= a.count <= 100000 and 1 <= a.concurrency <= 64
            and a.timeout > 0 and 0 < a.max_seconds <= 3600):
        ap.error("need 0 < --rate <= 1000, 0 <= --count <= 100000, 1 <= --concurrency <= 64, "
                 "--timeout > 0, 0 < --max-seconds <= 3600")
    host, port = u.hostname, u.port or 80
    path = (u.path or "/") + ("?" + u.query if u.query else "")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    lock = threading.Lock()
    slots = threading.Semaphore(a.concurrency)
    res = {"ok": 0, "failed": 0, "first_fail": None, "last_fail": None, "max_latency": 0.0}
    per_server, errors = {}, {}
    logf = open(a.log, "w", buffering=1) if a.log else None

    def one(i):
        t0 = time.time()
        conn = http.client.HTTPConnection(host, port, timeout=a.timeout)
        server = err = sport = None
        try:
            conn.connect()
            sport = conn.sock.getsockname()[1]
            conn.request("GET", path, headers={"Connection": "close", "User-Agent": "ulvs-loadlog"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                err = "http_%d" % r.status
            else:
                server = r.getheader("X-Server") or (body.split() or [b"?"])[0].decode("utf-8", "replace")
        except (TimeoutError, OSError, http.client.HTTPException) as e:
            err = type(e).__name__
            if isinstance(e, TimeoutError) or "timed out" in str(e):
                err = "timeout"
        finally:
            conn.close()
            slots.release()
        t1 = time.time()
        with lock:
            res["max_latency"] = max(res["max_latency"], t1 - t0)
            if err is None:
                res["ok"] += 1
                per_server[server] = per_server.get(server, 0) + 1
            else:
                res["failed"] += 1
                errors[err] = errors.get(err, 0) + 1
                res["first_fail"] = t0 if res["first_fail"] is None else min(res["first_fail"], t0)
                res["last_fail"] = t0 if res["last_fail"] is None else max(res["last_fail"], t0)
            if logf:
                logf.write(json.dumps({"i": i, "t0": round(t0, 4), "t1": round(t1, 4), "ok": err is None,
                                       "server": server, "err": err, "sport": sport}) + "\n")

    start = time.monotonic()
    deadline = start + a.max_seconds
    threads = []
    i = 0
    while i < a.count and not stop.is_set():
        due = start + i / a.rate
        now = time.monotonic()
        if due >= deadline or (a.stop_file and os.path.exists(a.stop_file)):
            break
        if due > now:
            stop.wait(min(due - now, 0.2))
            continue
        if not slots.acquire(timeout=0.2):
            continue  # all slots busy: the schedule slips rather than piling up
        t = threading.Thread(target=one, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        i += 1
        threads = [t for t in threads if t.is_alive()]
    end_wait = time.monotonic() + a.timeout + 1.0
    for t in threads:
        t.join(max(0.0, end_wait - time.monotonic()))
    with lock:
        unfinished = sum(1 for t in threads if t.is_alive())
        out = {
            "ok": res["ok"],
            "failed": res["failed"] + unfinished,
            "started": i,
            "per_server": dict(sorted(per_server.items())),
            "errors": dict(errors, **({"unfinished": unfinished} if unfinished else {})),
            "first_fail": res["first_fail"],
            "last_fail": res["last_fail"],
            "max_latency": round(res["max_latency"], 3),
            "elapsed": round(time.monotonic() - start, 3),
        }
    if logf:
        logf.close()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
