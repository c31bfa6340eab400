"""Redis memory per idle limiter key and per queued job, for scripts/bench-peers.

argv: sluice binary, redis URL, port. Prints one JSON object.
Limiter keys: one check of 1000 per 60 s on a fresh id, then MEMORY USAGE <key> SAMPLES 0.
Queued jobs: JOBS single `sluice jobs enqueue` calls into a topic with no worker, then
MEMORY USAGE of the topic's stream / XLEN, and the used_memory delta / JOBS.
"""

import json
import subprocess
import sys

import redis

sluice, url, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = redis.Redis(host="127.0.0.1", port=port)
JOBS = 300
out = {"limiter": {}, "jobs": {}}
rules = {
    "sliding-log": (["--algorithm", "sliding-log"], "log"),
    "sliding-counter": (["--algorithm", "sliding-counter", "--granularity", "6s"], "ctr"),
    "gcra": (["--algorithm", "gcra", "--burst", "100"], "gcra"),
}
for name, (flags, code) in rules.items():
    subprocess.run(
        [sluice, "limit", "check", "--redis", url, "--prefix", "sluice-mem", "--limit", "1000", "--window", "60s",
         *flags, "idle"],
        check=True, capture_output=True,
    )
    key = f"sluice-mem:{{idle}}:cli:{code}"
    out["limiter"][name] = {"key": key, "bytes": r.memory_usage(key, samples=0)}

before = r.info("memory")["used_memory"]
for i in range(JOBS):
    subprocess.run(
        [sluice, "jobs", "enqueue", "--redis", url, "--prefix", "sluice-mem", "--topic", "mem",
         "--payload", json.dumps({"n": i, "t": 1700000000000000})],
        check=True, capture_output=True,
    )
after = r.info("memory")["used_memory"]
streams = [k for k in r.scan_iter(match="sluice-mem*", count=1000) if r.type(k) == b"stream"]
stream = max(streams, key=lambda k: r.xlen(k), default=None)
if stream is not None:
    n = r.xlen(stream)
    out["jobs"] = {
        "stream": stream.decode(errors="replace"),
        "entries": n,
        "stream_bytes_per_job": r.memory_usage(stream, samples=0) / max(n, 1),
        "used_memory_delta_per_job": (after - before) / JOBS,
        "payload": json.dumps({"n": 0, "t": 1700000000000000}),
    }
print(json.dumps(out))
