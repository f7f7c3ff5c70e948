#!/usr/bin/env python3
"""Helpers for scripts/bench.sh (Python 3 standard library only).

  benchlib.py bpf-snap PID          JSON snapshot of the BPF programs process PID holds open,
                                    with the kernel's own accounting (run_time_ns, run_cnt;
                                    kernel.bpf_stats_enabled=1 must be on), each program
                                    classified by the hook it runs on.
  benchlib.py bpf-others PID...     JSON list of the other processes (not PID...) that hold BPF
                                    programs: noise the bench did not start.
  benchlib.py cpu-snap PID          JSON snapshot of the CPU time (own + reaped children, in clock
                                    ticks) of every user-space process except PID and its
                                    descendants: what the rest of the machine used meanwhile.
  benchlib.py prom FILE             JSON summary of one /metrics body.
  benchlib.py summarise DIR         reads DIR/raw, prints the results table, writes
                                    DIR/results.md and DIR/results.json.

Programs are attributed to a process through /proc/PID/fdinfo (every BPF program and link file
descriptor names its prog_id there), not through program names; the hook a program runs on comes
from `bpftool perf` for classic tracepoints (bpftrace) and from the (truncated) program name for
BTF tracepoints (tracepkt: net_dev_queue_b, netif_receive_s, netif_rx_btf, napi_gro_receiv,
kfree_skb_btf; the floor: floor_net_dev_q, floor_netif_rec, floor_netif_rx, floor_napi_gro_).
"""

import gzip
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

HOOKS = ["net_dev_queue", "netif_receive_skb", "netif_rx", "napi_gro_receive_entry", "kfree_skb"]
IFACE_HOOKS = HOOKS[:4]
EXPECTED_HOPS = 4  # veth target: host tx request, netns rx request, netns tx reply, host rx reply


# --------------------------------------------------------------------------------------------
# Snapshots


def prog_ids_of(pid):
    ids = set()
    d = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(d)
    except OSError:
        return ids
    for fd in fds:
        try:
            with open(f"{d}/{fd}") as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


def hook_of(name, tracepoint=None):
    if tracepoint:
        return tracepoint
    n = name[len("floor_"):] if name.startswith("floor_") else name
    for hook, prefix in (
        ("net_dev_queue", "net_dev_q"),
        ("netif_receive_skb", "netif_rec"),
        ("netif_rx", "netif_rx"),
        ("napi_gro_receive_entry", "napi_gro"),
        ("kfree_skb", "kfree_skb"),
    ):
        if n.startswith(prefix):
            return hook
    return "other:" + name


def bpftool_json(*args):
    r = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or not r.stdout.strip():
        return []
    return json.loads(r.stdout)


def bpf_snap(pid):
    t = time.time()
    ids = prog_ids_of(pid)
    progs = {p["id"]: p for p in bpftool_json("prog", "show")}
    tps = {}
    for e in bpftool_json("perf", "show"):
        if e.get("pid") == pid and e.get("fd_type") == "tracepoint":
            tps[e["prog_id"]] = e.get("tracepoint")
    out = []
    for i in sorted(ids):
        p = progs.get(i)
        if p is None:
            continue
        out.append(
            {
                "id": i,
                "name": p.get("name", ""),
                "type": p.get("type", ""),
                "hook": hook_of(p.get("name", ""), tps.get(i)),
                "run_time_ns": p.get("run_time_ns", 0),
                "run_cnt": p.get("run_cnt", 0),
            }
        )
    return {"t": t, "pid": pid, "alive": os.path.exists(f"/proc/{pid}"), "progs": out}


def bpf_others(ours):
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in ours:
            continue
        n = len(prog_ids_of(int(d)))
        if n:
            try:
                with open(f"/proc/{d}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                comm = "?"
            found.append({"pid": int(d), "comm": comm, "progs": n})
    return found


def cpu_snap(exclude_root):
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        comm = st[st.find("(") + 1:st.rfind(")")]
        f = st[st.rfind(")") + 2:].split()
        # fields after comm: state ppid ... flags(7) ... utime(12) stime(13) cutime(14) cstime(15) ... starttime(20)
        ppid, flags = int(f[1]), int(f[6])
        if flags & 0x00200000 or ppid == 2 or int(d) == 2:  # PF_KTHREAD: kernel threads
            continue
        ticks = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        procs[int(d)] = (ppid, int(f[19]), ticks, comm)
    skip = {exclude_root}
    changed = True
    while changed:  # descendants of the bench
        changed = False
        for pid, (ppid, _, _, _) in procs.items():
            if ppid in skip and pid not in skip:
                skip.add(pid)
                changed = True
    return {"t": time.time(), "hz": os.sysconf("SC_CLK_TCK"),
            "procs": {str(p): [v[1], v[2], v[3]] for p, v in procs.items() if p not in skip}}


def cpu_others(a, b):
    """% of one CPU used by processes the bench did not start, between two cpu-snap snapshots"""
    if not a or not b or b["t"] <= a["t"]:
        return None
    wall = b["t"] - a["t"]
    ncpu = os.cpu_count() or 1
    # A process cannot use more than every CPU for the whole window. The cap matters when a
    # process reaps a long-lived child during the window: the child's whole lifetime lands in the
    # parent's cutime at once (seen with pid 1 reaping another user's qemu).
    cap = wall * ncpu * b["hz"]
    total = 0
    for pid, (start, ticks, _) in b["procs"].items():
        old = a["procs"].get(pid)
        if old and old[0] == start:
            total += min(max(ticks - old[1], 0), cap)
        else:
            total += min(ticks, cap)  # started during the window (or pid reused)
    return min(total / b["hz"] / wall * 100, ncpu * 100)


# --------------------------------------------------------------------------------------------
# Prometheus text

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prom(text):
    """{metric name: [(labels dict, value)]}"""
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        try:
            v = float(m.group(4))
        except ValueError:
            continue
        labels = dict(LABEL_RE.findall(m.group(3) or ""))
        series.setdefault(m.group(1), []).append((labels, v))
    return series


def prom_summary(text):
    s = parse_prom(text)

    def total(name):
        return sum(v for _, v in s.get(name, []))

    hops = [v for _, v in s.get("tracepkt_path_hops", [])]
    return {
        "bytes": len(text.encode()),
        "sent": total("tracepkt_probes_sent_total"),
        "replies": total("tracepkt_probe_replies_total"),
        "lost": total("tracepkt_events_lost_total"),
        "unmatched": total("tracepkt_events_unmatched_total"),
        "errors": total("tracepkt_probe_errors_total"),
        "attached_seconds": (total("tracepkt_attached_seconds_total")
                             if "tracepkt_attached_seconds_total" in s else None),
        "targets": len(s.get("tracepkt_probes_sent_total", [])),
        "hops_reported": len(hops),
        "hops_expected": sum(1 for v in hops if v == EXPECTED_HOPS),
        "hops_values": sorted(set(hops)),
    }


def read_prom(path):
    """a /metrics body, as written (FILE) or compressed after the run (FILE.gz)"""
    try:
        with open(path) as f:
            return prom_summary(f.read())
    except OSError:
        pass
    try:
        with gzip.open(path + ".gz", "rt") as f:
            return prom_summary(f.read())
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# Summary


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, digits=None, unit=""):
    if x is None:
        return "n/a"
    if digits is None:
        ax = abs(x)
        digits = 0 if ax >= 100 else 1 if ax >= 10 else 2 if ax >= 1 else 3
    return f"{x:,.{digits}f}{unit}"


