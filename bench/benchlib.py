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
  benchlib.py maps PID              JSON list of the BPF maps process PID holds open, with their
                                    kernel memory (bytes_memlock).
  benchlib.py maps-total FILE       Σ bytes_memlock of a `maps` snapshot.
  benchlib.py ping ADDR SECS        ICMP echo over a raw socket until ADDR answers (exit 0) or
                                    SECS pass (exit 1): needs no ping binary.
  benchlib.py udp-flood ADDR PORT SECS SIZE
                                    sends SIZE-byte UDP datagrams to ADDR:PORT for SECS seconds as
                                    fast as one core allows; JSON packet count and rate.
  benchlib.py round-line DIR        one log line for a foreign-traffic round.
  benchlib.py journey-step DIR RATE one log line for a journey step; exit 0 if it passed.
  benchlib.py prom FILE             JSON summary of one /metrics body.
  benchlib.py summarise DIR         reads DIR/raw, prints the results table, writes
                                    DIR/results.md and DIR/results.json.

Programs and maps are attributed to a process through /proc/PID/fdinfo (every BPF program, link
and map file descriptor names its prog_id or map_id there), not through names; the hook a program
runs on comes from `bpftool perf` for classic tracepoints (bpftrace) and from the (truncated)
program name for BTF tracepoints (tracepkt: net_dev_queue_b, netif_receive_s, netif_rx_btf,
napi_gro_receiv, kfree_skb_btf; the floor in bench/floor: floor_net_dev_q, floor_netif_rec,
floor_netif_rx, floor_napi_gro_, floor_kfree_skb).
"""

import gzip
import json
import math
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import time

HOOKS = ["net_dev_queue", "netif_receive_skb", "netif_rx", "napi_gro_receive_entry", "kfree_skb"]
IFACE_HOOKS = HOOKS[:4]
EXPECTED_HOPS = 4  # veth target: host tx request, netns rx request, netns tx reply, host rx reply

# Goals the summary checks.
GOAL_FLOOR_RATIO = 1.05  # tracepkt ns/run ÷ the floor's, per hook, on foreign packets
GOAL_SCRAPE_1K_S = 0.050  # /metrics median at 1,000 targets
GOAL_BODY_1K_B = 1_000_000  # /metrics body at 1,000 targets
GOAL_SCRAPE_10K_S = 0.500  # /metrics median at 10,000 targets
GOAL_RSS_10K_B = 150_000_000  # RSS at 10,000 targets
GOAL_CPU_10K_PCT = 10.0  # % of one core at 10,000 targets every 30 s
GOAL_CPU_WINDOW_S = 60  # ... over at least this long
GOAL_STARTUP_S = 0.150  # fork to "serving /metrics"


# --------------------------------------------------------------------------------------------
# Snapshots


def fdinfos(pid):
    """the text of every /proc/PID/fdinfo entry"""
    d = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(d)
    except OSError:
        return
    for fd in fds:
        try:
            with open(f"{d}/{fd}") as f:
                yield f.read()
        except OSError:
            continue


def prog_ids_of(pid):
    ids = set()
    for text in fdinfos(pid):
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                ids.add(int(line.split()[1]))
    return ids


def maps_of(pid):
    """{map_id: fdinfo fields} of the BPF maps PID holds open"""
    maps = {}
    for text in fdinfos(pid):
        kv = dict(l.split(":", 1) for l in text.splitlines() if ":" in l)
        if "map_id" in kv:
            maps[int(kv["map_id"])] = {k.strip(): v.strip() for k, v in kv.items()}
    return maps


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


def maps_snap(pid):
    """the maps PID holds, named and sized by `bpftool map show` (fdinfo's memlock if it has none)"""
    def num(v):
        try:
            return int(v)
        except (TypeError, ValueError):
            return None

    held = maps_of(pid)
    shown = {m["id"]: m for m in bpftool_json("map", "show") if m.get("id") in held}
    out = []
    for i in sorted(held):
        fi, m = held[i], shown.get(i, {})
        out.append({
            "id": i,
            "name": m.get("name", ""),
            "type": m.get("type", fi.get("map_type", "")),
            "key_size": m.get("bytes_key", num(fi.get("key_size"))),
            "value_size": m.get("bytes_value", num(fi.get("value_size"))),
            "max_entries": m.get("max_entries", num(fi.get("max_entries"))),
            "bytes_memlock": m.get("bytes_memlock", num(fi.get("memlock"))),
            "source": "bpftool" if m else "fdinfo",
        })
    return {"t": time.time(), "pid": pid, "maps": out}


def maps_total(snap):
    return sum(m.get("bytes_memlock") or 0 for m in (snap or {}).get("maps", []))


def icmp_checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(addr, secs):
    """True once ADDR answers an ICMP echo, False after SECS seconds"""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    deadline = time.monotonic() + secs
    seq = 0
    while time.monotonic() < deadline:
        seq = (seq + 1) & 0xFFFF
        body = b"tracepkt-bench"
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        sock.sendto(struct.pack("!BBHHH", 8, 0, icmp_checksum(hdr + body), ident, seq) + body, (addr, 0))
        wait_until = min(time.monotonic() + 0.2, deadline)
        while True:
            left = wait_until - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data, src = sock.recvfrom(2048)
            except socket.timeout:
                break
            ihl = (data[0] & 0x0F) * 4
            if src[0] == addr and len(data) >= ihl + 8:
                typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if typ == 0 and rid == ident and rseq == seq:
                    return True
    return False


def udp_flood(addr, port, secs, size):
    """datagrams to ADDR:PORT for SECS seconds; the bench namespace's input chain drops each one (NETFILTER_DROP)"""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    buf, dst, send = b"\0" * size, (addr, port), sock.sendto
    sent = errors = 0
    t0 = time.monotonic()
    end = t0 + secs
    while True:
        for _ in range(256):
            try:
                send(buf, dst)
                sent += 1
            except OSError:  # ENOBUFS or an ICMP error reported back: the next send goes on
                errors += 1
        now = time.monotonic()
        if now >= end:
            break
    wall = now - t0
    return {"packets": sent, "errors": errors, "seconds": wall, "pps": sent / wall if wall else None,
            "size": size, "port": port}


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
    # process reaps a long-lived child during the window (a build tool its compiler, init a VM):
    # the child's whole lifetime lands in the parent's cutime at once.
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

    # Kernel-counted interface crossings per target: one series per (netns, interface, direction).
    series = {}
    for labels, v in s.get("tracepkt_hops_total", []):
        if v > 0:
            t = labels.get("target", "")
            series[t] = series.get(t, 0) + 1
    success = [v for _, v in s.get("tracepkt_probe_success", [])]
    # Hops of each target's last journey, where the binary exports it (informational only).
    path_hops = [v for _, v in s.get("tracepkt_path_hops", [])]
    return {
        "bytes": len(text.encode()),
        "sent": total("tracepkt_probes_sent_total"),
        "replies": total("tracepkt_probe_rtt_seconds_count"),
        "lost": total("tracepkt_events_lost_total"),
        "unmatched": total("tracepkt_events_unmatched_total"),
        "errors": total("tracepkt_probe_errors_total") if "tracepkt_probe_errors_total" in s else None,
        "timeouts": sum(v for labels, v in s.get("tracepkt_probe_errors_total", [])
                        if labels.get("reason") == "timeout"),
        "hops": total("tracepkt_hops_total"),
        "attached_seconds": (total("tracepkt_attached_seconds_total")
                             if "tracepkt_attached_seconds_total" in s else None),
        "targets": len(s.get("tracepkt_probes_sent_total", [])),
        "targets_all_hops": sum(1 for n in series.values() if n >= EXPECTED_HOPS),
        "success_targets": len(success),
        "success_ok": sum(1 for v in success if v == 1),
        "path_hops_reported": len(path_hops),
        "path_hops_expected": sum(1 for v in path_hops if v == EXPECTED_HOPS),
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

CONFIGS = ["baseline", "always", "in-flight", "bpftrace", "floor", "sized", "cross-node", "side-by-side",
           "floor-spread"]
LABEL = {
    "baseline": "a. nothing attached (baseline)",
    "always": "b. tracepkt serve, attach: always",
    "in-flight": "c. tracepkt serve, attach: in-flight",
    "bpftrace": "d. bpftrace bench/foreign.bt",
    "floor": "e. the floor (bench/floor)",
    "sized": "f. tracepkt serve, attach: always, sized probes [92, 1500] always in flight "
             "(worst case: the flood's own length allowed)",
    "cross-node": "g. tracepkt serve, cross_node on (every packet checked, all the time)",
    "side-by-side": "h. b. and e. attached together (both programs of a hook run on the same packets)",
    "floor-spread": "i. the floor with its programs apart in JIT memory (tracepkt-floor --spread)",
}
# The configurations of tracepkt compared with the floor's own rounds, and how their headlines name
# them.
JUDGED = {"always": "tracepkt (always)", "sized": "tracepkt (always, worst-case sized probes)",
          "cross-node": "tracepkt (cross_node on)"}
# The three kinds of foreign traffic of a round, in order, each between two bpftool snapshots.
PHASES = ["udp", "tcp", "drop"]
PHASE_LABEL = {"udp": "UDP 64 B flood", "tcp": "TCP stream", "drop": "UDP 64 B to a closed port"}
# The traffic each hook's goal is judged on: the one that reaches it most, all foreign packets.
GOAL_PHASE = {h: "udp" for h in IFACE_HOOKS} | {"kfree_skb": "drop"}
# Below this many runs per second a hook is not reached by the bench's traffic: its few runs come
# from the machine's other traffic (a NIC's GRO, say), too few and too varied to compare.
REACHED_RUNS_PER_S = 1000


def flood_json(path):
    d = load_json(path)
    if not d or not d.get("seconds"):
        return None
    return {"packets": d["packets"], "tx_pps": d["packets"] / d["seconds"], "errors": d.get("errors", 0)}


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
        rec["drop"] = flood_json(os.path.join(d, "drop.json"))
        snaps = [load_json(os.path.join(d, f"bpf{i}.json")) for i in range(4)]
        beside = [load_json(os.path.join(d, f"beside{i}.json")) for i in range(4)]
        for i, ph in enumerate(PHASES):
            rec["bpf_" + ph] = bpf_delta(snaps[i], snaps[i + 1])
            rec["beside_" + ph] = bpf_delta(beside[i], beside[i + 1])
        rec["order"] = info.get("order")
        rec["bpf_all"] = bpf_delta(snaps[0], snaps[3])
        p0 = read_prom(os.path.join(d, "prom0.txt"))
        p2 = read_prom(os.path.join(d, "prom2.txt"))
        t = read_kv(os.path.join(d, "times"))
        rec["duty"] = None
        if p0 and p2 and p0["attached_seconds"] is not None and p2["attached_seconds"] is not None:
            wall = float(t.get("prom2", 0)) - float(t.get("prom0", 0))
            if wall > 0:
                rec["duty"] = (p2["attached_seconds"] - p0["attached_seconds"]) / wall
        # The share of wall time each target of f. has a probe out: its probes are never answered,
        # so every one that timed out was out for the whole timeout (one ended early, by an ICMP
        # error say, counts for nothing). Good to one timeout per target over the window.
        rec["probes_out"] = None
        tmo = config_timeout_s(os.path.join(d, "config.yaml"))
        if p0 and p2 and p2["targets"] and tmo:
            wall = float(t.get("prom2", 0)) - float(t.get("prom0", 0))
            if wall > 0:
                rec["probes_out"] = (p2["timeouts"] - p0["timeouts"]) * tmo / p2["targets"] / wall
        rec["lost"] = p2["lost"] if p2 else None
        rec["others"] = len(load_json(os.path.join(d, "others.json")) or [])
        rec["others_cpu"] = cpu_others(load_json(os.path.join(d, "cpu0.json")),
                                       load_json(os.path.join(d, "cpu2.json")))
        recs.append(rec)
    return recs


def config_timeout_s(path):
    """the top-level `timeout:` of a config scripts/bench.sh wrote, in seconds (None if absent)"""
    for line in read_lines(path):
        m = re.match(r"timeout: (\d+(?:\.\d+)?)(ms|s)\s*$", line)
        if m:
            return float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    return None


def round_line(d):
    """the log line of one foreign round"""
    u, t = iperf_udp(os.path.join(d, "udp.json")), iperf_tcp(os.path.join(d, "tcp.json"))
    f = flood_json(os.path.join(d, "drop.json"))
    parts = [f"udp {u['tx_pps']:,.0f} pkt/s sent" if u else "udp n/a",
             f"tcp {t['bps'] / 1e9:.2f} Gbit/s" if t and t["bps"] else "tcp n/a",
             f"closed port {f['tx_pps']:,.0f} pkt/s sent" if f else "closed port n/a"]
    snaps = [load_json(os.path.join(d, f"bpf{i}.json")) for i in range(4)]
    costs = []
    for i, ph in enumerate(PHASES):
        delta = bpf_delta(snaps[i], snaps[i + 1])
        hooks = [h for h in HOOKS if GOAL_PHASE.get(h) == ph]
        for h in hooks:
            x = delta["hooks"].get(h) if delta else None
            if x and x[1]:
                costs.append(f"{h} {x[0] / x[1]:.1f}")
    if costs:
        parts.append("ns/run: " + ", ".join(costs))
    return "; ".join(parts)


def foreign(raw, R):
    recs = foreign_records(raw)
    if not recs:
        return
    ok = [r for r in recs if r["status"] == "ok"]
    by = {c: sorted([r for r in ok if r["config"] == c], key=lambda r: r["round"]) for c in CONFIGS}
    base = {r["round"]: r for r in by["baseline"]}
    nrounds = len({r["round"] for r in recs})
    R.add("### 1. Overhead on foreign traffic (veth into the bench namespace)", "",
          f"{nrounds} interleaved rounds (the order of the {len({r['config'] for r in recs})} configurations "
          "rotates every round); median "
          "(min–max) over rounds; ratio = median (min–max) of the per-round ratio to the baseline of the same "
          "round. Each round sends three kinds of foreign traffic one after the other. UDP: `iperf3 -u -l 64 -b 0` "
          "(client pinned to CPU 0, server in the namespace pinned to CPU 1, both nice -20); \"sent\" is the "
          "sender's packet rate, which is CPU-bound on CPU 0 and includes the whole kernel path of each packet "
          "(transmit, veth, receive softirq up to the socket), so it carries every hook's cost; \"received\" is "
          "what the server read (packets beyond its socket buffer are dropped, a kfree_skb each). \"Sent pkt per "
          "sender CPU-second\" divides the sent rate by the CPU share iperf3 reports for the sender (its "
          "cpu_utilization_percent.host_total): it discounts the time the sender did not get the CPU (other "
          "processes; softirq work deferred to ksoftirqd), so it is usually the steadier of the two. TCP: one "
          "`iperf3` stream, receiver's Gbit/s. Closed port: 64-byte UDP datagrams from one Python socket (pinned "
          "to CPU 0, nice -20) to a port the namespace's input chain drops, so every datagram ends in "
          "kfree_skb with reason NETFILTER_DROP. f. is the worst case for sized probes: b. with two targets at "
          "an address on the veth's subnet that nobody holds, one `size: [92]` and one `size: [1500]` "
          "(`dont_fragment: true`), every 1s with a 1s timeout. A sized probe's IP length passes the programs' "
          "first (length) test only while such a probe is in flight; these are never answered, so each is out for "
          "its whole timeout and the next follows at once: a probe of each size is out nearly all the time (the "
          "duty-cycle table below gives the share, from the probes that timed out; tracepkt_attached_seconds_total "
          "says nothing here, as attach: always is attached throughout). The address has a fixed neighbour entry "
          "to a MAC nobody has, so the probes cross the veth and are dropped on arrival, rather than wait for an "
          "ARP answer whose failure would end them early with an ICMP error. 92 is the IP length of every packet of "
          "both 64-byte UDP floods (20 + 8 + 64) and 1500 that of a full-size TCP segment, so those packets go on "
          "to the next checks (ethertype, protocol, the probe map lookup on their ports). One target per size, "
          "because a target's sizes go out one after the other: a sweep `[92, 1500]` would let 92 past only "
          "half the time. g. is b. (one target at the namespace address, every 1s with a 1s timeout, attach: "
          "always) with `cross_node: {enabled: true}`: following other nodes' probes, which may cross at any "
          "moment, tracepkt holds the programs' in-flight gate open for good, so every packet goes through the "
          "length test all the time, not only while one of this node's probes is out, and a packet of a probe's "
          "length goes on to the next checks. h. attaches b. and e. together: a tracepoint runs its programs "
          "one after the other in attach order, so on every packet tracepkt's program and the floor's run "
          "back to back, in the same cache state; odd rounds attach the floor first, even rounds tracepkt.", "",
          "| configuration | rounds | UDP 64 B sent pkt/s | ratio | sent pkt per sender CPU-second | ratio | "
          "UDP 64 B received pkt/s | ratio | TCP Gbit/s | ratio | closed-port UDP sent pkt/s | ratio | "
          "other processes' CPU % |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
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
    dr_of = lambda r: r["drop"]["tx_pps"] if r["drop"] else None  # noqa: E731
    for c in CONFIGS:
        rs = by[c]
        if not rs:
            missing = [r for r in recs if r["config"] == c]
            if not missing:  # not among this run's configurations (BENCH_FOREIGN_CONFIGS)
                res[c] = {"measured": False, "why": "not run"}
                continue
            why = missing[0]["note"]
            R.add(f"| {LABEL[c]} | 0 | not measured: {why} | | | | | | | | | | |")
            res[c] = {"measured": False, "why": why}
            R.headline(f"UDP 64 B pkt/s sent, {LABEL[c][3:]}", f"not measured: {why}")
            continue
        tx, rx, gb = [tx_of(r) for r in rs], [rx_of(r) for r in rs], [gb_of(r) for r in rs]
        pc, dr = [pc_of(r) for r in rs], [dr_of(r) for r in rs]
        rtx, rrx, rgb, rpc, rdr = (paired(rs, k) for k in (tx_of, rx_of, gb_of, pc_of, dr_of))
        isb = c == "baseline"

        def rat(x):
            return "1 (baseline)" if isb else ratio_str(x)

        R.add(f"| {LABEL[c]} | {len(rs)} | {mr(tx, 0)} | {rat(rtx)} | {mr(pc, 0)} | {rat(rpc)} | "
              f"{mr(rx, 0)} | {rat(rrx)} | {mr(gb, 2)} | {rat(rgb)} | {mr(dr, 0)} | {rat(rdr)} | "
              f"{mr([r['others_cpu'] for r in rs], 0)} |")
        res[c] = {"rounds": len(rs), "udp_tx_pps": tx, "udp_rx_pps": rx, "tcp_gbps": gb, "udp_tx_per_cpu": pc,
                  "drop_tx_pps": dr, "ratio_udp_tx": rtx, "ratio_udp_rx": rrx, "ratio_tcp": rgb,
                  "ratio_udp_tx_per_cpu": rpc, "ratio_drop_tx": rdr}
    R.add("", "Other processes' CPU %: CPU time used during the round by user-space processes the bench did not "
          "start (100 % = one of the two cores; an estimate from /proc/PID/stat: utime + stime + reaped children's "
          "time, each process capped at all CPUs for the window): the noise present while the round ran.", "")

    def base_med(key):
        return med(res.get("baseline", {}).get(key, []) or [None])

    for key, ratio_key, what, digits in (
            ("udp_tx_pps", "ratio_udp_tx", "UDP 64 B pkt/s sent", 0),
            ("udp_tx_per_cpu", "ratio_udp_tx_per_cpu", "UDP 64 B pkt sent per sender CPU-second", 0),
            ("tcp_gbps", "ratio_tcp", "TCP Gbit/s", 2),
            ("drop_tx_pps", "ratio_drop_tx", "closed-port UDP 64 B pkt/s sent", 0)):
        for c in CONFIGS[1:]:
            if res.get(c, {}).get("rounds"):
                R.headline(f"{what}, {LABEL[c][3:]}",
                           f"{fmt(med(res[c][key]), digits)} ({ratio_str(res[c][ratio_key], 2)} of baseline)",
                           f"{fmt(base_med(key), digits)} (nothing attached)")

    # Per-hook cost from the kernel's accounting.
    def nsrun(c, hook, phase):
        return ns_per_run(by[c], hook, phase)

    def pooled(c, hooks, phase):
        out = {}
        for r in by[c]:
            d = r.get("bpf_" + phase)
            if not d:
                continue
            ns = sum(d["hooks"].get(h, [0, 0])[0] for h in hooks)
            n = sum(d["hooks"].get(h, [0, 0])[1] for h in hooks)
            if n > 0:
                out[r["round"]] = ns / n
        return out

    def run_counts(c, hook, phase):
        return [r["bpf_" + phase]["hooks"].get(hook, [0, 0])[1] for r in by[c] if r.get("bpf_" + phase)]

    def runs_per_s(c, hooks, phase):
        return runs_per_second(by[c], hooks, phase)

    def pair_ratio(a, b):
        return [a[k] / b[k] for k in a if k in b and b[k]]

    goal = f"≤ {GOAL_FLOOR_RATIO:.2f}× the floor"
    R.add("Per-program cost from the kernel's own accounting (kernel.bpf_stats_enabled=1 during this part): "
          "Δrun_time_ns / Δrun_cnt of each process's programs (found through /proc/PID/fdinfo) between "
          "`bpftool prog show` snapshots taken just before and just after each kind of traffic; ns per program "
          "run, median (min–max) over rounds; ratios are per-round (same round) ratios, median (min–max). Each "
          "hook is judged on the traffic that reaches it most: the interface hooks on the UDP flood, kfree_skb on "
          "the closed-port flood. Almost every run is a foreign packet (the probes of b., c. and g. add 4 "
          "interface runs per second; f.'s two, dropped on arrival in the namespace, 3 interface runs and a "
          "kfree_skb run per second each).", "",
          f"| hook | measured during | floor ns/run | tracepkt always ns/run | tracepkt / floor (goal {goal}) | "
          f"tracepkt always, sized probes ns/run | sized / floor (goal {goal}) | "
          f"tracepkt cross_node on ns/run | cross_node / floor (goal {goal}) | "
          "tracepkt in-flight ns/run | bpftrace ns/run | bpftrace / floor | runs/s (floor) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    hooks_res = {}
    for hook in HOOKS + ["pooled"]:
        if hook == "pooled":
            phase = "udp"
            f, a, z, g, i, b = (pooled(c, IFACE_HOOKS, phase) for c in ("floor", "always", "sized", "cross-node",
                                                                           "in-flight", "bpftrace"))
            runs = runs_per_s("floor", IFACE_HOOKS, phase)
            name = "the four interface hooks, pooled (for reference)"
        else:
            phase = GOAL_PHASE[hook]
            f, a, z, g, i, b = (nsrun(c, hook, phase) for c in ("floor", "always", "sized", "cross-node", "in-flight",
                                                                "bpftrace"))
            runs = runs_per_s("floor", [hook], phase)
            name = hook
        ra, rz, rg, rb = pair_ratio(a, f), pair_ratio(z, f), pair_ratio(g, f), pair_ratio(b, f)
        reached = max(med(runs) or 0, *(med(runs_per_s(c, IFACE_HOOKS if hook == "pooled" else [hook], phase)) or 0
                                        for c in JUDGED)) >= REACHED_RUNS_PER_S
        hooks_res[hook] = {"phase": phase, "floor": f, "always": a, "sized": z, "cross-node": g, "in-flight": i,
                           "bpftrace": b, "ratio_always_floor": ra, "ratio_sized_floor": rz,
                           "ratio_cross-node_floor": rg, "ratio_bpftrace_floor": rb,
                           "runs_per_s_floor": runs, "reached": reached}
        if not reached:
            R.add(f"| {name} | {PHASE_LABEL[phase]} | not reached by this traffic (floor {mr(runs, 0)} runs/s; "
                  f"judged from {REACHED_RUNS_PER_S:,}/s) | | | | | | | | | | |")
            continue
        R.add(f"| {name} | {PHASE_LABEL[phase]} | {mr(list(f.values()), 1)} | {mr(list(a.values()), 1)} | "
              f"{ratio_str(ra, 2) if ra else '—'} | {mr(list(z.values()), 1)} | "
              f"{ratio_str(rz, 2) if rz else '—'} | {mr(list(g.values()), 1)} | "
              f"{ratio_str(rg, 2) if rg else '—'} | {mr(list(i.values()), 1)} | {mr(list(b.values()), 1)} | "
              f"{ratio_str(rb, 2) if rb else '—'} | {mr(runs, 0)} |")
    R.add("")

    # Every hook under every kind of traffic: tracepkt (always, with sized probes, with cross_node
    # on) against the floor. The sized probes' lengths are those of every packet of both UDP floods
    # (92) and of the TCP stream's full-size segments (1500; on a veth most of its packets are GSO
    # super-packets, longer than any probe).
    R.add("tracepkt (attach: always, with sized probes, and with cross_node on) ÷ the floor, ns/run, every hook "
          "under every kind of traffic (median (min–max) of the per-round ratio; in brackets the two medians in "
          "ns; — where the traffic does not reach the hook):",
          "", "| hook | tracepkt | " + " | ".join(PHASE_LABEL[p] for p in PHASES) + " |",
          "|---|---|" + "---|" * len(PHASES))
    # A run from before the sized or cross-node configuration existed has none of its rounds: no
    # rows for it.
    judged = [c for c in JUDGED if c == "always" or any(r["config"] == c for r in recs)]
    matrix = {}
    for hook in HOOKS:
        for c in judged:
            cells = []
            for ph in PHASES:
                f, a = nsrun("floor", hook, ph), nsrun(c, hook, ph)
                ra = pair_ratio(a, f)
                m = matrix.setdefault(hook, {}).setdefault(ph, {"floor": f})
                if c == "always":
                    m.update({"always": a, "ratio": ra})
                else:
                    m.update({c: a, f"ratio_{c}": ra})
                cell = "—"
                if ra:
                    cell = f"{ratio_str(ra, 2)} ({fmt(med(list(a.values())), 1)} / {fmt(med(list(f.values())), 1)})"
                    few = min(run_counts("floor", hook, ph) + run_counts(c, hook, ph))
                    if few < 10000:
                        cell += f", only {few:,} runs in a round"
                cells.append(cell)
            R.add(f"| {hook} | {JUDGED[c][len('tracepkt ('):-1]} | " + " | ".join(cells) + " |")
    R.add("")

    # Separate rounds (b., f., g. against e.): each configuration in its own cache state, with its
    # own set of programs on the path. Reported; the goal is judged side by side (h.) below.
    for c in judged:
        who = JUDGED[c]
        for hook in HOOKS:
            h = hooks_res[hook]
            ratios = h[f"ratio_{c}_floor"]
            label = f"ns/run on foreign packets, {hook} ({PHASE_LABEL[h['phase']]}): {who}, separate rounds"
            if not h["reached"]:
                R.headline(label, f"not reached by this traffic (floor {mr(h['runs_per_s_floor'], 0)} runs/s; "
                                  f"judged from {REACHED_RUNS_PER_S:,}/s)")
            elif ratios:
                R.headline(label, f"{fmt(med(list(h[c].values())), 1)} ns = {med(ratios):.3f}× the floor "
                                  f"(rounds {min(ratios):.3f}–{max(ratios):.3f})",
                           f"floor {fmt(med(list(h['floor'].values())), 1)} ns (e., its own rounds)")
            else:
                R.headline(label, "not measured: " + ("no floor runs" if not h["floor"] else "no tracepkt runs"))

    side = side_by_side(by["side-by-side"], R, goal)

    # i.: the same empty programs, only placed differently in the kernel's JIT memory.
    spread = {}
    if by["floor-spread"]:
        R.add("The floor's placement (i. ÷ e., separate rounds): the same empty programs, each loaded after "
              "a 4.8 KiB spacer program instead of next to the others, as each tracepkt entry point is "
              "followed by its body. ns/run, median (min–max) over rounds, and the median (min–max) of "
              "the per-round ratio:", "",
              "| hook | measured during | e. the floor | i. spread | i. ÷ e. |", "|---|---|---|---|---|")
        for hook in HOOKS:
            ph = GOAL_PHASE[hook]
            f, x = nsrun("floor", hook, ph), nsrun("floor-spread", hook, ph)
            rx = pair_ratio(x, f)
            spread[hook] = {"phase": ph, "floor": f, "spread": x, "ratio": rx}
            if rx:
                R.add(f"| {hook} | {PHASE_LABEL[ph]} | {mr(list(f.values()), 1)} | {mr(list(x.values()), 1)} | "
                      f"{ratio_str(rx, 3)} |")
        R.add("")
    h = hooks_res["pooled"]
    if h["bpftrace"]:
        R.headline("ns/run on foreign packets, 4 interface hooks pooled: bpftrace bench/foreign.bt",
                   f"{fmt(med(list(h['bpftrace'].values())), 1)} ns = "
                   f"{med(h['ratio_bpftrace_floor']):.2f}× the floor" if h["ratio_bpftrace_floor"] else "n/a",
                   f"floor {fmt(med(list(h['floor'].values())), 1)} ns")

    # The closed-port flood reaches kfree_skb once per datagram: a check that it measures drops.
    per_dgram = []
    for r in by["floor"]:
        d = r.get("bpf_drop")
        if d and r["drop"] and r["drop"]["packets"]:
            per_dgram.append(d["hooks"].get("kfree_skb", [0, 0])[1] / r["drop"]["packets"])
    if per_dgram:
        R.add(f"Check: the floor's kfree_skb ran {mr(per_dgram, 3)} times per closed-port datagram sent "
              "(1 = every datagram dropped once; the sender's own socket errors excluded).", "")

    # Cost over wall time, per packet, and the in-flight duty cycle.
    R.add("Cost over wall time and per packet, and the duty cycle. BPF CPU ms/s = Σ Δrun_time_ns / Δwall over the "
          "whole round (UDP flood + TCP + closed-port flood, all the process's programs), i.e. ns per run × runs / "
          "wall time; BPF ns per UDP packet = Σ Δrun_time_ns during the UDP flood / packets sent; duty cycle = "
          "Δtracepkt_attached_seconds_total / Δwall time between two scrapes around the round; for f., the share "
          "of that wall time each target has a probe out = Δtimed-out probes × timeout / targets / Δwall (to "
          "within one timeout per target over the window; a probe ended early, by an ICMP error say, counts for "
          "nothing).", "",
          "| configuration | BPF CPU ms per s (1000 = one core) | BPF ns per UDP packet sent | "
          "duty cycle (attached / wall time) | lost events at the end |",
          "|---|---|---|---|---|")
    wall_res = {}
    for c in CONFIGS[1:]:
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
        out = [r["probes_out"] * 100 for r in by[c] if r.get("probes_out") is not None]
        if c in ("always", "in-flight", "sized", "cross-node", "side-by-side"):
            ds = mr(duty, 3, " %") if duty else "n/a (no tracepkt_attached_seconds_total)"
            if c == "sized":
                ds += "; probes out " + (mr(out, 1, " %") if out else "n/a") + " of the time (per target)"
            lost = ", ".join(str(int(r["lost"])) if r["lost"] is not None else "n/a" for r in by[c])
        else:
            ds, lost = "100 % (attached for the whole round)", "—"
        R.add(f"| {LABEL[c]} | {mr(ms, 3)} | {mr(perpkt, 0)} | {ds} | {lost} |")
        wall_res[c] = {"bpf_cpu_ms_per_s": ms, "bpf_ns_per_udp_packet": perpkt, "duty_pct": duty}
        if c == "sized":
            wall_res[c]["probes_out_pct"] = out
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
        R.headline("attach: in-flight duty cycle (1 target, interval 1s, under the floods)",
                   mr(w["duty_pct"], 2, " %"), "attach: always: " + mr(wall_res.get("always", {}).get("duty_pct", []), 2, " %"))
        R.headline("BPF CPU averaged over wall time, attach: in-flight",
                   f"{fmt(med(w['bpf_cpu_ms_per_s']), 2)} ms/s",
                   f"attach: always {fmt(med(wall_res.get('always', {}).get('bpf_cpu_ms_per_s', [])), 2)} ms/s; "
                   f"floor {fmt(med(wall_res.get('floor', {}).get('bpf_cpu_ms_per_s', [])), 2)} ms/s")
    if wall_res.get("sized", {}).get("probes_out_pct"):
        R.headline("worst-case sized probes: share of wall time a probe of each size is out (timed out × timeout)",
                   mr(wall_res["sized"]["probes_out_pct"], 1, " %"), "interval 1s, timeout 1s, never answered")
    R.add("Caveat: with kernel.bpf_stats_enabled=1 every program run also pays two clock reads for the accounting; "
          "that cost is outside run_time_ns but inside the throughput figures of b–g (not a).", "")
    others = [r["others"] for r in recs]
    if any(others):
        R.add(f"Other processes holding BPF programs during the rounds: {min(others)}–{max(others)} "
              "(raw/foreign/*/others.json).", "")
    R.results["foreign"] = {"throughput": res, "hooks": hooks_res, "matrix": matrix, "wall": wall_res,
                            "side_by_side": side, "floor_spread": spread,
                            "kfree_skb_runs_per_closed_port_datagram": per_dgram}


def ns_per_run(rs, hook, phase, key="bpf"):
    """{round: ns per run of the hook's programs during the phase}, from the rounds' `key`
    snapshots (bpf: the attached process; beside: the floor beside it in h.)"""
    out = {}
    for r in rs:
        d = r.get(f"{key}_{phase}")
        h = d["hooks"].get(hook) if d else None
        if h and h[1] > 0:
            out[r["round"]] = h[0] / h[1]
    return out


def runs_per_second(rs, hooks, phase, key="bpf"):
    """per round: runs of the hooks' programs per second of the phase"""
    out = []
    for r in rs:
        d = r.get(f"{key}_{phase}")
        if d and d["wall"] > 0:
            out.append(sum(d["hooks"].get(h, [0, 0])[1] for h in hooks) / d["wall"])
    return out


def side_by_side(rs, R, goal):
    """h.: tracepkt's program and the floor's on the same packets, per hook and round; the goal's
    verdict"""
    R.add("Side by side (h.): tracepkt (attach: always) and the floor attached together, so that every packet "
          "runs both programs of a hook back to back. ns/run of each on the same packets, median (min–max) over "
          "rounds, and the per-round ratio tracepkt / floor, median (min–max), for each order: the program "
          "attached first runs first, and the first one on a hook may pay for what the second then finds in "
          "cache. The order-balanced ratio, the one judged, is the geometric mean of the two orders' medians: "
          "if running first costs a factor p, floor-first rounds measure r / p and tracepkt-first rounds r × p, "
          "and their product is r².", "",
          f"| hook | measured during | floor ns/run | tracepkt ns/run | floor first | tracepkt first | "
          f"order-balanced tracepkt / floor (goal {goal}) | runs/s |",
          "|---|---|---|---|---|---|---|---|")
    out, verdicts = {}, []
    for hook in HOOKS:
        ph = GOAL_PHASE[hook]
        t, f = ns_per_run(rs, hook, ph), ns_per_run(rs, hook, ph, "beside")
        ratio = {k: t[k] / f[k] for k in t if k in f}
        by_order = {o: [ratio[r["round"]] for r in rs if r.get("order") == o and r["round"] in ratio]
                    for o in ("floor first", "tracepkt first")}
        runs = runs_per_second(rs, [hook], ph, "beside")
        label = f"ns/run on foreign packets, {hook} ({PHASE_LABEL[ph]}): tracepkt (always) beside the floor"
        out[hook] = {"phase": ph, "tracepkt": t, "floor": f, "by_order": by_order, "runs_per_s": runs}
        if (med(runs) or 0) < REACHED_RUNS_PER_S:
            R.add(f"| {hook} | {PHASE_LABEL[ph]} | not reached by this traffic ({mr(runs, 0)} runs/s; judged "
                  f"from {REACHED_RUNS_PER_S:,}/s) | | | | | |")
            R.headline(label, f"not reached by this traffic ({mr(runs, 0)} runs/s)")
            continue
        ff, tf = by_order["floor first"], by_order["tracepkt first"]
        balanced = math.sqrt(med(ff) * med(tf)) if ff and tf else None
        out[hook]["balanced"] = balanced
        R.add(f"| {hook} | {PHASE_LABEL[ph]} | {mr(list(f.values()), 1)} | "
              f"{mr(list(t.values()), 1)} | {ratio_str(ff, 3) if ff else '—'} | "
              f"{ratio_str(tf, 3) if tf else '—'} | "
              f"{f'{balanced:.3f}×' if balanced else 'not measured: needs rounds in both orders'} | "
              f"{mr(runs, 0)} |")
        if balanced is None:
            R.headline(label, "not measured: needs rounds in both orders (2 or more)", "—", goal, "no")
            verdicts.append(False)
            continue
        verdicts.append(balanced <= GOAL_FLOOR_RATIO)
        R.headline(label, f"{fmt(med(list(t.values())), 1)} ns, {balanced:.3f}× the floor "
                          f"order-balanced (floor first {med(ff):.3f}×, tracepkt first {med(tf):.3f}×)",
                   f"floor {fmt(med(list(f.values())), 1)} ns, same packets", goal,
                   "yes" if balanced <= GOAL_FLOOR_RATIO else "no")
    R.add("")
    if verdicts:
        R.headline("Foreign-packet cost, every hook the traffic reaches (kfree_skb included), side by side",
                   f"{sum(verdicts)} of {len(verdicts)} hooks within the goal", "the floor, same packets", goal,
                   "yes" if all(verdicts) else "no")
    else:
        R.headline("Foreign-packet cost, every hook the traffic reaches (kfree_skb included), side by side",
                   "not measured: no side-by-side round" if not rs else "no hook reached", "the floor, same packets",
                   goal, "no")
    return out


# ---- 2. journeys ---------------------------------------------------------------------------


def proc_stat_cpu(path):
    """the aggregate `cpu` line of /proc/stat: user nice system idle iowait irq softirq steal"""
    lines = read_lines(path)
    if not lines or not lines[0].startswith("cpu "):
        return None
    return [int(x) for x in lines[0].split()[1:9]]


def machine_cpu(a, b):
    """busy and softirq % of one core (100 × CPUs = the whole machine) between two /proc/stat samples"""
    if not a or not b:
        return None
    d = [y - x for x, y in zip(a, b)]
    total = sum(d)
    if total <= 0:
        return None
    ncpu = os.cpu_count() or 1
    return {"busy": (total - d[3] - d[4]) / total * ncpu * 100, "softirq": d[6] / total * ncpu * 100}


def journey_record(d, rate, rnd, hz):
    info = read_kv(os.path.join(d, "info"))
    rec = {"round": rnd, "rate": rate, "status": info.get("status", "?"), "note": info.get("note", ""),
           "targets": int(info.get("targets", 0) or 0), "interval": info.get("interval", ""),
           "rss_kb": info.get("rss_kb"), "pass": False, "failures": []}
    p0 = read_prom(os.path.join(d, "prom0.txt"))
    p1 = read_prom(os.path.join(d, "prom1.txt"))
    t = read_kv(os.path.join(d, "times"))
    if rec["status"] != "ok" or not p0 or not p1 or "prom1" not in t or "prom0" not in t:
        rec["failures"].append(rec["note"] or "not measured")
        return rec
    wall = float(t["prom1"]) - float(t["prom0"])
    rec.update(wall=wall, sent=p1["sent"] - p0["sent"], replies=p1["replies"] - p0["replies"],
               hops=p1["hops"] - p0["hops"], lost=p1["lost"], unmatched=p1["unmatched"], errors=p1["errors"],
               n_targets=p1["targets"], targets_all_hops=p1["targets_all_hops"],
               success_ok=p1["success_ok"], success_targets=p1["success_targets"],
               path_hops_expected=p1["path_hops_expected"], path_hops_reported=p1["path_hops_reported"])
    rec["achieved"] = rec["sent"] / wall
    rec["hops_per_reply"] = rec["hops"] / rec["replies"] if rec["replies"] else None
    rec["duty"] = None
    if p0["attached_seconds"] is not None and p1["attached_seconds"] is not None:
        rec["duty"] = (p1["attached_seconds"] - p0["attached_seconds"]) / wall
    rec["others_cpu"] = cpu_others(load_json(os.path.join(d, "cpu0.json")), load_json(os.path.join(d, "cpu1.json")))
    cpu = read_cpu(os.path.join(d, "cpu"))
    rec["cpu"] = cpu_pct(cpu[0], cpu[-1], hz) if len(cpu) >= 2 else None
    rec["machine"] = machine_cpu(proc_stat_cpu(os.path.join(d, "stat0")), proc_stat_cpu(os.path.join(d, "stat1")))
    # Probes in flight at each sample: counted as sent ~RTT + 25 ms grace before their reply.
    rec["tolerance"] = math.ceil(rate * 0.05) + 2
    rec["deficit"] = rec["sent"] - rec["replies"]
    f = rec["failures"]
    if rec["lost"]:
        f.append(f"{int(rec['lost'])} ring-buffer events lost")
    if rec["unmatched"]:
        f.append(f"{int(rec['unmatched'])} events unmatched")
    if abs(rec["deficit"]) > rec["tolerance"]:
        f.append(f"sent − replies {int(rec['deficit'])} (tolerance ±{rec['tolerance']})")
    if abs(rec["hops"] - EXPECTED_HOPS * rec["replies"]) > EXPECTED_HOPS * rec["tolerance"]:
        f.append(f"kernel hops per reply {fmt(rec['hops_per_reply'], 3)} (expected {EXPECTED_HOPS})")
    if rec["targets_all_hops"] < rec["targets"]:
        f.append(f"{rec['targets_all_hops']}/{rec['targets']} targets with all {EXPECTED_HOPS} hop series")
    if rec["success_ok"] < rec["success_targets"]:
        f.append(f"{rec['success_targets'] - rec['success_ok']} targets whose last probe got no reply")
    if rec["achieved"] < 0.95 * rate:
        f.append(f"achieved {rec['achieved']:,.0f}/s of {rate:,}/s")
    rec["pass"] = not f
    rec["bound"] = journey_bound(rec)
    return rec


def journey_bound(rec):
    """what was at its limit during a step: the likely bound on the rate"""
    if "achieved" not in rec:
        return "not measured"
    ncpu = os.cpu_count() or 1
    out = []
    if rec.get("lost"):
        out.append(f"ring-buffer loss ({int(rec['lost'])} events: user space did not drain the ring in time)")
    if rec["achieved"] < 0.95 * rec["rate"]:
        out.append(f"sending ({rec['achieved']:,.0f}/s of {rec['rate']:,}/s asked)")
    if rec.get("cpu") is not None and rec["cpu"] >= 90:
        out.append(f"tracepkt's CPU ({rec['cpu']:.0f} % of one core)")
    m = rec.get("machine")
    if m and m["busy"] >= 0.9 * ncpu * 100:
        out.append(f"the machine's CPUs ({m['busy']:.0f} % of {ncpu * 100} % busy, softirq {m['softirq']:.0f} %)")
    return "; ".join(out) if out else "nothing at its limit"


def journey_line(rec):
    if "achieved" not in rec:
        return "FAIL: " + "; ".join(rec["failures"])
    m = rec.get("machine") or {}
    s = (f"sent {int(rec['sent'])} ({rec['achieved']:,.0f}/s), replies {int(rec['replies'])}, lost "
         f"{int(rec['lost'])}, unmatched {int(rec['unmatched'])}, hops/reply {fmt(rec['hops_per_reply'], 2)}, "
         f"last probe answered {rec['success_ok']}/{rec['success_targets']}, tracepkt CPU {fmt(rec['cpu'], 1)} %, "
         f"machine {fmt(m.get('busy'), 0)} % (softirq {fmt(m.get('softirq'), 0)} %)")
    return s + (": pass" if rec["pass"] else ": FAIL: " + "; ".join(rec["failures"]) + "; at its limit: " + rec["bound"])


def journey(raw, R, hz):
    base = os.path.join(raw, "journey")
    if not os.path.isdir(base):
        return
    steps = {}
    for name in sorted(os.listdir(base)):
        m = re.match(r"r(\d+)-rate(\d+)$", name)
        if not m:
            continue
        rate = int(m.group(2))
        steps.setdefault(rate, []).append(journey_record(os.path.join(base, name), rate, int(m.group(1)), hz))
    if not steps:
        return
    ncpu = os.cpu_count() or 1
    R.add("### 2. Journey throughput", "",
          "`tracepkt serve` (attach default: in-flight) with N targets, all at the bench namespace's veth address, "
          "N / interval probes per second; one fresh process per step and round, counters read at the start and the "
          "end of the window (after all targets started). Steps go upward and stop after the first step that "
          "fails. A step passes when lost ring-buffer events = 0, unmatched events = 0, |sent − replies| ≤ the "
          "in-flight tolerance (⌈rate × 50 ms⌉ + 2), the kernel counted "
          f"{EXPECTED_HOPS} interface crossings per reply (Δtracepkt_hops_total ≈ {EXPECTED_HOPS} × Δreplies, "
          f"within {EXPECTED_HOPS} × the tolerance) and every target has its {EXPECTED_HOPS} hop series, every "
          "target's last probe was answered (tracepkt_probe_success = 1), and the achieved send rate is ≥ 95 % of "
          "the asked rate. Machine CPU: all CPUs from /proc/stat "
          f"(100 % = one core, {ncpu * 100} % = all). Per-round values are listed in round order.", "",
          "| probes/s | targets × interval | rounds passed | achieved probes/s | sent − replies (tolerance) | "
          "lost events | unmatched events | kernel hops per reply | last probe answered | tracepkt CPU % | "
          "machine CPU % (softirq) | programs attached, % of time | other processes' CPU % | failed on |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    best = first_fail = None
    res = {}
    for rate in sorted(steps):
        rs = sorted(steps[rate], key=lambda r: r["round"])
        okr = [r for r in rs if "achieved" in r]
        npass = sum(1 for r in rs if r["pass"])
        res[rate] = {"passed": npass, "rounds": len(rs), "records": rs}
        if npass == len(rs) and first_fail is None:
            best = rate
        elif npass < len(rs) and first_fail is None:
            first_fail = rate
        why = "; ".join(f for r in rs for f in r["failures"])
        if not okr:
            R.add(f"| {rate} | | 0/{len(rs)} | not measured | | | | | | | | | | {why} |")
            continue
        j = lambda k: ", ".join(str(int(r[k])) for r in okr)  # noqa: E731
        mach = [r["machine"] for r in okr if r.get("machine")]
        R.add(f"| {rate} | {okr[0]['targets']} × {okr[0]['interval']} | {npass}/{len(rs)} | "
              f"{mr([r['achieved'] for r in okr], 1)} | {j('deficit')} (±{okr[0]['tolerance']}) | {j('lost')} | "
              f"{j('unmatched')} | {', '.join(fmt(r['hops_per_reply'], 2) for r in okr)} | "
              f"{', '.join(str(r['success_ok']) + '/' + str(r['success_targets']) for r in okr)} | "
              f"{mr([r['cpu'] for r in okr], 1)} | "
              f"{mr([m['busy'] for m in mach], 0)} ({mr([m['softirq'] for m in mach], 0)}) | "
              f"{mr([r['duty'] * 100 if r['duty'] is not None else None for r in okr], 1)} | "
              f"{mr([r['others_cpu'] for r in okr], 0)} | {why or '—'} |")
    top = max(steps)
    if first_fail is not None:
        failed = [r for r in res[first_fail]["records"] if not r["pass"]]
        bound = failed[0]["bound"] if failed else "?"
        causes = "; ".join(failed[0]["failures"]) if failed else "?"
        R.add("", f"**Ceiling: {best if best is not None else 'below the lowest step'} probes/s**, the highest step "
                  f"passed in every round below the first failure. The first failing step, {first_fail} probes/s, "
                  f"failed on: {causes}. At its limit there: {bound}.", "")
        value = (f"{best if best is not None else 'none'} probes/s; {first_fail}/s failed ({causes}); "
                 f"at its limit: {bound}")
        met = "yes"
    else:
        R.add("", f"**No step failed up to {top} probes/s** (the highest step tried): the ceiling is above it.", "")
        value = f"≥ {top} probes/s (no step failed; add higher BENCH_JOURNEY_RATES)"
        met = "no"
    R.headline("Journey ceiling: highest probes/s with 0 lost events, complete journeys and the asked rate", value,
               "—", "stepped up until a step fails", met)
    for rate in (100, 1000, 10000):
        okr = [r for r in res.get(rate, {}).get("records", []) if "achieved" in r]
        if okr:
            R.headline(f"tracepkt CPU % at {rate} probes/s ({okr[0]['targets']} targets × {okr[0]['interval']})",
                       mr([r["cpu"] for r in okr], 1, " %"))
    R.results["journey"] = {"steps": res, "ceiling": best, "first_failure": first_fail}


# ---- 3./4. scale, scrape, memory, soak -------------------------------------------------------


def mib(b):
    return f"{b / 1048576:.1f} MiB" if b is not None else "n/a"


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
        rec = {"status": info.get("status", "?"), "note": info.get("note", ""), "interval": info.get("interval", ""),
               "first_scrape_s": info.get("first_scrape_s"), "log_warnings": info.get("log_warnings")}
        cpu = read_cpu(os.path.join(d, "cpu"))
        if len(cpu) >= 2:
            rec["cpu_total"] = cpu_pct(cpu[0], cpu[-1], hz)
            rec["cpu_windows"] = [x for x in (cpu_pct(cpu[i], cpu[i + 1], hz) for i in range(len(cpu) - 1))
                                  if x is not None]
            rec["cpu_secs"] = cpu[-1][0] - cpu[0][0]
        rss = [int(x) for x in read_lines(os.path.join(d, "rss_kb")) if x.strip().isdigit()]
        rec["rss_kb"] = rss[0] if rss else None
        rec["rss_kb_after_scrapes"] = rss[1] if len(rss) > 1 else None
        rec["rss_kb_max"] = max(rss) if rss else None
        sc, size, failed = [], None, 0
        for l in read_lines(os.path.join(d, "scrapes")):
            p = l.split()
            if len(p) >= 3 and p[0] == "200":
                sc.append(float(p[1]))
                size = int(float(p[2]))
            elif p:
                failed += 1
        rec["scrape_s"], rec["scrape_bytes"], rec["scrape_failed"] = sc, size, failed
        rec["prom"] = read_prom(os.path.join(d, "prom.txt"))
        rec["maps"] = load_json(os.path.join(d, "maps.json"))
        rec["maps_bytes"] = maps_total(rec["maps"]) if rec["maps"] else None
        res[n] = rec
    if not res:
        return
    R.add("### 3.–4. CPU, scrape and memory at each size", "",
          "One `tracepkt serve` per size (attach default), every target at the bench namespace's veth address, "
          "probed every 10s (every 30s from 10,000 targets on). After a warm-up of one interval + 5 s (every "
          "target started): the kernel memory of the maps the process holds (Σ bytes_memlock, `bpftool map show`, "
          "maps found through /proc/PID/fdinfo); then, from 100 targets on, CPU % = Δ(utime + stime) of the "
          "process / wall time (100 % = one core), whole window and min–max of its 10 s windows, with no scrape "
          "during the window; then RSS (VmRSS); then sequential scrapes, `curl` GET /metrics (classic Prometheus "
          "text), `%{time_total}`, at most 60 s of them; then RSS again.", "",
          "| targets × interval | tracepkt CPU % (10 s windows min–max) | /metrics latency median / max (scrapes) | "
          "/metrics body | RSS after warm-up / after the scrapes | maps, Σ bytes_memlock | at the end |",
          "|---|---|---|---|---|---|---|")
    for n, r in res.items():
        if r["status"] != "ok" and not r.get("rss_kb"):
            R.add(f"| {n} × {r['interval']} | not measured: {r['note']} | | | | | |")
            continue
        if "cpu_total" in r and r["cpu_windows"]:
            cpu = (f"{r['cpu_total']:.2f} % over {r['cpu_secs']:.0f} s "
                   f"({min(r['cpu_windows']):.2f}–{max(r['cpu_windows']):.2f})")
        else:
            cpu = "not measured at this size"
        sc = r["scrape_s"]
        lat = f"{med(sc) * 1000:.2f} ms / {max(sc) * 1000:.2f} ms ({len(sc)})" if sc else "n/a"
        if r["scrape_failed"]:
            lat += f"; {r['scrape_failed']} failed"
        size = f"{r['scrape_bytes']:,} B" if r["scrape_bytes"] else "n/a"
        rss = " / ".join(mib(x * 1024) if x else "n/a" for x in (r["rss_kb"], r["rss_kb_after_scrapes"]))
        pm = r["prom"]
        end = (f"{int(pm['sent'])} sent, {int(pm['replies'])} replies, {int(pm['lost'])} lost events, "
               f"{pm['targets_all_hops']}/{n} targets with all {EXPECTED_HOPS} hop series, "
               f"{pm['success_ok']}/{pm['success_targets']} last probes answered" if pm else "n/a")
        if r["status"] != "ok":
            end += f"; {r['note'] or 'tracepkt exited'}"
        R.add(f"| {n} × {r['interval']} | {cpu} | {lat} | {size} | {rss} | "
              f"{mib(r['maps_bytes']) if r['maps_bytes'] is not None else 'n/a'} | {end} |")
    R.add("")

    # Per-map kernel memory at each size.
    sizes = [n for n in res if res[n]["maps"]]
    if sizes:
        names = []
        for n in sizes:
            for mp in res[n]["maps"]["maps"]:
                key = (mp["name"], mp["type"])
                if key not in names:
                    names.append(key)
        R.add("Kernel memory of tracepkt's maps (bytes_memlock per map, with max_entries), by number of targets:", "",
              "| map | type | " + " | ".join(f"{n} targets" for n in sizes) + " |",
              "|---|---|" + "---|" * len(sizes))
        for name, typ in names:
            cells = []
            for n in sizes:
                ms = [mp for mp in res[n]["maps"]["maps"] if (mp["name"], mp["type"]) == (name, typ)]
                cells.append(", ".join(f"{mp['bytes_memlock']:,} B ({mp['max_entries']:,})" for mp in ms)
                             if ms else "—")
            R.add(f"| {name or '(unnamed)'} | {typ} | " + " | ".join(cells) + " |")
        R.add("| **total** | | " + " | ".join(f"**{res[n]['maps_bytes']:,} B**" for n in sizes) + " |", "")

    def scrape_med(n):
        sc = res.get(n, {}).get("scrape_s")
        return med(sc) if sc else None

    for n, r in res.items():
        if "cpu_total" in r and n < 10000:
            R.headline(f"tracepkt CPU %, {n} targets every {r['interval']}", f"{r['cpu_total']:.2f} %")
        if r["scrape_s"] and n not in (1000, 10000):
            R.headline(f"/metrics scrape, {n} targets: latency median / max; body",
                       f"{scrape_med(n) * 1000:.2f} / {max(r['scrape_s']) * 1000:.2f} ms; {r['scrape_bytes']:,} B")
        if r["rss_kb"] and n < 10000:
            R.headline(f"RSS, {n} targets after warm-up / after the scrapes",
                       " / ".join(mib(x * 1024) for x in (r["rss_kb"], r["rss_kb_after_scrapes"]) if x))

    def not_measured(n):
        r = res.get(n)
        if r is None:
            return "not run (BENCH_SCALE_SIZES)"
        return f"not measured: {r['note'] or r['status']}"

    # Goals at 1,000 targets.
    r = res.get(1000)
    m = scrape_med(1000)
    R.headline("/metrics at 1,000 targets: median latency",
               f"{m * 1000:.1f} ms (max {max(r['scrape_s']) * 1000:.1f} ms, {len(r['scrape_s'])} scrapes)"
               if m is not None else not_measured(1000), "—", f"< {GOAL_SCRAPE_1K_S * 1000:.0f} ms",
               ("yes" if m < GOAL_SCRAPE_1K_S else "no") if m is not None else "no")
    b = r["scrape_bytes"] if r else None
    R.headline("/metrics at 1,000 targets: body size", f"{b:,} B" if b else not_measured(1000), "—",
               f"< {GOAL_BODY_1K_B / 1e6:.0f} MB ({GOAL_BODY_1K_B:,} B)",
               ("yes" if b < GOAL_BODY_1K_B else "no") if b else "no")
    # Goals at 10,000 targets.
    r = res.get(10000)
    iv = r["interval"] if r else "30s"
    m = scrape_med(10000)
    R.headline(f"/metrics at 10,000 targets (every {iv}): median latency",
               f"{m * 1000:.1f} ms (max {max(r['scrape_s']) * 1000:.1f} ms, {len(r['scrape_s'])} scrapes; body "
               f"{r['scrape_bytes']:,} B)" if m is not None else not_measured(10000), "—",
               f"< {GOAL_SCRAPE_10K_S * 1000:.0f} ms", ("yes" if m < GOAL_SCRAPE_10K_S else "no") if m is not None else "no")
    rk = r["rss_kb_max"] if r else None
    R.headline(f"RSS at 10,000 targets (every {iv}), the higher of after warm-up / after the scrapes",
               f"{rk * 1024 / 1e6:.1f} MB ({rk * 1024 / 1048576:.1f} MiB)" if rk else not_measured(10000), "—",
               f"< {GOAL_RSS_10K_B / 1e6:.0f} MB", ("yes" if rk * 1024 < GOAL_RSS_10K_B else "no") if rk else "no")
    c = r.get("cpu_total") if r else None
    if c is not None:
        secs = r["cpu_secs"]
        short = secs < GOAL_CPU_WINDOW_S - 1
        R.headline(f"tracepkt CPU at 10,000 targets (every {iv}), % of one core",
                   f"{c:.2f} % over {secs:.0f} s (10 s windows {min(r['cpu_windows']):.2f}–{max(r['cpu_windows']):.2f})",
                   "—", f"< {GOAL_CPU_10K_PCT:.0f} % over ≥ {GOAL_CPU_WINDOW_S} s",
                   ("yes" if c < GOAL_CPU_10K_PCT else "no") + (f" (window {secs:.0f} s, shorter than the goal's)"
                                                                if short else ""))
    else:
        R.headline(f"tracepkt CPU at 10,000 targets (every {iv}), % of one core", not_measured(10000), "—",
                   f"< {GOAL_CPU_10K_PCT:.0f} % over ≥ {GOAL_CPU_WINDOW_S} s", "no")
    # Kernel counters must cover every target: a full counter map silently drops the rest.
    for n, r in res.items():
        pm = r["prom"]
        if pm and n >= 1000:
            R.headline(f"Targets with all {EXPECTED_HOPS} kernel hop series (tracepkt_hops_total), {n:,} targets",
                       f"{pm['targets_all_hops']:,} / {n:,}", "—", "every target",
                       "yes" if pm["targets_all_hops"] >= n else "no")
    # Map memory: sized from the config, it grows with the targets.
    mem = {n: res[n]["maps_bytes"] for n in res if res[n].get("maps_bytes") is not None}
    if mem:
        lo, hi = min(mem), max(mem)
        grows = len(mem) >= 2 and mem[hi] > mem[lo]
        R.headline("Kernel memory of tracepkt's maps, Σ bytes_memlock: " + " / ".join(f"{n:,}" for n in mem) + " targets",
                   " / ".join(mib(v) for v in mem.values()), f"{mib(mem[lo])} at {lo:,} targets",
                   "sized from the config: grows with the targets",
                   ("yes" if grows else "no (the same at every size)") if len(mem) >= 2 else "n/a (one size)")
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
              f"{pe['targets_all_hops']}/{pe['targets']} targets with all {EXPECTED_HOPS} hop series, "
              f"{pe['success_ok']}/{pe['success_targets']} last probes answered.", "")
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
          "(tracepkt_probe_rtt_seconds_count > 0 in a scrape). Median (min–max) over starts; the two modes alternate.", "",
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
        ms = med(s)
        R.headline(f"Start-up, attach: {mode}: fork to \"serving /metrics\" (to first journey)",
                   f"{fmt(ms, 0)} ms ({fmt(med(j), 0)} ms); {len(s)} starts, max {fmt(max(s) if s else None, 0)} ms",
                   "—", f"< {GOAL_STARTUP_S * 1000:.0f} ms",
                   ("yes" if ms < GOAL_STARTUP_S * 1000 else "no") if ms is not None else "no")
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
    elif cmd == "maps" and len(argv) == 3:
        json.dump(maps_snap(int(argv[2])), sys.stdout)
    elif cmd == "maps-total" and len(argv) == 3:
        print(maps_total(load_json(argv[2])))
        return 0
    elif cmd == "ping" and len(argv) == 4:
        return 0 if ping(argv[2], float(argv[3])) else 1
    elif cmd == "udp-flood" and len(argv) == 6:
        json.dump(udp_flood(argv[2], int(argv[3]), float(argv[4]), int(argv[5])), sys.stdout)
    elif cmd == "round-line" and len(argv) == 3:
        print(round_line(argv[2]))
        return 0
    elif cmd == "journey-step" and len(argv) == 4:
        rec = journey_record(argv[2], int(argv[3]), 0, os.sysconf("SC_CLK_TCK"))
        print(journey_line(rec))
        return 0 if rec["pass"] else 1
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
