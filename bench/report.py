#!/usr/bin/env python3
"""The benchmark report shared by the bench scripts built on bench/lib.sh.

    report.py RESULTS_JSONL META_JSON OUT_PREFIX

RESULTS_JSONL holds one JSON object per measurement (`record` in lib.sh): `scenario`,
`proxy`, `threads`, `round` and figures. Figures are reduced to the median over the rounds
(counts of errors are summed); ratios compare Warden with every other proxy in the same
scenario at the same thread count. META_JSON describes the run (machine, load, versions).
Writes OUT_PREFIX.json and OUT_PREFIX.md and prints the tables.
"""
import json
import statistics
import sys

# name: (column title, which way is better, decimals). Unknown figures are shown as is.
METRICS = {
    "rps": ("req/s", "higher", 0),
    "handshakes_per_sec": ("handshakes/s", "higher", 0),
    "mib_per_sec": ("MiB/s", "higher", 0),
    "p50_ms": ("p50 ms", "lower", 3),
    "p90_ms": ("p90 ms", "lower", 3),
    "p99_ms": ("p99 ms", "lower", 3),
    "p999_ms": ("p99.9 ms", "lower", 3),
    "cpu_us_per_req": ("proxy CPU µs/req", "lower", 1),
    # sidecar.sh: a pair of proxies (A and B), CPU ms per 1,000 requests = millicores at 1,000 req/s.
    "cpu_ms_per_1k_req": ("CPU ms/1k req, A+B", "lower", 1),
    "cpu_ms_per_1k_req_a": ("CPU ms/1k req, A", "lower", 1),
    "cpu_ms_per_1k_req_b": ("CPU ms/1k req, B", "lower", 1),
    "rss_a_mib": ("RSS A MiB", "lower", 1),
    "rss_b_mib": ("RSS B MiB", "lower", 1),
    "peak_rss_a_mib": ("peak RSS A MiB", "lower", 1),
    "peak_rss_b_mib": ("peak RSS B MiB", "lower", 1),
    "requests": ("requests", None, 0),
    "connections": ("connections", None, 0),
    "reuse_ratio": ("requests per connection", "higher", 0),
    "machine_busy_pct": ("machine busy %", None, 0),
    "peak_rss_mib": ("peak RSS MiB", "lower", 1),
    "baseline_rss_mib": ("baseline RSS MiB", "lower", 1),
    "idle_rss_mib": ("idle RSS MiB", "lower", 1),
    "kib_per_idle_conn": ("KiB/idle conn", "lower", 2),
    # websocket.sh
    "msgs_per_s": ("messages/s", "higher", 0),
    "cpu_us_per_msg": ("proxy CPU µs/msg", "lower", 1),
    "kib_per_idle_ws": ("KiB/idle WebSocket", "lower", 2),
}
# Counted, not averaged: summed over the rounds and reported as warnings when non-zero.
COUNTS = ("errors", "non_2xx", "socket_errors", "failed")
KEYS = ("scenario", "proxy", "threads", "round")


