//! `sluice loadtest limit`: hammer the limiter with C tasks over M connections, for a fixed
//! time and at most N requests, closed loop or at a target rate (open loop), and report
//! decisions/s, latency percentiles, Redis and client CPU per decision, and accuracy.
//!
//! Accuracy: every admitted decision's (key, Redis time, cost) is recorded (up to
//! `--max-recorded` of them) and replayed afterwards against the exact definition of the rule:
//! for the sliding log and the counter, every window `(t - W, t]` ending at an admission is
//! counted; for GCRA every run of admissions `i..j` must satisfy
//! `units <= burst + (t_j - t_i) / T`, `T = window / limit`; for the fixed window every aligned
//! window `[kW, (k+1)W)` must hold at most the limit.
//!
//! The run goes in phases, each a function returning what the next needs: [`setup`] (rule,
//! ids, connected limiters), [`CpuMeter`] around [`run_load`] (the request tasks and their
//! merged [`Load`]), [`replay`] (the [`Accuracy`]), and [`Report::new`] with [`table`].

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use sluice_limiter::{Algorithm, Coalescing, Limiter, Rule};
use sluice_shared::{ConfigError, RedisConfig, RedisHandle};
use tokio::task::JoinHandle;

use super::common::{CpuSample, Percentiles, RedisCpu, emit, histogram, process_cpu, progress};
use crate::{
    Failure,
    args::{ConnArgs, LOADTEST_PREFIX},
    limit::RuleArgs,
    parse_duration,
};

/// Most keys a run may spread over (their ids are built once, up front).
const MAX_KEYS: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Distribution {
    /// Every request goes to one key (use with --keys 1).
    Hot,
    /// Keys drawn uniformly.
    Uniform,
    /// Key k (from 1) drawn with probability proportional to 1/k^s (--zipf-exponent s).
    Zipf,
}

#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    rule: RuleArgs,
    /// Units charged per request.
    #[arg(long, default_value_t = 1)]
    cost: u64,
    /// Number of distinct keys (ids) the requests spread over.
    #[arg(long, default_value_t = 1)]
    keys: u64,
    /// How requests pick their key.
    #[arg(long, value_enum, default_value = "hot")]
    distribution: Distribution,
    /// Exponent s of the zipf distribution.
    #[arg(long, default_value_t = 1.0)]
    zipf_exponent: f64,
    /// Concurrent request tasks, 1 to 100,000. Each is a few hundred bytes (latencies go to a
    /// few shared histograms), so the maximum fits in well under 1 GB.
    #[arg(long, default_value_t = 50)]
    concurrency: u64,
    /// Separate Redis connections the tasks are spread over.
    #[arg(long, default_value_t = 1)]
    connections: u64,
    /// How long to send requests, in every mode (an open loop whose --rate Redis can't keep
    /// up with stops on time too); calls in flight then finish within --timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Hard cap on the number of requests.
    #[arg(long, default_value_t = 50_000_000)]
    max_requests: u64,
    /// Target rate in requests/s for an open loop: each request has an intended send time and
    /// its latency counts from then (no coordinated omission). Default: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Most admissions kept for the accuracy replay (16 bytes each); the report says whether
    /// the replay covered the whole run.
    #[arg(long, default_value_t = 4_000_000)]
    max_recorded: u64,
    /// Per-call timeout (a timed-out call counts as an error).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    timeout: Duration,
    /// Coalesce concurrent checks into script calls of up to this many (1: one call per check).
    #[arg(long, default_value_t = 64)]
    coalesce_batch: usize,
    /// Script calls in flight per connection while coalescing.
    #[arg(long, default_value_t = 4)]
    coalesce_in_flight: usize,
    /// One JSON line instead of a table.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// One admitted decision: which key, when (Redis time, µs), how many units.
#[derive(Debug, Clone, Copy)]
struct Admission {
    time_us: u64,
    key: u32,
    cost: u32,
}

/// How the recorded admissions are checked against the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Model {
    /// Every window `(t - W, t]` ending at an admission against the limit; `exact` when the
    /// algorithm must never exceed it (the sliding log), not when it estimates (the counter).
    Windows { exact: bool },
    /// Every run of admissions against `burst + span / T`.
    Gcra,
    /// Every aligned window `[kW, (k+1)W)` (from the epoch) against the limit.
    FixedWindows,
}

