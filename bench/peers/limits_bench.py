"""`limits` (PyPI) moving window over Redis, 50-way, for scripts/bench-peers.

Env: REDIS_PORT, DURATION_S, CONCURRENCY, LIMIT, WINDOW_S, KEYS, MAX_REQUESTS, MODE.
MODE=threads: MovingWindowRateLimiter over limits.storage.RedisStorage (redis-py, a connection
pool shared by CONCURRENCY threads). MODE=asyncio: limits.aio's MovingWindowRateLimiter over
limits.aio.storage.RedisStorage(implementation="redispy"), CONCURRENCY tasks on one loop.
Prints one JSON line. limits' moving window is a Redis list of hit timestamps (client clock)
trimmed to the limit: LINDEX at position limit-1, LPUSH, LTRIM, EXPIRE in one Lua script.
"""

import asyncio
import json
import os
import random
import sys
import threading
import time

import limits
import redis


def env_num(name, default):
    v = os.environ.get(name, "")
    if v == "":
        return default
    n = float(v)
    if n <= 0:
        raise SystemExit(f"{name} must be positive")
    return n


PORT = int(env_num("REDIS_PORT", 6379))
SECONDS = env_num("DURATION_S", 5)
CONCURRENCY = int(env_num("CONCURRENCY", 50))
LIMIT = int(env_num("LIMIT", 1000))
WINDOW_S = int(env_num("WINDOW_S", 1))
KEYS = int(env_num("KEYS", 1))
MAX_REQUESTS = int(env_num("MAX_REQUESTS", 50_000_000))
MODE = os.environ.get("MODE", "asyncio")
NONCE = f"{random.getrandbits(32):08x}"


def redis_cpu(admin):
    info = admin.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def percentiles(samples):
    s = sorted(samples)
    n = len(s)

    def at(q):
        if not n:
            return 0
        return s[min(n - 1, max(0, -(-int(q * n * 1000) // 1000) - 1))]

    return {
        "count": n,
        "mean": (sum(s) / n) if n else 0,
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": s[-1] if n else 0,
    }


def key_for(rnd):
    return "k0" if KEYS == 1 else f"k{rnd.randrange(KEYS)}"


def run_threads(item):
    storage = limits.storage.RedisStorage(
        f"redis://127.0.0.1:{PORT}", max_connections=CONCURRENCY + 4
    )
    limiter = limits.strategies.MovingWindowRateLimiter(storage)
    limiter.hit(item, NONCE, "warmup")
    state = {"issued": 0, "allowed": 0, "denied": 0, "errors": 0, "first_error": None}
    lock = threading.Lock()
    lats = []

    def worker(deadline, seed):
        rnd = random.Random(seed)
        mine = []
        allowed = denied = errors = 0
        while True:
            with lock:
                if state["issued"] >= MAX_REQUESTS:
                    break
                state["issued"] += 1
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            try:
                if limiter.hit(item, NONCE, key_for(rnd)):
                    allowed += 1
                else:
                    denied += 1
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors += 1
                state["first_error"] = state["first_error"] or repr(e)
            mine.append((time.perf_counter() - t0) * 1e6)
        with lock:
            state["allowed"] += allowed
            state["denied"] += denied
            state["errors"] += errors
            lats.extend(mine)

    start = time.perf_counter()
    deadline = start + SECONDS
    threads = [threading.Thread(target=worker, args=(deadline, i)) for i in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return state, lats, time.perf_counter() - start


def run_asyncio(item):
    import limits.aio

    async def main():
        storage = limits.aio.storage.RedisStorage(
            f"async+redis://127.0.0.1:{PORT}",
            implementation="redispy",
            max_connections=CONCURRENCY + 4,
        )
        limiter = limits.aio.strategies.MovingWindowRateLimiter(storage)
        await limiter.hit(item, NONCE, "warmup")
        state = {"issued": 0, "allowed": 0, "denied": 0, "errors": 0, "first_error": None}
        lats = []
        start = time.perf_counter()
        deadline = start + SECONDS

        async def worker(seed):
            rnd = random.Random(seed)
            while state["issued"] < MAX_REQUESTS:
                t0 = time.perf_counter()
                if t0 >= deadline:
                    return
                state["issued"] += 1
                try:
                    if await limiter.hit(item, NONCE, key_for(rnd)):
                        state["allowed"] += 1
                    else:
                        state["denied"] += 1
                except Exception as e:  # noqa: BLE001 - counted and reported
                    state["errors"] += 1
                    state["first_error"] = state["first_error"] or repr(e)
                lats.append((time.perf_counter() - t0) * 1e6)

        await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))
        return state, lats, time.perf_counter() - start

    return asyncio.run(main())


def main():
    item = limits.RateLimitItemPerSecond(LIMIT, WINDOW_S)
    admin = redis.Redis(host="127.0.0.1", port=PORT)
    cpu0 = redis_cpu(admin)
    ccpu0 = time.process_time()
    if MODE == "threads":
        state, lats, elapsed = run_threads(item)
    elif MODE == "asyncio":
        state, lats, elapsed = run_asyncio(item)
    else:
        raise SystemExit("MODE must be threads or asyncio")
    ccpu = time.process_time() - ccpu0
    cpu = redis_cpu(admin) - cpu0
    decisions = state["allowed"] + state["denied"] + state["errors"]
    if state["first_error"]:
        print(f"limits: {state['errors']} errors; first: {state['first_error']}", file=sys.stderr)
    print(
        json.dumps(
            {
                "kind": "peer",
                "peer": "limits",
                "mode": f"MovingWindowRateLimiter, RedisStorage, {CONCURRENCY} {MODE}",
                "limit": LIMIT,
                "window_us": WINDOW_S * 1_000_000,
                "keys": KEYS,
                "concurrency": CONCURRENCY,
                "decisions": decisions,
                "allowed": state["allowed"],
                "denied": state["denied"],
                "errors": state["errors"],
                "elapsed_s": elapsed,
                "decisions_per_sec": decisions / elapsed,
                "latency_us": percentiles(lats),
                "redis_cpu_us_per_decision": cpu * 1e6 / max(decisions, 1),
                "client_cpu_us_per_decision": ccpu * 1e6 / max(decisions, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
