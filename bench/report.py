#!/usr/bin/env python3
"""bench/report.py: turns bench/run's raw results into the comparison table, a small summary and
the data files the gnuplot chart reads. Standard library only.

  report.py compare RESULTS_DIR   -> RESULTS_DIR/summary.json, summary.md, raw/*.dat; prints table
  report.py scale RESULTS_DIR     -> RESULTS_DIR/scale.json, scale.md; prints table
  report.py pgbench-latency LOG... -> prints {"p50":..,"p99":..,..} in microseconds from pgbench -l logs
"""
import glob
import json
import math
import os
import statistics
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pct(sorted_values, q):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


def pgbench_latency(paths):
    # pgbench -l lines: client_id transaction_no time_us script_no time_epoch time_us_part [...]
    values = []
    for p in paths:
        with open(p) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2].isdigit():
                    values.append(int(parts[2]))
    values.sort()
    out = {"count": len(values)}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)):
        out[name] = pct(values, q)
    out["max"] = values[-1] if values else None
    # spectrum for the chart: same points as broker-bench's (1 - 10^(-k/10))
    spectrum = []
    for k in range(0, 51):
        q = 1 - 10 ** (-k / 10)
        if values and (1 - q) * len(values) < 0.5:
            break
        spectrum.append([q * 100, pct(values, q)])
    out["latency_spectrum"] = spectrum
    return out


def fmt_rate(v):
    if v is None:
        return "n/a"
    return f"{v:,.0f}"


def fmt_ms(us):
    if us is None:
        return "n/a"
    return f"{us / 1000:.2f}"


def ratio(a, b):
    if not a or not b:
        return None
    return a / b


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}x"


def write_spectrum(path, spectrum):
    with open(path, "w") as f:
        for p, us in spectrum:
            if p >= 100 or us is None:
                continue
            f.write(f"{1 / (1 - p / 100):.6f} {us / 1000:.4f} {p}\n")


def alternated_pairs(raw):
    """brokerd's and nginx's closed loops of each alternated pair (bench/run's run_pairs), in
    pair order, with each pair's ratio; a pair with either side missing or empty ends the list."""
    pairs = []
    i = 1
    while True:
        b = load(os.path.join(raw, f"pair-{i}-brokerd.json"))
        n = load(os.path.join(raw, f"pair-{i}-nginx.json"))
        if not b or not n or not b.get("throughput_per_s") or not n.get("throughput_per_s"):
            return pairs
        pairs.append({
            "pair": i,
            # bench/run's order: brokerd first in odd pairs, nginx first in even ones
            "order": "brokerd, nginx" if i % 2 else "nginx, brokerd",
            "brokerd_per_s": b["throughput_per_s"], "nginx_per_s": n["throughput_per_s"],
            "ratio": b["throughput_per_s"] / n["throughput_per_s"],
            "brokerd_cpu_us": (b.get("cpu") or {}).get("server_us_per_request"),
            "nginx_cpu_us": (n.get("cpu") or {}).get("server_us_per_request"),
        })
        i += 1


