//! `sluice loadtest jobs`: push N jobs through the dispatcher and measure it.
//!
//! Phases, each bounded by `--timeout`:
//! 1. **enqueue**: N jobs into a fresh topic (a random suffix on `--topic`), one by one
//!    (`--batch 1`) or in pipelined batches; the consumer group exists already, no worker runs.
//! 2. **process**: W workers (each its own connection and consumer, concurrency C) start and
//!    drain the topic; the clock runs from their start until every job has finished (handler
//!    succeeded or dead-lettered) and nothing is left pending (acknowledgements landed).
//!    With `--live` the workers start before the enqueue phase instead.
//! 3. **idle probes**: K single jobs, one at a time, 5-10 ms apart, to the now idle workers.
//!
//! Enqueue-to-start latency: each payload carries its own send time in microseconds (taken just
//! before the enqueue call, on this host's clock, the same clock the handler reads). The job
//! metadata only holds milliseconds, too coarse for a 2 ms target, and measuring from the
//! payload keeps the wire format of the dispatcher out of the measurement.
//!
//! The oracle: every job carries a sequence number; the handlers mark what they finished and
//! the dead-letter stream is read back at the end. `lost` counts jobs (idle probes included)
//! neither finished nor dead-lettered and must be 0; the exit status is 1 when it is not, or
//! when the run hit `--timeout` (then `lost` also counts the jobs it had no time for).
//!
//! Faults: the load test's own Redis calls are retried while Redis is unavailable (a stall, a
//! restart, a failover) with the worker's backoff ([`Backoff::REDIS_FAILURES`]), bounded by
//! `--timeout`, as its workers ride them out; a worker that can't start for that reason is
//! started again. A marker key written beside the topic's tells whether the server lost the
//! run's keys (a restart without persistence, FLUSHALL, eviction) and its `run_id` whether it
//! restarted: then `lost` is blamed on the server, not on `--timeout`, and the process phase
//! stops waiting for jobs that no longer exist. Redis CPU figures are null when they can't be
//! measured (`INFO` unanswered, counters reset by a restart). The run's keys are deleted at the
//! end, failed runs included (best effort, said on stderr when it fails).

use std::{
    fmt,
    future::Future,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{
    Backoff, DispatchError, Dispatcher, DispatcherOptions, Job, JobError, Producer, RetryPolicy,
    TopicConfig, Worker, WorkerConfig, WorkerReport,
};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::common::{Percentiles, RedisCpu, emit, histogram, process_cpu, progress};
use crate::{
    Failure,
    args::{ConnArgs, LOADTEST_PREFIX},
    parse_duration,
};

/// Largest `--jobs` (the oracle keeps 5 bytes per job).
const MAX_JOBS: u64 = 20_000_000;
/// The consumer group of the load test's workers.
const GROUP: &str = "loadtest";
/// Time allowed after `--timeout` for shutdown and the oracle.
const GRACE: Duration = Duration::from_secs(15);
/// Time allowed for deleting the run's keys, after the rest.
const CLEANUP_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for one worker to stop (its drain deadline is 5 s).
const WORKER_STOP: Duration = Duration::from_secs(10);
/// Longest wait for one `INFO` measurement (CPU, memory); past it the figure is unavailable.
const READING_LIMIT: Duration = Duration::from_secs(3);
/// The workers' visibility timeout, plus twice the handler's sleep.
const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(5);
/// Once the server has lost the run's keys, how long without progress ends the process phase.
const SETTLE: Duration = Duration::from_secs(1);

/// What the handler does with each job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum HandlerSpec {
    /// Return at once.
    Noop,
    /// Sleep this long (a stand-in for I/O).
    Sleep(Duration),
    /// Fail this fraction of first attempts (they are retried and then succeed).
    Fail(f64),
}

impl fmt::Display for HandlerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerSpec::Noop => f.write_str("noop"),
            HandlerSpec::Sleep(d) => write!(f, "sleep:{}", humantime::format_duration(*d)),
            HandlerSpec::Fail(rate) => write!(f, "fail:{rate}"),
        }
    }
}

fn parse_handler(s: &str) -> Result<HandlerSpec, String> {
    if s == "noop" {
        return Ok(HandlerSpec::Noop);
    }
    if let Some(d) = s.strip_prefix("sleep:") {
        let d = parse_duration(d)?;
        if d > Duration::from_secs(60) {
            return Err("sleep must be at most 60s".to_owned());
        }
        return Ok(HandlerSpec::Sleep(d));
    }
    if let Some(rate) = s.strip_prefix("fail:") {
        let rate: f64 = rate
            .parse()
            .map_err(|_| format!("{rate:?} is not a number (expected e.g. fail:0.1)"))?;
        if !(0.0..=1.0).contains(&rate) {
            return Err("the fail rate must be between 0 and 1".to_owned());
        }
        return Ok(HandlerSpec::Fail(rate));
    }
    Err(format!(
        "{s:?}: expected noop, sleep:DURATION (e.g. sleep:5ms) or fail:RATE (e.g. fail:0.1)"
    ))
}

