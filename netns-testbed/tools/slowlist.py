#!/usr/bin/env python3
"""A slow reader of `ulvsadm list` on the control socket, bounded in time.

  slowlist.py --unix PATH [--slow-seconds S] [--chunk BYTES] [--pause S]
              [--ready-file FILE] [--max-seconds S]

Sends {"cmd":"list"}, then for --slow-seconds reads at most --chunk bytes
every --pause seconds (so the director streams its answer the whole time);
--ready-file is written once the first bytes came. Then it reads the rest
as fast as it comes, until the newline that ends the answer, the director
closing, or --max-seconds in all.

stdout gets one JSON line:

  {"bytes": N, "complete": bool, "slow_until": T, "done_at": T,
   "ok": bool|null, "services": N, "servers": N, "error": "..."|null}

(times are Unix seconds; services/servers counted in the parsed answer).
Exit 0 unless the usage is wrong.
"""
import argparse
import json
import socket
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unix", required=True)
    ap.add_argument("--slow-seconds", type=float, default=3.0)
    ap.add_argument("--chunk", type=int, default=32768)
    ap.add_argument("--pause", type=float, default=0.05)
    ap.add_argument("--ready-file")
    ap.add_argument("--max-seconds", type=float, default=120.0)
    a = ap.parse_args()

    start = time.time()
    out = {"bytes": 0, "complete": False, "slow_until": None, "done_at": None,
           "ok": None, "services": 0, "servers": 0, "error": None}
    buf = bytearray()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(10)
        s.connect(a.unix)
        s.sendall(b'{"cmd":"list"}\n')
        slow_end = None
        while time.time() - start < a.max_seconds:
            slow = slow_end is None or time.time() < slow_end
            data = s.recv(a.chunk if slow else 1 << 20)
            if not data:
                break
            if slow_end is None:
                slow_end = time.time() + a.slow_seconds
                if a.ready_file:
                    open(a.ready_file, "w").close()
            buf += data
            if buf.endswith(b"\n"):
                out["complete"] = True
                break
            if slow:
                time.sleep(a.pause)
            elif out["slow_until"] is None:
                out["slow_until"] = slow_end
        out["slow_until"] = out["slow_until"] or slow_end
    except OSError as e:
        out["error"] = str(e)
    finally:
        s.close()
    out["done_at"] = time.time()
    out["bytes"] = len(buf)
    if out["complete"]:
        try:
            d = json.loads(bytes(buf))
            out["ok"] = d.get("ok")
            services = d.get("data", {}).get("services", [])
            out["services"] = len(services)
            out["servers"] = sum(len(x.get("real_servers", [])) for x in services)
        except ValueError as e:
            out["error"] = "not JSON: %s" % e
    print(json.dumps(out))


if __name__ == "__main__":
    main()
