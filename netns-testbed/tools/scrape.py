#!/usr/bin/env python3
"""Scrape a Prometheus text endpoint once and summarise it as JSON.

  scrape.py --url http://198.18.0.2:9469/metrics [--raw FILE] [--timeout S]

The body is saved verbatim to --raw (for `promtool check metrics`).  stdout
gets one JSON line:

  {"status": 200, "content_type": "...", "bytes": N,
   "samples": {"metric_name": [[{"label": "value"}, VALUE], ...]},
   "types": {"metric_name": "counter"}, "help": ["metric_name", ...],
   "bad_lines": ["...", ...]}

VALUE is a float (NaN/+Inf as strings).  Exit 1 when the request fails.
"""
import argparse
import json
import re
import sys
import urllib.error
import urllib.request

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--raw")
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()
    out = {"status": None, "content_type": None, "bytes": 0, "samples": {}, "types": {}, "help": [],
           "bad_lines": []}
    try:
        with urllib.request.urlopen(a.url, timeout=a.timeout) as r:
            out["status"] = r.status
            out["content_type"] = r.headers.get("Content-Type")
            body = r.read()
    except urllib.error.HTTPError as e:
        out["status"] = e.code
        out["error"] = str(e)
        print(json.dumps(out))
        return 1
    except (OSError, ValueError) as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
        print(json.dumps(out))
        return 1
    out["bytes"] = len(body)
    if a.raw:
        with open(a.raw, "wb") as f:
            f.write(body)
    for line in body.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                out["types"][parts[2]] = parts[3]
            continue
        if line.startswith("# HELP "):
            out["help"].append(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            out["bad_lines"].append(line[:200])
            continue
        labels = dict(LABEL.findall(m.group(3) or ""))
        try:
            v = float(m.group(4))
            v = v if v == v and v not in (float("inf"), float("-inf")) else m.group(4)
        except ValueError:
            out["bad_lines"].append(line[:200])
            continue
        out["samples"].setdefault(m.group(1), []).append([labels, v])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