#[derive(Debug, clap::Args)]
pub(crate) struct JobsArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Topic name; a random suffix is added so runs never mix (its keys are deleted at the end
    /// unless --keep).
    #[arg(long, default_value = "loadtest")]
    topic: String,
    /// Jobs to enqueue (1 to 20,000,000).
    #[arg(long, default_value_t = 100_000)]
    jobs: u64,
    /// 1: enqueue one by one (one round trip each); B > 1: pipelined batches of B.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Worker instances in this process (each its own consumer and connections).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Jobs each worker runs at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// noop, sleep:DURATION (e.g. sleep:5ms) or fail:RATE (fraction of first attempts that
    /// fail and are retried, e.g. fail:0.1).
    #[arg(long, default_value = "noop", value_parser = parse_handler)]
    handler: HandlerSpec,
    /// Bound on the enqueue, process and probe phases together (shutdown and the oracle get
    /// 15 s more at most, the cleanup 10 s after that).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    timeout: Duration,
    /// Single jobs sent to the idle workers after the bulk run, 5-10 ms apart, to measure
    /// enqueue-to-start latency without queueing (0 to 100,000).
    #[arg(long, default_value_t = 200)]
    idle_probes: u32,
    /// Start the workers before enqueueing (processing overlaps the enqueue phase).
    #[arg(long)]
    live: bool,
    /// Keep the topic's keys after the run.
    #[arg(long)]
    keep: bool,
    /// Run even if Redis may evict keys (a maxmemory-policy other than noeviction): jobs may
    /// then vanish and count as lost.
    #[arg(long)]
    allow_eviction: bool,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The load test's job: a sequence number and the send time in unix microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Load {
    n: u64,
    t: u64,
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What the handlers saw, per job and in total.
struct Tally {
    /// Enqueue-to-start latency of each job's first start, µs + 1 (0: never started).
    first_start: Vec<AtomicU32>,
    /// Successful handler runs per job (saturating at 255).
    done: Vec<AtomicU8>,
    /// Distinct jobs finished successfully.
    completed: AtomicU64,
    /// Jobs the handler did not recognise (sequence number out of range).
    foreign: AtomicU64,
    /// Sequence numbers from here on are idle probes.
    bulk: u64,
    /// Wakes the probe loop when a probe starts.
    probe_started: Notify,
    handler: HandlerSpec,
}

impl Tally {
    fn new(total: u64, bulk: u64, handler: HandlerSpec) -> Self {
        let len = usize::try_from(total).unwrap_or(0);
        Self {
            first_start: (0..len).map(|_| AtomicU32::new(0)).collect(),
            done: (0..len).map(|_| AtomicU8::new(0)).collect(),
            completed: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            bulk,
            probe_started: Notify::new(),
            handler,
        }
    }

    async fn handle(&self, job: Job<Load>) -> Result<(), JobError> {
        let Load { n, t } = *job.payload();
        let latency = unix_us().saturating_sub(t);
        let index = usize::try_from(n).unwrap_or(usize::MAX);
        let (Some(first), Some(done)) = (self.first_start.get(index), self.done.get(index)) else {
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let stamp = u32::try_from(latency.saturating_add(1)).unwrap_or(u32::MAX);
        let _ = first.compare_exchange(0, stamp, Ordering::Relaxed, Ordering::Relaxed);
        if n >= self.bulk {
            self.probe_started.notify_one();
        }
        match self.handler {
            HandlerSpec::Noop => {}
            HandlerSpec::Sleep(d) => tokio::time::sleep(d).await,
            HandlerSpec::Fail(rate) => {
                if job.attempt() == 1 && fails(n, rate) {
                    return Err(JobError::retry("loadtest: injected failure"));
                }
            }
        }
        let before = done
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(1))
            })
            .unwrap_or(u8::MAX);
        if before == 0 {
            self.completed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Whether job `n`'s first attempt fails: a fixed hash of `n`, so the fraction is exact-ish
/// and the same jobs fail on every run.
fn fails(n: u64, rate: f64) -> bool {
    let h = n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 11) as f64 / (1u64 << 53) as f64) < rate
}

/// The report; field names are a contract with `scripts/bench-peers`.
#[derive(Debug, Serialize)]
struct Report {
    kind: &'static str,
    jobs: u64,
    batch: usize,
    workers: usize,
    concurrency: usize,
    handler: String,
    live: bool,
    enqueued: u64,
    enqueue_elapsed_s: f64,
    enqueue_jobs_per_sec: f64,
    processed: u64,
    process_elapsed_s: f64,
    processed_jobs_per_sec: f64,
    latency_us: Percentiles,
    idle_latency_us: Percentiles,
    /// PING round trips measured just before each idle probe (the floor to compare with).
    idle_ping_rtt_us: Percentiles,
    retries: u64,
    dead_letters: u64,
    /// Redis CPU per job (`INFO cpu`); null when it can't be measured: `INFO` did not answer,
    /// or the server restarted during the run (its counters started again from zero).
    redis_cpu_us_per_job: Option<f64>,
    redis_cpu_enqueue_us_per_job: Option<f64>,
    redis_cpu_process_us_per_job: Option<f64>,
    client_cpu_us_per_job: f64,
    /// Redis memory growth per queued job after the enqueue phase (`INFO memory`; the payload
    /// here is ~30 bytes of JSON); null with --live, or when it can't be measured.
    redis_memory_bytes_per_queued_job: Option<f64>,
    probes: u64,
    duplicates: u64,
    reclaimed: u64,
    pending_after: u64,
    /// Whether the server restarted during the run (its `run_id` changed); null if unknown.
    redis_restarted: Option<bool>,
    /// Whether the server lost the run's keys during the run (a restart without persistence,
    /// FLUSHALL, eviction): the jobs it held were gone, not late.
    redis_lost_keys: bool,
    timed_out: bool,
    lost: u64,
}