def mr(xs, digits=None, unit=""):
    """median (min–max)"""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return fmt(xs[0], digits, unit)
    return f"{fmt(med(xs), digits, unit)} ({fmt(min(xs), digits)}–{fmt(max(xs), digits)})"


def ratio_str(xs, digits=3):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}×"
    return f"{med(xs):.{digits}f}× ({min(xs):.{digits}f}–{max(xs):.{digits}f})"


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_lines(path):
    try:
        with open(path) as f:
            return [l.rstrip("\n") for l in f]
    except OSError:
        return []


def read_kv(path):
    kv = {}
    for l in read_lines(path):
        if "=" in l:
            k, v = l.split("=", 1)
            kv[k.strip()] = v.strip()
    return kv


def bpf_delta(a, b):
    """per hook: [run_time_ns delta, run_cnt delta] between two snapshots of one process"""
    if not a or not b:
        return None
    before = {p["id"]: p for p in a["progs"]}
    per = {}
    for p in b["progs"]:
        q = before.get(p["id"])
        if q is None:
            continue
        h = per.setdefault(p["hook"], [0, 0])
        h[0] += p["run_time_ns"] - q["run_time_ns"]
        h[1] += p["run_cnt"] - q["run_cnt"]
    return {"hooks": per, "wall": b["t"] - a["t"]}


def iperf_udp(path):
    d = load_json(path)
    if not d or "end" not in d or "sum" not in d["end"]:
        return None
    s = d["end"]["sum"]
    secs = s.get("seconds") or 0
    if not secs:
        return None
    sent = s.get("packets", 0)
    lost = s.get("lost_packets", 0)
    cpu = d["end"].get("cpu_utilization_percent", {}).get("host_total")
    return {"packets": sent, "tx_pps": sent / secs, "rx_pps": (sent - lost) / secs,
            "tx_per_cpu": sent / secs / (cpu / 100) if cpu else None, "sender_cpu": cpu}


def iperf_tcp(path):
    d = load_json(path)
    if not d or "end" not in d:
        return None
    return {"bps": d["end"].get("sum_received", {}).get("bits_per_second")}


def cpu_pct(a, b, hz):
    (t0, c0), (t1, c1) = a, b
    return (c1 - c0) / hz / (t1 - t0) * 100 if t1 > t0 else None


def read_cpu(path):
    out = []
    for l in read_lines(path):
        p = l.split()
        if len(p) >= 2:
            try:
                out.append((float(p[0]), float(p[1])))
            except ValueError:
                pass
    return out


class Report:
    def __init__(self):
        self.lines = []
        self.head = []  # (measurement, value, baseline, goal, met)
        self.results = {}

    def add(self, *ls):
        self.lines.extend(ls)

    def headline(self, what, value, baseline="—", goal="—", met="—"):
        self.head.append((what, value, baseline, goal, met))


# ---- 1. foreign traffic ----------------------------------------------------------------------

CONFIGS = ["baseline", "always", "in-flight", "bpftrace", "floor"]
LABEL = {
    "baseline": "a. nothing attached (baseline)",
    "always": "b. tracepkt serve, attach: always",
    "in-flight": "c. tracepkt serve, attach: in-flight",
    "bpftrace": "d. bpftrace bench/foreign.bt",
    "floor": "e. tracepkt bench-floor (the floor)",
}


