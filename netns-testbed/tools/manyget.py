#!/usr/bin/env python3
"""Many long-lived downloads at once, each checked byte for byte (stdlib only).

Opens --count TCP connections to HOST:PORT (one thread each, started over
--spread seconds) and on each GETs /slow?seconds=S&bytes=B&pattern=seq from
tools/httpd.py: B bytes over S seconds where byte i is i % 251. Every body is
checked at every offset, and its length against B and Content-Length.

When every connection has its response headers (or failed before), the
--ready-file gets one JSON line (written atomically):
  {"started": N, "headers": N, "per_server": {NAME: N},
   "flows": [{"i": I, "local_port": P, "server": NAME}, ...]}
so a scenario can act while the bodies still stream.

At the end stdout gets one JSON line:
  {"count": N, "ok": N, "broken": N, "per_server": {NAME: N},
   "broken_list": [{"i", "local_port", "server", "bytes", "error", "t"}...],
   "max_elapsed": S, "min_elapsed": S}
ok means status 200 and all B bytes in place. Exit 0 unless the usage is
wrong. Bounded: each read times out after --timeout, the whole run after
--max-seconds.
"""
import argparse
import http.client
import json
import os
import sys
import threading
import time

SEQ = bytes(i % 251 for i in range(65536 + 251))


def one(a, i, res, lock, started_headers):
    r = {"i": i, "ok": False, "local_port": None, "server": None, "bytes": 0, "error": None}
    start = time.monotonic()
    conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
    try:
        conn.connect()
        r["local_port"] = conn.sock.getsockname()[1]
        conn.request("GET", "/slow?seconds=%g&bytes=%d&pattern=seq" % (a.seconds, a.bytes),
                     headers={"Connection": "close", "User-Agent": "ulvs-manyget"})
        resp = conn.getresponse()
        r["server"] = resp.getheader("X-Server")
        r["status"] = resp.status
        clen = resp.getheader("Content-Length")
        with lock:
            started_headers[i] = {"i": i, "local_port": r["local_port"], "server": r["server"]}
        n, intact = 0, True
        deadline = start + a.max_seconds
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError("past --max-seconds")
            chunk = resp.read1(65536)  # what has arrived, so "bytes" tells how far it got
            if not chunk:
                break
            if intact:
                off = n % 251
                if chunk != SEQ[off:off + len(chunk)]:  # read1(65536): never longer
                    intact = False
                    r["error"] = "byte mismatch at offset >= %d" % n
            n += len(chunk)
            r["bytes"] = n  # as far as it got, should a later read fail
        if resp.status != 200:
            r["error"] = "status %d" % resp.status
        elif n != a.bytes or clen != str(a.bytes):
            r["error"] = "short body: %d of %d bytes (Content-Length %s)" % (n, a.bytes, clen)
        elif intact:
            r["ok"] = True
    except (OSError, http.client.HTTPException) as e:
        r["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        conn.close()
        with lock:
            started_headers.setdefault(i, {"i": i, "local_port": r["local_port"], "server": None})
    r["elapsed"] = round(time.monotonic() - start, 3)
    r["t"] = time.time()
    res[i] = r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0, help="each download lasts this long")
    ap.add_argument("--bytes", type=int, default=300000, help="each download's size")
    ap.add_argument("--spread", type=float, default=2.0, help="start the connections over this many seconds")
    ap.add_argument("--timeout", type=float, default=20.0, help="connect and per-read timeout, seconds")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="each download as a whole")
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    if not 1 <= a.count <= 1000 or not 0 <= a.seconds <= 600 or not 0 <= a.bytes <= (1 << 28) \
            or not 0 <= a.spread <= 60 or a.timeout <= 0:
        ap.error("--count 1..1000, --seconds 0..600, --bytes 0..2^28, --spread 0..60, --timeout > 0")
    res = [None] * a.count
    lock = threading.Lock()
    headers = {}
    threads = []
    t0 = time.monotonic()
    for i in range(a.count):
        t = threading.Thread(target=one, args=(a, i, res, lock, headers), daemon=True)
        t.start()
        threads.append(t)
        delay = t0 + a.spread * (i + 1) / a.count - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    if a.ready_file:
        # every connection has its headers or has ended
        end = time.monotonic() + a.timeout + 5
        while time.monotonic() < end:
            with lock:
                if len(headers) >= a.count:
                    break
            time.sleep(0.05)
        with lock:
            flows = sorted(headers.values(), key=lambda x: x["i"])
        per = {}
        for x in flows:
            if x["server"]:
                per[x["server"]] = per.get(x["server"], 0) + 1
        tmp = a.ready_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps({"started": a.count, "headers": sum(1 for x in flows if x["server"]), "per_server": per,
                                "flows": flows}) + "\n")
        os.replace(tmp, a.ready_file)
    for t in threads:
        t.join(a.max_seconds + a.timeout + 5)
    done = [r for r in res if r is not None]
    per = {}
    for r in done:
        if r["server"]:
            per[r["server"]] = per.get(r["server"], 0) + 1
    broken = [{k: r.get(k) for k in ("i", "local_port", "server", "bytes", "error", "t")}
              for r in done if not r["ok"]]
    broken += [{"i": i, "error": "did not finish"} for i in range(a.count) if res[i] is None]
    el = [r["elapsed"] for r in done] or [0]
    print(json.dumps({"count": a.count, "ok": sum(1 for r in done if r["ok"]), "broken": len(broken),
                      "per_server": per, "broken_list": broken[:50],
                      "max_elapsed": max(el), "min_elapsed": min(el)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