impl Model {
    /// The replay for `algorithm`; one the load test can't check yet is refused up front.
    fn of(algorithm: Algorithm) -> Result<Self, Failure> {
        match algorithm {
            Algorithm::SlidingLog => Ok(Model::Windows { exact: true }),
            Algorithm::SlidingCounter => Ok(Model::Windows { exact: false }),
            Algorithm::Gcra => Ok(Model::Gcra),
            Algorithm::FixedWindow => Ok(Model::FixedWindows),
            other => Err(Failure::flag(
                "algorithm",
                format!("the load test has no accuracy replay for {other}"),
            )),
        }
    }

    /// Whether any over-admission is a failure (exit status 1).
    fn exact(self) -> bool {
        match self {
            Model::Windows { exact } => exact,
            Model::Gcra | Model::FixedWindows => true,
        }
    }

    /// What the accuracy count means, for the table.
    fn note(self) -> &'static str {
        match self {
            Model::Windows { exact: false } => "over the exact count (the counter estimates)",
            Model::Windows { exact: true } => "windows over the limit (must be 0)",
            Model::Gcra => "runs over burst + span/T (must be 0)",
            Model::FixedWindows => "aligned windows over the limit (must be 0)",
        }
    }
}

#[derive(Debug, Serialize)]
struct Accuracy {
    /// Windows (ending at an admission) that held more than the limit; for GCRA, runs of
    /// admissions that exceeded burst + span / T; for the fixed window, aligned windows.
    windows_over_limit: u64,
    /// The largest excess over the limit (units).
    max_over_admission: f64,
    /// `max_over_admission` as a percentage of the limit (of the burst for GCRA).
    over_admission_pct: f64,
    /// Admissions the replay looked at.
    admissions_checked: u64,
    /// False when `--max-recorded` cut the recording short: the replay then covers only the
    /// admissions made before the first one that was not recorded.
    complete: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    kind: &'static str,
    algorithm: Algorithm,
    limit: u64,
    window_us: u64,
    granularity_us: Option<u64>,
    burst: Option<u64>,
    cost: u64,
    keys: u64,
    distribution: Distribution,
    concurrency: u64,
    connections: u64,
    rate: Option<f64>,
    decisions: u64,
    allowed: u64,
    denied: u64,
    errors: u64,
    elapsed_s: f64,
    decisions_per_sec: f64,
    latency_us: Percentiles,
    /// `None` when it can't be known (see `redis_cpu_unavailable`).
    redis_cpu_us_per_decision: Option<f64>,
    /// Why Redis CPU per decision is unknown: a restart reset `INFO`'s counters, or `INFO`
    /// could not be read.
    redis_cpu_unavailable: Option<String>,
    /// Each node's share of the Redis CPU (one entry standalone; every master on a Cluster),
    /// to show how the load spreads; empty when Redis CPU is unavailable.
    redis_cpu_per_node: Vec<NodeCpu>,
    client_cpu_us_per_decision: f64,
    /// The first failed call's error, when any failed.
    first_error: Option<String>,
    accuracy: Accuracy,
    /// How the accuracy was checked (the table's wording, the exit status).
    #[serde(skip)]
    model: Model,
}

/// One Redis node's CPU over the run.
#[derive(Debug, Serialize)]
struct NodeCpu {
    /// `host:port`.
    node: String,
    /// Its CPU per decision of the whole run, µs.
    cpu_us_per_decision: f64,
    /// Its share of all nodes' CPU, percent.
    share_pct: f64,
}

/// State shared by the request tasks.
#[derive(Debug)]
struct Shared {
    issued: AtomicU64,
    recorded: AtomicU64,
    first_dropped_us: AtomicU64,
    stop: AtomicBool,
    done: AtomicU64,
    /// Latency histograms, task `t` recording into `t % len`: one per task cost ~200 KB each
    /// (14 GB at `--concurrency 100000`); a few shared ones keep a task a few hundred bytes.
    latency: Vec<Mutex<Histogram<u64>>>,
}

/// Most latency histograms a run keeps (see [`Shared::latency`]).
const LATENCY_SHARDS: u64 = 16;

impl Shared {
    fn new(concurrency: u64) -> Result<Self, Failure> {
        let latency = (0..concurrency.clamp(1, LATENCY_SHARDS))
            .map(|_| histogram().map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            issued: AtomicU64::new(0),
            recorded: AtomicU64::new(0),
            first_dropped_us: AtomicU64::new(u64::MAX),
            stop: AtomicBool::new(false),
            done: AtomicU64::new(0),
            latency,
        })
    }

    /// Record one latency for task `t` (saturating at the histogram's top, 60 s).
    fn record(&self, t: u64, micros: u64) {
        let shard = &self.latency[(t % self.latency.len() as u64) as usize];
        let mut h = match shard.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        h.saturating_record(micros.max(1));
    }
}