def foreign_records(raw):
    base = os.path.join(raw, "foreign")
    if not os.path.isdir(base):
        return []
    recs = []
    for name in sorted(os.listdir(base)):
        m = re.match(r"r(\d+)-(.+)$", name)
        if not m:
            continue
        d = os.path.join(base, name)
        info = read_kv(os.path.join(d, "info"))
        rec = {"round": int(m.group(1)), "config": m.group(2), "status": info.get("status", "?"),
               "note": info.get("note", "")}
        rec["udp"] = iperf_udp(os.path.join(d, "udp.json"))
        rec["tcp"] = iperf_tcp(os.path.join(d, "tcp.json"))
        snaps = [load_json(os.path.join(d, f"bpf{i}.json")) for i in range(3)]
        rec["bpf_udp"] = bpf_delta(snaps[0], snaps[1])
        rec["bpf_tcp"] = bpf_delta(snaps[1], snaps[2])
        rec["bpf_all"] = bpf_delta(snaps[0], snaps[2])
        p0 = read_prom(os.path.join(d, "prom0.txt"))
        p2 = read_prom(os.path.join(d, "prom2.txt"))
        t = read_kv(os.path.join(d, "times"))
        rec["duty"] = None
        if p0 and p2 and p0["attached_seconds"] is not None and p2["attached_seconds"] is not None:
            wall = float(t.get("prom2", 0)) - float(t.get("prom0", 0))
            if wall > 0:
                rec["duty"] = (p2["attached_seconds"] - p0["attached_seconds"]) / wall
        rec["lost"] = p2["lost"] if p2 else None
        rec["others"] = len(load_json(os.path.join(d, "others.json")) or [])
        rec["others_cpu"] = cpu_others(load_json(os.path.join(d, "cpu0.json")),
                                       load_json(os.path.join(d, "cpu2.json")))
        recs.append(rec)
    return recs