pub(crate) async fn run(args: JobsArgs) -> Result<i32, Failure> {
    check(&args)?;
    let deadline = Instant::now() + args.timeout;
    let mut setup = setup(&args).await?;
    let measured = tokio::time::timeout_at(
        (deadline + GRACE).into(),
        measure(&args, &mut setup, deadline),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Failure::new(format!(
            "the load test did not finish within --timeout plus {}s",
            GRACE.as_secs()
        )))
    });
    if measured.is_err() {
        // Running workers would recreate the keys the cleanup deletes.
        let _ = setup.stop_workers().await;
    }
    if !args.keep {
        cleanup(&args, &setup).await;
    }
    let (report, error) = measured?;
    emit(&report, args.json, &table(&report))?;
    if let Some(e) = error {
        return Err(Failure::new(e));
    }
    Ok(verdict(&setup.tally, &report))
}

fn check(args: &JobsArgs) -> Result<(), Failure> {
    if args.jobs == 0 || args.jobs > MAX_JOBS {
        return Err(Failure::new(format!("--jobs: must be 1 to {MAX_JOBS}")));
    }
    if args.batch == 0 || args.batch > 10_000 {
        return Err(Failure::new("--batch: must be 1 to 10000"));
    }
    if args.workers == 0 || args.workers > 256 {
        return Err(Failure::new("--workers: must be 1 to 256"));
    }
    if args.idle_probes > 100_000 {
        return Err(Failure::new("--idle-probes: must be 0 to 100000"));
    }
    if args.timeout.is_zero() || args.timeout > Duration::from_secs(24 * 3600) {
        return Err(Failure::new(
            "--timeout: must be more than 0 and at most 24h",
        ));
    }
    Ok(())
}

/// Builds one worker of the run; called again when a worker could not start because Redis was
/// unavailable at that moment.
type MakeWorker = Box<dyn Fn() -> Worker<Load> + Send + Sync>;

/// What the setup phase built: connections, the producer, the tally and the (not yet
/// started) workers.
struct Setup {
    dispatcher: Dispatcher,
    cpu: RedisCpu,
    topic: String,
    producer: Producer<Load>,
    tally: Arc<Tally>,
    workers: Vec<MakeWorker>,
    running: Vec<JoinHandle<Result<WorkerReport, DispatchError>>>,
    shutdown: CancellationToken,
    /// A key written at setup beside the topic's: gone means the server lost the run's keys.
    marker: Vec<u8>,
    /// The server's `run_id` at setup (`None`: `INFO` did not say).
    run_id: Option<String>,
}

/// Counters read before anything is enqueued (`None`: Redis could not say).
struct Baseline {
    memory: Option<u64>,
    redis_cpu: Option<f64>,
    client_cpu: Duration,
}

/// The enqueue phase.
struct Enqueue {
    enqueued: u64,
    elapsed: Duration,
    timed_out: bool,
    error: Option<String>,
    redis_cpu: Option<f64>,
    memory_per_job: Option<f64>,
}

/// The process phase.
struct Process {
    drained_at: Option<Instant>,
    elapsed: Duration,
    dead_seen: u64,
    timed_out: bool,
    /// The marker key vanished: the server lost the run's keys.
    lost_keys: bool,
    redis_cpu: Option<f64>,
    client_cpu: Duration,
}

/// The idle-probe phase.
struct Probes {
    sent: u64,
    ping: Histogram<u64>,
    timed_out: bool,
    error: Option<String>,
}

/// What the oracle found after shutdown.
struct Oracle {
    sums: WorkerReport,
    pending_after: u64,
    lost: u64,
    duplicates: u64,
    dead_letters: u64,
    processed: u64,
    bulk: Histogram<u64>,
    idle: Histogram<u64>,
}

/// What the server did during the run, as far as can be told.
struct Server {
    restarted: Option<bool>,
    lost_keys: bool,
}

/// Run `op` until it succeeds, retrying while Redis is unavailable (a stall, a restart, a
/// failover) with the worker's own backoff, until `until`: the load test's own Redis calls ride
/// out what its workers ride out. An error that retrying can't fix is returned at once.
async fn retried<R, F, Fut>(what: &str, until: Instant, mut op: F) -> Result<R, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<R, DispatchError>>,
{
    let mut failures = 0u32;
    loop {
        let e = match tokio::time::timeout_at(until.into(), op()).await {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(Failure::new(format!(
                    "{what}: Redis did not answer in time"
                )));
            }
        };
        if !e.is_unavailable() {
            return Err(Failure::new(format!("{what}: {e}")));
        }
        failures = failures.saturating_add(1);
        let pause = Backoff::REDIS_FAILURES.delay(failures);
        if Instant::now() + pause >= until {
            return Err(Failure::new(format!(
                "{what}: Redis stayed unavailable until the deadline: {e}"
            )));
        }
        tokio::time::sleep(pause).await;
    }
}

/// A measurement from `INFO` (CPU, memory), or `None` when Redis can't give it now: a
/// measurement never fails the run.
async fn reading<T>(f: impl Future<Output = Result<T, Failure>>) -> Option<T> {
    tokio::time::timeout(READING_LIMIT, f).await.ok()?.ok()
}