def compare(results):
    raw = os.path.join(results, "raw")
    machine = load(os.path.join(raw, "machine.json")) or {}
    setup = load(os.path.join(raw, "brokerd-setup.json")) or {}
    closed = load(os.path.join(raw, "brokerd-closed.json")) or {}
    half = load(os.path.join(raw, "brokerd-half.json")) or {}
    e2e = load(os.path.join(raw, "brokerd-e2e.json")) or {}
    e2e_half = load(os.path.join(raw, "brokerd-e2e-half.json")) or {}
    nginx = load(os.path.join(raw, "nginx-closed.json")) or {}
    nginx_half = load(os.path.join(raw, "nginx-half.json")) or {}
    pg_place = load(os.path.join(raw, "pg-place.json")) or {}
    pg_life = load(os.path.join(raw, "pg-lifecycle.json")) or {}
    rdb1 = load(os.path.join(raw, "rocksdb-1.json")) or {}
    rdbn = load(os.path.join(raw, "rocksdb-n.json")) or {}
    journal = load(os.path.join(raw, "journal-inspect.json")) or {}
    params = load(os.path.join(raw, "params.json")) or {}
    brokerd_runs = (closed, half, e2e, e2e_half)

    peak = closed.get("throughput_per_s")
    lat = lambda r: (r.get("latency_us") or {})
    e2e_of = lambda r: (r.get("e2e") or {})
    rows = []

    def steadiness(run):
        """The slowest measured second's answers over the median second's, in a closed loop:
        near 1 when the machine gave the phase a steady share, lower when something else (on
        this VM or its host) took the cores for a while."""
        if not run or not run.get("closed_loop"):
            return None
        warmup, load_s = run.get("warmup_s") or 0, int(run.get("load_s") or 0)
        per_s = sorted(x["acks"] for x in (run.get("timeline") or [])
                       if warmup <= x["t"] < load_s)
        if len(per_s) < 3 or not per_s[len(per_s) // 2]:
            return None
        return per_s[0] / per_s[len(per_s) // 2]

    def row(name, shape, tput, l, vs_brokerd=True, run=None):
        cpu = (run or {}).get("cpu") or {}
        rows.append({
            "steadiness": steadiness(run),
            "system": name, "load": shape, "per_s": tput,
            "server_cpu_us": cpu.get("server_us_per_request"), "others_share": cpu.get("others_share"),
            "p50_us": l.get("p50"), "p99_us": l.get("p99"), "p99_9_us": l.get("p99_9"),
            "max_us": l.get("max"),
            "brokerd_vs": ratio(peak, tput) if vs_brokerd and tput else None,
        })

    conns = params.get("connections")
    streams = e2e_of(e2e).get("streams", 0)
    row("brokerd PlaceTrade ack (durable, embedded exchange)", f"closed loop, {conns} conns", peak,
        lat(closed), vs_brokerd=False, run=closed)
    row("brokerd PlaceTrade ack at half of peak", f"open loop, {half.get('rate_target', 0):,.0f}/s",
        half.get("throughput_per_s"), lat(half), vs_brokerd=False, run=half)
    row("brokerd PlaceTrade ack with streams", f"closed loop, +{streams} streams",
        e2e.get("throughput_per_s"), lat(e2e), vs_brokerd=False, run=e2e)
    row("brokerd placement -> FILLED on /v1/stream", f"closed loop, +{streams} streams",
        e2e_of(e2e).get("fills_per_s"), e2e_of(e2e).get("latency_us") or {}, vs_brokerd=False)
    row("brokerd placement -> FILLED, half of that", f"open loop, {e2e_half.get('rate_target', 0):,.0f}/s, +streams",
        e2e_of(e2e_half).get("fills_per_s"), e2e_of(e2e_half).get("latency_us") or {}, vs_brokerd=False,
        run=e2e_half)
    row("nginx, fixed JSON body (HTTP ceiling)", f"closed loop, {conns} conns",
        nginx.get("throughput_per_s"), lat(nginx), run=nginx)
    if nginx_half:
        row("nginx at brokerd's half-of-peak rate (latency floor)",
            f"open loop, {nginx_half.get('rate_target', 0):,.0f}/s", nginx_half.get("throughput_per_s"),
            lat(nginx_half), vs_brokerd=False, run=nginx_half)
    row("PostgreSQL, seeds' whole trade (place + worker + fill)", f"pgbench, {conns} clients",
        pg_life.get("tps"), pg_life.get("latency_us") or {})
    row("PostgreSQL, seeds' PlaceTrade transaction alone", f"pgbench, {conns} clients",
        pg_place.get("tps"), pg_place.get("latency_us") or {})
    row(f"RocksDB synced WriteBatch of {rdb1.get('record_bytes', '?')} B (one trade)", "1 writer",
        rdb1.get("batches_per_s"), rdb1.get("write_latency_us") or {})
    row(f"RocksDB synced WriteBatch of {rdbn.get('record_bytes', '?')} B (one trade)", f"{rdbn.get('threads', '?')} writers",
        rdbn.get("batches_per_s"), rdbn.get("write_latency_us") or {})

    half_p99 = lat(half).get("p99")
    fills = e2e_of(e2e).get("fills_per_s")
    pairs = alternated_pairs(raw)
    single_ratio = ratio(peak, nginx.get("throughput_per_s"))
    pairs_median = statistics.median(p["ratio"] for p in pairs) if pairs else None
    goals = [
        # Judged on the alternated pairs when there are any: a drift of the shared host between
        # the two single phases moves that ratio, while it moves both sides of a pair alike.
        {"goal": "PlaceTrade durable throughput >= 0.5x nginx", "target": 0.5,
         "measured": single_ratio if pairs_median is None else pairs_median,
         "single_phases": single_ratio,
         "pairs": None if not pairs else [p["ratio"] for p in pairs]},
        {"goal": "PlaceTrade durable throughput >= 20x the PostgreSQL seed design (whole trade)",
         "target": 20.0, "measured": ratio(peak, pg_life.get("tps"))},
        {"goal": "(stricter: >= 20x the seeds' PlaceTrade transaction alone)",
         "target": 20.0, "measured": ratio(peak, pg_place.get("tps"))},
        {"goal": "p99 ack latency <= 2 ms at half of peak", "target": 2.0,
         "measured": None if half_p99 is None else half_p99 / 1000, "lower_is_better": True},
        {"goal": ">= 20k fills/s end to end", "target": 20000.0, "measured": fills},
    ]
    for g in goals:
        m = g["measured"]
        if m is None:
            g["met"] = None
        elif g.get("lower_is_better"):
            g["met"] = m <= g["target"]
        else:
            g["met"] = m >= g["target"]

    def where_cpu(r):
        """brokerd's CPU per answered request by thread name, and requests per journal commit."""
        cpu = r.get("cpu") or {}
        threads = {t["name"]: t["us_per_request"] for t in (cpu.get("server_threads") or [])
                   if t.get("us_per_request") is not None}
        counters = r.get("server_counters") or {}
        commits = counters.get("broker_journal_commits_total")
        answered = r.get("answered") or 0
        # The journal's commit-time histogram over the phase: mean and how many took over 5 ms.
        took_s = counters.get("broker_journal_commit_seconds_sum")
        within_5ms = counters.get('broker_journal_commit_seconds_bucket{le="0.005"}')
        # Context switches per answered request, voluntary (went to sleep, to be woken again) and
        # involuntary (preempted), by thread, and of broker-bench itself.
        switches = {}
        if answered:
            for t in cpu.get("server_threads") or []:
                if t.get("voluntary_switches") is not None:
                    switches[t["name"]] = (t["voluntary_switches"] / answered,
                                           t["involuntary_switches"] / answered)
            if cpu.get("client_voluntary_switches") is not None:
                switches["broker-bench"] = (cpu["client_voluntary_switches"] / answered,
                                            cpu["client_involuntary_switches"] / answered)
        # Each request's time in brokerd's engine path by stage, from the growth of the
        # broker_request_stage_seconds buckets over the phase: the bound of the first bucket
        # holding half and 99% of the requests (an upper bound on p50 and p99, in ms).
        stages = {}
        for stage in ("queued", "round", "handoff"):
            prefix = 'broker_request_stage_seconds_bucket{stage="%s",le="' % stage
            grown = sorted((float(k[len(prefix):-2]), v) for k, v in counters.items()
                           if k.startswith(prefix) and v is not None)
            if not grown or not grown[-1][1]:
                continue
            total = grown[-1][1]
            stages[stage] = {
                q: next((1000 * le for le, n in grown if n >= share * total), None)
                for q, share in (("p50_ms", 0.5), ("p99_ms", 0.99))}
        # Fills the engine settled and journaled, over the whole load (warm-up and drain
        # included, the window the counters and CPU are read over).
        filled = counters.get('broker_trades_closed_total{status="FILLED"}')
        wall_s = cpu.get("wall_s")
        return {"us_per_request_by_thread": threads, "switches_per_request": switches,
                "fills_settled_per_s": (filled / wall_s) if filled is not None and wall_s
                else None,
                "stage_ms_bounds": stages,
                "commits": commits,
                "requests_per_commit": (answered / commits) if commits else None,
                "commit_ms_mean": (1000 * took_s / commits) if commits and took_s is not None
                else None,
                "commits_over_5ms": (commits - within_5ms) if commits and within_5ms is not None
                else None}

    phases = {"closed": closed, "half": half, "streams": e2e, "streams_half": e2e_half}
    cpu_by_phase = {name: where_cpu(r) for name, r in phases.items() if r}

    rejected = {}
    for r in brokerd_runs:
        for k, v in (r.get("rejected") or {}).items():
            rejected[k] = rejected.get(k, 0) + v
    total_bytes = journal.get("bytes")
    trades = sum((r.get("placed") or 0) + sum((r.get("rejected") or {}).values()) for r in brokerd_runs)
    summary = {
        "machine": machine, "params": params, "rows": rows, "goals": goals,
        "nginx_pairs": pairs, "nginx_pairs_median_ratio": pairs_median,
        "brokerd": {
            "setup_customers_per_s": (setup.get("setup") or {}).get("per_s"),
            "peak_per_s": peak, "half_rate_target": half.get("rate_target"),
            "peak_with_streams_per_s": e2e.get("throughput_per_s"),
            "fills_per_s": fills,
            "e2e_latency_us_at_peak": e2e_of(e2e).get("latency_us"),
            "e2e_latency_us_at_half": e2e_of(e2e_half).get("latency_us"),
            "ack_latency_us_with_streams_at_half": lat(e2e_half),
            # the half-of-peak latency in two parts: how late broker-bench sent, and send -> answer
            "half_send_lag_us": half.get("send_lag_us"),
            "half_send_to_answer_us": half.get("service_us"),
            # the same open loop against nginx at the same rate: the floor of this machine and client
            "nginx_at_half_rate_latency_us": lat(nginx_half) or None,
            "nginx_at_half_rate_send_lag_us": nginx_half.get("send_lag_us"),
            # where brokerd's CPU went in each phase (per thread), and how many answered
            # requests one journal commit (one fsync) carried
            "cpu_by_phase": cpu_by_phase,
            "rejected": rejected,
            "errors": sum((r.get("errors") or 0) for r in brokerd_runs),
            "http_status": [r.get("http_status") for r in brokerd_runs],
            "unfilled_at_end": [e2e_of(r).get("unresolved_at_end") for r in (e2e, e2e_half)],
            "journal_bytes": total_bytes, "trades_placed": trades,
            "journal_bytes_per_trade": (total_bytes / trades) if total_bytes and trades else None,
        },
    }
    with open(os.path.join(results, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)

    # chart data
    write_spectrum(os.path.join(raw, "spec-brokerd-closed.dat"), closed.get("latency_spectrum") or [])
    write_spectrum(os.path.join(raw, "spec-brokerd-half.dat"), half.get("latency_spectrum") or [])
    write_spectrum(os.path.join(raw, "spec-brokerd-e2e.dat"), e2e_of(e2e_half).get("latency_spectrum") or [])
    write_spectrum(os.path.join(raw, "spec-nginx.dat"), nginx.get("latency_spectrum") or [])
    write_spectrum(os.path.join(raw, "spec-pg-place.dat"), (pg_place.get("latency_us") or {}).get("latency_spectrum") or [])
    with open(os.path.join(raw, "timeline.dat"), "w") as f:
        # t, closed acks/s, half acks/s, e2e-run acks/s, e2e-run fills/s
        # whole seconds of load only: the last, partial second would read as a drop
        trim = lambda r: [x for x in (r.get("timeline") or []) if x["t"] < int(r.get("load_s") or 0)]
        series = [trim(closed), trim(half), trim(e2e)]
        n = max((len(x) for x in series), default=0)
        for t in range(n):
            get = lambda x, k: x[t][k] if t < len(x) else "NaN"
            f.write(f"{t} {get(series[0], 'acks')} {get(series[1], 'acks')} {get(series[2], 'acks')} {get(series[2], 'fills')}\n")

    lines = []
    lines.append("| system | load | per second | p50 ms | p99 ms | p99.9 ms | max ms | brokerd peak / this "
                 "| server CPU us/req | others' CPU | slowest second / median |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cpu = "" if r["server_cpu_us"] is None else f"{r['server_cpu_us']:.0f}"
        others = "" if r["others_share"] is None else f"{100 * r['others_share']:.0f}%"
        steady = "" if r["steadiness"] is None else f"{r['steadiness']:.2f}"
        lines.append(f"| {r['system']} | {r['load']} | {fmt_rate(r['per_s'])} | {fmt_ms(r['p50_us'])} | "
                     f"{fmt_ms(r['p99_us'])} | {fmt_ms(r['p99_9_us'])} | {fmt_ms(r['max_us'])} | "
                     f"{fmt_ratio(r['brokerd_vs'])} | {cpu} | {others} | {steady} |")
    lines.append("")
    lines.append("(slowest second / median: in a closed loop, the answers of the slowest measured "
                 "second over those of the median second. Well under 1 means the machine's share "
                 "moved during the phase, and ratios to that phase are less reliable)")
    lines.append("")
    lines.append("| goal | measured | met |")
    lines.append("|---|---:|---|")
    for g in goals:
        m = g["measured"]
        if m is None:
            shown = "n/a"
        elif "ms" in g["goal"]:
            shown = f"{m:.2f} ms"
        elif "fills" in g["goal"]:
            shown = f"{m:,.0f}/s"
        elif g.get("pairs"):
            r = g["pairs"]
            shown = (f"{m:.2f}x (median of {len(r)} alternated pairs, {min(r):.2f}-{max(r):.2f}x; "
                     f"single phases {fmt_ratio(g['single_phases'])})")
        else:
            shown = f"{m:.2f}x"
        lines.append(f"| {g['goal']} | {shown} | {'n/a' if g['met'] is None else ('yes' if g['met'] else 'NO')} |")
    if pairs:
        lines.append("")
        lines.append("| alternated pair | order | brokerd /s | nginx /s | brokerd / nginx | "
                     "brokerd CPU us/req | nginx CPU us/req |")
        lines.append("|---|---|---:|---:|---:|---:|---:|")
        for p in pairs:
            cpu = lambda v: "" if v is None else f"{v:.1f}"
            lines.append(f"| {p['pair']} | {p['order']} | {fmt_rate(p['brokerd_per_s'])} | "
                         f"{fmt_rate(p['nginx_per_s'])} | {p['ratio']:.2f}x | "
                         f"{cpu(p['brokerd_cpu_us'])} | {cpu(p['nginx_cpu_us'])} |")
        lines.append("")
        lines.append(f"(closed loops of {params.get('pair_duration_s', '?')} s, the first "
                     f"{params.get('pair_warmup_s', '?')} s not counted, against one brokerd and "
                     "one nginx kept up the whole time, each phase started once brokerd was idle; "
                     "the order alternates from pair to pair. The 0.5x goal is judged on the "
                     "median of these ratios)")
    lag, service = half.get("send_lag_us") or {}, half.get("service_us") or {}
    if lag and service:
        lines.append("")
        lines.append(f"at half of peak, the ack latency in two parts: broker-bench sent late by p50 "
                     f"{fmt_ms(lag.get('p50'))} / p99 {fmt_ms(lag.get('p99'))} ms (no free connection, or "
                     f"the client waiting for a core); send -> answer p50 {fmt_ms(service.get('p50'))} / "
                     f"p99 {fmt_ms(service.get('p99'))} ms")
    if nginx_half:
        nl, nlag = lat(nginx_half), nginx_half.get("send_lag_us") or {}
        lines.append("")
        lines.append(f"the same open loop against nginx (a fixed body, no work) at the same rate: "
                     f"p50 {fmt_ms(nl.get('p50'))} / p99 {fmt_ms(nl.get('p99'))} ms, broker-bench "
                     f"sending late by p99 {fmt_ms(nlag.get('p99'))} ms: the floor this machine and "
                     f"client put under the half-of-peak goal")
    shown_phases = [(n, c) for n, c in cpu_by_phase.items() if c["us_per_request_by_thread"]]
    if shown_phases:
        names = []
        for _, c in shown_phases:
            for k, v in sorted(c["us_per_request_by_thread"].items(), key=lambda kv: -kv[1]):
                if v >= 0.5 and k not in names:
                    names.append(k)
        lines.append("")
        lines.append("| brokerd phase | fills settled /s | requests per journal commit | "
                     "commit ms, mean | commits over 5 ms | " + " | ".join(names) + " |")
        lines.append("|---|---:|---:|---:|---:|" + "---:|" * len(names))

        def cell(v, spec):
            return "" if v is None else format(v, spec)

        for n, c in shown_phases:
            cells = [f"{c['us_per_request_by_thread'].get(k, 0):.1f}" for k in names]
            lines.append(f"| {n} | {cell(c.get('fills_settled_per_s'), ',.0f')} | "
                         f"{cell(c['requests_per_commit'], '.1f')} | "
                         f"{cell(c.get('commit_ms_mean'), '.3f')} | {cell(c.get('commits_over_5ms'), '.0f')} | "
                         + " | ".join(cells) + " |")
        lines.append("")
        lines.append("(fills settled: trades the embedded exchange filled and brokerd journaled, "
                     "per second of the whole load, from `broker_trades_closed_total`; the fills "
                     "goal counts fills seen on `/v1/stream`, in the streams phase. A commit: the "
                     "journal's write and its fdatasync, from brokerd's "
                     "`broker_journal_commit_seconds`; then brokerd's CPU per answered request by "
                     "thread, in µs)")
    stage_phases = [(n, c) for n, c in cpu_by_phase.items() if c.get("stage_ms_bounds")]
    if stage_phases:
        stages = ("queued", "round", "handoff")

        def bound(v):
            return "n/a" if v is None else ("> 1000" if v == float("inf") else f"<= {v:g}")

        lines.append("")
        lines.append("| request in brokerd's engine path, ms | "
                     + " | ".join(f"{s} p50 | {s} p99" for s in stages) + " |")
        lines.append("|---|" + "---:|" * (2 * len(stages)))
        for n, c in stage_phases:
            b = c["stage_ms_bounds"]
            cells = []
            for s in stages:
                q = b.get(s) or {}
                cells += [bound(q.get("p50_ms")), bound(q.get("p99_ms"))]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("(brokerd's `broker_request_stage_seconds`: queued, waiting for the engine's "
                     "next round; round, deciding that round and its group commit; handoff, from "
                     "the commit to the IO thread taking the answer. Bucket bounds: the true value "
                     "is at most this)")
    switch_phases = [(n, c) for n, c in cpu_by_phase.items() if c.get("switches_per_request")]
    if switch_phases:
        names = []
        for _, c in switch_phases:
            for k, (v, i) in sorted(c["switches_per_request"].items(), key=lambda kv: -sum(kv[1])):
                if v + i >= 0.01 and k not in names and k != "broker-bench":
                    names.append(k)
        names.append("broker-bench")
        lines.append("")
        lines.append("| context switches per request | " + " | ".join(names) + " |")
        lines.append("|---|" + "---:|" * len(names))
        for n, c in switch_phases:
            cells = []
            for k in names:
                v, i = c["switches_per_request"].get(k, (0, 0))
                cells.append(f"{v:.2f} + {i:.2f}")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("(voluntary + involuntary, per answered request: a voluntary switch is a thread "
                     "going to sleep until something wakes it, an involuntary one the scheduler "
                     "giving its core to another thread)")
    la = machine.get("loadavg_at_start")
    lines.append("")
    lines.append(f"machine: {machine.get('nproc')} x {machine.get('cpu_model')}, {machine.get('ram_gib')} GiB, "
                 f"kernel {machine.get('kernel')}; load average at start {la}, at end {machine.get('loadavg_at_end')}")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(results, "summary.md"), "w") as f:
        f.write(text)
    print(text)


def scale(results):
    raw = os.path.join(results, "raw")
    s = load(os.path.join(raw, "scale-params.json")) or {}
    setup = load(os.path.join(raw, "scale-setup.json")) or {}
    flow = load(os.path.join(raw, "scale-flow.json")) or {}
    rss = flow.get("rss") or []
    rss_mb = [r["rss_kb"] / 1024 for r in rss if r.get("rss_kb", -1) > 0]
    first_quarter = [r["rss_kb"] / 1024 for r in rss if r["acks"] >= 0.1 * max(1, s.get("trades", 1))]
    out = {
        "params": s,
        "customers_opened": (setup.get("setup") or {}).get("opened_ok"),
        "customers_per_s": (setup.get("setup") or {}).get("per_s"),
        "rss_mb_empty": s.get("rss_kb_empty", 0) / 1024,
        "rss_mb_after_customers": s.get("rss_kb_after_customers", 0) / 1024,
        "trades_answered": flow.get("answered"),
        "trades_placed": flow.get("placed"),
        "trades_rejected": flow.get("rejected"),
        "trade_flow_s": flow.get("load_s"),
        "trade_flow_per_s": (flow.get("answered") or 0) / max(1e-9, flow.get("load_s") or 1),
        "rss_samples": [{"trades": r["acks"], "rss_mb": round(r["rss_kb"] / 1024, 1)} for r in rss],
        "rss_mb_min_after_10pct": min(first_quarter) if first_quarter else None,
        "rss_mb_max_after_10pct": max(first_quarter) if first_quarter else None,
        "rss_mb_after_restart": s.get("rss_kb_after_restart", 0) / 1024,
        "journal_events": s.get("events"),
        "restart_s": s.get("restart_s"),
        "recovery_ms_logged": s.get("recovery_ms"),
        "replay_s": s.get("replay_s"),
        "replay_events_per_s": (s.get("events") / s["replay_s"]) if s.get("events") and s.get("replay_s") else None,
        "journal_disk_mb": s.get("journal_disk_kb", 0) / 1024,
    }
    with open(os.path.join(results, "scale.json"), "w") as f:
        json.dump(out, f, indent=1)
    with open(os.path.join(raw, "rss.dat"), "w") as f:
        for r in rss:
            f.write(f"{r['acks']} {r['rss_kb'] / 1024:.1f}\n")
    t = [
        "| scale figure | measured | goal |",
        "|---|---:|---|",
        f"| customers opened via the admin API | {out['customers_opened'] or 0:,} at {out['customers_per_s'] or 0:,.0f}/s | |",
        f"| brokerd RSS, empty / after customers | {out['rss_mb_empty']:.0f} MB / {out['rss_mb_after_customers']:.0f} MB | <= 512 MB with 1M customers |",
        f"| trades flowed (placed + rejected) | {out['trades_answered'] or 0:,} at {out['trade_flow_per_s']:,.0f}/s | 10M |",
        f"| RSS over the flow (after the first 10%) | {out['rss_mb_min_after_10pct'] or 0:.0f} .. {out['rss_mb_max_after_10pct'] or 0:.0f} MB | flat |",
        f"| journal events / on disk | {out['journal_events'] or 0:,} / {out['journal_disk_mb']:.0f} MB | |",
        f"| restart (exec to /healthz 200) | {out['restart_s'] or 0:.2f} s (recovery logged {out['recovery_ms_logged']} ms) | <= 3 s with 10M events |",
        f"| RSS after restart | {out['rss_mb_after_restart']:.0f} MB | |",
        f"| broker-replay | {out['replay_s'] or 0:.2f} s, {out['replay_events_per_s'] or 0:,.0f} events/s | |",
    ]
    text = "\n".join(t) + "\n"
    with open(os.path.join(results, "scale.md"), "w") as f:
        f.write(text)
    print(text)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = sys.argv[1]
    if cmd == "compare":
        compare(sys.argv[2])
    elif cmd == "scale":
        scale(sys.argv[2])
    elif cmd == "pgbench-latency":
        paths = []
        for a in sys.argv[2:]:
            paths.extend(glob.glob(a))
        print(json.dumps(pgbench_latency(paths)))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