def foreign(raw, R):
    recs = foreign_records(raw)
    if not recs:
        return
    ok = [r for r in recs if r["status"] == "ok"]
    by = {c: sorted([r for r in ok if r["config"] == c], key=lambda r: r["round"]) for c in CONFIGS}
    base = {r["round"]: r for r in by["baseline"]}
    nrounds = len({r["round"] for r in recs})
    R.add("### 1. Overhead on foreign traffic (veth into the bench namespace)", "",
          f"{nrounds} interleaved rounds (the order of the five configurations rotates every round); median "
          "(min–max) over rounds; ratio = median (min–max) of the per-round ratio to the baseline of the same "
          "round. UDP: `iperf3 -u -l 64 -b 0` (client pinned to CPU 0, server in the namespace pinned to CPU 1, "
          "both nice -20); \"sent\" is the sender's packet rate, which is CPU-bound on CPU 0 and includes the whole "
          "kernel path of each packet (transmit, veth, receive softirq up to the socket), so it carries every hook's "
          "cost; \"received\" is what the server read (packets beyond its socket buffer are dropped, a kfree_skb "
          "each). \"Sent pkt per sender CPU-second\" divides the sent rate by the CPU share iperf3 reports for the "
          "sender (its cpu_utilization_percent.host_total): it discounts the time the sender did not get the CPU "
          "(other processes; softirq work deferred to ksoftirqd), so it is usually the steadier of the two. "
          "TCP: one `iperf3` stream, receiver's Gbit/s.", "",
          "| configuration | rounds | UDP 64 B sent pkt/s | ratio | sent pkt per sender CPU-second | ratio | "
          "UDP 64 B received pkt/s | ratio | TCP Gbit/s | ratio | other processes' CPU % |",
          "|---|---|---|---|---|---|---|---|---|---|---|")
    res = {}

    def paired(rs, key):
        out = []
        for r in rs:
            b = base.get(r["round"])
            if b and key(r) is not None and key(b):
                out.append(key(r) / key(b))
        return out

    tx_of = lambda r: r["udp"]["tx_pps"] if r["udp"] else None  # noqa: E731
    rx_of = lambda r: r["udp"]["rx_pps"] if r["udp"] else None  # noqa: E731
    gb_of = lambda r: r["tcp"]["bps"] / 1e9 if r["tcp"] and r["tcp"]["bps"] else None  # noqa: E731
    pc_of = lambda r: r["udp"]["tx_per_cpu"] if r["udp"] else None  # noqa: E731
    for c in CONFIGS:
        rs = by[c]
        if not rs:
            missing = [r for r in recs if r["config"] == c]
            why = missing[0]["note"] if missing else "not run"
            R.add(f"| {LABEL[c]} | 0 | not measured: {why} | | | | | | | | |")
            res[c] = {"measured": False, "why": why}
            R.headline(f"UDP 64 B pkt/s sent, {LABEL[c][3:]}", f"not measured: {why}")
            continue
        tx, rx, gb = [tx_of(r) for r in rs], [rx_of(r) for r in rs], [gb_of(r) for r in rs]
        pc = [pc_of(r) for r in rs]
        rtx, rrx, rgb, rpc = paired(rs, tx_of), paired(rs, rx_of), paired(rs, gb_of), paired(rs, pc_of)
        isb = c == "baseline"
        R.add(f"| {LABEL[c]} | {len(rs)} | {mr(tx, 0)} | {'1 (baseline)' if isb else ratio_str(rtx)} | "
              f"{mr(pc, 0)} | {'1 (baseline)' if isb else ratio_str(rpc)} | "
              f"{mr(rx, 0)} | {'1 (baseline)' if isb else ratio_str(rrx)} | {mr(gb, 2)} | "
              f"{'1 (baseline)' if isb else ratio_str(rgb)} | {mr([r['others_cpu'] for r in rs], 0)} |")
        res[c] = {"rounds": len(rs), "udp_tx_pps": tx, "udp_rx_pps": rx, "tcp_gbps": gb, "udp_tx_per_cpu": pc,
                  "ratio_udp_tx": rtx, "ratio_udp_rx": rrx, "ratio_tcp": rgb, "ratio_udp_tx_per_cpu": rpc}
    R.add("", "Other processes' CPU %: CPU time used during the round by user-space processes the bench did not "
          "start (100 % = one of the two cores; an estimate from /proc/PID/stat: utime + stime + reaped children's "
          "time, each process capped at all CPUs for the window): the noise present while the round ran.", "")
    bm = med(res.get("baseline", {}).get("udp_tx_pps", []) or [None])
    bt = med(res.get("baseline", {}).get("tcp_gbps", []) or [None])
    for c in CONFIGS[1:]:
        if res.get(c, {}).get("rounds"):
            R.headline(f"UDP 64 B pkt/s sent, {LABEL[c][3:]}",
                       f"{fmt(med(res[c]['udp_tx_pps']), 0)} ({ratio_str(res[c]['ratio_udp_tx'], 2)} of baseline)",
                       f"{fmt(bm, 0)} (nothing attached)")
    bp = med(res.get("baseline", {}).get("udp_tx_per_cpu", []) or [None])
    for c in CONFIGS[1:]:
        if res.get(c, {}).get("rounds"):
            R.headline(f"UDP 64 B pkt sent per sender CPU-second, {LABEL[c][3:]}",
                       f"{fmt(med(res[c]['udp_tx_per_cpu']), 0)} ({ratio_str(res[c]['ratio_udp_tx_per_cpu'], 2)} of baseline)",
                       f"{fmt(bp, 0)} (nothing attached)")
    for c in CONFIGS[1:]:
        if res.get(c, {}).get("rounds"):
            R.headline(f"TCP Gbit/s, {LABEL[c][3:]}",
                       f"{fmt(med(res[c]['tcp_gbps']), 2)} ({ratio_str(res[c]['ratio_tcp'], 2)} of baseline)",
                       f"{fmt(bt, 2)} (nothing attached)")

    # Per-hook cost from the kernel's accounting.
    def nsrun(c, hook, phase="bpf_udp"):
        out = {}
        for r in by[c]:
            d = r.get(phase)
            h = d["hooks"].get(hook) if d else None
            if h and h[1] > 0:
                out[r["round"]] = h[0] / h[1]
        return out

    def pooled(c, hooks, phase="bpf_udp"):
        out = {}
        for r in by[c]:
            d = r.get(phase)
            if not d:
                continue
            ns = sum(d["hooks"].get(h, [0, 0])[0] for h in hooks)
            n = sum(d["hooks"].get(h, [0, 0])[1] for h in hooks)
            if n > 0:
                out[r["round"]] = ns / n
        return out

    def runs_per_s(c, hooks, phase="bpf_udp"):
        out = []
        for r in by[c]:
            d = r.get(phase)
            if d and d["wall"] > 0:
                out.append(sum(d["hooks"].get(h, [0, 0])[1] for h in hooks) / d["wall"])
        return out

    def pair_ratio(a, b):
        return [a[k] / b[k] for k in a if k in b and b[k]]

    R.add("Per-program cost from the kernel's own accounting (kernel.bpf_stats_enabled=1 during this part): "
          "Δrun_time_ns / Δrun_cnt of each process's programs (found through /proc/PID/fdinfo) between "
          "`bpftool prog show` snapshots taken just before and just after the UDP flood; ns per program run, "
          "median (min–max) over rounds; ratios are per-round (same round) ratios, median (min–max). "
          "Almost every run is a foreign packet (the probes add 4 runs per second).", "",
          "| hook | floor ns/run | tracepkt always ns/run | tracepkt / floor (goal ≤ 1.2×) | "
          "tracepkt in-flight ns/run | bpftrace ns/run | bpftrace / floor | runs/s (always) |",
          "|---|---|---|---|---|---|---|---|")
    hooks_res = {}
    for hook in HOOKS + ["pooled"]:
        if hook == "pooled":
            f, a, i, b = (pooled(c, IFACE_HOOKS) for c in ("floor", "always", "in-flight", "bpftrace"))
            runs = runs_per_s("always", IFACE_HOOKS)
            name = "**the four interface hooks, pooled**"
        else:
            f, a, i, b = (nsrun(c, hook) for c in ("floor", "always", "in-flight", "bpftrace"))
            runs = runs_per_s("always", [hook])
            name = hook
        ra, rb = pair_ratio(a, f), pair_ratio(b, f)
        hooks_res[hook] = {"floor": f, "always": a, "in-flight": i, "bpftrace": b, "ratio_always_floor": ra,
                           "ratio_bpftrace_floor": rb, "runs_per_s_always": runs}
        if not (f or a or i or b):
            R.add(f"| {name} | not hit by this traffic (0 runs) | | | | | | |")
            continue
        fcol = "not hooked by the floor" if hook == "kfree_skb" else mr(list(f.values()), 1)
        R.add(f"| {name} | {fcol} | {mr(list(a.values()), 1)} | {ratio_str(ra, 2) if ra else '—'} | "
              f"{mr(list(i.values()), 1)} | {mr(list(b.values()), 1)} | {ratio_str(rb, 2) if rb else '—'} | "
              f"{mr(runs, 0)} |")
    R.add("")
    for hook in IFACE_HOOKS + ["pooled"]:
        h = hooks_res[hook]
        if h["ratio_always_floor"]:
            rm = med(h["ratio_always_floor"])
            R.headline(f"ns/run on foreign packets, {'4 interface hooks pooled' if hook == 'pooled' else hook}: "
                       "tracepkt (always)",
                       f"{fmt(med(list(h['always'].values())), 1)} ns = {rm:.2f}× the floor",
                       f"floor {fmt(med(list(h['floor'].values())), 1)} ns",
                       "≤ 1.2× the floor", "yes" if rm <= 1.2 else "no")
    h = hooks_res["kfree_skb"]
    if h["always"]:
        R.headline("ns/run, kfree_skb (the UDP flood's socket-buffer drops): tracepkt (always)",
                   f"{fmt(med(list(h['always'].values())), 1)} ns",
                   f"bpftrace {fmt(med(list(h['bpftrace'].values())), 1)} ns (no floor on kfree_skb)")
    h = hooks_res["pooled"]
    if h["bpftrace"]:
        R.headline("ns/run on foreign packets, 4 interface hooks pooled: bpftrace bench/foreign.bt",
                   f"{fmt(med(list(h['bpftrace'].values())), 1)} ns = "
                   f"{med(h['ratio_bpftrace_floor']):.2f}× the floor" if h["ratio_bpftrace_floor"] else "n/a",
                   f"floor {fmt(med(list(h['floor'].values())), 1)} ns")

    lt = {c: pooled(c, IFACE_HOOKS, "bpf_tcp") for c in ("floor", "always", "in-flight", "bpftrace")}
    if any(lt.values()):
        ra = pair_ratio(lt["always"], lt["floor"])
        R.add(f"During the TCP run (four interface hooks pooled, ns/run): floor {mr(list(lt['floor'].values()), 1)}, "
              f"tracepkt always {mr(list(lt['always'].values()), 1)} (tracepkt / floor "
              f"{ratio_str(ra, 2) if ra else 'n/a'}), tracepkt in-flight {mr(list(lt['in-flight'].values()), 1)}, "
              f"bpftrace {mr(list(lt['bpftrace'].values()), 1)}.", "")

    # Cost over wall time, per packet, and the in-flight duty cycle.
    R.add("Cost over wall time and per packet, and the duty cycle. BPF CPU ms/s = Σ Δrun_time_ns / Δwall over the "
          "whole round (UDP flood + TCP run, all the process's programs), i.e. ns per run × runs / wall time; "
          "BPF ns per UDP packet = Σ Δrun_time_ns during the flood / packets sent; duty cycle = "
          "Δtracepkt_attached_seconds_total / Δwall time between two scrapes around the round.", "",
          "| configuration | BPF CPU ms per s (1000 = one core) | BPF ns per UDP packet sent | "
          "duty cycle (attached / wall time) | lost events at the end |",
          "|---|---|---|---|---|")
    wall_res = {}
    for c in ("always", "in-flight", "bpftrace", "floor"):
        if not by[c]:
            continue
        ms, perpkt = [], []
        for r in by[c]:
            d = r.get("bpf_all")
            if d and d["wall"] > 0:
                ms.append(sum(x[0] for x in d["hooks"].values()) / d["wall"] / 1e6)
            d = r.get("bpf_udp")
            if d and r["udp"] and r["udp"]["packets"]:
                perpkt.append(sum(x[0] for x in d["hooks"].values()) / r["udp"]["packets"])
        duty = [r["duty"] * 100 for r in by[c] if r.get("duty") is not None]
        if c in ("always", "in-flight"):
            ds = mr(duty, 3, " %") if duty else "n/a (no tracepkt_attached_seconds_total)"
            lost = ", ".join(str(int(r["lost"])) if r["lost"] is not None else "n/a" for r in by[c])
        else:
            ds, lost = "100 % (attached for the whole round)", "—"
        R.add(f"| {LABEL[c]} | {mr(ms, 3)} | {mr(perpkt, 0)} | {ds} | {lost} |")
        wall_res[c] = {"bpf_cpu_ms_per_s": ms, "bpf_ns_per_udp_packet": perpkt, "duty_pct": duty}
    est = []
    for r in by["in-flight"]:
        a = next((x for x in by["always"] if x["round"] == r["round"]), None)

        def per_pkt(x):
            d = x.get("bpf_udp") if x else None
            if not d or not x["udp"] or not x["udp"]["packets"]:
                return None
            return d["hooks"].get("net_dev_queue", [0, 0])[1] / x["udp"]["packets"]

        pi, pa = per_pkt(r), per_pkt(a)
        if pi is not None and pa:
            est.append(pi / pa * 100)
    R.add("")
    if est:
        R.add(f"Cross-check of the in-flight duty cycle from run counts (net_dev_queue runs per UDP packet sent, "
              f"in-flight / always, same round): {mr(est, 3, ' %')}.", "")
        wall_res.setdefault("in-flight", {})["duty_from_runs_pct"] = est
    if wall_res.get("in-flight", {}).get("duty_pct"):
        w = wall_res["in-flight"]
        R.headline("attach: in-flight duty cycle (1 target, interval 1s, under the flood)",
                   mr(w["duty_pct"], 2, " %"), "attach: always: " + mr(wall_res.get("always", {}).get("duty_pct", []), 2, " %"))
        R.headline("BPF CPU averaged over wall time, attach: in-flight",
                   f"{fmt(med(w['bpf_cpu_ms_per_s']), 2)} ms/s",
                   f"attach: always {fmt(med(wall_res.get('always', {}).get('bpf_cpu_ms_per_s', [])), 2)} ms/s; "
                   f"floor {fmt(med(wall_res.get('floor', {}).get('bpf_cpu_ms_per_s', [])), 2)} ms/s")
    R.add("Caveat: with kernel.bpf_stats_enabled=1 every program run also pays two clock reads for the accounting; "
          "that cost is outside run_time_ns but inside the throughput figures of b–e (not a).", "")
    others = [r["others"] for r in recs]
    if any(others):
        R.add(f"Other processes holding BPF programs during the rounds: {min(others)}–{max(others)} "
              "(raw/foreign/*/others.json).", "")
    R.results["foreign"] = {"throughput": res, "hooks": hooks_res, "wall": wall_res}