/// What one task measured.
#[derive(Debug)]
struct TaskResult {
    allowed: u64,
    denied: u64,
    errors: u64,
    first_error: Option<String>,
    admissions: Vec<Admission>,
}

/// Picks key indices.
#[derive(Debug, Clone)]
enum KeyPicker {
    One,
    Uniform(u64),
    /// Cumulative probabilities of keys 0..n.
    Zipf(Arc<Vec<f64>>),
}

impl KeyPicker {
    fn new(distribution: Distribution, keys: u64, exponent: f64) -> Self {
        match distribution {
            _ if keys == 1 => KeyPicker::One,
            Distribution::Hot => KeyPicker::One,
            Distribution::Uniform => KeyPicker::Uniform(keys),
            Distribution::Zipf => {
                let mut cdf = Vec::with_capacity(keys as usize);
                let mut sum = 0.0;
                for k in 1..=keys {
                    sum += 1.0 / (k as f64).powf(exponent);
                    cdf.push(sum);
                }
                for c in &mut cdf {
                    *c /= sum;
                }
                KeyPicker::Zipf(Arc::new(cdf))
            }
        }
    }

    fn pick(&self, rng: &mut StdRng) -> usize {
        match self {
            KeyPicker::One => 0,
            KeyPicker::Uniform(n) => rng.random_range(0..*n) as usize,
            KeyPicker::Zipf(cdf) => {
                let u: f64 = rng.random();
                cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
            }
        }
    }
}

fn validate(args: &LimitArgs) -> Result<(), Failure> {
    let positive = |v: u64, flag: &str| {
        if v == 0 {
            Err(Failure::new(format!("--{flag}: must be at least 1")))
        } else {
            Ok(())
        }
    };
    positive(args.cost, "cost")?;
    positive(args.keys, "keys")?;
    positive(args.concurrency, "concurrency")?;
    positive(args.connections, "connections")?;
    positive(args.max_requests, "max-requests")?;
    if args.keys > MAX_KEYS {
        return Err(Failure::new(format!("--keys: at most {MAX_KEYS}")));
    }
    if args.concurrency > 100_000 {
        return Err(Failure::new("--concurrency: at most 100000"));
    }
    if args.connections > 1024 {
        return Err(Failure::new("--connections: at most 1024"));
    }
    if args.connections > args.concurrency {
        return Err(Failure::new(
            "--connections: must not exceed --concurrency (each connection needs a task)",
        ));
    }
    if args.distribution == Distribution::Hot && args.keys > 1 {
        return Err(Failure::new(
            "--distribution: hot sends every request to one key; use --keys 1, or uniform or zipf",
        ));
    }
    if !(args.zipf_exponent.is_finite() && args.zipf_exponent > 0.0) {
        return Err(Failure::new("--zipf-exponent: must be a positive number"));
    }
    if args.duration.is_zero() || args.duration > Duration::from_secs(24 * 3600) {
        return Err(Failure::new("--duration: must be between 1µs and 24h"));
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(Failure::new("--rate: must be a positive number"));
    }
    if args.cost > u64::from(u32::MAX) {
        return Err(Failure::new("--cost: at most 4294967295"));
    }
    Ok(())
}

pub(crate) async fn run(args: LimitArgs) -> Result<i32, Failure> {
    validate(&args)?;
    let setup = setup(&args).await?;
    if let Some(limiter) = setup.limiters.first() {
        crate::limit::warn_on_eviction(limiter).await;
    }
    let cpu = CpuMeter::start(&setup.config).await?;
    let load = run_load(&args, &setup).await?;
    let cpu = cpu.finish().await;
    if let Some(e) = &load.first_error {
        crate::output::warn(format_args!(
            "{} of {} calls failed; the first: {e}",
            load.totals.errors,
            load.totals.decisions()
        ));
    }
    if let Err(why) = &cpu.redis_s {
        crate::output::warn(format_args!("Redis CPU per decision unavailable: {why}"));
    }
    let accuracy = replay(
        &setup.rule,
        setup.model,
        load.admissions,
        load.first_dropped_us,
    );
    let report = Report::new(&args, &setup, &load.totals, cpu, accuracy, load.first_error);
    emit(&report, args.json, &table(&report))?;
    Ok(report.exit_status())
}

/// What the load needs, ready before the clock starts.
#[derive(Debug)]
struct Setup {
    rule: Arc<Rule>,
    model: Model,
    config: RedisConfig,
    /// Fresh per run, so state left by an earlier run never skews the accuracy replay.
    nonce: u32,
    ids: Arc<Vec<String>>,
    picker: KeyPicker,
    /// One per connection, each with the script already loaded on its server.
    limiters: Vec<Limiter>,
}

