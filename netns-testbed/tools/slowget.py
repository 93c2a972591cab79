#!/usr/bin/env python3
"""One long-lived HTTP download for the ulvs test bed: GET
/slow?seconds=S&bytes=B (tools/httpd.py streams B bytes of "x" over S seconds)
on one TCP connection.

As soon as the response headers are in, --info-file gets one JSON line
{"local_port": P, "server": NAME} (written atomically), so a scenario can name
the flow (client port) and the server that owns it while the download runs.
At the end it prints one JSON line
  {"ok": bool, "server": NAME, "local_port": P, "bytes": N, "expected": N,
   "intact": bool, "elapsed": S, "error": "..."}
ok means status 200, all B bytes received and every byte is "x".
"""
import argparse
import http.client
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--bytes", type=int, default=1048576)
    ap.add_argument("--timeout", type=float, default=10.0, help="socket timeout (per read)")
    ap.add_argument("--info-file")
    a = ap.parse_args()
    if not 0 <= a.seconds <= 600 or not 0 <= a.bytes <= (1 << 30):
        ap.error("--seconds 0..600, --bytes 0..2^30")
    out = {"ok": False, "server": None, "local_port": None, "bytes": 0, "expected": a.bytes,
           "intact": False}
    start = time.monotonic()
    conn = http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)
    try:
        conn.connect()
        out["local_port"] = conn.sock.getsockname()[1]
        conn.request("GET", "/slow?seconds=%g&bytes=%d" % (a.seconds, a.bytes),
                     headers={"Connection": "close", "User-Agent": "ulvs-slowget"})
        r = conn.getresponse()
        out["status"] = r.status
        out["server"] = r.getheader("X-Server")
        if a.info_file:
            tmp = a.info_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(json.dumps({"local_port": out["local_port"], "server": out["server"]}) + "\n")
            os.replace(tmp, a.info_file)
        n, intact = 0, True
        while True:
            chunk = r.read(65536)
            if not chunk:
                break
            n += len(chunk)
            if intact and chunk.strip(b"x"):
                intact = False
        out["bytes"] = n
        out["intact"] = intact and n == a.bytes
        out["ok"] = r.status == 200 and out["intact"]
        if not out["ok"]:
            out["error"] = "short or corrupt body" if r.status == 200 else "status %d" % r.status
    except (OSError, http.client.HTTPException) as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    finally:
        conn.close()
    out["elapsed"] = round(time.monotonic() - start, 3)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