# ---- 2. journeys ---------------------------------------------------------------------------


def journey(raw, R, hz):
    base = os.path.join(raw, "journey")
    if not os.path.isdir(base):
        return
    steps = {}
    for name in sorted(os.listdir(base)):
        m = re.match(r"r(\d+)-rate(\d+)$", name)
        if not m:
            continue
        d = os.path.join(base, name)
        info = read_kv(os.path.join(d, "info"))
        rate = int(m.group(2))
        rec = {"round": int(m.group(1)), "status": info.get("status", "?"), "note": info.get("note", ""),
               "targets": int(info.get("targets", 0) or 0), "interval": info.get("interval", ""),
               "rss_kb": info.get("rss_kb")}
        p0 = read_prom(os.path.join(d, "prom0.txt"))
        p1 = read_prom(os.path.join(d, "prom1.txt"))
        t = read_kv(os.path.join(d, "times"))
        rec["pass"] = False
        if rec["status"] == "ok" and p0 and p1 and "prom1" in t and "prom0" in t:
            wall = float(t["prom1"]) - float(t["prom0"])
            rec.update(wall=wall, sent=p1["sent"] - p0["sent"], replies=p1["replies"] - p0["replies"],
                       lost=p1["lost"], unmatched=p1["unmatched"], errors=p1["errors"],
                       hops_ok=p1["hops_expected"], hops_n=p1["hops_reported"], hops_values=p1["hops_values"])
            rec["achieved"] = rec["sent"] / wall
            rec["duty"] = None
            if p0["attached_seconds"] is not None and p1["attached_seconds"] is not None:
                rec["duty"] = (p1["attached_seconds"] - p0["attached_seconds"]) / wall
            rec["others_cpu"] = cpu_others(load_json(os.path.join(d, "cpu0.json")),
                                           load_json(os.path.join(d, "cpu1.json")))
            cpu = read_cpu(os.path.join(d, "cpu"))
            rec["cpu"] = cpu_pct(cpu[0], cpu[-1], hz) if len(cpu) >= 2 else None
            # Probes in flight at each sample: counted as sent ~RTT + 25 ms grace before their reply.
            rec["tolerance"] = math.ceil(rate * 0.05) + 2
            rec["deficit"] = rec["sent"] - rec["replies"]
            rec["pass"] = (rec["lost"] == 0 and rec["unmatched"] == 0 and abs(rec["deficit"]) <= rec["tolerance"]
                           and rec["hops_n"] > 0 and rec["hops_ok"] == rec["hops_n"]
                           and rec["achieved"] >= 0.95 * rate)
        steps.setdefault(rate, []).append(rec)
    if not steps:
        return
    R.add("### 2. Journey throughput", "",
          "`tracepkt serve` (attach default: in-flight) with N targets, all at the bench namespace's veth address, "
          "N / interval probes per second; one fresh process per step and round, counters read at the start and the "
          "end of the window (after all targets started). A step passes when lost ring-buffer events = 0, "
          "unmatched events = 0, |sent − replies| ≤ the in-flight tolerance (⌈rate × 50 ms⌉ + 2), the last journey "
          f"of every target has {EXPECTED_HOPS} hops, and the achieved send rate is ≥ 95 % of the configured rate. "
          "Per-round values are listed in round order.", "",
          "| probes/s | targets × interval | rounds passed | achieved probes/s | sent − replies (tolerance) | "
          "lost events | unmatched events | last journey has 4 hops | probe errors | tracepkt CPU % | "
          "programs attached, % of time | other processes' CPU % |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|")
    best = None
    res = {}
    for rate in sorted(steps):
        rs = sorted(steps[rate], key=lambda r: r["round"])
        okr = [r for r in rs if "achieved" in r]
        npass = sum(1 for r in rs if r["pass"])
        res[rate] = {"passed": npass, "rounds": len(rs), "records": okr}
        if not okr:
            R.add(f"| {rate} | | 0/{len(rs)} | not measured: {rs[0]['note']} | | | | | | | | |")
            continue
        j = lambda k: ", ".join(str(int(r[k])) for r in okr)  # noqa: E731
        hops = ", ".join(f"{r['hops_ok']}/{r['hops_n']}" for r in okr)
        R.add(f"| {rate} | {okr[0]['targets']} × {okr[0]['interval']} | {npass}/{len(rs)} | "
              f"{mr([r['achieved'] for r in okr], 1)} | {j('deficit')} (±{okr[0]['tolerance']}) | {j('lost')} | "
              f"{j('unmatched')} | {hops} | {j('errors')} | "
              f"{mr([r['cpu'] for r in okr], 1)} | "
              f"{mr([r['duty'] * 100 if r['duty'] is not None else None for r in okr], 1)} | "
              f"{mr([r['others_cpu'] for r in okr], 0)} |")
        if npass == len(rs) and (best is None or rate > best):
            best = rate
    failing = [r for r in sorted(steps) if res[r]["passed"] < res[r]["rounds"]]
    R.add("", f"**Highest step passed in every round: {best if best is not None else 'none'} probes/s**"
          + (f"; steps not passed in every round: {', '.join(map(str, failing))}." if failing else
             f" (the highest step tried)."), "")
    R.headline("Journey throughput: highest probes/s with 0 lost events and complete journeys, every round",
               f"{best if best is not None else 'none'}" + (f" (tried up to {max(steps)})"),
               "—", "0 lost events, replies = sent, 4 hops per journey",
               "yes" if best is not None else "no")
    for rate in (100, 1000):
        if rate in res and res[rate]["records"]:
            R.headline(f"tracepkt CPU % at {rate} probes/s ({res[rate]['records'][0]['targets']} targets × "
                       f"{res[rate]['records'][0]['interval']})", mr([r["cpu"] for r in res[rate]["records"]], 1, " %"))
    R.results["journey"] = {"steps": res, "best": best}


