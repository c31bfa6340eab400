// rate-limiter-flexible RateLimiterRedis over ioredis: C concurrent consumers for a fixed time
// (and at most MAX_REQUESTS), the same key pattern as `sluice loadtest limit`.
// Env: REDIS_PORT, DURATION_S, CONCURRENCY, LIMIT, WINDOW_S, KEYS, DIST (uniform | zipf, with
// exponent ZIPF_S, default 1: key k drawn with probability proportional to 1/k^s), MAX_REQUESTS.
// Prints one JSON line. What RateLimiterRedis counts: a fixed window per key that opens at the
// key's first request (SET NX EX + INCRBY in one Lua script), not a sliding window.
'use strict';
const Redis = require('ioredis');
const { RateLimiterRedis } = require('rate-limiter-flexible');
const { redisCpu, clientCpuUs, percentiles, envInt } = require('./common');

async function main() {
  const port = envInt('REDIS_PORT', 6379);
  const seconds = envInt('DURATION_S', 5);
  const concurrency = envInt('CONCURRENCY', 50);
  const limit = envInt('LIMIT', 1000);
  const windowS = envInt('WINDOW_S', 1);
  const keys = envInt('KEYS', 1);
  const maxRequests = envInt('MAX_REQUESTS', 50000000);
  const dist = process.env.DIST || 'uniform';
  const zipfS = Number(process.env.ZIPF_S || 1);
  // Zipf: the cumulative distribution over keys 1..n, searched by bisection (as the Rust load
  // generator does).
  let cdf = null;
  if (dist === 'zipf' && keys > 1) {
    cdf = new Float64Array(keys);
    let sum = 0;
    for (let k = 1; k <= keys; k++) { sum += 1 / Math.pow(k, zipfS); cdf[k - 1] = sum; }
    for (let k = 0; k < keys; k++) cdf[k] /= sum;
  } else if (dist !== 'uniform' && dist !== 'hot' && dist !== 'zipf') {
    throw new Error('DIST must be hot, uniform or zipf');
  }
  const pick = () => {
    if (keys === 1) return 0;
    if (!cdf) return Math.floor(Math.random() * keys);
    const u = Math.random();
    let lo = 0, hi = keys - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (cdf[mid] < u) lo = mid + 1; else hi = mid; }
    return lo;
  };
  const redis = new Redis({ host: '127.0.0.1', port, enableOfflineQueue: true });
  const admin = new Redis({ host: '127.0.0.1', port });
  const nonce = Math.floor(Math.random() * 0xffffffff).toString(16);
  const limiter = new RateLimiterRedis({
    storeClient: redis, points: limit, duration: windowS, keyPrefix: `rlflx${nonce}`,
  });
  // Warm up: defines the script on the server.
  await limiter.get('warmup');
  await limiter.consume('warmup', 1);

  let issued = 0, allowed = 0, denied = 0, errors = 0;
  const lat = [];
  let firstError = null;
  const cpu0 = await redisCpu(admin);
  const ccpu0 = clientCpuUs();
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(seconds * 1e9));
  async function worker() {
    for (;;) {
      if (issued >= maxRequests) return;
      const t0 = process.hrtime.bigint();
      if (t0 >= deadline) return;
      issued++;
      const k = `k${pick()}`;
      try {
        await limiter.consume(k, 1);
        allowed++;
      } catch (e) {
        if (e instanceof Error) { errors++; if (!firstError) firstError = String(e); } else denied++;
      }
      lat.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  const ccpu = clientCpuUs() - ccpu0;
  const cpu = (await redisCpu(admin)) - cpu0;
  const decisions = allowed + denied + errors;
  if (firstError) console.error(`rlflx: ${errors} errors; first: ${firstError}`);
  console.log(JSON.stringify({
    kind: 'peer', peer: 'rate-limiter-flexible', mode: 'RateLimiterRedis (fixed window from first hit)',
    limit, window_us: windowS * 1e6, keys, distribution: dist, concurrency, decisions, allowed, denied, errors,
    elapsed_s: elapsed, decisions_per_sec: decisions / elapsed, latency_us: percentiles(lat),
    redis_cpu_us_per_decision: (cpu * 1e6) / decisions, client_cpu_us_per_decision: ccpu / decisions,
  }));
  redis.disconnect();
  admin.disconnect();
}
main().catch((e) => { console.error(e); process.exit(2); });
