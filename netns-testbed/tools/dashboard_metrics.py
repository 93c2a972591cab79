#!/usr/bin/env python3
"""Check that every metric a Grafana dashboard queries exists in a scrape.

  dashboard_metrics.py --dashboard director/grafana/ulvs.json --metrics SCRAPE.txt
                       [--promtool PATH]

Reads every PromQL expression of the dashboard (panel targets' "expr" and
query variables' "query"), takes the metric names out of them and compares
them with the families of the Prometheus text in SCRAPE.txt. Prints one JSON
line:

  {"exprs": N, "used": [...], "scraped": N, "missing": [...],
   "unknown_tokens": [...], "panels": N, "promql_errors": "..." | null}

"missing" are names the dashboard uses that the scrape does not have;
"unknown_tokens" are identifiers that are neither a PromQL keyword or function
nor a ulvs_/process_ metric (a typo in a function name lands here). With
--promtool, the panels' expressions (Grafana's $variables replaced by values)
go into a rules file that `promtool check rules` must accept: the PromQL
parser's verdict ("promql_errors" is its complaint). Exit 0 when all is clean
and at least one expression was found, else 1. Stdlib only.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

# PromQL functions, aggregations and keywords a dashboard may use.
KEYWORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "bool", "rate", "irate", "increase", "delta", "idelta",
    "deriv", "time", "timestamp", "vector", "scalar", "abs", "ceil", "floor", "round",
    "clamp_min", "clamp_max", "clamp", "label_replace", "label_join", "sort", "sort_desc",
    "absent", "changes", "resets", "avg_over_time", "max_over_time", "min_over_time",
    "sum_over_time", "count_over_time", "last_over_time", "histogram_quantile", "label_values",
    "query_result", "metrics", "inf", "nan", "e", "m", "s", "h", "d", "w", "y", "ms",
}
METRIC_PREFIXES = ("ulvs_", "process_")


def exprs(dash, variables=True):
    """Every PromQL string of the dashboard (panels, nested rows and, when
    `variables`, the query variables)."""
    out = []

    def panels(ps):
        for p in ps or []:
            for t in p.get("targets") or []:
                if isinstance(t.get("expr"), str) and t["expr"].strip():
                    out.append(t["expr"])
            panels(p.get("panels"))

    panels(dash.get("panels"))
    if not variables:
        return out
    for v in (dash.get("templating") or {}).get("list") or []:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if isinstance(q, str) and q.strip():
            out.append(q)
    return out


def names_in(expr):
    """(metric names, other identifiers) of one PromQL expression."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals
    s = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_:]*\}?", " ", s)  # Grafana variables
    s = re.sub(r"\{[^{}]*\}", " ", s)                        # label matchers
    s = re.sub(r"\[[^\[\]]*\]", " ", s)                      # range / subquery
    # label lists of by/without/on/ignoring/group_left/group_right
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", r"\1 ", s)
    # label_values(metric, label): the label is not a metric
    s = re.sub(r"\blabel_values\s*\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)",
               r"label_values(\1)", s)
    metrics, other = set(), set()
    for m in re.finditer(r"(?<![A-Za-z0-9_.])([A-Za-z_:][A-Za-z0-9_:]*)", s):
        tok = m.group(1)
        if tok.startswith(METRIC_PREFIXES):
            metrics.add(tok)
        elif tok.lower() not in KEYWORDS:
            other.add(tok)
    return metrics, other


def scraped_families(text):
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 3:
                names.add(parts[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, 1)[0])
    return names


def promql_check(promtool, es):
    """`promtool check rules` over the expressions as recording rules; None
    when it accepts them, else what it said."""
    def concrete(e):
        e = e.replace("$__rate_interval", "1m").replace("$__interval", "1m")
        return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", e)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": "dashboard:expr_%d" % i, "expr": concrete(e)} for i, e in enumerate(es)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
        path = f.name
    try:
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(path)
    return None if r.returncode == 0 else (r.stdout + r.stderr).strip()


def count_panels(ps):
    return sum(1 + count_panels(p.get("panels")) for p in ps or [])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--promtool")
    a = ap.parse_args()
    with open(a.dashboard, encoding="utf-8") as f:
        dash = json.load(f)
    with open(a.metrics, encoding="utf-8") as f:
        have = scraped_families(f.read())
    used, unknown = set(), set()
    es = exprs(dash)
    for e in es:
        m, o = names_in(e)
        used |= m
        unknown |= o
    missing = sorted(used - have)
    errors = promql_check(a.promtool, exprs(dash, variables=False)) if a.promtool else None
    print(json.dumps({
        "exprs": len(es),
        "used": sorted(used),
        "scraped": len(have),
        "missing": missing,
        "unknown_tokens": sorted(unknown),
        "panels": count_panels(dash.get("panels")),
        "promql_errors": errors,
    }))
    return 0 if es and not missing and not unknown and errors is None else 1


if __name__ == "__main__":
    sys.exit(main())
