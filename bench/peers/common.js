// Shared measurement helpers for the Node peer harnesses (scripts/bench-peers).
'use strict';

// used_cpu_sys + used_cpu_user from INFO cpu, in seconds.
async function redisCpu(redis) {
  const info = await redis.info('cpu');
  let total = 0;
  for (const line of info.split('\n')) {
    const [k, v] = line.trim().split(':');
    if (k === 'used_cpu_sys' || k === 'used_cpu_user') total += parseFloat(v);
  }
  return total;
}

// CPU this process used (user + sys), in microseconds.
function clientCpuUs() {
  const u = process.cpuUsage();
  return u.user + u.system;
}

function percentiles(samples) {
  const s = Float64Array.from(samples).sort();
  const at = (q) => (s.length ? s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] : 0);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : 0;
  return {
    count: s.length, mean, p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999),
    max: s.length ? s[s.length - 1] : 0,
  };
}

function envInt(name, dflt) {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number`);
  return n;
}

module.exports = { redisCpu, clientCpuUs, percentiles, envInt };
