#!/usr/bin/env python3
"""Bounded HTTP load for the ulvs test bed: N GET requests, each on a fresh TCP
connection (Connection: close), C at a time.  Prints one JSON line:

  {"ok": N, "failed": N, "per_server": {NAME: N}, "errors": {REASON: N},
   "requests": N, "elapsed": S}

The server name comes from the X-Server header (else the first body word).
The URL's host may be an IPv6 literal: http://[2001:db8:100::1]/.
With --sources A[:P],B[:P],... (IPv6: [A]:P or A) request i binds to the (i mod n)-th source
address (and port, when given) and the output adds
"per_source": {SOURCE: {NAME: N}}.
Stops starting requests after --max-seconds; requests never started count as
failed with reason "max_seconds".  Exit 0 unless the usage is wrong.
"""
import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse

from common import split_hostport


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=0.0, help="at most this many requests per second (0: no limit)")
    ap.add_argument("--sources", default="", help="comma-separated ADDR[:PORT] to bind, in turn")
    a = ap.parse_args()
    sources = []
    for s in filter(None, a.sources.split(",")):
        sources.append((s, split_hostport(s)))
    u = urllib.parse.urlsplit(a.url)
    if u.scheme != "http" or not u.hostname:
        ap.error("--url must be http://HOST[:PORT]/PATH")
    if a.count < 0 or a.concurrency < 1 or a.timeout <= 0 or a.max_seconds <= 0 or a.rate < 0:
        ap.error("--count >= 0, --concurrency >= 1, --timeout > 0, --max-seconds > 0, --rate >= 0")
    host, port = u.hostname, u.port or 80
    path = (u.path or "/") + ("?" + u.query if u.query else "")

    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "failed": 0}
    per_server = {}
    per_source = {}
    errors = {}
    start = time.monotonic()
    deadline = start + a.max_seconds

    def error(reason):
        with lock:
            state["failed"] += 1
            errors[reason] = errors.get(reason, 0) + 1

    def one(i):
        src = sources[i % len(sources)] if sources else None
        conn = http.client.HTTPConnection(host, port, timeout=a.timeout, source_address=src[1] if src else None)
        try:
            conn.request("GET", path, headers={"Connection": "close", "User-Agent": "ulvs-httpload"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                return error("http_%d" % r.status)
            name = r.getheader("X-Server") or (body.split() or [b"?"])[0].decode("utf-8", "replace")
            with lock:
                state["ok"] += 1
                per_server[name] = per_server.get(name, 0) + 1
                if src:
                    mine = per_source.setdefault(src[0], {})
                    mine[name] = mine.get(name, 0) + 1
        except (TimeoutError, OSError, http.client.HTTPException) as e:
            reason = type(e).__name__
            if isinstance(e, TimeoutError) or "timed out" in str(e):
                reason = "timeout"
            error(reason)
        finally:
            conn.close()

    def worker():
        while True:
            with lock:
                i = state["next"]
                if i >= a.count or time.monotonic() >= deadline:
                    return
                state["next"] = i + 1
            if a.rate > 0:
                delay = start + i / a.rate - time.monotonic()
                if delay > 0:
                    if time.monotonic() + delay >= deadline:
                        error("max_seconds")
                        continue
                    time.sleep(delay)
            one(i)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(a.concurrency, max(a.count, 1)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + a.timeout + 1.0)
    with lock:
        started = state["next"]
        unfinished = started - state["ok"] - state["failed"]
        never = a.count - started
        for reason, n in (("unfinished", unfinished), ("max_seconds", never)):
            if n > 0:
                state["failed"] += n
                errors[reason] = errors.get(reason, 0) + n
        out = {
            "ok": state["ok"],
            "failed": state["failed"],
            "per_server": dict(sorted(per_server.items())),
            "errors": errors,
            "requests": a.count,
            "elapsed": round(time.monotonic() - start, 3),
        }
        if sources:
            out["per_source"] = per_source
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
