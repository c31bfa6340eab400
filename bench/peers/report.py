"""Aggregate scripts/bench-peers results: print the tables and (re)write docs/BENCHMARKS.md.

Results are JSON lines {case, round, data}; limiter cases are named "<workload>/<variant>"
(variant: rlflx, limits, or a Sluice algorithm), ceilings "ceiling/<algorithm>", jobs
"bullmq" and "sluice-jobs".
"""

import argparse
import json
import os
import statistics
from collections import defaultdict

NOTES_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTES.md")

WORKLOADS = {
    # name: (label, throughput target vs rate-limiter-flexible, Redis CPU target or None)
    "uniform": ("(a) 100,000 keys, uniform, all allowed", 2.0, 0.5),
    "zipf": ("(b) 10,000 keys, zipf s = 1, ~10% denied", 2.0, 0.5),
    "hot": ("(c) one hot key, all allowed", 3.0, None),
    "attack": ("(d) one hot key, ~99% denied (an attack)", 5.0, None),
}
CLIENT_CPU_TARGET = 0.2
VARIANTS = {
    "rlflx": "rate-limiter-flexible RateLimiterRedis (fixed window, one EVALSHA per call)",
    "limits": "limits MovingWindowRateLimiter (Python, asyncio)",
    "fw": "Sluice fixed window",
    "log": "Sluice sliding log",
    "ctr10": "Sluice sliding counter, g = W/10",
    "ctr100": "Sluice sliding counter, g = W/100",
    "gcra": "Sluice GCRA",
}
SLUICE = ["fw", "log", "ctr10", "ctr100", "gcra"]


