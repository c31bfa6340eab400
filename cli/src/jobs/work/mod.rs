//! `sluice jobs work`: a worker of one consumer group that hands each job to a command
//! (`--exec`) or a URL (`--http`), and maps what comes back onto acknowledge, retry or dead
//! letter.
//!
//! - `mod.rs` (here): the flags, the outcome of one handler run, start-up, signals, the drain.
//! - `exec.rs`: `--exec 'CMD ARGS'`: one process (in a process group of its own) per job,
//!   the payload on stdin, the exit status as the outcome.
//! - `http.rs`: `--http URL`: one POST per job, the status as the outcome.
//! - `metrics.rs`: `--metrics-addr`: the command's `Registry`, served at `GET /metrics`.
//!
//! SIGTERM or SIGINT stops the reads; running jobs get `--drain-timeout` to finish, then the
//! command prints its report (`WorkerReport` as JSON) and exits 0. Jobs still running at the
//! deadline are cancelled (a command's process group is killed) and stay pending, so another
//! worker reclaims them after the visibility timeout; so does `kill -9`. A second signal cuts
//! the drain short the same way (exit 2).

mod exec;
mod http;
mod metrics;

use std::{net::SocketAddr, num::NonZeroU32, sync::Arc, time::Duration};

use clap::Args;
use prometheus::Registry;
use serde_json::value::RawValue;
use sluice_dispatcher::{DispatchError, Job, JobError, RetryPolicy, WorkerConfig};
use tokio_util::sync::CancellationToken;

use super::{Access, TopicArgs, connect, parse_duration, topic};
use crate::{Failure, settings};

/// `sluice jobs work`.
#[derive(Debug, Args)]
pub(crate) struct WorkArgs {
    #[command(flatten)]
    target: TopicArgs,
    /// Consumer group: every group gets every job; workers of one group share them.
    #[arg(long)]
    group: String,
    /// This worker's consumer name in the group [default: random, unique per process].
    #[arg(long)]
    consumer: Option<String>,
    /// Jobs run at once, 1 to 10000 [default: work.concurrency of --settings, else 1].
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long a job may stay unacknowledged before other workers reclaim it; must exceed
    /// --job-timeout [default: work.visibility_timeout, else 60s].
    #[arg(long, value_parser = parse_duration)]
    visibility_timeout: Option<Duration>,
    /// Attempts per job before it is dead-lettered (jobs enqueued with their own
    /// --max-attempts keep theirs) [default: work.max_attempts, else 5].
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Backoff before the first retry; it doubles per attempt, with full jitter
    /// [default: work.retry_base_delay, else 1s].
    #[arg(long, value_parser = parse_duration)]
    retry_base_delay: Option<Duration>,
    /// Longest backoff [default: work.retry_max_delay, else 5m].
    #[arg(long, value_parser = parse_duration)]
    retry_max_delay: Option<Duration>,
    /// Longest run of one job: then the command's process group is killed (or the HTTP call
    /// abandoned) and the attempt counts as failed [default: work.job_timeout, else 30s].
    #[arg(long, value_parser = parse_duration)]
    job_timeout: Option<Duration>,
    /// After SIGTERM/SIGINT, how long running jobs may go on before they are cancelled and
    /// left for reclaim [default: work.drain_timeout, else 30s].
    #[arg(long, value_parser = parse_duration)]
    drain_timeout: Option<Duration>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics [default: work.metrics_addr].
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<SocketAddr>,
    /// Run this command per job: payload on stdin; SLUICE_JOB_ID, SLUICE_JOB_ATTEMPT,
    /// SLUICE_TOPIC, SLUICE_GROUP in its environment. Split like a shell would (quotes,
    /// backslashes), but no shell runs unless you write `sh -c '...'`. Exit 0 acknowledges,
    /// 65 (EX_DATAERR) dead-letters at once, 75 (EX_TEMPFAIL) and any other status retry.
    #[arg(
        long,
        value_name = "'CMD ARGS'",
        conflicts_with = "http",
        required_unless_present = "http"
    )]
    exec: Option<String>,
    /// POST each job (the JSON payload) to this http:// URL, with headers Sluice-Job-Id,
    /// Sluice-Job-Attempt, Sluice-Topic, Sluice-Group. 2xx acknowledges; 429 and 503 retry
    /// after Retry-After; other 4xx dead-letter; 5xx, refused connections and timeouts retry.
    #[arg(long, value_name = "URL")]
    http: Option<String>,
}

