#!/usr/bin/env python3
"""A tiny HTTP/1.1 real server for the ulvs test bed (stdlib only).

GET /health            -> 200 "ok"
GET /slow?seconds=S&bytes=B -> 200, B bytes streamed evenly over S seconds
                          (all "x"; with &pattern=seq byte i is i % 251, so
                          a client can check every byte's place)
GET <any other path>   -> 200 "NAME\\n"
POST <any path>        -> reads the whole body (Content-Length), answers
                          "NAME <bytes> <sha256hex>\\n"
Every answer carries the header X-Server: NAME.

--bind :: listens on IPv6 and IPv4 at once (one dual-stack socket), for the
dual-stack test bed; the default 0.0.0.0 is IPv4 only.
"""
import argparse
import hashlib
import http.server
import os
import signal
import socket
import sys
import time
import urllib.parse

from common import family, unmap

MAX_SLOW_SECONDS = 600.0
MAX_SLOW_BYTES = 1 << 30
MAX_BODY = 1 << 30
# /slow?pattern=seq: byte i of the body is i % 251 (a prime, so no chunk
# boundary lines up with the period); a window of this holds any chunk.
SEQ = bytes(i % 251 for i in range(65536 + 251))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ulvs-httpd/1"
    timeout = 120  # an idle keep-alive connection is dropped after this

    def log_message(self, fmt, *args):  # quiet unless --verbose
        if self.server.verbose:
            sys.stderr.write("%s - %s\n" % (unmap(self.client_address[0]), fmt % args))

    def _send(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Server", self.server.name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/health":
            return self._send(200, b"ok")
        if url.path == "/slow":
            return self._slow(urllib.parse.parse_qs(url.query))
        return self._send(200, (self.server.name + "\n").encode())

    def _slow(self, q):
        try:
            seconds = min(max(float(q.get("seconds", ["10"])[0]), 0.0), MAX_SLOW_SECONDS)
            nbytes = min(max(int(q.get("bytes", ["1048576"])[0]), 0), MAX_SLOW_BYTES)
            seq = q.get("pattern", ["x"])[0] == "seq"
        except ValueError:
            return self._send(400, b"bad seconds or bytes\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(nbytes))
        self.send_header("X-Server", self.server.name)
        self.end_headers()
        if self.command == "HEAD":
            return
        steps = max(1, min(int(seconds * 10), nbytes or 1))
        chunk = b"x" * 65536
        start = time.monotonic()
        sent = 0
        for i in range(1, steps + 1):
            target = nbytes * i // steps
            while sent < target:
                n = min(target - sent, len(chunk))
                self.wfile.write(SEQ[sent % 251:sent % 251 + n] if seq else chunk[:n])
                sent += n
            self.wfile.flush()
            delay = start + seconds * i / steps - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def do_POST(self):
        length = self.headers.get("Content-Length")
        if length is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._post_chunked()
            return self._send(411, b"Content-Length required\n")
        try:
            remaining = int(length)
        except ValueError:
            return self._send(400, b"bad Content-Length\n")
        if remaining < 0 or remaining > MAX_BODY:
            return self._send(413, b"body too large\n")
        h = hashlib.sha256()
        total = 0
        while remaining > 0:
            data = self.rfile.read(min(remaining, 65536))
            if not data:
                break
            h.update(data)
            total += len(data)
            remaining -= len(data)
        if remaining:
            self.close_connection = True
            return
        self._send(200, ("%s %d %s\n" % (self.server.name, total, h.hexdigest())).encode())

    def _post_chunked(self):
        h = hashlib.sha256()
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                return self._send(400, b"bad chunk\n")
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            data = self.rfile.read(size)
            h.update(data)
            total += len(data)
            self.rfile.readline(8)
            if total > MAX_BODY:
                return self._send(413, b"body too large\n")
        self._send(200, ("%s %d %s\n" % (self.server.name, total, h.hexdigest())).encode())


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            # IPv4 clients too, as ::ffff:a.b.c.d (the dual-stack bed serves both)
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class Server6(Server):
    address_family = socket.AF_INET6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--pidfile")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args()
    try:
        cls = Server6 if family(a.bind) == socket.AF_INET6 else Server
        srv = cls((a.bind, a.port), Handler)
    except OSError as e:
        sys.exit("httpd.py: cannot listen on %s:%d: %s" % (a.bind, a.port, e))
    srv.name = a.name
    srv.verbose = a.verbose

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    if a.pidfile:  # written once listening, so it doubles as a readiness signal
        tmp = a.pidfile + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % os.getpid())
        os.replace(tmp, a.pidfile)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
        if a.pidfile:
            try:
                with open(a.pidfile) as f:
                    if f.read().strip() == str(os.getpid()):
                        os.unlink(a.pidfile)
            except OSError:
                pass


if __name__ == "__main__":
    main()
