"""Turn `redis-benchmark --csv` output (stdin) into the harnesses' JSON line.

argv: redis CPU seconds before, after, number of requests.
"""

import csv
import json
import sys

cpu0, cpu1, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
rows = list(csv.reader(sys.stdin.read().strip().splitlines()))
if len(rows) < 2:
    sys.exit("ceiling: redis-benchmark printed no result")
head, row = rows[0], rows[-1]
v = dict(zip(head, row))
ms = lambda k: float(v.get(k, 0)) * 1000  # noqa: E731
print(
    json.dumps(
        {
            "kind": "ceiling",
            "tool": "redis-benchmark -P 16",
            "decisions": n,
            "decisions_per_sec": float(v["rps"]),
            # Per pipelined batch of 16: what one call waits for in that mode.
            "latency_us": {"p50": ms("p50_latency_ms"), "p99": ms("p99_latency_ms"), "max": ms("max_latency_ms")},
            "redis_cpu_us_per_decision": (cpu1 - cpu0) * 1e6 / n,
            "client_cpu_us_per_decision": None,
        }
    )
)