/// What one handler run asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Acknowledge.
    Success,
    /// A failed attempt: retry (after the delay if given, else the backoff) while attempts
    /// remain, then dead-letter with this message.
    Retry(String, Option<Duration>),
    /// The job ran past `--job-timeout` and was stopped; a failed attempt.
    Timeout(String),
    /// Dead-letter now, with this message.
    DeadLetter(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retry(..) => "retry",
            Outcome::Timeout(_) => "timeout",
            Outcome::DeadLetter(_) => "dead_letter",
        }
    }

    fn into_result(self) -> Result<(), JobError> {
        match self {
            Outcome::Success => Ok(()),
            Outcome::Retry(message, None) | Outcome::Timeout(message) => {
                Err(JobError::retry(message))
            }
            Outcome::Retry(message, Some(after)) => Err(JobError::retry_after(message, after)),
            Outcome::DeadLetter(message) => Err(JobError::fatal(message)),
        }
    }
}

/// What a handler is told about the job besides its payload.
#[derive(Debug)]
pub(super) struct JobInfo<'a> {
    pub(super) id: &'a str,
    pub(super) attempt: u32,
    pub(super) topic: &'a str,
    pub(super) group: &'a str,
}

/// The per-job action.
#[derive(Debug)]
enum Handler {
    Exec(exec::Exec),
    Http(http::Http),
}

impl Handler {
    fn name(&self) -> &'static str {
        match self {
            Handler::Exec(_) => "exec",
            Handler::Http(_) => "http",
        }
    }

    async fn run(&self, job: &JobInfo<'_>, payload: &[u8]) -> Outcome {
        match self {
            Handler::Exec(e) => e.run(job, payload).await,
            Handler::Http(h) => h.run(job, payload).await,
        }
    }
}

/// The flags with the settings' `[work]` section under them and the defaults under both.
#[derive(Debug)]
struct Resolved {
    concurrency: usize,
    visibility_timeout: Duration,
    max_attempts: u32,
    retry_base_delay: Duration,
    retry_max_delay: Duration,
    job_timeout: Duration,
    drain_timeout: Duration,
    metrics_addr: Option<SocketAddr>,
}

fn resolve(args: &WorkArgs) -> Resolved {
    let s = &settings::get().work;
    Resolved {
        concurrency: args.concurrency.or(s.concurrency).unwrap_or(1),
        visibility_timeout: args
            .visibility_timeout
            .or(s.visibility_timeout)
            .unwrap_or(Duration::from_secs(60)),
        max_attempts: args.max_attempts.or(s.max_attempts).unwrap_or(5),
        retry_base_delay: args
            .retry_base_delay
            .or(s.retry_base_delay)
            .unwrap_or(Duration::from_secs(1)),
        retry_max_delay: args
            .retry_max_delay
            .or(s.retry_max_delay)
            .unwrap_or(Duration::from_secs(300)),
        job_timeout: args
            .job_timeout
            .or(s.job_timeout)
            .unwrap_or(Duration::from_secs(30)),
        drain_timeout: args
            .drain_timeout
            .or(s.drain_timeout)
            .unwrap_or(Duration::from_secs(30)),
        metrics_addr: args.metrics_addr.or(s.metrics_addr),
    }
}

/// The worker's settings, each refusal naming its flag.
fn worker_config(args: &WorkArgs, r: &Resolved) -> Result<WorkerConfig, Failure> {
    if r.job_timeout.is_zero() {
        return Err(Failure::flag("job-timeout", "must be greater than zero"));
    }
    if r.job_timeout >= r.visibility_timeout {
        return Err(Failure::new(format!(
            "--job-timeout ({}) must be shorter than --visibility-timeout ({}): a job still \
             running would be reclaimed and run twice",
            humantime::format_duration(r.job_timeout),
            humantime::format_duration(r.visibility_timeout)
        )));
    }
    let mut config =
        WorkerConfig::new(args.group.clone()).map_err(|e| Failure::flag("group", e.reason()))?;
    if let Some(consumer) = &args.consumer {
        config = config
            .set_consumer(consumer.clone())
            .map_err(|e| Failure::flag("consumer", e.reason()))?;
    }
    config
        .set_concurrency(r.concurrency)
        .and_then(|c| c.set_visibility_timeout(r.visibility_timeout))
        .and_then(|c| c.set_shutdown_timeout(r.drain_timeout))
        .map_err(|e| {
            let flag = match e.field() {
                "shutdown_timeout" => "drain-timeout".to_owned(),
                field => field.replace('_', "-"),
            };
            Failure::flag(&flag, e.reason())
        })
}

