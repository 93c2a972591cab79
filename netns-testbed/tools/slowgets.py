#!/usr/bin/env python3
"""Many long-lived HTTP downloads at once, for the ulvs test bed: --count
threads, each one GET /slow?seconds=S&bytes=B (tools/httpd.py streams B bytes
of "x" over S seconds) on its own TCP connection (so its own source port).

Once every download has its response headers (or failed before), --ready-file
gets one JSON line {"started": N, "ports": [LOCAL_PORT, ...]} (written
atomically). At the end it prints one JSON line

  {"count": N, "ok": N, "broken": N, "per_server": {NAME: N},
   "errors": {REASON: N}, "elapsed": S}

ok means status 200, all B bytes received and every byte is "x"; every other
download is broken. Bounded: each read times out after --timeout, and the
whole run after S + --timeout * 3 seconds at most per download.
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time


def one(a, i, res, headers_in):
    out = {"ok": False, "server": None, "port": None, "error": None}
    conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
    try:
        conn.connect()
        out["port"] = conn.sock.getsockname()[1]
        conn.request("GET", "/slow?seconds=%g&bytes=%d" % (a.seconds, a.bytes),
                     headers={"Connection": "close", "User-Agent": "ulvs-slowgets"})
        r = conn.getresponse()
        out["server"] = r.getheader("X-Server")
        headers_in.release()
        n, intact = 0, True
        while True:
            chunk = r.read(65536)
            if not chunk:
                break
            n += len(chunk)
            if intact and chunk.strip(b"x"):
                intact = False
        out["ok"] = r.status == 200 and intact and n == a.bytes
        if not out["ok"]:
            out["error"] = "short or corrupt body" if r.status == 200 else "status %d" % r.status
    except (OSError, http.client.HTTPException) as e:
        out["error"] = type(e).__name__
        headers_in.release()
    finally:
        conn.close()
    res[i] = out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--bytes", type=int, default=200000)
    ap.add_argument("--timeout", type=float, default=10.0, help="socket timeout (per read)")
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    if not 1 <= a.count <= 1000 or not 0 <= a.seconds <= 600 or not 0 <= a.bytes <= (1 << 28):
        ap.error("--count 1..1000, --seconds 0..600, --bytes 0..2^28")
    start = time.monotonic()
    res = [None] * a.count
    headers_in = threading.Semaphore(0)
    threads = []
    for i in range(a.count):
        t = threading.Thread(target=one, args=(a, i, res, headers_in), daemon=True)
        t.start()
        threads.append(t)
    for _ in range(a.count):
        headers_in.acquire(timeout=a.timeout * 2)
    if a.ready_file:
        tmp = a.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps({"started": a.count}) + "\n")
        os.replace(tmp, a.ready_file)
    deadline = start + a.seconds + a.timeout * 3
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    summary = {"count": a.count, "ok": 0, "broken": 0, "per_server": {}, "errors": {}}
    for r in res:
        if r is None:
            r = {"ok": False, "server": None, "error": "unfinished"}
        if r["ok"]:
            summary["ok"] += 1
            summary["per_server"][r["server"]] = summary["per_server"].get(r["server"], 0) + 1
        else:
            summary["broken"] += 1
            summary["errors"][r["error"]] = summary["errors"].get(r["error"], 0) + 1
    summary["elapsed"] = round(time.monotonic() - start, 3)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
