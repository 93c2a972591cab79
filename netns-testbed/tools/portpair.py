#!/usr/bin/env python3
"""Same client port, different VIP ports: for each of --pairs source ports
(--first-port, --first-port + --step, ...) one HTTP GET to HOST:PORT1 and one
to HOST:PORT2, both from that same local port (SO_REUSEADDR), each on its own
connection; the serving server's name comes from the X-Server header.  Pick
ports outside net.ipv4.ip_local_port_range (the default does): a TIME_WAIT
left on a port by an earlier ordinary connection makes bind() fail.  Prints
one JSON line

  {"pairs": N, "ok": N, "failed": N, "differ": N, "same": N,
   "per_port": {PORT: {NAME: N}}, "errors": {REASON: N},
   "results": [[SPORT, NAME_AT_PORT1, NAME_AT_PORT2], ...]}

"differ" counts source ports whose two connections reached different servers.
"""
import argparse
import errno
import http.client
import json
import socket
import sys
import time


class BoundConnection(http.client.HTTPConnection):
    def __init__(self, host, port, sport, timeout):
        super().__init__(host, port, timeout=timeout)
        self.sport = sport

    def connect(self):
        six = ":" in self.host  # an IPv6 VIP
        s = socket.socket(socket.AF_INET6 if six else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(self.timeout)
        s.bind(("::" if six else "0.0.0.0", self.sport))
        s.connect((self.host, self.port))
        self.sock = s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port1", type=int, default=80)
    ap.add_argument("--port2", type=int, default=8080)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--first-port", type=int, default=61000,
                    help="default above the usual ephemeral range (32768-60999)")
    ap.add_argument("--step", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()
    if not 1 <= a.pairs <= 500 or not 1024 <= a.first_port or a.first_port + a.step * a.pairs > 65535:
        ap.error("--pairs 1..500 and source ports within 1024..65535")
    out = {"pairs": a.pairs, "ok": 0, "failed": 0, "differ": 0, "same": 0,
           "per_port": {str(a.port1): {}, str(a.port2): {}}, "errors": {}, "results": []}

    def get(port, sport):
        conn = BoundConnection(a.host, port, sport, a.timeout)
        try:
            conn.request("GET", "/", headers={"Connection": "close", "User-Agent": "ulvs-portpair"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise OSError("http_%d" % r.status)
            name = r.getheader("X-Server") or "?"
            out["ok"] += 1
            pp = out["per_port"][str(port)]
            pp[name] = pp.get(name, 0) + 1
            return name
        except (OSError, http.client.HTTPException) as e:
            if str(e).startswith("http_"):
                reason = str(e)
            elif isinstance(e, OSError) and e.errno:
                reason = errno.errorcode.get(e.errno, type(e).__name__)
            else:
                reason = type(e).__name__
            out["failed"] += 1
            out["errors"][reason] = out["errors"].get(reason, 0) + 1
            return None
        finally:
            conn.close()

    start = time.monotonic()
    for i in range(a.pairs):
        sport = a.first_port + i * a.step
        n1 = get(a.port1, sport)
        n2 = get(a.port2, sport)
        out["results"].append([sport, n1, n2])
        if n1 and n2:
            if n1 != n2:
                out["differ"] += 1
            else:
                out["same"] += 1
    out["elapsed"] = round(time.monotonic() - start, 3)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