/// Run a worker; one that could not start because Redis was unavailable is built again and
/// restarted with the worker's backoff until `until` (once running, a worker rides out
/// failures by itself).
async fn supervise(
    make: MakeWorker,
    shutdown: CancellationToken,
    until: Instant,
) -> Result<WorkerReport, DispatchError> {
    let mut failures = 0u32;
    loop {
        match make().run(shutdown.clone()).await {
            Err(e) if e.is_unavailable() && Instant::now() < until => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, "a worker could not start; trying again");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(WorkerReport::default()),
                    _ = tokio::time::sleep(Backoff::REDIS_FAILURES.delay(failures)) => {}
                }
            }
            other => return other,
        }
    }
}

/// The phases and the oracle: the report, and an error to exit with once it is printed.
async fn measure(
    args: &JobsArgs,
    setup: &mut Setup,
    deadline: Instant,
) -> Result<(Report, Option<String>), Failure> {
    let baseline = Baseline {
        memory: reading(setup.cpu.used_memory()).await,
        redis_cpu: reading(setup.cpu.seconds()).await,
        client_cpu: process_cpu(),
    };
    let live_start = args.live.then(|| setup.start_workers(deadline));
    let enqueue = enqueue(args, setup, &baseline, deadline).await;
    let process_started = live_start.unwrap_or_else(|| setup.start_workers(deadline));
    let process = process(args, setup, &enqueue, process_started, deadline).await;
    let probes = idle_probes(args, setup, &enqueue, &process, deadline).await?;
    let oracle = oracle(
        args,
        setup,
        enqueue.enqueued + probes.sent,
        deadline + GRACE,
    )
    .await?;
    let server = setup.server(&process).await;
    let report = report(
        args, &baseline, &enqueue, &process, &probes, &oracle, &server,
    );
    Ok((report, probes.error.or(enqueue.error)))
}

/// Delete the run's keys: best effort, bounded, and said on stderr when it fails.
async fn cleanup(args: &JobsArgs, setup: &Setup) {
    let until = Instant::now() + CLEANUP_LIMIT;
    let deleted = retried("deleting the load test's keys", until, || {
        setup.dispatcher.delete_topic(&setup.topic)
    })
    .await;
    if let Err(e) = deleted {
        crate::output::warn(format_args!(
            "{e}; they are left under {}:{{{}}}:",
            args.conn.prefix(LOADTEST_PREFIX),
            setup.topic
        ));
    }
}

/// Connections, topic, producer and workers. The workers are built now (the group must exist
/// before the first job) and started later, or before the enqueue phase with --live. Whatever
/// it created is deleted again if it fails half-way.
async fn setup(args: &JobsArgs) -> Result<Setup, Failure> {
    let config = args.conn.config()?;
    let keyspace = args.conn.keyspace(LOADTEST_PREFIX)?;
    let topic_name = format!("{}.{:08x}", args.topic, rand::random::<u32>());
    let options = DispatcherOptions::new().allow_eviction(args.allow_eviction);
    let connect = || async {
        Dispatcher::connect_with(config.clone(), keyspace.clone(), options.clone())
            .await
            .map_err(|e| {
                let redis = args.conn.redis_shown();
                match e {
                    DispatchError::EvictionPossible { .. } => Failure::new(format!(
                        "redis at {redis}: {e}; pass --allow-eviction to run anyway"
                    )),
                    e => Failure::new(format!("cannot reach redis at {redis}: {e}")),
                }
            })
    };
    let dispatcher = connect().await?;
    let built = build(args, &dispatcher, &topic_name, connect).await;
    if built.is_err() && !args.keep {
        let _ = tokio::time::timeout(CLEANUP_LIMIT, dispatcher.delete_topic(&topic_name)).await;
    }
    built
}

/// The part of [`setup`] that may leave keys behind.
async fn build<F, Fut>(
    args: &JobsArgs,
    dispatcher: &Dispatcher,
    topic_name: &str,
    connect: F,
) -> Result<Setup, Failure>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Dispatcher, Failure>>,
{
    let retry = RetryPolicy::exponential(
        NonZeroU32::MIN.saturating_add(2),
        Duration::from_millis(10),
        Duration::from_millis(100),
    )
    .map_err(|e| Failure::new(format!("retry policy: {e}")))?;
    let topic = TopicConfig::new(topic_name.to_owned())
        .map_err(|e| Failure::new(format!("--topic: {}", e.reason())))?
        .set_retry(retry);
    // A read whose reply was lost (a stall, a dropped connection) leaves its entries pending
    // until the visibility timeout; a short one lets a faulted run recover in seconds. It
    // still far exceeds a handler's run (at most 60 s of sleep, doubled).
    let handler_time = match args.handler {
        HandlerSpec::Sleep(d) => d,
        HandlerSpec::Noop | HandlerSpec::Fail(_) => Duration::ZERO,
    };
    let base_worker = WorkerConfig::new(GROUP)
        .and_then(|c| c.set_concurrency(args.concurrency))
        .and_then(|c| c.set_shutdown_timeout(Duration::from_secs(5)))
        .and_then(|c| c.set_visibility_timeout(VISIBILITY_TIMEOUT + handler_time * 2))
        .map_err(|e| Failure::config(&e))?;
    let marker = dispatcher
        .keyspace()
        .key(topic_name.as_bytes(), &["loadtest", "marker"]);
    // It expires by itself should the cleanup fail.
    let ttl = args.timeout + GRACE + Duration::from_secs(3600);
    redis::cmd("SET")
        .arg(marker.as_slice())
        .arg(1)
        .arg("PX")
        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        .query_async::<()>(&mut dispatcher.redis().clone())
        .await
        .map_err(|e| Failure::new(format!("cannot write to redis: {e}")))?;
    let cpu = RedisCpu::connect(&args.conn.config()?).await?;
    let producer = dispatcher.producer::<Load>(&topic);
    let total = args.jobs + u64::from(args.idle_probes);
    let tally = Arc::new(Tally::new(total, args.jobs, args.handler));
    let mut workers: Vec<MakeWorker> = Vec::with_capacity(args.workers);
    for i in 0..args.workers {
        let d = connect().await?;
        let config = base_worker
            .clone()
            .set_consumer(format!("lt{}-{i}", std::process::id()))
            .map_err(|e| Failure::new(e.to_string()))?;
        let tally = tally.clone();
        let topic = topic.clone();
        let make: MakeWorker = Box::new(move || {
            let tally = tally.clone();
            d.worker(&topic, config.clone(), move |job: Job<Load>| {
                let tally = tally.clone();
                async move { tally.handle(job).await }
            })
        });
        make()
            .ensure_group()
            .await
            .map_err(|e| Failure::new(format!("cannot create the consumer group: {e}")))?;
        workers.push(make);
    }
    let mut setup = Setup {
        dispatcher: dispatcher.clone(),
        cpu,
        topic: topic_name.to_owned(),
        producer,
        tally,
        workers,
        running: Vec::new(),
        shutdown: CancellationToken::new(),
        marker,
        run_id: None,
    };
    setup.run_id = setup.run_id().await.ok();
    Ok(setup)
}

