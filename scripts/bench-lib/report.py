#!/usr/bin/env python3
"""Helpers of scripts/bench (python3 standard library only).

  report.py record ...   one measurement (generator + counter + director stats) -> one JSON line
  report.py wrk ...      one wrk run (text output) -> one JSON line
  report.py final ...    medians and same-round ratios -> table on stdout,
                         bench/results/latest.json and latest.svg
  report.py svg J --svg S  redraw the chart S from a latest.json J
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys

REFERENCE = "kernel-nft"
# ulvs-af_packet-alt: a second AF_PACKET director with other settings
# (scripts/bench --alt-env), measured in the same rounds for an A/B
PATH_ORDER = ["kernel-nft", "ulvs-af_packet", "ulvs-af_packet-alt", "ulvs-af_xdp", "ulvs-af_xdp-fast"]
HTTP_ORDER = ["direct", "kernel-nft", "ulvs-af_packet", "ulvs-af_packet-alt", "ulvs-af_xdp", "ulvs-af_xdp-fast"]
COLORS = {"direct": "#7f7f7f", "kernel-nft": "#4c72b0", "ulvs-af_packet": "#dd8452", "ulvs-af_packet-alt": "#c44e52",
          "ulvs-af_xdp": "#55a868", "ulvs-af_xdp-fast": "#8172b3"}
# row labels; udp6: UDP over IPv6 to each box's IPv6 VIP
PROTO_NAME = {"udp": "UDP", "tcp-syn": "SYN", "udp6": "UDP/IPv6"}
DIRECTOR_COUNTERS = ["frames_seen", "forwarded", "ring_drops"]


def load(path):
    with open(path) as f:
        return json.load(f)


def lines(path):
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(x) for x in f if x.strip()]


def pct(cpus, cpu, key):
    c = cpus.get(str(cpu))
    return None if not c else c.get(key)


# ---------------------------------------------------------------- record
def window_in_run(gen, cnt):
    keys = ("started_unix", "ended_unix")
    if not all(isinstance(d.get(k), (int, float)) for d in (gen, cnt) for k in keys):
        return None
    return gen["started_unix"] <= cnt["started_unix"] and cnt["ended_unix"] <= gen["ended_unix"]


def gap(a, ka, b, kb):
    x, y = a.get(ka), b.get(kb)
    return round(y - x, 3) if isinstance(x, (int, float)) and isinstance(y, (int, float)) else None


def cmd_record(a):
    gen, cnt = load(a.gen), load(a.count)
    s0, s1 = load(a.stats0), load(a.stats1)
    rx = [i.get("rx_packets_delta") for i in cnt["ifaces"]]
    rx_total = sum(rx) if all(isinstance(x, int) for x in rx) else None
    director = {}
    for k in DIRECTOR_COUNTERS:
        if k in s0 and k in s1:
            director[k] = s1[k] - s0[k]
    drops0, drops1 = s0.get("drops", {}), s1.get("drops", {})
    if drops1:
        director["tx_error"] = drops1.get("tx_error", 0) - drops0.get("tx_error", 0)
    procs = cnt.get("procs", {})
    cpus = cnt.get("cpus", {})
    frames, secs = cnt["frames"], cnt["seconds"]

    def ns_per_frame(pcts):
        # busy percent of one CPU-second, over the window, per forwarded frame
        if frames <= 0 or any(x is None for x in pcts) or not pcts:
            return None
        return round(sum(pcts) / 100.0 * secs * 1e9 / frames, 1)

    # every CPU from /proc/stat (includes the generator, the counter and
    # anything else running on the machine) ...
    all_cpu = ns_per_frame([(c or {}).get("busy_pct") for c in cpus.values()])
    # ... and the box's own threads (schedstat): the director, the NAPI
    # kthread(s) of its eth0 and ksoftirqd of its CPU
    box_names = [k for k in procs if k in ("director", "ksoftirqd") or k.startswith("napi")]
    box = ns_per_frame([(procs.get(k) or {}).get("cpu_pct") for k in box_names])
    napi = [(procs.get(k) or {}).get("cpu_pct") for k in procs if k.startswith("napi")]
    rec = {
        "round": a.round,
        "path": a.path,
        "proto": a.proto,
        "size": a.size,
        "cpu_ns_per_frame_all": all_cpu,
        "cpu_ns_per_frame_box": box,
        "napi_cpu_pct": round(sum(napi), 3) if napi and None not in napi else None,
        "rate": None if a.rate == "max" else int(a.rate),
        # max rows: the common rate the generator was held to (0 = none)
        "cap_pps": a.cap or None,
        "pps": cnt["pps"],
        "frames": cnt["frames"],
        "seconds": cnt["seconds"],
        "per_server_frames": [i["frames"] for i in cnt["ifaces"]],
        "ifstat_rx_packets": rx_total,
        "offered_pps": gen["pps"],
        # was the counting window inside the generator's run (wall clock)?
        # None when either program did not say (older binaries)
        "window_in_run": window_in_run(gen, cnt),
        # seconds from the generator's start to the window's, and from the
        # window's end to the generator's end (negative: outside the run)
        "window_after_start_s": gap(gen, "started_unix", cnt, "started_unix"),
        "window_before_end_s": gap(cnt, "ended_unix", gen, "ended_unix"),
        "gen_busy_retries": gen.get("busy_retries"),
        "gen_errors": gen.get("errors"),
        "box_cpu_busy_pct": pct(cpus, a.box_cpu, "busy_pct"),
        "box_cpu_softirq_pct": pct(cpus, a.box_cpu, "softirq_pct"),
        "box_cpu_user_pct": pct(cpus, a.box_cpu, "user_pct"),
        "box_cpu_system_pct": pct(cpus, a.box_cpu, "system_pct"),
        "box_cpu_steal_pct": pct(cpus, a.box_cpu, "steal_pct"),
        "gen_cpu_busy_pct": pct(cpus, a.gen_cpu, "busy_pct"),
        "director_cpu_pct": (procs.get("director") or {}).get("cpu_pct"),
        "ksoftirqd_cpu_pct": (procs.get("ksoftirqd") or {}).get("cpu_pct"),
        "director_counters": director,
    }
    print(json.dumps(rec, sort_keys=True))


# ---------------------------------------------------------------- wrk
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def to_ms(v):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", v)
    return float(m.group(1)) * UNIT[m.group(2)] if m else None


def cmd_wrk(a):
    text = open(a.file).read()
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if not rps:
        sys.exit("report.py: no Requests/sec in wrk output:\n" + text[:500])
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M))
    total = re.search(r"(\d+) requests in ([0-9.]+)(\w+)", text)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    rec = {
        "round": a.round,
        "path": a.path,
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)) if total else None,
        "p50_ms": to_ms(lat["50"]) if "50" in lat else None,
        "p99_ms": to_ms(lat["99"]) if "99" in lat else None,
        "socket_errors": sum(int(x) for x in errs.groups()) if errs else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }
    print(json.dumps(rec, sort_keys=True))


# ---------------------------------------------------------------- final
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def git_info(repo):
    def run(*args):
        try:
            return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = run("rev-parse", "HEAD")
    dirty = bool(run("status", "--porcelain", "--untracked-files=no"))
    return {"commit": commit or None, "dirty": dirty}


def rate_key(r):
    return (r is not None, r or 0)


def rate_str(r):
    return "max" if r is None else "%s/s" % short(r)


def director_info(path):
    """Which director binary was measured: its path, version line and mtime."""
    if not path or not os.path.exists(path):
        return None
    try:
        v = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        v = ""
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return {"path": path, "version": v, "built": mtime.strftime("%Y-%m-%dT%H:%M:%SZ")}


def summarize(meas):
    rounds = [m for m in meas if m["round"] > 0]
    for m in rounds:
        m.setdefault("proto", "udp")
    by = {}
    for m in rounds:
        by.setdefault((m["path"], m["proto"], m["size"], m.get("rate")), []).append(m)
    refm = {(m["round"], m["proto"], m["size"], m.get("rate")): m for m in rounds if m["path"] == REFERENCE}
    out = []
    cases = sorted({(m.get("rate"), m["proto"], m["size"]) for m in rounds},
                   key=lambda c: (rate_key(c[0]), c[1] != "udp", c[1], c[2]))
    paths = [p for p in PATH_ORDER if any(k[0] == p for k in by)]

    def same_round(ms, proto, size, rate, key):
        # ratio of this path's value to the reference's in the same round
        rs = []
        for m in ms:
            r = refm.get((m["round"], proto, size, rate))
            if r and m.get(key) is not None and r.get(key):
                rs.append(m[key] / r[key])
        return rs

    for rate, proto, size in cases:
        for p in paths:
            ms = by.get((p, proto, size, rate), [])
            if not ms:
                continue
            ratios = same_round(ms, proto, size, rate, "pps")
            offered = same_round(ms, proto, size, rate, "offered_pps")
            cpu_all = same_round(ms, proto, size, rate, "cpu_ns_per_frame_all")
            cpu_box = same_round(ms, proto, size, rate, "cpu_ns_per_frame_box")
            pps = [m["pps"] for m in ms]
            off = med(offered)
            loss = [1 - m["pps"] / m["offered_pps"] for m in ms if m["offered_pps"]]
            out.append({
                "path": p,
                "proto": proto,
                "size": size,
                "offered_vs_reference_median": off,
                # the generator must offer every path the same rate (±5 %)
                "offered_mismatch": off is not None and abs(off - 1) > 0.05,
                "loss_median": med(loss),
                "cpu_ns_per_frame_all_median": med([m.get("cpu_ns_per_frame_all") for m in ms]),
                "cpu_ns_per_frame_box_median": med([m.get("cpu_ns_per_frame_box") for m in ms]),
                "cpu_all_ratio_median": med(cpu_all),
                "cpu_box_ratio_median": med(cpu_box),
                "napi_cpu_pct_median": med([m.get("napi_cpu_pct") for m in ms]),
                "rate": rate,
                "rounds": len(ms),
                "pps_median": med(pps),
                "pps_min": min(pps),
                "pps_max": max(pps),
                "ratio_median": med(ratios),
                "ratio_per_round": [round(r, 4) for r in ratios],
                "offered_pps_median": med([m["offered_pps"] for m in ms]),
                "cap_pps_median": med([m.get("cap_pps") for m in ms]),
                "box_cpu_busy_pct_median": med([m["box_cpu_busy_pct"] for m in ms]),
                "box_cpu_softirq_pct_median": med([m["box_cpu_softirq_pct"] for m in ms]),
                "box_cpu_steal_pct_median": med([m["box_cpu_steal_pct"] for m in ms]),
                "director_cpu_pct_median": med([m["director_cpu_pct"] for m in ms]) if p != REFERENCE else None,
                "ksoftirqd_cpu_pct_median": med([m["ksoftirqd_cpu_pct"] for m in ms]),
                "ring_drops_per_s_median": med(
                    [m["director_counters"].get("ring_drops", 0) / m["seconds"] for m in ms if m["director_counters"]]
                ) if p != REFERENCE else None,
            })
    return out


def summarize_http(recs):
    by = {}
    for r in recs:
        by.setdefault(r["path"], []).append(r)
    ref = {r["round"]: r["rps"] for r in recs if r["path"] == REFERENCE}
    out = []
    for p in [p for p in HTTP_ORDER if p in by]:
        rs = by[p]
        ratios = [r["rps"] / ref[r["round"]] for r in rs if ref.get(r["round"])]
        out.append({
            "path": p,
            "rounds": len(rs),
            "rps_median": med([r["rps"] for r in rs]),
            "rps_min": min(r["rps"] for r in rs),
            "rps_max": max(r["rps"] for r in rs),
            "ratio_median": med(ratios),
            "p50_ms_median": med([r["p50_ms"] for r in rs]),
            "p99_ms_median": med([r["p99_ms"] for r in rs]),
            "errors": sum(r["socket_errors"] + r["non_2xx"] for r in rs),
        })
    return out


def fmt(v, spec, dash="-", unit=""):
    return dash if v is None else format(v, spec) + unit


def load_str(s):
    """max rows held to a common rate say so: "max≤512k/s"."""
    cap = s.get("cap_pps_median")
    return rate_str(s["rate"]) if s["rate"] is not None or not cap else "max≤%s/s" % short(cap)


def unsaturated(s):
    """A max row whose path forwarded (almost) all it was offered: the path
    could have done more, so a ratio against it is only a bound."""
    return s["rate"] is None and s["loss_median"] is not None and s["loss_median"] < 0.02


def row_name(s):
    return "%s %d B" % (PROTO_NAME.get(s["proto"], s["proto"]), s["size"])


def cases_of(summary):
    cases = []
    for s in summary:
        c = (s["rate"], s.get("proto", "udp"), s["size"])
        if c not in cases:
            cases.append(c)
    return cases


def markdown(summary, xdp, http, http_note, meta):
    """The table for the README: (a) max pps, (b) CPU per frame at an equal load, HTTP."""
    out = ["Command: `%s`; %s; kernel %s; load average (1/5/15 min) %s; commit %s." % (
        meta["command"], meta["generated"], meta["kernel"], meta.get("loadavg") or "?",
        (meta["git"]["commit"] or "?")[:12] + (" (dirty)" if meta["git"]["dirty"] else "")), ""]
    out += ["| row | load | path | pps | ratio | offered (vs ref) | loss | CPU ns/frame, all CPUs (ratio) "
            "| CPU ns/frame, box threads (ratio) |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for rate, proto, size in cases_of(summary):
        for s in [s for s in summary if (s["rate"], s["proto"], s["size"]) == (rate, proto, size)]:
            ref = s["path"] == REFERENCE
            out.append("| %s | %s | %s | %s | %s | %s%s | %s | %s (%s) | %s (%s) |" % (
                row_name(s), load_str(s), s["path"],
                fmt(s["pps_median"], ",.0f") + (" (not saturated)" if unsaturated(s) else ""),
                "1.00" if ref else fmt(s["ratio_median"], ".2f"),
                fmt(s["offered_pps_median"], ",.0f"),
                "" if ref else " (%s)" % fmt(s["offered_vs_reference_median"], ".2f")
                + (" **≠**" if s["offered_mismatch"] else ""),
                fmt(None if s["loss_median"] is None else 100 * s["loss_median"], ".1f", unit=" %"),
                fmt(s["cpu_ns_per_frame_all_median"], ",.0f"), "1.00" if ref else fmt(s["cpu_all_ratio_median"], ".2f"),
                fmt(s["cpu_ns_per_frame_box_median"], ",.0f"), "1.00" if ref else fmt(s["cpu_box_ratio_median"], ".2f")))
        if xdp["status"] != "built":
            out.append("| %s B | %s | ulvs-af_xdp | not built | | | | | |" % (size, rate_str(rate)))
    out.append("")
    if http:
        out += ["| HTTP (wrk -t1 -c32) | req/s | ratio | p50 ms | p99 ms | errors |",
                "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for h in http:
            out.append("| %s | %s | %s | %s | %s | %d |" % (
                h["path"], fmt(h["rps_median"], ",.0f"), fmt(h["ratio_median"], ".2f"),
                fmt(h["p50_ms_median"], ".3f"), fmt(h["p99_ms_median"], ".3f"), h["errors"]))
    else:
        out.append("HTTP: %s" % (http_note or "not run"))
    return "\n".join(out) + "\n"


def print_table(summary, xdp, http, http_note, crosscheck, background):
    print()
    if background:
        print("background load with no traffic (box CPU / generator CPU busy): "
              + ", ".join("%s %s / %s" % (b["when"], fmt(b["box_cpu_busy_pct"], ".0f", unit="%"),
                                         fmt(b["gen_cpu_busy_pct"], ".0f", unit="%")) for b in background))
    print("pps reaching the servers (median over rounds; ratio = same-round pps / kernel-nft pps, median);")
    print("offered = generator rate (x = same-round ratio to the reference's, '!' when off by > 5 %);")
    print("ns/frame = CPU time per forwarded frame: all CPUs (/proc/stat) and the box's threads (director,")
    print("NAPI kthread, ksoftirqd; schedstat), with the same-round ratio to the reference in brackets")
    hdr = "%-15s %-10s %11s %11s %6s %18s %6s %8s %8s %9s %5s %15s %15s" % (
        "path", "row", "load", "pps", "ratio", "offered", "loss", "box CPU", "director", "NAPI", "ksirq",
        "ns/frame all", "ns/frame box")
    print(hdr)
    print("-" * len(hdr))
    for rate, proto, size in cases_of(summary):
        for s in [s for s in summary if (s["rate"], s["proto"], s["size"]) == (rate, proto, size)]:
            ref = s["path"] == REFERENCE
            off = fmt(s["offered_pps_median"], ",.0f") + ("" if ref else " x%s%s" % (
                fmt(s["offered_vs_reference_median"], ".2f"), "!" if s["offered_mismatch"] else ""))
            print("%-15s %-10s %11s %11s %6s %18s %6s %8s %8s %9s %5s %15s %15s" % (
                s["path"], row_name(s), load_str(s), fmt(s["pps_median"], ",.0f"),
                fmt(s["ratio_median"], ".2f"), off,
                fmt(None if s["loss_median"] is None else 100 * s["loss_median"], ".1f", unit="%"),
                fmt(s["box_cpu_busy_pct_median"], ".0f", unit="%"),
                fmt(s["director_cpu_pct_median"], ".0f", unit="%"), fmt(s["napi_cpu_pct_median"], ".0f", unit="%"),
                fmt(s["ksoftirqd_cpu_pct_median"], ".0f", unit="%"),
                "%s (%s)" % (fmt(s["cpu_ns_per_frame_all_median"], ",.0f"),
                             "1.00" if ref else fmt(s["cpu_all_ratio_median"], ".2f")),
                "%s (%s)" % (fmt(s["cpu_ns_per_frame_box_median"], ",.0f"),
                             "1.00" if ref else fmt(s["cpu_box_ratio_median"], ".2f"))))
        if xdp["status"] != "built":
            print("%-15s %-10s %6s   af_xdp: not built%s" % ("ulvs-af_xdp", "%d B" % size, rate_str(rate),
                                                       " (%s)" % xdp["reason"] if xdp["reason"] else ""))
    bad = [s for s in summary if s["offered_mismatch"]]
    for s in bad:
        print("WARNING: %s %s at %s: the generator offered %s of the reference's rate (more than 5 %% off); "
              "compare that row with care" % (s["path"], row_name(s), rate_str(s["rate"]),
                                               fmt(s["offered_vs_reference_median"], ".2f")))
    for s in [s for s in summary if unsaturated(s)]:
        print("NOTE: %s %s at %s forwarded all but %s of what it was offered: not saturated, so a ratio "
              "against it is a bound, not a measurement" % (s["path"], row_name(s), load_str(s),
                                                            fmt(100 * s["loss_median"], ".1f", unit=" %")))
    if crosscheck is not None:
        print("counter cross-check: MAC-filtered frames vs interface rx_packets, largest difference %.2f%%" % crosscheck)
    print()
    if http:
        print("HTTP through each path (wrk -t1 -c32; median over rounds; ratio = same-round req/s / kernel-nft)")
        hdr = "%-15s %11s %23s %6s %9s %9s %7s" % ("path", "req/s", "min..max", "ratio", "p50 ms", "p99 ms", "errors")
        print(hdr)
        print("-" * len(hdr))
        for h in http:
            print("%-15s %11s %23s %6s %9s %9s %7d" % (
                h["path"], fmt(h["rps_median"], ",.0f"),
                "%s..%s" % (fmt(h["rps_min"], ",.0f"), fmt(h["rps_max"], ",.0f")),
                fmt(h["ratio_median"], ".2f"), fmt(h["p50_ms_median"], ".3f"), fmt(h["p99_ms_median"], ".3f"),
                h["errors"]))
        if xdp["status"] != "built":
            print("%-15s af_xdp: not built" % "ulvs-af_xdp")
    else:
        print("HTTP: %s" % (http_note or "not run"))
    print()


# ---------------------------------------------------------------- SVG
def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def short(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return "%.2fM" % (v / 1e6)
    if v >= 1e3:
        return "%.0fk" % (v / 1e3)
    return "%.0f" % v


def nice_max(v):
    if v <= 0:
        return 1.0
    mag = 10 ** len(str(int(v))) / 10
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * mag >= v:
            return m * mag
    return 10 * mag


def panel(x0, y0, w, h, title, ylabel, groups, series, get, missing_note):
    """A grouped bar chart: groups along x, one bar per series in each group.

    get(group, series) -> (value, low, high, label) or None (drawn as a dashed
    placeholder with missing_note(series) when that is not None)."""
    out = []
    left, right, top, bottom = 70, 10, 34, 40
    pw, ph = w - left - right, h - top - bottom
    vals = [get(g, s) for g in groups for s in series]
    # headroom above the tallest bar for its two-line label
    vmax = nice_max(1.12 * max([max(v[0], v[2] or 0) for v in vals if v and v[0] is not None] + [1]))
    out.append('<text x="%d" y="%d" font-size="15" font-weight="bold">%s</text>' % (x0 + 10, y0 + 20, esc(title)))
    ox, oy = x0 + left, y0 + top
    for i in range(6):
        v = vmax * i / 5
        y = oy + ph - ph * i / 5
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (ox, y, ox + pw, y))
        out.append('<text x="%d" y="%.1f" font-size="11" text-anchor="end">%s</text>' % (ox - 6, y + 4, short(v)))
    out.append('<text transform="translate(%d,%d) rotate(-90)" font-size="12" text-anchor="middle">%s</text>'
               % (x0 + 14, oy + ph / 2, esc(ylabel)))
    gw = pw / max(len(groups), 1)
    bw = min(70, gw * 0.8 / max(len(series), 1))
    for gi, g in enumerate(groups):
        gx = ox + gi * gw + (gw - bw * len(series)) / 2
        for si, s in enumerate(series):
            x = gx + si * bw
            v = get(g, s)
            if v is None or v[0] is None:
                note = missing_note(s)
                if note:
                    out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="%s" '
                               'stroke-dasharray="4,3"/>' % (x + 3, oy + ph * 0.55, bw - 6, ph * 0.45, COLORS.get(s, "#999")))
                    out.append('<text transform="translate(%.1f,%.1f) rotate(-90)" font-size="11" fill="#555">%s</text>'
                               % (x + bw / 2 + 4, oy + ph - 6, esc(note)))
                continue
            val, lo, hi, label = v
            bh = ph * val / vmax
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>'
                       % (x + 3, oy + ph - bh, bw - 6, bh, COLORS.get(s, "#999"), esc(s), esc(g), esc(label)))
            if lo is not None and hi is not None and hi > lo:
                cx = x + bw / 2
                y1, y2 = oy + ph - ph * lo / vmax, oy + ph - ph * hi / vmax
                out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222"/>' % (cx, y1, cx, y2))
                for yy in (y1, y2):
                    out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222"/>' % (cx - 4, yy, cx + 4, yy))
            top_y = oy + ph - ph * max(val, hi or 0) / vmax
            parts = label.split("\n")
            for li, part in enumerate(parts):
                out.append('<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>'
                           % (x + bw / 2, top_y - 5 - 13 * (len(parts) - 1 - li), esc(part)))
        out.append('<text x="%.1f" y="%d" font-size="12" text-anchor="middle">%s</text>'
                   % (ox + gi * gw + gw / 2, oy + ph + 18, esc(g)))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>' % (ox, oy + ph, ox + pw, oy + ph))
    # legend
    lx = ox
    for s in series:
        out.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (lx, y0 + h - 16, COLORS.get(s, "#999")))
        out.append('<text x="%d" y="%d" font-size="12">%s</text>' % (lx + 16, y0 + h - 6, esc(s)))
        lx += 30 + 8 * len(s)
    return out


def write_svg(path, summary, http, xdp, meta):
    ph = 380
    panels = []
    cases = cases_of(summary)
    groups = ["%s %d B, %s" % (PROTO_NAME.get(proto, proto), size,
                               "max load" if rate is None else "%s offered" % rate_str(rate))
              for rate, proto, size in cases]
    series = [p for p in PATH_ORDER if any(s["path"] == p for s in summary)]
    if xdp["status"] != "built" and "ulvs-af_xdp" not in series:
        series.append("ulvs-af_xdp")
    w = max(760, 100 + len(groups) * len(series) * 62)
    idx = {(s["path"], s.get("proto", "udp"), s["size"], s["rate"]): s for s in summary}

    def get_pps(g, s):
        rate, proto, size = cases[groups.index(g)]
        r = idx.get((s, proto, size, rate))
        if not r:
            return None
        label = short(r["pps_median"])
        if r["path"] != REFERENCE and r["ratio_median"] is not None:
            label += "\nx%.2f" % r["ratio_median"]
        return (r["pps_median"], r["pps_min"], r["pps_max"], label)

    def missing(s):
        return "af_xdp: not built" if s == "ulvs-af_xdp" and xdp["status"] != "built" else None

    panels.append(lambda y: panel(0, y, w, ph, "Frames per second reaching the real servers (median, min..max)", "frames/s", groups, series, get_pps, missing))
    if http:
        hidx = {h["path"]: h for h in http}
        hseries = [p for p in HTTP_ORDER if p in hidx]
        if xdp["status"] != "built":
            hseries.append("ulvs-af_xdp")

        def get_http(g, s):
            h = hidx.get(s)
            if not h:
                return None
            return (h["rps_median"], h["rps_min"], h["rps_max"], "%s\np99 %s ms" % (short(h["rps_median"]),
                                                                                    fmt(h["p99_ms_median"], ".2f")))

        panels.append(lambda y: panel(0, y, w, ph, "HTTP requests per second (wrk -t1 -c32, median)", "requests/s",
                                      ["GET /"], hseries, get_http, missing))
    body = []
    y = 0
    for p in panels:
        body += p(y)
        y += ph + 10
    foot = "%s | %s | kernel %s | %s" % (meta["generated"], meta["command"], meta["kernel"],
                                         (meta["git"]["commit"] or "?")[:12] + (" (dirty)" if meta["git"]["dirty"] else ""))
    body.append('<text x="10" y="%d" font-size="10" fill="#555">%s</text>' % (y + 8, esc(foot)))
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
           'font-family="sans-serif">' % (w, y + 16, w, y + 16),
           '<rect width="100%" height="100%" fill="white"/>'] + body + ["</svg>"]
    with open(path, "w") as f:
        f.write("\n".join(svg) + "\n")


def cmd_final(a):
    meas = lines(a.measurements)
    http_recs = lines(a.http)
    summary = summarize(meas)
    http = summarize_http(http_recs) if http_recs else []
    xdp = {"status": a.xdp_status, "reason": a.xdp_reason}
    diffs = [abs(m["frames"] - m["ifstat_rx_packets"]) / m["frames"] * 100
             for m in meas if m.get("ifstat_rx_packets") is not None and m["frames"] > 0]
    crosscheck = max(diffs) if diffs else None
    background = []
    for when, path in zip(["before", "after"], a.background):
        try:
            cpus = load(path).get("cpus", {})
        except (OSError, ValueError):
            cpus = {}
        background.append({"when": when, "box_cpu_busy_pct": pct(cpus, a.box_cpu, "busy_pct"),
                           "gen_cpu_busy_pct": pct(cpus, a.gen_cpu, "busy_pct")})
    meta = {
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": a.command,
        "git": git_info(a.repo),
        "kernel": platform.release(),
        "director": director_info(a.director),
        "cpus": os.cpu_count(),
        "rows": a.rows,
        "loadavg": a.loadavg,
    }
    doc = {
        "schema": 1,
        **meta,
        "params": {"rounds": a.rounds, "seconds": a.seconds, "rows": a.rows.split(), "flows": a.flows,
                   "servers": a.servers, "box_cpu": a.box_cpu, "gen_cpu": a.gen_cpu, "gro": a.gro,
                   "rates": [None if r == "max" else int(r) for r in a.rates.split()]},
        "reference": REFERENCE,
        "af_xdp": xdp,
        "summary": summary,
        "http": {"status": "ok" if http else "skipped", "note": a.http_note, "summary": http},
        "counter_crosscheck_max_diff_pct": crosscheck,
        "background_load": background,
        "measurements": meas,
        "http_measurements": http_recs,
    }
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    write_svg(a.svg, summary, http, xdp, meta)
    md = markdown(summary, xdp, http, a.http_note, meta)
    with open(a.markdown, "w") as f:
        f.write(md)
    print_table(summary, xdp, http, a.http_note, crosscheck, background)
    print(md)
    print("written: %s, %s, %s" % (a.json, a.svg, a.markdown))


def cmd_svg(a):
    doc = load(a.source)
    meta = {k: doc.get(k) for k in ("generated", "command", "kernel", "git")}
    write_svg(a.svg, doc["summary"], doc["http"]["summary"], doc["af_xdp"], meta)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--round", type=int, required=True)
    r.add_argument("--path", required=True)
    r.add_argument("--size", type=int, required=True)
    r.add_argument("--proto", default="udp")
    r.add_argument("--rate", default="max")
    r.add_argument("--cap", type=int, default=0)
    for k in ("gen", "count", "stats0", "stats1"):
        r.add_argument("--" + k, required=True)
    r.add_argument("--box-cpu", type=int, required=True)
    r.add_argument("--gen-cpu", type=int, required=True)
    w = sub.add_parser("wrk")
    w.add_argument("--round", type=int, required=True)
    w.add_argument("--path", required=True)
    w.add_argument("file")
    f = sub.add_parser("final")
    f.add_argument("--measurements", required=True)
    f.add_argument("--http")
    f.add_argument("--http-note", default="")
    f.add_argument("--background", action="append", default=[])
    f.add_argument("--xdp-status", default="not built")
    f.add_argument("--xdp-reason", default="")
    f.add_argument("--command", default="scripts/bench")
    f.add_argument("--repo", default=".")
    f.add_argument("--director", default="")
    f.add_argument("--rates", default="max")
    for k in ("rounds", "seconds", "flows", "servers", "box-cpu", "gen-cpu"):
        f.add_argument("--" + k, type=int, required=True)
    f.add_argument("--rows", required=True)
    f.add_argument("--loadavg", default="")
    f.add_argument("--markdown", required=True)
    f.add_argument("--gro", required=True)
    f.add_argument("--json", required=True)
    f.add_argument("--svg", required=True)
    v = sub.add_parser("svg", help="redraw the chart from a latest.json")
    v.add_argument("source")
    v.add_argument("--svg", required=True)
    a = ap.parse_args()
    {"record": cmd_record, "wrk": cmd_wrk, "final": cmd_final, "svg": cmd_svg}[a.cmd](a)


if __name__ == "__main__":
    main()