/// The rule, the key ids and one limiter per connection.
async fn setup(args: &LimitArgs) -> Result<Setup, Failure> {
    let rule = args.rule.build()?;
    let model = Model::of(rule.algorithm())?;
    if args.cost > rule.capacity() {
        return Err(Failure::flag(
            "cost",
            format!(
                "{} exceeds what the rule can ever grant ({})",
                args.cost,
                rule.capacity()
            ),
        ));
    }
    let config = args
        .conn
        .config()?
        .set_response_timeout(args.timeout)
        .map_err(|e| Failure::flag("timeout", e.reason()))?;
    let coalescing = if args.coalesce_batch > 1 {
        let limits = Coalescing::new(args.coalesce_batch, args.coalesce_in_flight)
            .map_err(|e| coalescing_flag(&e))?;
        Some(limits)
    } else {
        None
    };
    // Each id is its own hash tag: on a cluster, keys spread over the slots.
    let nonce: u32 = rand::rng().random();
    let ids: Arc<Vec<String>> = Arc::new(
        (0..args.keys)
            .map(|i| format!("lt{nonce:08x}-{i}"))
            .collect(),
    );
    let mut limiters = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        let limiter = connect_limiter(args, &config, coalescing).await?;
        // Loads the script on this connection's server before the clock starts.
        limiter
            .peek(&rule, &ids[0])
            .await
            .map_err(|e| Failure::flag("redis", e))?;
        limiters.push(limiter);
    }
    Ok(Setup {
        rule: Arc::new(rule),
        model,
        config,
        nonce,
        ids,
        picker: KeyPicker::new(args.distribution, args.keys, args.zipf_exponent),
        limiters,
    })
}

/// A limiter on a connection of its own, with the run's prefix, timeout and coalescing.
async fn connect_limiter(
    args: &LimitArgs,
    config: &RedisConfig,
    coalescing: Option<Coalescing>,
) -> Result<Limiter, Failure> {
    let handle = RedisHandle::connect(config)
        .await
        .map_err(|e| Failure::flag("redis", e))?;
    Ok(Limiter::builder(handle)
        .prefix(args.conn.prefix(LOADTEST_PREFIX))
        .map_err(|e| Failure::config(&e))?
        .timeout(args.timeout)
        .map_err(|e| Failure::config(&e))?
        .coalescing(coalescing)
        .build())
}

/// A refused coalescing limit, named by its flag.
fn coalescing_flag(e: &ConfigError) -> Failure {
    let flag = match e.field() {
        "max_batch" => "coalesce-batch",
        "max_in_flight" => "coalesce-in-flight",
        other => other,
    };
    Failure::flag(flag, e.reason())
}

/// Redis and client CPU used between [`CpuMeter::start`] and [`CpuMeter::finish`].
#[derive(Debug)]
struct CpuMeter {
    redis: RedisCpu,
    /// The sample at the start, or why it could not be taken.
    redis_before: Result<CpuSample, String>,
    client_before: Duration,
}

/// CPU seconds used during the load.
#[derive(Debug, Clone)]
struct CpuUsed {
    /// Redis' CPU seconds, or why they can't be known (a restart reset its counters, or it
    /// could not be asked).
    redis_s: Result<f64, String>,
    /// Each node's address and CPU seconds (empty when unknown).
    per_node: Vec<(String, f64)>,
    client_s: f64,
}

impl CpuMeter {
    async fn start(config: &RedisConfig) -> Result<Self, Failure> {
        let redis = RedisCpu::connect(config).await?;
        let redis_before = redis.sample().await.map_err(|e| format!("INFO: {e}"));
        Ok(Self {
            redis,
            redis_before,
            client_before: process_cpu(),
        })
    }

    /// The CPU used since [`CpuMeter::start`]; a Redis that is gone or restarted makes its
    /// figure unavailable, never the run a failure.
    async fn finish(self) -> CpuUsed {
        let client = process_cpu().saturating_sub(self.client_before);
        let mut per_node = Vec::new();
        let redis_s = match self.redis_before {
            Ok(before) => match self.redis.sample().await {
                Ok(after) => {
                    if let Ok(nodes) = after.per_node_since(&before) {
                        per_node = self.redis.addrs().iter().cloned().zip(nodes).collect();
                    }
                    after.since(&before)
                }
                Err(e) => Err(format!("INFO after the run: {e}")),
            },
            Err(e) => Err(e),
        };
        CpuUsed {
            redis_s,
            per_node,
            client_s: client.as_secs_f64(),
        }
    }
}