impl Setup {
    /// Start the workers; the time they started.
    fn start_workers(&mut self, until: Instant) -> Instant {
        let at = Instant::now();
        for make in self.workers.drain(..) {
            let shutdown = self.shutdown.clone();
            self.running
                .push(tokio::spawn(supervise(make, shutdown, until)));
        }
        at
    }

    /// Stop the workers and add up their reports.
    async fn stop_workers(&mut self) -> Result<WorkerReport, Failure> {
        self.shutdown.cancel();
        let mut sums = WorkerReport::default();
        for handle in self.running.drain(..) {
            match tokio::time::timeout(WORKER_STOP, handle).await {
                Ok(Ok(Ok(r))) => {
                    sums.retried += r.retried;
                    sums.reclaimed += r.reclaimed;
                }
                Ok(Ok(Err(e))) => return Err(Failure::new(format!("a worker failed: {e}"))),
                Ok(Err(e)) => return Err(Failure::new(format!("a worker task failed: {e}"))),
                Err(_) => {
                    return Err(Failure::new(format!(
                        "a worker did not stop within {}s",
                        WORKER_STOP.as_secs()
                    )));
                }
            }
        }
        Ok(sums)
    }

    /// Jobs read but not acknowledged, and dead letters, from the dispatcher's stats.
    async fn pending_and_dead(&self) -> Result<(u64, u64), DispatchError> {
        let stats = self.dispatcher.stats(&self.topic).await?;
        let pending = stats.group(GROUP).map_or(0, |g| g.pending);
        Ok((pending, stats.dead_letters))
    }

    /// Whether the marker written at setup is still there.
    async fn marker_present(&self) -> Result<bool, DispatchError> {
        let mut conn = self.dispatcher.redis().clone();
        Ok(redis::cmd("EXISTS")
            .arg(self.marker.as_slice())
            .query_async::<bool>(&mut conn)
            .await?)
    }

    /// The `run_id` of the server holding the topic: a new one means it restarted.
    async fn run_id(&self) -> Result<String, DispatchError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("server");
        let info: String = self
            .dispatcher
            .redis()
            .clone()
            .query_on_node_of(cmd, &self.marker)
            .await?;
        info.lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
            .ok_or_else(|| {
                DispatchError::Redis(sluice_shared::RedisError::Protocol(
                    "INFO server has no run_id".to_owned(),
                ))
            })
    }

    /// What the server did during the run: restarted (its `run_id` changed), lost the run's
    /// keys (the marker is gone).
    async fn server(&self, process: &Process) -> Server {
        let now = self.run_id().await.ok();
        let restarted = match (&self.run_id, now) {
            (Some(before), Some(now)) => Some(*before != now),
            _ => None,
        };
        let lost_keys = process.lost_keys || matches!(self.marker_present().await, Ok(false));
        Server {
            restarted,
            lost_keys,
        }
    }
}

