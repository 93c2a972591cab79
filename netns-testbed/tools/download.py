#!/usr/bin/env python3
"""One long GET through the VIP (e.g. httpd.py's /slow), checked end to end.

As soon as the response headers arrive, --header-file (if given) is written
atomically with {"server": NAME, "t": WALLCLOCK, "sport": LOCAL_PORT}, so a
scenario can act on the serving server while the body still streams.  The body
is read to the end and must be exactly --expect-bytes long (and match
Content-Length) and consist of httpd.py's filler byte "x" only.

Prints one JSON line {"ok": bool, "server": NAME, "bytes": N, "expected": N,
"content_length": N, "elapsed": S, "error": ...}; exit 1 unless ok.
"""
import argparse
import http.client
import json
import os
import sys
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--expect-bytes", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=10.0, help="connect and per-read timeout, seconds")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="whole transfer")
    ap.add_argument("--header-file")
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    if u.scheme != "http" or not u.hostname or a.expect_bytes < 0 or a.timeout <= 0:
        ap.error("--url must be http://HOST[:PORT]/PATH, --expect-bytes >= 0, --timeout > 0")
    out = {"ok": False, "server": None, "bytes": 0, "expected": a.expect_bytes, "content_length": None,
           "error": None}
    start = time.monotonic()
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=a.timeout)
    try:
        conn.connect()
        sport = conn.sock.getsockname()[1]
        out["sport"] = sport
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        conn.request("GET", path, headers={"Connection": "close", "User-Agent": "ulvs-download"})
        r = conn.getresponse()
        out["status"] = r.status
        out["server"] = r.getheader("X-Server")
        cl = r.getheader("Content-Length")
        out["content_length"] = int(cl) if cl is not None else None
        if a.header_file:
            tmp = a.header_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"server": out["server"], "t": time.time(), "sport": sport}, f)
            os.replace(tmp, a.header_file)
        bad = 0
        while True:
            if time.monotonic() - start > a.max_seconds:
                raise TimeoutError("transfer longer than --max-seconds")
            data = r.read(65536)
            if not data:
                break
            out["bytes"] += len(data)
            bad += len(data) - data.count(b"x")
        if r.status != 200:
            out["error"] = "status %d" % r.status
        elif out["bytes"] != a.expect_bytes or out["content_length"] != a.expect_bytes:
            out["error"] = "short or long body"
        elif bad:
            out["error"] = "%d unexpected bytes in the body" % bad
        else:
            out["ok"] = True
    except (OSError, http.client.HTTPException, ValueError) as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        conn.close()
    out["elapsed"] = round(time.monotonic() - start, 3)
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