# ---- 3./4. scale, scrape, memory, soak -------------------------------------------------------


def scale(raw, R, hz):
    base = os.path.join(raw, "scale")
    if not os.path.isdir(base):
        return
    res = {}
    for name in sorted(os.listdir(base), key=lambda n: int(re.sub(r"\D", "", n) or 0)):
        m = re.match(r"n(\d+)$", name)
        if not m:
            continue
        n = int(m.group(1))
        d = os.path.join(base, name)
        info = read_kv(os.path.join(d, "info"))
        rec = {"status": info.get("status", "?"), "note": info.get("note", ""), "interval": info.get("interval", "")}
        cpu = read_cpu(os.path.join(d, "cpu"))
        if len(cpu) >= 2:
            rec["cpu_total"] = cpu_pct(cpu[0], cpu[-1], hz)
            rec["cpu_windows"] = [x for x in (cpu_pct(cpu[i], cpu[i + 1], hz) for i in range(len(cpu) - 1))
                                  if x is not None]
            rec["cpu_secs"] = cpu[-1][0] - cpu[0][0]
        rss = [int(x) for x in read_lines(os.path.join(d, "rss_kb")) if x.strip().isdigit()]
        rec["rss_kb"] = rss[-1] if rss else None
        sc, size = [], None
        for l in read_lines(os.path.join(d, "scrapes")):
            p = l.split()
            if len(p) >= 3 and p[0] == "200":
                sc.append(float(p[1]))
                size = int(float(p[2]))
        rec["scrape_s"], rec["scrape_bytes"] = sc, size
        rec["prom"] = read_prom(os.path.join(d, "prom.txt"))
        res[n] = rec
    if not res:
        return
    iv = next(iter(res.values()))["interval"]
    R.add("### 3.–4. CPU, scrape and memory at 10, 100 and 1,000 targets", "",
          f"One `tracepkt serve` per size (attach default), every target probed every {iv} at the bench "
          "namespace's veth address. After a warm-up of 15 s (one interval + 5 s): CPU % = Δ(utime + stime) of "
          "the process / wall time (100 % = one core), whole window and min–max of its 10 s windows; then RSS "
          "(VmRSS); then sequential scrapes, `curl` GET /metrics (classic Prometheus text), `%{time_total}`.", "",
          "| targets | tracepkt CPU % (10 s windows min–max) | /metrics latency median / max (scrapes) | "
          "/metrics body | RSS after warm-up | at the end |",
          "|---|---|---|---|---|---|")
    for n, r in res.items():
        if r["status"] != "ok" and not r.get("rss_kb"):
            R.add(f"| {n} | not measured: {r['note']} | | | | |")
            continue
        if "cpu_total" in r and r["cpu_windows"]:
            cpu = (f"{r['cpu_total']:.2f} % over {r['cpu_secs']:.0f} s "
                   f"({min(r['cpu_windows']):.2f}–{max(r['cpu_windows']):.2f})")
        else:
            cpu = "not measured at this size"
        sc = r["scrape_s"]
        lat = f"{med(sc) * 1000:.2f} ms / {max(sc) * 1000:.2f} ms ({len(sc)})" if sc else "n/a"
        size = f"{r['scrape_bytes']:,} B" if r["scrape_bytes"] else "n/a"
        rss = f"{r['rss_kb'] / 1024:.1f} MiB" if r["rss_kb"] else "n/a"
        pm = r["prom"]
        end = (f"{pm['hops_expected']}/{n} last journeys with {EXPECTED_HOPS} hops; {int(pm['sent'])} sent, "
               f"{int(pm['replies'])} replies, {int(pm['lost'])} lost events" if pm else "n/a")
        R.add(f"| {n} | {cpu} | {lat} | {size} | {rss} | {end} |")
        if "cpu_total" in r:
            R.headline(f"tracepkt CPU %, {n} targets every {iv}", f"{r['cpu_total']:.2f} %")
        if sc:
            R.headline(f"/metrics scrape, {n} targets: latency median / max; body",
                       f"{med(sc) * 1000:.2f} / {max(sc) * 1000:.2f} ms; {size}")
        if r["rss_kb"]:
            R.headline(f"RSS, {n} targets after warm-up", rss)
    R.add("")
    R.results["scale"] = res


