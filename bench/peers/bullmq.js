// BullMQ: N no-op jobs pre-filled with Queue.addBulk (chunks of BATCH), then one Worker with
// concurrency C drains them; processed jobs/s is timed from the worker's start to the last
// completion. Jobs use removeOnComplete (BullMQ's cheapest setting; a job is acknowledged,
// i.e. moved out of active, only after its handler resolved).
// Env: REDIS_PORT, JOBS, BATCH, CONCURRENCY, TIMEOUT_S. Prints one JSON line.
'use strict';
const Redis = require('ioredis');
const { Queue, Worker } = require('bullmq');
const { redisCpu, clientCpuUs, envInt } = require('./common');

async function usedMemory(redis) {
  const info = await redis.info('memory');
  const m = /used_memory:(\d+)/.exec(info);
  return m ? Number(m[1]) : 0;
}

async function main() {
  const port = envInt('REDIS_PORT', 6379);
  const jobs = envInt('JOBS', 50000);
  const batch = envInt('BATCH', 500);
  const concurrency = envInt('CONCURRENCY', 50);
  const timeoutS = envInt('TIMEOUT_S', 120);
  const connection = { host: '127.0.0.1', port, maxRetriesPerRequest: null };
  const admin = new Redis({ host: '127.0.0.1', port });
  const name = `bench${Math.floor(Math.random() * 0xffffffff).toString(16)}`;
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();

  const mem0 = await usedMemory(admin);
  let cpu0 = await redisCpu(admin);
  let ccpu0 = clientCpuUs();
  let t0 = process.hrtime.bigint();
  const opts = { removeOnComplete: true, removeOnFail: 1000 };
  for (let i = 0; i < jobs; i += batch) {
    const chunk = [];
    for (let j = i; j < Math.min(jobs, i + batch); j++) chunk.push({ name: 'noop', data: { n: j }, opts });
    await queue.addBulk(chunk);
  }
  const enqueueS = Number(process.hrtime.bigint() - t0) / 1e9;
  const enqueueCpu = (await redisCpu(admin)) - cpu0;
  const enqueueCcpu = clientCpuUs() - ccpu0;
  const memPerJob = ((await usedMemory(admin)) - mem0) / jobs;

  let processed = 0;
  let failed = 0;
  let resolveDone;
  const done = new Promise((r) => { resolveDone = r; });
  cpu0 = await redisCpu(admin);
  ccpu0 = clientCpuUs();
  t0 = process.hrtime.bigint();
  const worker = new Worker(name, async () => {}, { connection, concurrency });
  worker.on('completed', () => { processed++; if (processed + failed >= jobs) resolveDone(true); });
  worker.on('failed', () => { failed++; if (processed + failed >= jobs) resolveDone(true); });
  const timer = setTimeout(() => resolveDone(false), timeoutS * 1000);
  const finished = await done;
  clearTimeout(timer);
  const processS = Number(process.hrtime.bigint() - t0) / 1e9;
  const processCpu = (await redisCpu(admin)) - cpu0;
  const processCcpu = clientCpuUs() - ccpu0;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  admin.disconnect();
  console.log(JSON.stringify({
    kind: 'peer', peer: 'bullmq', mode: `Worker concurrency ${concurrency}, removeOnComplete`,
    jobs, batch, concurrency, enqueued: jobs, enqueue_elapsed_s: enqueueS,
    enqueue_jobs_per_sec: jobs / enqueueS, redis_cpu_enqueue_us_per_job: (enqueueCpu * 1e6) / jobs,
    client_cpu_enqueue_us_per_job: enqueueCcpu / jobs, memory_bytes_per_queued_job: memPerJob,
    processed, failed, process_elapsed_s: processS, processed_jobs_per_sec: processed / processS,
    redis_cpu_us_per_job: (processCpu * 1e6) / Math.max(processed, 1),
    client_cpu_us_per_job: processCcpu / Math.max(processed, 1), timed_out: !finished,
  }));
  process.exit(finished ? 0 : 1);
}
main().catch((e) => { console.error(e); process.exit(2); });