/// What the request tasks measured, merged.
#[derive(Debug)]
struct Load {
    totals: Totals,
    first_error: Option<String>,
    admissions: Vec<Admission>,
    /// The earliest admission that was not recorded (`u64::MAX`: none).
    first_dropped_us: u64,
}

/// Counts and latencies of the whole load.
#[derive(Debug)]
struct Totals {
    latency: Histogram<u64>,
    allowed: u64,
    denied: u64,
    errors: u64,
    elapsed: Duration,
}

impl Totals {
    /// Every call made, answered or failed.
    fn decisions(&self) -> u64 {
        self.allowed + self.denied + self.errors
    }
}

/// Run the request tasks (with a progress bar) until the time or the count runs out.
async fn run_load(args: &LimitArgs, setup: &Setup) -> Result<Load, Failure> {
    let shared = Arc::new(Shared::new(args.concurrency)?);
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|t| tokio::spawn(Task::new(args, setup, &shared, start, t).run()))
        .collect();
    let bar = progress(args.duration.as_millis() as u64, "decisions", args.quiet);
    let ticker = spawn_ticker(bar.clone(), Arc::clone(&shared), start, args.duration);
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(
            task.await
                .map_err(|e| Failure::new(format!("load task failed: {e}")))??,
        );
    }
    let elapsed = start.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    bar.finish_and_clear();
    let mut load = merge(results, &shared, elapsed)?;
    load.first_dropped_us = shared.first_dropped_us.load(Ordering::Relaxed);
    Ok(load)
}

/// Move the progress bar every 200 ms until the load stops.
fn spawn_ticker(
    bar: ProgressBar,
    shared: Arc<Shared>,
    start: Instant,
    duration: Duration,
) -> JoinHandle<()> {
    let total = duration.as_millis() as u64;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while !shared.stop.load(Ordering::Relaxed) {
            tick.tick().await;
            bar.set_position((start.elapsed().as_millis() as u64).min(total));
            bar.set_message(format!("{} decisions", shared.done.load(Ordering::Relaxed)));
        }
    })
}

/// The tasks' results as one [`Load`] (its `first_dropped_us` still unset).
fn merge(results: Vec<TaskResult>, shared: &Shared, elapsed: Duration) -> Result<Load, Failure> {
    let mut totals = Totals {
        latency: histogram()?,
        allowed: 0,
        denied: 0,
        errors: 0,
        elapsed,
    };
    let mut first_error = None;
    let mut admissions = Vec::new();
    for shard in &shared.latency {
        let h = match shard.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        totals
            .latency
            .add(&*h)
            .map_err(|e| Failure::new(format!("histogram: {e}")))?;
    }
    for r in results {
        totals.allowed += r.allowed;
        totals.denied += r.denied;
        totals.errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
        admissions.extend(r.admissions);
    }
    Ok(Load {
        totals,
        first_error,
        admissions,
        first_dropped_us: u64::MAX,
    })
}

impl Report {
    fn new(
        args: &LimitArgs,
        setup: &Setup,
        totals: &Totals,
        cpu: CpuUsed,
        accuracy: Accuracy,
        first_error: Option<String>,
    ) -> Self {
        let rule = &setup.rule;
        let decisions = totals.decisions();
        let per = |x: f64| {
            if decisions == 0 {
                0.0
            } else {
                x / decisions as f64
            }
        };
        let elapsed_s = totals.elapsed.as_secs_f64();
        Self {
            kind: "limit",
            algorithm: rule.algorithm(),
            limit: rule.limit(),
            window_us: rule.window().as_micros() as u64,
            granularity_us: rule.granularity().map(|g| g.as_micros() as u64),
            burst: rule.burst(),
            cost: args.cost,
            keys: args.keys,
            distribution: args.distribution,
            concurrency: args.concurrency,
            connections: args.connections,
            rate: args.rate,
            decisions,
            allowed: totals.allowed,
            denied: totals.denied,
            errors: totals.errors,
            elapsed_s,
            decisions_per_sec: decisions as f64 / elapsed_s.max(1e-9),
            latency_us: Percentiles::of(&totals.latency),
            redis_cpu_us_per_decision: cpu.redis_s.as_ref().ok().map(|s| per(s * 1e6)),
            redis_cpu_per_node: {
                let sum: f64 = cpu.per_node.iter().map(|(_, s)| s).sum();
                cpu.per_node
                    .iter()
                    .map(|(node, s)| NodeCpu {
                        node: node.clone(),
                        cpu_us_per_decision: per(s * 1e6),
                        share_pct: if sum > 0.0 { s / sum * 100.0 } else { 0.0 },
                    })
                    .collect()
            },
            redis_cpu_unavailable: cpu.redis_s.err(),
            client_cpu_us_per_decision: per(cpu.client_s * 1e6),
            first_error,
            accuracy,
            model: setup.model,
        }
    }

