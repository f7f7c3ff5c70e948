#!/usr/bin/env python3
"""The soak's verdict (scripts/soak.sh): reads OUT/samples.tsv and OUT/serve.log, writes
OUT/summary.txt, exits 1 on a finding.  Usage: soak-summary.py OUT MINUTES EXIT_STATUS"""
import sys, csv, re
out, minutes, status = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = list(csv.DictReader(open(f"{out}/samples.tsv"), delimiter="\t"))
log = open(f"{out}/serve.log", errors="replace").read()
problems = []
if not rows:
    problems.append("no samples")
warm = [r for r in rows if int(r["seconds"]) >= minutes * 60 // 4] or rows
rss0, rss1 = int(warm[0]["rss_kib"]), int(rows[-1]["rss_kib"])
rss_max = max(int(r["rss_kib"]) for r in rows)
if rss1 > max(rss0 * 1.2, rss0 + 8192):
    problems.append(f"RSS grew from {rss0} KiB to {rss1} KiB")
series = {}
for r in warm:
    series.setdefault(r["targets"], []).append(int(r["series"]))
for t, counts in series.items():
    last = counts[len(counts) * 3 // 4:]
    if len(set(last)) > 1:
        problems.append(f"with {t} targets the series count still moved in the last quarter: {last}")
    if max(counts) > counts[0] * 1.1:
        problems.append(f"with {t} targets the series count grew from {counts[0]} to {max(counts)}")
panics = len(re.findall(r"panicked", log))
errors = len(re.findall(r"\bERROR\b", log))
if panics:
    problems.append(f"{panics} panics in the log")
if errors:
    problems.append(f"{errors} error lines in the log")
if status != 0:
    problems.append(f"exit status {status} after SIGTERM")
sent = int(rows[-1]["probes_sent"]) if rows else 0
summary = [
    f"soak: {minutes} min, {len(rows)} samples, 200/210 targets (30 timing out, 20 unresolvable), a reload every minute",
    f"RSS: {rss0} KiB after warm-up, {rss1} KiB at the end, {rss_max} KiB at most",
    "series after warm-up: " + "; ".join(f"{t} targets: first {c[0]}, min {min(c)}, max {max(c)}, last {c[-1]}" for t, c in sorted(series.items())),
    f"probes sent (current targets' counters at the last sample): {sent}",
    f"panics: {panics}; error lines: {errors}; exit status after SIGTERM: {status}",
    "result: " + ("PASS" if not problems else "FAIL: " + "; ".join(problems)),
]
open(f"{out}/summary.txt", "w").write("\n".join(summary) + "\n")
print("\n".join(summary))
sys.exit(1 if problems else 0)