fn retry_policy(r: &Resolved) -> Result<RetryPolicy, Failure> {
    let attempts = NonZeroU32::new(r.max_attempts)
        .ok_or_else(|| Failure::flag("max-attempts", "must be at least 1"))?;
    RetryPolicy::exponential(attempts, r.retry_base_delay, r.retry_max_delay).map_err(|e| {
        let flag = match e.field() {
            "base_delay" => "retry-base-delay",
            "max_delay" => "retry-max-delay",
            _ => "max-attempts",
        };
        Failure::flag(flag, e.reason())
    })
}

/// Cancel `drain` on the first SIGTERM or SIGINT, and `now` on the second. Registered before
/// anything else happens, so a signal during start-up drains too instead of killing the
/// process.
fn stop_on_signal(drain: CancellationToken, now: CancellationToken) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Failure::new(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Failure::new(format!("cannot handle SIGINT: {e}")))?;
    tokio::spawn(async move {
        let name = next_signal(&mut term, &mut int).await;
        crate::output::warn(format_args!(
            "{name}: no new jobs; draining the running ones (signal again to stop now)"
        ));
        drain.cancel();
        let name = next_signal(&mut term, &mut int).await;
        crate::output::warn(format_args!(
            "{name} again: stopping now; running jobs are cancelled and stay pending"
        ));
        now.cancel();
    });
    Ok(())
}

async fn next_signal(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

pub(crate) async fn run(args: WorkArgs) -> Result<i32, Failure> {
    let shutdown = CancellationToken::new();
    let stop_now = CancellationToken::new();
    stop_on_signal(shutdown.clone(), stop_now.clone())?;
    let r = resolve(&args);
    let config = worker_config(&args, &r)?;
    let topic = topic(&args.target)?.set_retry(retry_policy(&r)?);
    // The handler is checked before connecting: a command that can't start is a start-up
    // error, never a stream of failed jobs.
    let handler = match (&args.exec, &args.http) {
        (Some(spec), None) => Handler::Exec(exec::Exec::parse(spec, r.job_timeout)?),
        (None, Some(url)) => Handler::Http(http::Http::parse(url, r.job_timeout)?),
        _ => return Err(Failure::new("give one of --exec 'CMD ARGS' or --http URL")),
    };
    let registry = Registry::new();
    let metrics = metrics::WorkMetrics::register(&registry, handler.name())
        .map_err(|e| Failure::new(format!("cannot register metrics: {e}")))?;
    // The dispatcher's `sluice_jobs_*` counters and the topic's queue gauges, beside these.
    let d = connect(&args.target, Access::Write)
        .await?
        .with_metrics(&registry)
        .map_err(|e| Failure::new(format!("cannot register metrics: {e}")))?;
    let stop_metrics = CancellationToken::new();
    if r.metrics_addr.is_some() {
        let gauges = d
            .queue_gauges([topic.name()])
            .map_err(|e| Failure::new(format!("queue gauges: {e}")))?;
        gauges
            .register(&registry)
            .map_err(|e| Failure::new(format!("cannot register metrics: {e}")))?;
        gauges
            .spawn(
                sluice_dispatcher::DEFAULT_REFRESH_INTERVAL,
                stop_metrics.clone(),
            )
            .map_err(|e| Failure::new(format!("queue gauges: {e}")))?;
    }
    let server = match r.metrics_addr {
        Some(addr) => Some(metrics::serve(addr, registry.clone(), stop_metrics.clone()).await?),
        None => None,
    };

    let shared = Arc::new((handler, metrics));
    let worker = d.worker(&topic, config, move |job: Job<Box<RawValue>>| {
        let shared = shared.clone();
        async move {
            let (handler, metrics) = &*shared;
            let info = JobInfo {
                id: job.id(),
                attempt: job.attempt(),
                topic: job.topic(),
                group: job.group(),
            };
            let running = metrics.started();
            let started = std::time::Instant::now();
            let outcome = handler.run(&info, job.payload().get().as_bytes()).await;
            metrics.finished(&outcome, started.elapsed());
            drop(running);
            outcome.into_result()
        }
    });
    crate::output::warn(format_args!(
        "worker {} of group {} on topic {} started",
        worker.config().consumer(),
        worker.config().group(),
        topic.name()
    ));
    let report = tokio::select! {
        report = worker.run(shutdown) => report.map_err(|e| match e {
            DispatchError::EvictionPossible { .. } => {
                Failure::new(format!("{e}; pass --allow-eviction to run anyway"))
            }
            e => Failure::new(format!("the worker could not start: {e}")),
        }),
        // The job tasks end when the runtime does, right after this returns: their futures
        // are dropped, commands' process groups killed, nothing acknowledged.
        () = stop_now.cancelled() => Err(Failure::new(
            "stopped by a second signal before the drain finished; the jobs that were running \
             stay pending and are reclaimed after the visibility timeout",
        )),
    };
    stop_metrics.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    super::print(&report?)
}