def soak(raw, R, hz):
    d = os.path.join(raw, "soak")
    info = read_kv(os.path.join(d, "info"))
    rows = []
    for l in read_lines(os.path.join(d, "rss.tsv"))[1:]:
        p = l.split()
        try:
            rows.append((float(p[0]), int(p[1]), float(p[2])))
        except (ValueError, IndexError):
            pass
    if len(rows) < 2:
        if info:
            R.add(f"**Soak**: not run ({info.get('note', 'no samples')}).", "")
            R.headline("RSS soak, 1,000 targets", f"not run ({info.get('note', 'no samples')})", "—", "flat")
        return
    secs = rows[-1][0] - rows[0][0]
    rss = [r[1] for r in rows]
    n = len(rows)
    mx, my = sum(r[0] for r in rows) / n, sum(rss) / n
    sxx = sum((r[0] - mx) ** 2 for r in rows)
    slope = sum((r[0] - mx) * (r[1] - my) for r in rows) / sxx * 60 if sxx > 0 else None
    half = rss[n // 2:]
    hrows = rows[n // 2:]
    hslope = None
    if len(hrows) >= 2:
        hx = sum(r[0] for r in hrows) / len(hrows)
        hy = sum(r[1] for r in hrows) / len(hrows)
        hxx = sum((r[0] - hx) ** 2 for r in hrows)
        if hxx > 0:
            hslope = sum((r[0] - hx) * (r[1] - hy) for r in hrows) / hxx * 60
    steps = [(rows[i][0], rss[i] - rss[i - 1]) for i in range(1, n) if abs(rss[i] - rss[i - 1]) >= 1024]
    flat = (max(half) - min(half)) <= 0.01 * statistics.median(half)
    cpu = (rows[-1][2] - rows[0][2]) / hz / secs * 100 if secs > 0 else None
    R.add(f"**Soak**: the same 1,000-target process continues for {secs:.0f} s, every target every "
          f"{info.get('interval', '?')}, RSS sampled every {info.get('every', '?')} s with one scrape after each "
          f"sample (as a Prometheus would): {n} samples; first {rss[0] / 1024:.2f} MiB, last {rss[-1] / 1024:.2f} MiB, "
          f"min {min(rss) / 1024:.2f} MiB, max {max(rss) / 1024:.2f} MiB; last − first {rss[-1] - rss[0]} kB; "
          f"max − min over the second half {max(half) - min(half)} kB; least-squares slope {fmt(slope, 1)} kB/min "
          f"over the whole soak, {fmt(hslope, 1)} kB/min over the second half; changes of 1 MiB or more between "
          f"two samples: " + (", ".join(f"{d:+d} kB at {t:.0f} s" for t, d in steps) or "none") +
          f"; tracepkt CPU over the soak {fmt(cpu, 2)} %.", "",
          "RSS samples (kB): " + ", ".join(str(r) for r in rss), "")
    pe = read_prom(os.path.join(d, "prom_end.txt"))
    if pe:
        R.add(f"At the end of the soak: {int(pe['sent'])} probes sent, {int(pe['replies'])} replies, "
              f"{int(pe['lost'])} lost events, {int(pe['unmatched'])} unmatched events, "
              f"{pe['hops_expected']}/{pe['hops_reported']} last journeys with {EXPECTED_HOPS} hops.", "")
    R.headline(f"RSS soak, 1,000 targets, {secs / 60:.1f} min",
               f"{rss[0] / 1024:.2f} → {rss[-1] / 1024:.2f} MiB; second half: range {max(half) - min(half)} kB, "
               f"slope {fmt(hslope, 1)} kB/min" + (f"; steps ≥ 1 MiB: " + ", ".join(f"{d:+d} kB at {t:.0f} s"
                                                                              for t, d in steps) if steps else ""),
               f"first soak sample {rss[0] / 1024:.2f} MiB", "flat (second half within 1 %)",
               "yes" if flat else "no")
    R.results["soak"] = {"secs": secs, "rss_kb": rss, "slope_kb_per_min": slope,
                         "second_half_slope_kb_per_min": hslope, "steps": steps, "cpu": cpu}


# ---- 5. start-up -----------------------------------------------------------------------------


def startup(raw, R):
    d = os.path.join(raw, "startup")
    if not os.path.isdir(d):
        return
    modes = {}
    for name in sorted(os.listdir(d)):
        m = re.match(r"(.+)-(\d+)$", name)
        if m:
            modes.setdefault(m.group(1), []).append(read_kv(os.path.join(d, name, "times")))
    if not modes:
        return
    R.add("### 5. Start-up", "",
          "`tracepkt serve` with 1 target (the bench namespace's veth address, interval 10s); from fork to: the "
          "log line \"serving /metrics\" (its own timestamp; the programs are loaded, and with attach: always "
          "attached, before it), the first successful scrape (polled every 10 ms), and the first complete journey "
          "(tracepkt_probe_replies_total > 0 in a scrape). Median (min–max) over starts; the two modes alternate.", "",
          "| attach | starts | to \"serving /metrics\" | to first scrape | to first journey |",
          "|---|---|---|---|---|")
    res = {}
    for mode in sorted(modes):
        kvs = modes[mode]

        def col(k):
            out = []
            for x in kvs:
                try:
                    out.append(float(x[k]) * 1000)
                except (KeyError, ValueError):
                    pass
            return out

        s, sc, j = col("serving"), col("scrape"), col("journey")
        R.add(f"| {mode} | {len(kvs)} | {mr(s, 0, ' ms')} | {mr(sc, 0, ' ms')} | {mr(j, 0, ' ms')} |")
        res[mode] = {"serving_ms": s, "scrape_ms": sc, "journey_ms": j}
        R.headline(f"Start-up, attach: {mode}: to \"serving /metrics\" / to first journey",
                   f"{fmt(med(s), 0)} ms / {fmt(med(j), 0)} ms")
    R.add("")
    R.results["startup"] = res


def summarise(out):
    raw = os.path.join(out, "raw")
    hz = os.sysconf("SC_CLK_TCK")
    R = Report()
    foreign(raw, R)
    journey(raw, R, hz)
    scale(raw, R, hz)
    soak(raw, R, hz)
    startup(raw, R)
    env = read_lines(os.path.join(raw, "env.txt"))
    top = ["## tracepkt benchmark results", ""]
    if env:
        top += ["```"] + env + ["```", ""]
    top += ["### Summary", "", "| measurement | value | baseline / reference | goal | goal met |", "|---|---|---|---|---|"]
    top += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in R.head]
    top += [""]
    text = "\n".join(top + R.lines) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(R.results, f, indent=1, default=str)
    sys.stdout.write(text)


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    cmd = argv[1]
    if cmd == "bpf-snap" and len(argv) == 3:
        json.dump(bpf_snap(int(argv[2])), sys.stdout)
    elif cmd == "bpf-others":
        json.dump(bpf_others({int(a) for a in argv[2:]} | {os.getpid(), os.getppid()}), sys.stdout)
    elif cmd == "cpu-snap" and len(argv) == 3:
        json.dump(cpu_snap(int(argv[2])), sys.stdout)
    elif cmd == "prom" and len(argv) == 3:
        with open(argv[2]) as f:
            json.dump(prom_summary(f.read()), sys.stdout)
    elif cmd == "summarise" and len(argv) == 3:
        summarise(argv[2])
        return 0
    else:
        sys.stderr.write(__doc__)
        return 2
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
