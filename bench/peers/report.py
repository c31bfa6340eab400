"""Aggregate scripts/bench-peers results: print a table and (re)write docs/BENCHMARKS.md."""

import argparse
import json
import statistics
from collections import defaultdict

CASES = {
    # case: (label, what a unit is, throughput field)
    "rlflx": ("rate-limiter-flexible RateLimiterRedis (fixed window)", "decisions", "decisions_per_sec"),
    "sluice-counter": ("Sluice sliding-window counter", "decisions", "decisions_per_sec"),
    "limits": ("limits MovingWindowRateLimiter (redis)", "decisions", "decisions_per_sec"),
    "sluice-log": ("Sluice sliding log", "decisions", "decisions_per_sec"),
    "ceiling-log": ("redis-benchmark -P 16 EVALSHA sliding-log script", "calls", "decisions_per_sec"),
    "ceiling-counter": ("redis-benchmark -P 16 EVALSHA sliding-counter script", "calls", "decisions_per_sec"),
    "bullmq": ("BullMQ Worker, concurrency 50", "jobs", "processed_jobs_per_sec"),
    "sluice-jobs": ("Sluice jobs, 1 worker, concurrency 50", "jobs", "processed_jobs_per_sec"),
}


def metric(case, d, name):
    if name == "throughput":
        return d.get(CASES[case][2])
    if name in ("p50", "p99"):
        return (d.get("latency_us") or {}).get(name)
    if name == "redis_cpu":
        return d.get("redis_cpu_us_per_decision", d.get("redis_cpu_process_us_per_job", d.get("redis_cpu_us_per_job")))
    if name == "client_cpu":
        return d.get("client_cpu_us_per_decision", d.get("client_cpu_us_per_job"))
    return d.get(name)


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def summary(values, digits=0):
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med, digits)
    return f"{fmt(med, digits)} ({fmt(min(vals), digits)}–{fmt(max(vals), digits)})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--memory", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    runs = defaultdict(dict)  # case -> round -> data
    for line in open(a.results):
        r = json.loads(line)
        runs[r["case"]][r["round"]] = r["data"]
    meta = json.load(open(a.meta))
    memory = json.load(open(a.memory))
    rounds = sorted({rd for c in runs.values() for rd in c})

    def series(case, name):
        return [metric(case, runs[case][rd], name) for rd in rounds if rd in runs.get(case, {})]

    def ratios(num, den, name, invert=False):
        out = []
        for rd in rounds:
            if rd in runs.get(num, {}) and rd in runs.get(den, {}):
                x, y = metric(num, runs[num][rd], name), metric(den, runs[den][rd], name)
                if x and y:
                    out.append(y / x if invert else x / y)
        return out

    lines = []
    s = meta["settings"]
    m = meta["machine"]
    v = meta["versions"]
    lines += [
        "# Benchmarks",
        "",
        "Written by `scripts/bench-peers` (do not edit by hand; rerun it). "
        f"Run {meta['date']}: {s['rounds']} rounds, each case run in turn A B A B on one private "
        "Redis; medians over the rounds, min–max in brackets; ratios are taken within a round "
        "and their median is shown. The load generator and Redis share the machine's cores.",
        "",
        "## Machine and versions",
        "",
        f"- {m['nproc']} CPUs: {m['cpu']}; RAM {m['ram']}; Linux {m['kernel']}",
        f"- {v['redis']}",
        f"- node {v['node']}, rate-limiter-flexible {v['rate-limiter-flexible']}, ioredis {v['ioredis']}, "
        f"bullmq {v['bullmq']}",
        f"- Python {v['python']}, limits {v['limits']}, redis-py {v['redis-py']}",
        f"- {v['rustc']}; Sluice at {v['sluice']} (release build)",
        "",
        "## Workload",
        "",
        f"- Limiters: {s['concurrency']}-way concurrency, {s['keys']} key(s) ({s['distribution']}), "
        f"limit {s['limit']} per {s['window_s']} s, {s['seconds']} s per case, cost 1. "
        f"Sluice's counter uses granularity {s['granularity']}.",
        "- rate-limiter-flexible's RateLimiterRedis is a *fixed* window per key that opens at the key's "
        "first request (SET NX EX + INCRBY in one Lua script); it is the closest thing it offers to "
        "Sluice's sliding counter, which it is compared with. Denials are promise rejections.",
        f"- limits' moving window runs in its fastest documented mode here: `{s['limits_mode']}` "
        "(`limits.aio` + redis-py asyncio, 50 tasks; 50 threads over a pool measured about half "
        "as fast). It stores a list of client-clock timestamps trimmed to the limit.",
        "- Ceiling: `redis-benchmark -P 16 -c 50` sending `EVALSHA` of Sluice's own script with the "
        "arguments Sluice sends (`KEYS[1]` the key; `ARGV`: `0` (= use Redis TIME), `1` (consume), "
        "limit, window µs, granularity µs or 0, cost) on one hot key.",
        f"- Jobs: {s['jobs']} no-op jobs pre-filled in batches of 500, then one worker process with "
        "concurrency 50 drains them; processed jobs/s from the worker's start to the last "
        "completion. BullMQ jobs use `removeOnComplete` (its cheapest mode); both acknowledge a "
        "job only after its handler returned.",
        "- Redis CPU per op: `used_cpu_sys + used_cpu_user` (INFO cpu) deltas over the timed "
        "part / ops. Client CPU per op: the load generator's own CPU (Rust: getrusage; node: "
        "`process.cpuUsage()`; Python: `time.process_time()`), which includes the harness.",
        "",
        "## Results",
        "",
        "| case | throughput /s | p50 µs | p99 µs | Redis CPU µs/op | client CPU µs/op |",
        "|---|---|---|---|---|---|",
    ]
    table_rows = []
    for case, (label, unit, _) in CASES.items():
        if case not in runs:
            continue
        row = [
            f"{label} ({unit})",
            summary(series(case, "throughput")),
            summary(series(case, "p50")),
            summary(series(case, "p99")),
            summary(series(case, "redis_cpu"), 1),
            summary(series(case, "client_cpu"), 1),
        ]
        table_rows.append(row)
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Latency: limiter cases per call (closed loop, 50 in flight); ceiling rows per pipelined "
        "batch of 16; job rows enqueue-to-start of the bulk run. "
        "For Sluice jobs the Redis CPU column is the processing phase only.",
        "",
    ]
    if "sluice-jobs" in runs:
        idle = series("sluice-jobs", "idle_latency_us")
        idle_p99 = [d.get("p99") for d in idle if d]
        enq = series("sluice-jobs", "enqueue_jobs_per_sec")
        lines += [
            f"Sluice jobs: enqueue {summary(enq)} jobs/s (batches of 500); enqueue-to-start for a job "
            f"added to an idle worker: p99 {summary(idle_p99)} µs.",
            "",
        ]
    if "bullmq" in runs:
        lines += [f"BullMQ: enqueue {summary(series('bullmq', 'enqueue_jobs_per_sec'))} jobs/s (addBulk of 500).", ""]

    def target(name, vals, goal, le=False):
        if not vals:
            return (name, "not measured", "n/a")
        med = statistics.median(vals)
        ok = med <= goal if le else med >= goal
        rng = f" (rounds: {', '.join(f'{x:.2f}' for x in vals)})"
        return (name, "**met**" if ok else "**not met**", f"{med:.2f}{rng}")

    targets = [
        target("sliding counter ≥ 3× rate-limiter-flexible decisions/s", ratios("sluice-counter", "rlflx", "throughput"), 3),
        target("sliding log ≥ 2× limits moving window decisions/s", ratios("sluice-log", "limits", "throughput"), 2),
        target("sliding log ≥ 80% of its script's redis-benchmark -P 16 ceiling", ratios("sluice-log", "ceiling-log", "throughput"), 0.8),
        target("client CPU per decision ≤ 1/10 of rate-limiter-flexible's (counter vs rlflx)", ratios("sluice-counter", "rlflx", "client_cpu"), 0.1, le=True),
        target("jobs ≥ 5× BullMQ processed jobs/s", ratios("sluice-jobs", "bullmq", "throughput"), 5),
    ]
    if "sluice-jobs" in runs:
        idle_p99 = [d.get("p99") / 1000 for d in series("sluice-jobs", "idle_latency_us") if d]
        targets.append(target("enqueue-to-start p99 < 2 ms, idle worker (ms)", idle_p99, 2, le=True))
    lines += ["## Targets", "", "| target | status | measured (median ratio) |", "|---|---|---|"]
    lines += ["| " + " | ".join(t) + " |" for t in targets]
    lines += ["", "## Redis memory", "", "| what | bytes |", "|---|---|"]
    for name, d in memory.get("limiter", {}).items():
        lines.append(f"| idle {name} key after one request (1000 per 60 s), `MEMORY USAGE` | {d['bytes']} |")
    j = memory.get("jobs") or {}
    if j:
        lines.append(f"| Sluice queued job: stream `MEMORY USAGE` / XLEN ({j['entries']} jobs, payload `{j['payload']}`) | {j['stream_bytes_per_job']:.0f} |")
        lines.append(f"| Sluice queued job: `used_memory` delta / jobs | {j['used_memory_delta_per_job']:.0f} |")
    if "bullmq" in runs:
        lines.append(f"| BullMQ queued job: `used_memory` delta / jobs (payload `{{n}}`) | {summary(series('bullmq', 'memory_bytes_per_queued_job'))} |")
    lines += ["", "## Commands", "", "```sh", "scripts/bench-peers"]
    lines += meta["commands"]
    lines += ["```", ""]
    notes = NOTES_PATH
    try:
        lines += open(notes).read().rstrip().splitlines() + [""]
    except OSError:
        pass
    text = "\n".join(lines)
    # Console table.
    print("\n".join(lines[lines.index("## Results"):lines.index("## Redis memory")]))
    if a.out != "-":
        # Keep the section scripts/bench-serve writes (its own measurements) as it is.
        keep = "## sluice serve vs the library"
        try:
            old = open(a.out).read()
        except FileNotFoundError:
            old = ""
        if keep in old and keep not in text:
            text = text.rstrip() + "\n\n" + old[old.index(keep):].rstrip() + "\n"
        with open(a.out, "w") as f:
            f.write(text)
        print(f"bench-peers: wrote {a.out}")


import os  # noqa: E402

NOTES_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTES.md")

if __name__ == "__main__":
    main()
