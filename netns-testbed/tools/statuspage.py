#!/usr/bin/env python3
"""Read the director's HTML status page (as a browser's DOM dump or as served)
and a PNG screenshot of it; print one JSON line:

  statuspage.py --html DOM.html [--png SHOT.png]

  {"title": "...", "refresh": "5",
   "services": {NAME: {"caption": "...", "servers": {ADDRESS: STATE}}},
   "cells": {NAME: {ADDRESS: {"state": "...", "reason": "..."}}},
   "sync": "on" | "off" | null, "sync_peers": {ADDRESS: BULK_STATE},
   "tags": ["html", ...], "scripts": N, "external": ["..."],
   "png": {"bytes": N, "width": W, "height": H} | null}

Names and addresses are the unescaped attribute values (what the operator
wrote in the config), so a caller compares them with `ulvsadm list --json`.
"tags" is every element name in the document: an escaping bug shows up as a
tag the page never writes (e.g. from a service name). Standard library only.
"""
import argparse
import html.parser
import json
import struct
import sys


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title = None
        self.refresh = None
        self.services = {}
        self.cells = {}
        self.tags = set()
        self.scripts = 0
        self.external = []
        self.sync = None
        self.sync_peers = {}
        self._peer = None
        self._in = None  # "title" | "caption" | "sync" | ("cell", class) | ("peer", n)
        self._svc = None
        self._srv = None
        self._cell = 0
        self._text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "script":
            self.scripts += 1
        for k in ("src", "href"):
            v = a.get(k) or ""
            if tag in ("script", "img", "link", "iframe", "object", "embed") and v:
                self.external.append(v)
            if tag == "a" and v and not v.startswith("/"):
                self.external.append(v)
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            self.refresh = a.get("content")
        if tag == "title":
            self._in, self._text = "title", []
        if tag == "span" and a.get("id") == "sync":
            self._in, self._text = "sync", []
        if tag == "tr" and "data-peer" in a:
            self._peer, self._cell = a["data-peer"], 0
        if tag == "td" and self._peer is not None:
            self._cell += 1
            self._in, self._text = ("peer", self._cell), []
        if tag == "table" and "data-service" in a:
            self._svc = a["data-service"]
            self.services[self._svc] = {"caption": "", "servers": {}}
            self.cells[self._svc] = {}
        if tag == "caption" and self._svc is not None:
            self._in, self._text = "caption", []
        if tag == "tr" and self._svc is not None and "data-server" in a:
            self._srv = a["data-server"]
            self.services[self._svc]["servers"][self._srv] = a.get("data-state")
            self.cells[self._svc][self._srv] = {}
            self._cell = 0
        if tag == "td" and self._srv is not None:
            cls = a.get("class") or ""
            self._in, self._text = ("cell", cls), []

    def handle_endtag(self, tag):
        if tag == "title" and self._in == "title":
            self.title = "".join(self._text).strip()
            self._in = None
        elif tag == "span" and self._in == "sync":
            self.sync = "".join(self._text).strip()
            self._in = None
        elif tag == "td" and isinstance(self._in, tuple) and self._in[0] == "peer":
            if self._in[1] == 2:
                self.sync_peers[self._peer] = "".join(self._text).strip()
            self._in = None
        elif tag == "caption" and self._in == "caption":
            self.services[self._svc]["caption"] = " ".join("".join(self._text).split())
            self._in = None
        elif tag == "td" and isinstance(self._in, tuple):
            cls = self._in[1]
            if cls in ("state", "reason"):
                self.cells[self._svc][self._srv][cls] = "".join(self._text).strip()
            self._in = None
        elif tag == "tr":
            self._srv = None
            self._peer = None
        elif tag == "table":
            self._svc = None

    def handle_data(self, data):
        if self._in is not None:
            self._text.append(data)


def png_info(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return {"bytes": len(data), "width": None, "height": None}
    w, h = struct.unpack(">II", data[16:24])
    return {"bytes": len(data), "width": w, "height": h}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--html", required=True)
    ap.add_argument("--png")
    a = ap.parse_args()
    p = Page()
    with open(a.html, encoding="utf-8", errors="replace") as f:
        p.feed(f.read())
    p.close()
    out = {
        "title": p.title,
        "refresh": p.refresh,
        "services": p.services,
        "cells": p.cells,
        "sync": p.sync,
        "sync_peers": p.sync_peers,
        "tags": sorted(p.tags),
        "scripts": p.scripts,
        "external": p.external,
        "png": None,
    }
    if a.png:
        try:
            out["png"] = png_info(a.png)
        except OSError as e:
            out["png"] = {"bytes": 0, "width": None, "height": None, "error": str(e)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