def main():
    jsonl, meta_path, prefix = sys.argv[1:4]
    rows = [json.loads(line) for line in open(jsonl) if line.strip()]
    meta = json.load(open(meta_path))
    groups = {}
    for r in rows:
        groups.setdefault((r["scenario"], int(r["threads"]), r["proxy"]), []).append(r)
    results = []
    for (scenario, threads, proxy), rs in groups.items():
        out = {"scenario": scenario, "threads": threads, "proxy": proxy, "rounds": len(rs)}
        for k in sorted({k for r in rs for k in r} - set(KEYS)):
            vals = [r[k] for r in rs if k in r]
            if k in COUNTS:
                out[k] = sum(vals)
            elif all(isinstance(v, (int, float)) for v in vals):
                out[k] = round(statistics.median(vals), 3)
                if len(vals) > 1:
                    out[k + "_rounds"] = vals
            else:
                out[k] = vals[0]
        results.append(out)
    order = {s: i for i, s in enumerate(meta.get("scenarios", []))}
    results.sort(key=lambda r: (order.get(r["scenario"], 99), r["threads"], r["proxy"] != "warden", r["proxy"]))

    ratios = []
    by = {(r["scenario"], r["threads"], r["proxy"]): r for r in results}
    for r in results:
        if r["proxy"] == "warden":
            continue
        w = by.get((r["scenario"], r["threads"], "warden"))
        if not w:
            continue
        ratio = {"scenario": r["scenario"], "threads": r["threads"], "vs": r["proxy"]}
        for k, (_, better, _) in METRICS.items():
            if better and isinstance(w.get(k), (int, float)) and r.get(k):
                ratio[k] = round(w[k] / r[k], 3)
        ratios.append(ratio)

    doc = dict(meta, results=results, ratios=ratios)
    with open(prefix + ".json", "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    warnings = [
        "%s (%s, %d threads): %s" % (r["proxy"], r["scenario"], r["threads"],
                                     ", ".join("%d %s" % (r[c], c.replace("_", " ")) for c in COUNTS if r.get(c)))
        for r in results if any(r.get(c) for c in COUNTS)
    ]
    busy = meta.get("machine", {}).get("cpu_busy_pct_before_run", 0)
    if busy > 10:
        warnings.insert(0, "the CPUs were %d%% busy just before the run: other work may have skewed the figures" % busy)

    md = ["# %s, %s" % (meta["title"], meta["date"]), ""]
    md += [meta.get("description", ""), ""]
    text = []
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        rs = [r for r in results if r["scenario"] == scenario]
        cols = [k for k in METRICS if any(k in r for r in rs)]
        head = ["proxy", "threads"] + [METRICS[k][0] for k in cols]
        table = [[r["proxy"], str(r["threads"])] + [fmt(r.get(k), METRICS[k][2]) for k in cols] for r in rs]
        title = "%s — %s" % (scenario, meta.get("scenario_notes", {}).get(scenario, ""))
        md += ["## " + title.rstrip(" —"), "", md_table(head, table), ""]
        text += ["", title.rstrip(" —"), text_table(head, table)]
        rr = [x for x in ratios if x["scenario"] == scenario]
        if rr:
            rcols = [k for k in METRICS if any(k in x for x in rr)]
            rhead = ["Warden ÷", "threads"] + [METRICS[k][0] + (" ↑" if METRICS[k][1] == "higher" else " ↓") for k in rcols]
            rtable = [[x["vs"], str(x["threads"])] + [fmt(x.get(k), 2) for k in rcols] for x in rr]
            md += ["Ratios (↑ higher is better for Warden, ↓ lower is better):", "", md_table(rhead, rtable), ""]
            text += [text_table(rhead, rtable)]
    md += ["## Versions", ""] + ["- %s: %s" % kv for kv in meta.get("versions", {}).items()]
    for w in warnings:
        md += ["", "**Warning:** " + w]
    with open(prefix + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(text))
    for w in warnings:
        print("WARNING: " + w)
    print("\nwrote %s.json and %s.md" % (prefix, prefix))


def fmt(x, nd):
    if x is None:
        return "n/a"
    if isinstance(x, (int, float)):
        return "%.*f" % (nd, x)
    return str(x)


def text_table(h, rs):
    w = [max(len(str(c)) for c in col) for col in zip(h, *rs)]
    line = lambda cells: "  ".join(str(c).rjust(w[i]) if i else str(c).ljust(w[i]) for i, c in enumerate(cells))
    return "\n".join([line(h), line(["-" * x for x in w])] + [line(r) for r in rs])


def md_table(h, rs):
    out = ["| " + " | ".join(h) + " |", "|" + "|".join(["---"] + ["---:"] * (len(h) - 1)) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rs]
    return "\n".join(out)


if __name__ == "__main__":
    main()