    /// 2 when every call failed (the run measured nothing), 1 when an exact algorithm
    /// over-admitted, else 0.
    fn exit_status(&self) -> i32 {
        if self.decisions == 0 || self.errors == self.decisions {
            2
        } else if self.model.exact() && self.accuracy.windows_over_limit > 0 {
            1
        } else {
            0
        }
    }
}

fn table(r: &Report) -> Vec<(String, String)> {
    let l = &r.latency_us;
    let a = &r.accuracy;
    vec![
        ("rule".into(), rule_line(r)),
        ("load".into(), load_line(r)),
        (
            "decisions".into(),
            format!(
                "{} in {:.2}s = {:.0}/s",
                r.decisions, r.elapsed_s, r.decisions_per_sec
            ),
        ),
        (
            "allowed / denied / errors".into(),
            format!("{} / {} / {}", r.allowed, r.denied, r.errors),
        ),
        (
            "first error".into(),
            r.first_error.clone().unwrap_or_else(|| "none".into()),
        ),
        (
            "latency µs p50 p90 p99 p99.9 max".into(),
            format!(
                "{} {} {} {} {} (mean {:.0})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            ),
        ),
        (
            "Redis CPU µs/decision".into(),
            match (&r.redis_cpu_us_per_decision, &r.redis_cpu_unavailable) {
                (Some(us), _) => format!("{us:.2}"),
                (None, why) => format!("unavailable: {}", why.as_deref().unwrap_or("unknown")),
            },
        ),
        (
            "Redis CPU per node".into(),
            if r.redis_cpu_per_node.is_empty() {
                "unavailable".into()
            } else {
                r.redis_cpu_per_node
                    .iter()
                    .map(|n| {
                        format!(
                            "{} {:.2} µs ({:.0}%)",
                            n.node, n.cpu_us_per_decision, n.share_pct
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        (
            "client CPU µs/decision".into(),
            format!("{:.2}", r.client_cpu_us_per_decision),
        ),
        (
            "accuracy".into(),
            format!(
                "{} {}; max over-admission {} ({:.2}% of the limit); {} admissions checked{}",
                a.windows_over_limit,
                r.model.note(),
                a.max_over_admission,
                a.over_admission_pct,
                a.admissions_checked,
                if a.complete {
                    ""
                } else {
                    " (recording capped by --max-recorded: replay covers the run up to the cap)"
                }
            ),
        ),
    ]
}

/// `sliding-counter 100 per 1s, granularity 10ms`
fn rule_line(r: &Report) -> String {
    let mut rule = format!(
        "{} {} per {:?}",
        r.algorithm,
        r.limit,
        Duration::from_micros(r.window_us)
    );
    if let Some(g) = r.granularity_us {
        rule += &format!(", granularity {:?}", Duration::from_micros(g));
    }
    if let Some(b) = r.burst {
        rule += &format!(", burst {b}");
    }
    rule
}

/// `1 key(s) Hot, cost 1, 50 tasks over 1 connection(s), closed loop`
fn load_line(r: &Report) -> String {
    format!(
        "{} key(s) {:?}, cost {}, {} tasks over {} connection(s), {}",
        r.keys,
        r.distribution,
        r.cost,
        r.concurrency,
        r.connections,
        match r.rate {
            Some(rate) => format!("open loop at {rate}/s"),
            None => "closed loop".into(),
        }
    )
}

/// One request task: claims request numbers from the shared counter until the count or the
/// time runs out.
struct Task {
    limiter: Limiter,
    rule: Arc<Rule>,
    ids: Arc<Vec<String>>,
    picker: KeyPicker,
    shared: Arc<Shared>,
    cost: u64,
    max_requests: u64,
    max_recorded: u64,
    rate: Option<f64>,
    start: Instant,
    deadline: Instant,
    seed: u64,
    /// Which task this is (picks its latency histogram).
    index: u64,
}

impl Task {
    /// Task number `t`, on connection `t % connections`.
    fn new(args: &LimitArgs, setup: &Setup, shared: &Arc<Shared>, start: Instant, t: u64) -> Self {
        Self {
            limiter: setup.limiters[(t % args.connections) as usize].clone(),
            rule: Arc::clone(&setup.rule),
            ids: Arc::clone(&setup.ids),
            picker: setup.picker.clone(),
            shared: Arc::clone(shared),
            cost: args.cost,
            max_requests: args.max_requests,
            max_recorded: args.max_recorded,
            rate: args.rate,
            start,
            deadline: start + args.duration,
            seed: u64::from(setup.nonce) ^ (t.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            index: t,
        }
    }

    async fn run(self) -> Result<TaskResult, Failure> {
        let mut out = TaskResult {
            allowed: 0,
            denied: 0,
            errors: 0,
            first_error: None,
            admissions: Vec::new(),
        };
        let mut rng = StdRng::seed_from_u64(self.seed);
        loop {
            let n = self.shared.issued.fetch_add(1, Ordering::Relaxed);
            if n >= self.max_requests {
                break;
            }
            // Open loop: request n is due at start + n / rate; latency counts from then.
            let began = match self.rate {
                Some(rate) => {
                    let due = self.start + Duration::from_secs_f64(n as f64 / rate);
                    // A rate faster than Redis answers leaves requests due in the past:
                    // --duration still ends the run.
                    if due >= self.deadline || Instant::now() >= self.deadline {
                        break;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    due
                }
                None => {
                    let now = Instant::now();
                    if now >= self.deadline {
                        break;
                    }
                    now
                }
            };
            let k = self.picker.pick(&mut rng);
            let result = self
                .limiter
                .check(&self.rule, &self.ids[k], self.cost)
                .await;
            let micros = began.elapsed().as_micros() as u64;
            self.shared.record(self.index, micros);
            self.shared.done.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(d) if d.allowed => {
                    out.allowed += 1;
                    if self.shared.recorded.fetch_add(1, Ordering::Relaxed) < self.max_recorded {
                        out.admissions.push(Admission {
                            time_us: d.time_us,
                            key: k as u32,
                            cost: self.cost as u32,
                        });
                    } else {
                        self.shared
                            .first_dropped_us
                            .fetch_min(d.time_us, Ordering::Relaxed);
                    }
                }
                Ok(_) => out.denied += 1,
                Err(e) => {
                    out.errors += 1;
                    if out.first_error.is_none() {
                        out.first_error = Some(e.to_string());
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Replays the recorded admissions against the rule's exact definition. Admissions at or after
/// `first_dropped_us` (the earliest admission that was not recorded) are left out, so every
/// window checked is complete.
fn replay(
    rule: &Rule,
    model: Model,
    mut admissions: Vec<Admission>,
    first_dropped_us: u64,
) -> Accuracy {
    let complete = first_dropped_us == u64::MAX;
    admissions.retain(|a| a.time_us < first_dropped_us);
    admissions.sort_unstable_by_key(|a| (a.key, a.time_us));
    let window = rule.window().as_micros() as u64;
    let mut over = 0u64;
    let mut worst = 0.0f64;
    for group in admissions.chunk_by(|a, b| a.key == b.key) {
        let (o, w) = match model {
            Model::Gcra => gcra_excess(group, rule, rule.capacity()),
            Model::Windows { .. } => window_excess(group, window, rule.limit()),
            Model::FixedWindows => aligned_excess(group, window, rule.limit()),
        };
        over += o;
        worst = worst.max(w);
    }
    Accuracy {
        windows_over_limit: over,
        max_over_admission: worst,
        // Of the limit, or of the burst for GCRA.
        over_admission_pct: worst / rule.capacity() as f64 * 100.0,
        admissions_checked: admissions.len() as u64,
        complete,
    }
}

/// For one key's admissions sorted by time: the windows `(t - W, t]` ending at an admission
/// time that hold more than `limit` units, and the largest excess.
fn window_excess(sorted: &[Admission], window: u64, limit: u64) -> (u64, f64) {
    let mut over = 0;
    let mut worst = 0u64;
    let mut units = 0u64; // units in (t - W, t]
    let mut tail = 0usize;
    let mut i = 0;
    while i < sorted.len() {
        let t = sorted[i].time_us;
        // Take every admission at exactly t: they all count in the window ending at t.
        while i < sorted.len() && sorted[i].time_us == t {
            units += u64::from(sorted[i].cost);
            i += 1;
        }
        while sorted[tail].time_us + window <= t {
            units -= u64::from(sorted[tail].cost);
            tail += 1;
        }
        if units > limit {
            over += 1;
            worst = worst.max(units - limit);
        }
    }
    (over, worst as f64)
}

/// For one key's admissions sorted by time: the aligned windows `[kW, (k+1)W)` that hold more
/// than `limit` units, and the largest excess.
fn aligned_excess(sorted: &[Admission], window: u64, limit: u64) -> (u64, f64) {
    let mut over = 0;
    let mut worst = 0u64;
    for same_window in sorted.chunk_by(|a, b| a.time_us / window == b.time_us / window) {
        let units: u64 = same_window.iter().map(|a| u64::from(a.cost)).sum();
        if units > limit {
            over += 1;
            worst = worst.max(units - limit);
        }
    }
    (over, worst as f64)
}

/// For one key's admissions sorted by time: the runs `i..j` that admitted more than
/// `burst + (t_j - t_i) / T` units, counted once per `j`, and the largest excess.
fn gcra_excess(sorted: &[Admission], rule: &Rule, burst: u64) -> (u64, f64) {
    let interval = rule.window().as_micros() as f64 / rule.limit() as f64;
    let burst = burst as f64;
    let mut over = 0;
    let mut worst = 0.0f64;
    // units(i..j) - (t_j - t_i)/T = (U_j - t_j/T) - (U_{i-1} - t_i/T): keep the best start.
    let mut best_start = f64::NEG_INFINITY; // max over i of (t_i/T - U_{i-1})
    let mut prefix = 0.0; // U_{j}
    let mut i = 0;
    while i < sorted.len() {
        let t = sorted[i].time_us;
        let tt = t as f64 / interval;
        best_start = best_start.max(tt - prefix);
        while i < sorted.len() && sorted[i].time_us == t {
            prefix += f64::from(sorted[i].cost);
            i += 1;
        }
        let excess = prefix - tt + best_start - burst;
        // Tolerance for this replay's float arithmetic only: the script's TAT is exact (whole
        // microseconds plus a fraction over the limit).
        if excess > 1e-6 {
            over += 1;
            worst = worst.max(excess);
        }
    }
    (over, worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adm(times: &[u64]) -> Vec<Admission> {
        times
            .iter()
            .map(|&t| Admission {
                time_us: t,
                key: 0,
                cost: 1,
            })
            .collect()
    }

    #[test]
    fn window_replay_counts_windows_ending_at_admissions() {
        // limit 2 per 10 µs: 0, 5, 9 puts 3 in (−1, 9].
        assert_eq!(window_excess(&adm(&[0, 5, 9]), 10, 2), (1, 1.0));
        // 0 leaves at 10: (0, 10] still holds 5, 9, 10.
        assert_eq!(window_excess(&adm(&[0, 5, 9, 10]), 10, 2), (2, 1.0));
        assert_eq!(window_excess(&adm(&[0, 5, 10]), 10, 2), (0, 0.0));
        assert_eq!(window_excess(&adm(&[0, 10, 20]), 10, 1), (0, 0.0));
        // Same microsecond: both count.
        assert_eq!(window_excess(&adm(&[3, 3, 3]), 10, 2), (1, 1.0));
    }

    #[test]
    fn fixed_window_replay_counts_aligned_windows() {
        // limit 2 per 10 µs: [0, 10) and [10, 20) hold 2 each; 4 within 2 µs is allowed.
        assert_eq!(aligned_excess(&adm(&[0, 9, 10, 11]), 10, 2), (0, 0.0));
        assert_eq!(aligned_excess(&adm(&[0, 5, 9, 10]), 10, 2), (1, 1.0));
        assert_eq!(
            aligned_excess(&adm(&[3, 3, 3, 13, 13, 13, 13]), 10, 2),
            (2, 2.0)
        );
    }

    #[test]
    fn gcra_replay_checks_rate_and_burst() {
        // 10 per second: T = 100 ms, burst 2.
        let rule = Rule::gcra("t", 10, Duration::from_secs(1), 2).unwrap();
        let ms = |v: &[u64]| adm(&v.iter().map(|x| x * 1000).collect::<Vec<_>>());
        assert_eq!(gcra_excess(&ms(&[0, 0, 100, 200, 300]), &rule, 2).0, 0);
        assert_eq!(gcra_excess(&ms(&[0, 0, 0]), &rule, 2), (1, 1.0));
        let (over, worst) = gcra_excess(&ms(&[0, 0, 50, 1000]), &rule, 2);
        assert_eq!(over, 1);
        assert!((worst - 0.5).abs() < 1e-9);
    }

    #[test]
    fn zipf_favours_the_first_keys() {
        let picker = KeyPicker::new(Distribution::Zipf, 100, 1.0);
        let mut rng = StdRng::seed_from_u64(7);
        let hits = (0..10_000).filter(|_| picker.pick(&mut rng) == 0).count();
        // P(key 0) = 1 / H_100 ≈ 0.19.
        assert!((1500..2400).contains(&hits), "{hits}");
    }
}