def metric(d, name):
    if name == "throughput":
        return d.get("decisions_per_sec", d.get("processed_jobs_per_sec"))
    if name in ("p50", "p99"):
        return (d.get("latency_us") or {}).get(name)
    if name == "redis_cpu":
        return d.get("redis_cpu_us_per_decision", d.get("redis_cpu_process_us_per_job", d.get("redis_cpu_us_per_job")))
    if name == "client_cpu":
        return d.get("client_cpu_us_per_decision", d.get("client_cpu_us_per_job"))
    if name == "allowed_pct":
        n = d.get("decisions") or 0
        return 100.0 * d.get("allowed", 0) / n if n else None
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
        return [metric(runs[case][rd], name) for rd in rounds if rd in runs.get(case, {})]

    def ratios(num, den, name):
        out = []
        for rd in rounds:
            if rd in runs.get(num, {}) and rd in runs.get(den, {}):
                x, y = metric(runs[num][rd], name), metric(runs[den][rd], name)
                if x is not None and y:
                    out.append(x / y)
        return out

    def med(vals):
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def bound(case):
        """What limits a closed-loop case: cores used by Redis and by the client."""
        t, r, c = med(series(case, "throughput")), med(series(case, "redis_cpu")), med(series(case, "client_cpu"))
        if t is None or r is None or c is None:
            return "n/a"
        redis_cores, client_cores = t * r / 1e6, t * c / 1e6
        if redis_cores >= 0.85:
            what = "Redis CPU"
        elif redis_cores + client_cores >= 1.6:
            what = "the 2 cores"
        elif client_cores >= 0.85:
            what = "client CPU"
        else:
            what = "round trips"
        return f"{what} (Redis {redis_cores:.2f}, client {client_cores:.2f} cores)"

    lines = []
    s = meta["settings"]
    m = meta["machine"]
    v = meta["versions"]
    lines += [
        "# Benchmarks",
        "",
        "Written by `scripts/bench-peers` (do not edit by hand; rerun it). "
        f"Run {meta['date']}: {s['rounds']} rounds of {s['seconds']} s per case; within a round "
        "every case of a workload runs in turn on one private Redis (the order reversed every "
        "other round: A B, B A); medians over the rounds, min–max in brackets; ratios are taken "
        "within a round and their median is shown. The load generators and Redis share the "
        "machine's 2 cores.",
        "",
        "## Machine and versions",
        "",
        f"- {m['nproc']} CPUs: {m['cpu']}; RAM {m['ram']}; Linux {m['kernel']}",
        f"- Load average (1, 5, 15 min) when the run started: {meta.get('load', {}).get('start', '?')}; when it "
        f"ended: {meta.get('load', {}).get('end', '?')} (the machine is shared: other builds and tests ran "
        "meanwhile, so absolute figures are low and noisy; the within-round ratios are the result)",
        f"- {v['redis']}",
        f"- node {v['node']}, rate-limiter-flexible {v['rate-limiter-flexible']}, ioredis {v['ioredis']}, "
        f"bullmq {v['bullmq']}",
        f"- Python {v['python']}, limits {v['limits']}, redis-py {v['redis-py']}",
        f"- {v['rustc']}; Sluice at {v['sluice']} (release build)",
        "",
        "## Limiter workloads",
        "",
        f"- {s['concurrency']} callers in a closed loop, cost 1, window 1 s. (a) 100,000 keys drawn "
        "uniformly, limit 1000/s per key (never reached: all allowed); (b) 10,000 keys drawn by zipf "
        f"(s = 1: the first key gets ~10% of calls), limit {s['zipf_limit']}/s per key, so about 10% "
        "of calls are denied at ~100k calls/s (the share depends on each tool's rate; the table "
        "shows it); (c) one key, limit 10⁷/s (all allowed); (d) one key, limit 1000/s (~99% "
        "denied).",
        "- rate-limiter-flexible's RateLimiterRedis is a *fixed* window per key that opens at the "
        "key's first request (SET NX EX + INCRBY + PTTL in one Lua script, one EVALSHA per call); "
        "denials are promise rejections. limits' moving window (`limits.aio` + redis-py asyncio, "
        "50 tasks) is a list of client-clock timestamps.",
        "- Sluice: `sluice loadtest limit` (release build, one multiplexed connection, coalescing "
        "on by default: concurrent checks travel in one script call, see docs/LIMITER.md). Every "
        "Sluice case also replays its admissions against the exact definition of its rule.",
        "- Redis CPU per decision: `used_cpu_sys + used_cpu_user` (INFO cpu) deltas over the timed "
        "part / decisions. Client CPU per decision: the load generator's own CPU (Rust: getrusage; "
        "node: `process.cpuUsage()`; Python: `time.process_time()`), harness included.",
        "- *Bound by*: cores each side used (throughput × CPU per decision); a side at ≥ 0.85 of a "
        "core limits the loop; both together near 2 cores means the machine does; otherwise the "
        "50 callers wait on round trips.",
        "",
    ]
    for w, (label, _, _) in WORKLOADS.items():
        if f"{w}/rlflx" not in runs and not any(f"{w}/{x}" in runs for x in SLUICE):
            continue
        lines += [
            f"### {label}",
            "",
            "| case | decisions/s | × rlflx | allowed | p50 µs | p99 µs | Redis CPU µs/decision | "
            "× rlflx | client CPU µs/decision | × rlflx | bound by |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for variant in ["rlflx", "limits", *SLUICE]:
            case = f"{w}/{variant}"
            if case not in runs:
                continue
            peer = f"{w}/rlflx"
            rt = "—" if variant == "rlflx" else summary(ratios(case, peer, "throughput"), 2)
            rr = "—" if variant == "rlflx" else summary(ratios(case, peer, "redis_cpu"), 2)
            rc = "—" if variant == "rlflx" else summary(ratios(case, peer, "client_cpu"), 2)
            row = [
                VARIANTS[variant],
                summary(series(case, "throughput")),
                rt,
                summary(series(case, "allowed_pct"), 1) + "%",
                summary(series(case, "p50")),
                summary(series(case, "p99")),
                summary(series(case, "redis_cpu"), 1),
                rr,
                summary(series(case, "client_cpu"), 1),
                rc,
                bound(case),
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    ceilings = [x for x in SLUICE if f"ceiling/{x}" in runs]
    if ceilings:
        lines += [
            "### Ceilings: each script alone under `redis-benchmark -P 16`",
            "",
            "One check per `EVALSHA` (what a lone check sends: `KEYS[1]` the key; `ARGV`: `0` = "
            "Redis TIME, `1` = check, limit 10⁷, window 1,000,000 µs, parameter, cost 1), 50 "
            "connections pipelining 16 calls each, one hot key, all allowed. Without coalescing "
            "this is the most a script can do; with it, the load tests above may exceed it.",
            "",
            "| script | calls/s | Redis CPU µs/call | Sluice (c) / ceiling |",
            "|---|---|---|---|",
        ]
        for x in ceilings:
            lines.append(
                f"| {VARIANTS[x].removeprefix('Sluice ')} | {summary(series(f'ceiling/{x}', 'throughput'))} | "
                f"{summary(series(f'ceiling/{x}', 'redis_cpu'), 1)} | "
                f"{summary(ratios(f'hot/{x}', f'ceiling/{x}', 'throughput'), 2)} |"
            )
        lines.append("")

    cluster = [x for x in SLUICE if f"cluster/{x}" in runs]
    cluster_targets = []
    if cluster:
        lines += [
            "## Limiter on Redis Cluster",
            "",
            "Workload (a) (100,000 uniform keys, all allowed) on a private 3-master Cluster (no "
            "replicas) on the same machine, run in the same rounds as the standalone cases above. "
            "Redis CPU is summed over the masters; each master's share of it shows how the load "
            "spreads (the target: no node above 45% of the total). On a Cluster a script call "
            "holds the checks of one slot, so with keys spread over 16,384 slots most calls "
            "carry one check; a batch's calls go out together, pipelined to each master.",
            "",
            "| algorithm | Cluster decisions/s | standalone decisions/s | Cluster / standalone | "
            "Redis CPU µs/decision (all masters) | per-master share of Redis CPU | largest share |",
            "|---|---|---|---|---|---|---|",
        ]
        for x in cluster:
            case = f"cluster/{x}"
            shares = defaultdict(list)
            largest = []
            for rd in rounds:
                nodes = runs[case].get(rd, {}).get("redis_cpu_per_node") or []
                for n in nodes:
                    shares[n["node"]].append(n["share_pct"])
                if nodes:
                    largest.append(max(n["share_pct"] for n in nodes))
            per = ", ".join(f"{statistics.median(v):.0f}%" for _, v in sorted(shares.items()))
            lines.append(
                f"| {VARIANTS[x].removeprefix('Sluice ')} | {summary(series(case, 'throughput'))} | "
                f"{summary(series(f'uniform/{x}', 'throughput'))} | "
                f"{summary(ratios(case, f'uniform/{x}', 'throughput'), 2)} | "
                f"{summary(series(case, 'redis_cpu'), 1)} | {per or 'n/a'} | {summary(largest, 1)}% |"
            )
            cluster_targets.append((f"Cluster {VARIANTS[x].removeprefix('Sluice ')}: no master above 45% of the Redis CPU (largest share, %)", largest))
        lines.append("")

    def target(name, vals, goal, le=False):
        if not vals:
            return [name, "not measured", "n/a"]
        mv = statistics.median(vals)
        ok = mv <= goal if le else mv >= goal
        rng = f" (rounds: {', '.join(f'{x:.2f}' for x in vals)})"
        return [name, "**met**" if ok else "**not met**", f"{mv:.2f}{rng}"]

    targets = []
    for w, (label, goal, cpu_goal) in WORKLOADS.items():
        if f"{w}/rlflx" not in runs:
            continue
        short = label.split(" ", 1)[0]
        for x in SLUICE:
            case = f"{w}/{x}"
            name = VARIANTS[x].removeprefix("Sluice ")
            targets.append(target(f"{short} {name}: decisions/s ≥ {goal:g}× rlflx", ratios(case, f"{w}/rlflx", "throughput"), goal))
            if cpu_goal is not None:
                targets.append(target(f"{short} {name}: Redis CPU/decision ≤ {cpu_goal:g}× rlflx", ratios(case, f"{w}/rlflx", "redis_cpu"), cpu_goal, le=True))
            targets.append(target(f"{short} {name}: client CPU/decision ≤ {CLIENT_CPU_TARGET:g}× rlflx", ratios(case, f"{w}/rlflx", "client_cpu"), CLIENT_CPU_TARGET, le=True))
    for name, vals in cluster_targets:
        targets.append(target(name, vals, 45, le=True))
    if targets:
        met = sum(1 for t in targets if t[1] == "**met**")
        lines += [
            "## Targets (issue 10)",
            "",
            f"{met} of {len(targets)} met. Moonshot on (a) and (b): 3× rate-limiter-flexible's decisions/s "
            "(the ratios above say how far each is).",
            "",
            "| target | status | measured (median ratio) |",
            "|---|---|---|",
        ]
        lines += ["| " + " | ".join(t) + " |" for t in targets]
        lines.append("")

    if "sluice-jobs" in runs or "bullmq" in runs:
        lines += [
            "## Jobs: Sluice vs BullMQ",
            "",
            f"{s['jobs']} no-op jobs pre-filled in batches of 500, then one worker process with "
            "concurrency 50 drains them; processed jobs/s from the worker's start to the last "
            "completion. BullMQ jobs use `removeOnComplete` (its cheapest mode); both acknowledge a "
            "job only after its handler returned. Latency: enqueue-to-start of the bulk run; the "
            "Redis CPU column for Sluice is the processing phase only.",
            "",
            "| case | jobs/s | p50 µs | p99 µs | Redis CPU µs/job | client CPU µs/job |",
            "|---|---|---|---|---|---|",
        ]
        for case, label in (("bullmq", "BullMQ Worker, concurrency 50"), ("sluice-jobs", "Sluice jobs, 1 worker, concurrency 50")):
            if case in runs:
                row = [label, summary(series(case, "throughput")), summary(series(case, "p50")), summary(series(case, "p99")),
                       summary(series(case, "redis_cpu"), 1), summary(series(case, "client_cpu"), 1)]
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        if "sluice-jobs" in runs:
            idle = series("sluice-jobs", "idle_latency_us")
            idle_p99 = [d.get("p99") for d in idle if d]
            lines += [
                f"Sluice jobs: enqueue {summary(series('sluice-jobs', 'enqueue_jobs_per_sec'))} jobs/s (batches of 500); "
                f"enqueue-to-start for a job added to an idle worker: p99 {summary(idle_p99)} µs.",
                "",
            ]
        if "bullmq" in runs:
            lines += [f"BullMQ: enqueue {summary(series('bullmq', 'enqueue_jobs_per_sec'))} jobs/s (addBulk of 500).", ""]
        jt = [target("jobs ≥ 5× BullMQ processed jobs/s", ratios("sluice-jobs", "bullmq", "throughput"), 5)]
        if "sluice-jobs" in runs:
            idle_p99 = [d.get("p99") / 1000 for d in series("sluice-jobs", "idle_latency_us") if d]
            jt.append(target("enqueue-to-start p99 < 2 ms, idle worker (ms)", idle_p99, 2, le=True))
        lines += ["| target | status | measured (median ratio) |", "|---|---|---|"]
        lines += ["| " + " | ".join(t) + " |" for t in jt]
        lines.append("")

    lines += ["## Redis memory", "", "| what | bytes |", "|---|---|"]
    for name, d in memory.get("limiter", {}).items():
        lines.append(f"| idle {name} key after one request (1000 per 60 s), `MEMORY USAGE` | {d['bytes']} |")
    j = memory.get("jobs") or {}
    if j:
        lines.append(f"| Sluice queued job: stream `MEMORY USAGE` / XLEN ({j['entries']} jobs, payload `{j['payload']}`) | {j['stream_bytes_per_job']:.0f} |")
        lines.append(f"| Sluice queued job: `used_memory` delta / jobs | {j['used_memory_delta_per_job']:.0f} |")
    if "bullmq" in runs:
        lines.append(f"| BullMQ queued job: `used_memory` delta / jobs (payload `{{n}}`) | {summary(series('bullmq', 'memory_bytes_per_queued_job'))} |")
    lines += ["", "## Commands", "", "Every row above comes from one of these (PORT and URL: the private Redis).", "", "```sh", "scripts/bench-peers"]
    lines += meta["commands"]
    lines += ["```", ""]
    try:
        lines += open(NOTES_PATH).read().rstrip().splitlines() + [""]
    except OSError:
        pass
    text = "\n".join(lines)
    # Console: everything up to the memory table.
    print("\n".join(lines[lines.index("## Limiter workloads"):lines.index("## Redis memory")]))
    if a.out != "-":
        # Keep the sections other scripts write (their own measurements) as they are.
        try:
            old = open(a.out).read()
        except FileNotFoundError:
            old = ""
        for keep in ("## Limiter on Redis Cluster", "## sluice serve vs the library"):
            if keep in old and keep not in text:
                rest = old[old.index(keep):]
                nxt = rest.find("\n## ", 1)
                section = rest if nxt < 0 else rest[:nxt]
                text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
        with open(a.out, "w") as f:
            f.write(text)
        print(f"bench-peers: wrote {a.out}")


if __name__ == "__main__":
    main()