/// Phase 1: N jobs into the topic, one by one or in pipelined batches, until --timeout. A
/// call that fails because Redis is unavailable is sent again (a batch that had landed before
/// the failure then runs twice: counted in `duplicates`, never lost).
async fn enqueue(
    args: &JobsArgs,
    setup: &Setup,
    baseline: &Baseline,
    deadline: Instant,
) -> Enqueue {
    let bar = progress(args.jobs, "enqueue", args.quiet);
    let started = Instant::now();
    let mut enqueued = 0u64;
    let mut timed_out = false;
    let mut error = None;
    while enqueued < args.jobs {
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        let n = enqueued;
        let step = if args.batch == 1 {
            retried("enqueue", deadline, || async {
                let job = Load { n, t: unix_us() };
                setup.producer.enqueue(&job).await.map(|_| 1)
            })
            .await
        } else {
            let count = (args.jobs - n).min(args.batch as u64);
            retried("enqueue", deadline, || async {
                let t = unix_us();
                let batch: Vec<Load> = (n..n + count).map(|n| Load { n, t }).collect();
                let sent = setup.producer.enqueue_batch(&batch).await;
                sent.map(|r| r.len() as u64)
            })
            .await
        };
        match step {
            Ok(k) => {
                enqueued += k;
                bar.set_position(enqueued);
            }
            Err(e) => {
                error = Some(format!("enqueue failed after {enqueued} jobs: {e}"));
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let redis_cpu = reading(setup.cpu.seconds()).await;
    // Memory per queued job: only meaningful while nothing has been processed yet.
    let memory_per_job = if args.live || enqueued == 0 {
        None
    } else {
        match (baseline.memory, reading(setup.cpu.used_memory()).await) {
            (Some(before), Some(after)) => {
                Some(after.saturating_sub(before) as f64 / enqueued as f64)
            }
            _ => None,
        }
    };
    Enqueue {
        enqueued,
        elapsed,
        timed_out,
        error,
        redis_cpu,
        memory_per_job,
    }
}

/// Phase 2: until every job has finished (handler succeeded or dead-lettered) and nothing is
/// left pending (acknowledgements landed), or --timeout. Failed stats reads are retried with
/// the worker's backoff. If the server loses the run's keys (the marker vanished), the jobs it
/// held will never come: the phase ends once the workers have finished what they still had.
async fn process(
    args: &JobsArgs,
    setup: &Setup,
    enqueue: &Enqueue,
    started: Instant,
    deadline: Instant,
) -> Process {
    let bar = progress(enqueue.enqueued, "process", args.quiet);
    let mut timed_out = enqueue.timed_out;
    let mut next_check = Instant::now();
    let mut dead_seen = 0u64;
    let mut failures = 0u32;
    let mut lost_keys = false;
    // (jobs finished or dead, when that last changed), once the keys are lost.
    let mut settling: Option<(u64, Instant)> = None;
    let drained_at = loop {
        let finished = setup.tally.completed.load(Ordering::Relaxed).min(args.jobs);
        bar.set_position(finished);
        if enqueue.error.is_some() {
            break None;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break None;
        }
        let due = Instant::now() >= next_check;
        // Handlers are done (wait for the acknowledgements too), or it is time to look.
        if finished + dead_seen >= enqueue.enqueued || due {
            next_check = Instant::now() + Duration::from_millis(250);
            match setup.pending_and_dead().await {
                Ok((pending, dead)) => {
                    failures = 0;
                    dead_seen = dead;
                    if pending == 0 && finished + dead >= enqueue.enqueued {
                        break Some(Instant::now());
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "reading the topic's stats failed; retrying");
                    tokio::time::sleep(Backoff::REDIS_FAILURES.delay(failures)).await;
                    continue;
                }
            }
            if !lost_keys && matches!(setup.marker_present().await, Ok(false)) {
                lost_keys = true;
            }
            if lost_keys {
                let progress = finished + dead_seen;
                match settling {
                    Some((seen, since)) if seen == progress => {
                        if since.elapsed() >= SETTLE {
                            break None;
                        }
                    }
                    _ => settling = Some((progress, Instant::now())),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    bar.finish_and_clear();
    Process {
        drained_at,
        elapsed: drained_at.unwrap_or_else(Instant::now) - started,
        dead_seen,
        timed_out,
        lost_keys,
        redis_cpu: reading(setup.cpu.seconds()).await,
        client_cpu: process_cpu(),
    }
}

/// Phase 3: single jobs to the idle workers, one at a time, 5-10 ms apart, each after a PING
/// (the round-trip floor of this machine and Redis at that moment, to read the probes against).
async fn idle_probes(
    args: &JobsArgs,
    setup: &Setup,
    enqueue: &Enqueue,
    process: &Process,
    deadline: Instant,
) -> Result<Probes, Failure> {
    let mut probes = Probes {
        sent: 0,
        ping: histogram()?,
        timed_out: process.timed_out,
        error: None,
    };
    if process.drained_at.is_none() || args.idle_probes == 0 {
        return Ok(probes);
    }
    // Let the workers settle into their blocking read.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let bar = progress(u64::from(args.idle_probes), "idle probes", args.quiet);
    for i in 0..u64::from(args.idle_probes) {
        if Instant::now() >= deadline {
            probes.timed_out = true;
            break;
        }
        let n = args.jobs + i;
        let sent = async {
            let rtt = retried(&format!("PING before idle probe {i}"), deadline, || {
                ping(setup)
            })
            .await?;
            probes.ping.saturating_record(rtt.max(1));
            retried(&format!("idle probe {i}"), deadline, || async move {
                setup.producer.enqueue(&Load { n, t: unix_us() }).await
            })
            .await
        };
        if let Err(e) = sent.await {
            probes.error = Some(e.to_string());
            break;
        }
        probes.sent += 1;
        wait_for_start(
            &setup.tally,
            n,
            (Instant::now() + Duration::from_secs(1)).min(deadline),
        )
        .await;
        bar.set_position(i + 1);
        let gap = Duration::from_micros(rand::random_range(5_000..=10_000));
        tokio::time::sleep(gap).await;
    }
    bar.finish_and_clear();
    // The last probes' acknowledgements.
    let settle = (Instant::now() + Duration::from_secs(2)).min(deadline + GRACE / 3);
    let expected = enqueue.enqueued + probes.sent;
    while Instant::now() < settle
        && setup.tally.completed.load(Ordering::Relaxed) + process.dead_seen < expected
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(probes)
}

/// One PING on the producer's connection; its round trip in µs.
async fn ping(setup: &Setup) -> Result<u64, DispatchError> {
    let mut conn = setup.dispatcher.redis().clone();
    let started = Instant::now();
    redis::cmd("PING").query_async::<()>(&mut conn).await?;
    Ok(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// Wait until job `n` has started, or `until`.
async fn wait_for_start(tally: &Tally, n: u64, until: Instant) {
    let index = usize::try_from(n).unwrap_or(usize::MAX);
    while tally
        .first_start
        .get(index)
        .is_some_and(|s| s.load(Ordering::Relaxed) == 0)
        && Instant::now() < until
    {
        let _ = tokio::time::timeout_at(until.into(), tally.probe_started.notified()).await;
    }
}

/// Shut the workers down, then check every sent job: finished or dead-lettered, or lost. Its
/// Redis reads are retried like the others, until `until`.
async fn oracle(
    args: &JobsArgs,
    setup: &mut Setup,
    sent: u64,
    until: Instant,
) -> Result<Oracle, Failure> {
    let sums = setup.stop_workers().await?;
    let total = args.jobs + u64::from(args.idle_probes);
    let pending_after = retried("reading the topic's stats", until, || {
        setup.pending_and_dead()
    })
    .await?
    .0;
    let dead = dead_letter_ids(&setup.dispatcher, &setup.topic, total, until).await?;
    let tally = &setup.tally;
    let mut oracle = Oracle {
        sums,
        pending_after,
        lost: 0,
        duplicates: 0,
        dead_letters: 0,
        processed: 0,
        bulk: histogram()?,
        idle: histogram()?,
    };
    for n in 0..sent {
        let i = usize::try_from(n).unwrap_or(usize::MAX);
        let done = tally.done.get(i).map_or(0, |d| d.load(Ordering::Relaxed));
        let is_dead = dead.get(i).copied().unwrap_or(false);
        oracle.dead_letters += u64::from(is_dead);
        oracle.lost += u64::from(done == 0 && !is_dead);
        oracle.duplicates += u64::from(done.saturating_sub(1));
        if n < args.jobs {
            oracle.processed += u64::from(done > 0);
        }
        let stamp = tally
            .first_start
            .get(i)
            .map_or(0, |s| s.load(Ordering::Relaxed));
        if stamp > 0 {
            let h = if n < args.jobs {
                &mut oracle.bulk
            } else {
                &mut oracle.idle
            };
            h.saturating_record(u64::from(stamp - 1).max(1));
        }
    }
    Ok(oracle)
}

/// Redis CPU seconds between two readings; `None` if either is missing, or if the server
/// restarted in between (its counters started again from zero).
fn cpu_between(from: Option<f64>, to: Option<f64>, restarted: Option<bool>) -> Option<f64> {
    let (from, to) = (from?, to?);
    (restarted != Some(true) && to >= from).then_some(to - from)
}

fn report(
    args: &JobsArgs,
    baseline: &Baseline,
    enqueue: &Enqueue,
    process: &Process,
    probes: &Probes,
    oracle: &Oracle,
    server: &Server,
) -> Report {
    let enqueued = enqueue.enqueued;
    let per_job = |secs: f64| {
        if enqueued == 0 {
            0.0
        } else {
            secs * 1e6 / enqueued as f64
        }
    };
    let rate = |jobs: u64, d: Duration| {
        let s = d.as_secs_f64();
        if s > 0.0 { jobs as f64 / s } else { 0.0 }
    };
    let cpu = |from, to| cpu_between(from, to, server.restarted).map(per_job);
    let client_cpu = (process.client_cpu.saturating_sub(baseline.client_cpu)).as_secs_f64();
    Report {
        kind: "jobs",
        jobs: args.jobs,
        batch: args.batch,
        workers: args.workers,
        concurrency: args.concurrency,
        handler: args.handler.to_string(),
        live: args.live,
        enqueued,
        enqueue_elapsed_s: enqueue.elapsed.as_secs_f64(),
        enqueue_jobs_per_sec: rate(enqueued, enqueue.elapsed),
        processed: oracle.processed,
        process_elapsed_s: process.elapsed.as_secs_f64(),
        processed_jobs_per_sec: rate(oracle.processed, process.elapsed),
        latency_us: Percentiles::of(&oracle.bulk),
        idle_latency_us: Percentiles::of(&oracle.idle),
        idle_ping_rtt_us: Percentiles::of(&probes.ping),
        retries: oracle.sums.retried,
        dead_letters: oracle.dead_letters,
        redis_cpu_us_per_job: cpu(baseline.redis_cpu, process.redis_cpu),
        redis_cpu_enqueue_us_per_job: cpu(baseline.redis_cpu, enqueue.redis_cpu),
        redis_cpu_process_us_per_job: cpu(enqueue.redis_cpu, process.redis_cpu),
        client_cpu_us_per_job: per_job(client_cpu),
        redis_memory_bytes_per_queued_job: enqueue.memory_per_job,
        probes: probes.sent,
        duplicates: oracle.duplicates,
        reclaimed: oracle.sums.reclaimed,
        pending_after: oracle.pending_after,
        redis_restarted: server.restarted,
        redis_lost_keys: server.lost_keys,
        timed_out: probes.timed_out,
        lost: oracle.lost,
    }
}

/// The exit status: 1 when the run lost jobs (the server lost its keys, or the run timed out,
/// or they vanished otherwise), with the reason on stderr.
fn verdict(tally: &Tally, report: &Report) -> i32 {
    let foreign = tally.foreign.load(Ordering::Relaxed);
    if foreign > 0 {
        crate::output::warn(format_args!(
            "{foreign} jobs with unknown sequence numbers were run"
        ));
    }
    let lost = report.lost;
    if report.redis_lost_keys {
        let how = if report.redis_restarted == Some(true) {
            "it restarted (its run_id changed) without the data"
        } else {
            "its keys vanished (FLUSHALL or FLUSHDB, eviction, or a restart without persistence)"
        };
        if lost > 0 {
            crate::output::warn(format_args!(
                "{lost} jobs lost: the Redis server lost the load test's keys during the run: \
                 {how}. The jobs it held were gone, not late; no --timeout would bring them back"
            ));
            return 1;
        }
        crate::output::warn(format_args!(
            "the Redis server lost the load test's keys during the run ({how}), after every \
             job had finished"
        ));
    }
    if report.timed_out {
        crate::output::warn(format_args!(
            "the run hit --timeout with {lost} jobs neither finished nor dead-lettered \
             (counted in \"lost\"; raise --timeout or lower --jobs)"
        ));
        return 1;
    }
    if lost > 0 {
        crate::output::warn(format_args!(
            "{lost} jobs lost: neither finished nor dead-lettered"
        ));
        return 1;
    }
    0
}

/// Which sequence numbers are in the dead-letter stream (read back page by page, bounded).
async fn dead_letter_ids(
    d: &Dispatcher,
    topic: &str,
    total: u64,
    until: Instant,
) -> Result<Vec<bool>, Failure> {
    let mut dead = vec![false; usize::try_from(total).unwrap_or(0)];
    let mut after: Option<String> = None;
    for _ in 0..=(total / 1000 + 1) {
        let page = retried("reading dead letters", until, || {
            d.dead_letters(topic, after.as_deref(), 1000)
        })
        .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for letter in &page {
            if let Ok(load) = serde_json::from_slice::<Load>(&letter.payload) {
                if let Some(slot) = usize::try_from(load.n).ok().and_then(|i| dead.get_mut(i)) {
                    *slot = true;
                }
            }
        }
    }
    Ok(dead)
}

fn table(r: &Report) -> Vec<(String, String)> {
    let lat = |p: &Percentiles| {
        format!(
            "p50 {} p90 {} p99 {} p99.9 {} max {} (n={})",
            p.p50, p.p90, p.p99, p.p999, p.max, p.count
        )
    };
    vec![
        (
            "setup".into(),
            format!(
                "{} jobs, batch {}, {} worker(s) x concurrency {}, handler {}{}",
                r.jobs,
                r.batch,
                r.workers,
                r.concurrency,
                r.handler,
                if r.live { ", live" } else { "" }
            ),
        ),
        (
            "enqueue".into(),
            format!(
                "{} jobs in {:.3} s = {:.0} jobs/s",
                r.enqueued, r.enqueue_elapsed_s, r.enqueue_jobs_per_sec
            ),
        ),
        (
            "processed".into(),
            format!(
                "{} jobs in {:.3} s = {:.0} jobs/s",
                r.processed, r.process_elapsed_s, r.processed_jobs_per_sec
            ),
        ),
        ("enqueue-to-start µs, bulk".into(), lat(&r.latency_us)),
        ("enqueue-to-start µs, idle".into(), lat(&r.idle_latency_us)),
        ("PING RTT µs before probes".into(), lat(&r.idle_ping_rtt_us)),
        ("retries".into(), r.retries.to_string()),
        ("dead letters".into(), r.dead_letters.to_string()),
        (
            "duplicates / reclaimed".into(),
            format!("{} / {}", r.duplicates, r.reclaimed),
        ),
        (
            "Redis CPU µs/job".into(),
            match (
                r.redis_cpu_us_per_job,
                r.redis_cpu_enqueue_us_per_job,
                r.redis_cpu_process_us_per_job,
            ) {
                (Some(all), Some(enqueue), Some(process)) => {
                    format!("{all:.2} (enqueue {enqueue:.2}, process {process:.2})")
                }
                _ if r.redis_restarted == Some(true) => {
                    "unavailable (Redis restarted: its counters started again)".to_owned()
                }
                _ => "unavailable (INFO did not answer)".to_owned(),
            },
        ),
        (
            "Redis memory per queued job".into(),
            r.redis_memory_bytes_per_queued_job.map_or_else(
                || {
                    if r.live {
                        "n/a (--live)"
                    } else {
                        "unavailable"
                    }
                    .to_owned()
                },
                |b| format!("{b:.0} bytes"),
            ),
        ),
        (
            "client CPU µs/job".into(),
            format!("{:.2}", r.client_cpu_us_per_job),
        ),
        ("pending after".into(), r.pending_after.to_string()),
        (
            "lost".into(),
            format!(
                "{}{}",
                r.lost,
                if r.redis_lost_keys {
                    " (the Redis server lost the run's keys)"
                } else if r.timed_out {
                    " (timed out)"
                } else {
                    ""
                }
            ),
        ),
    ]
}
