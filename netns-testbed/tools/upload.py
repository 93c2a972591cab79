#!/usr/bin/env python3
"""POST a random body through the VIP and check that the real server got all of
it: the answer "NAME <bytes> <sha256hex>" must match what was sent.  Prints
JSON {"ok": bool, "server": NAME, "bytes": N, "elapsed": S, ...}; exit 1 on a
mismatch or failure.
"""
import argparse
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", required=True)
    ap.add_argument("--bytes", type=int, default=2097152)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    if u.scheme != "http" or not u.hostname or a.bytes < 0:
        ap.error("--url must be http://HOST[:PORT]/PATH and --bytes >= 0")
    body = os.urandom(a.bytes)
    want = hashlib.sha256(body).hexdigest()
    out = {"ok": False, "server": None, "bytes": a.bytes, "sha256": want}
    start = time.monotonic()
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=a.timeout)
    try:
        conn.request("POST", u.path or "/", body=body,
                     headers={"Connection": "close", "Content-Type": "application/octet-stream"})
        r = conn.getresponse()
        reply = r.read().decode("utf-8", "replace").split()
        out["status"] = r.status
        if r.status == 200 and len(reply) == 3:
            name, got_bytes, got_sha = reply
            out.update(server=name, got_bytes=int(got_bytes), got_sha256=got_sha)
            out["ok"] = int(got_bytes) == a.bytes and got_sha == want
            if not out["ok"]:
                out["error"] = "mismatch"
        else:
            out["error"] = "unexpected reply: %r" % " ".join(reply)[:200]
    except (OSError, http.client.HTTPException, ValueError) as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        conn.close()
    out["elapsed"] = round(time.monotonic() - start, 3)
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
