//! `sluice jobs ...`: enqueue jobs, run a worker, read queue depth, list and replay dead
//! letters.
//!
//! Every command prints one JSON document on stdout. Errors come back as a [`Failure`]; the
//! caller prints it and exits with 2.
//!
//! # Layout
//! - `mod.rs` (here): the command tree, the flags every command shares, connecting, `stats`
//!   and `dlq`.
//! - `enqueue.rs`: `sluice jobs enqueue --payload` (one job).
//! - `enqueue_lines.rs`: `sluice jobs enqueue --lines FILE|-` (NDJSON, pipelined batches).
//! - `work/`: `sluice jobs work`, a worker running a command or calling a URL per job.
//!
//! A server whose `maxmemory-policy` may evict keys is refused by the commands that write jobs
//! (`enqueue`, `dlq replay`) unless `--allow-eviction` is given; the read-only ones run and
//! report it (`stats` has it in its output); either way a warning goes to stderr.

mod enqueue;
mod enqueue_lines;
mod work;

use std::time::Duration;

use clap::{Args, Subcommand};
use sluice_dispatcher::{DispatchError, Dispatcher, DispatcherOptions, TopicConfig};
use sluice_shared::Eviction;

use crate::{
    Failure,
    args::{ConnArgs, DEFAULT_PREFIX},
};

/// `sluice jobs <command>`.
#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// Enqueue one job (a JSON payload; prints its id and where it went), or many, one JSON
    /// document a line (--lines; prints a summary).
    Enqueue(EnqueueArgs),
    /// Run a worker: each job goes to a command (--exec) or a URL (--http).
    Work(Box<work::WorkArgs>),
    /// Queue depth of the topic, per consumer group.
    Stats(TopicArgs),
    /// Dead letters: list or replay.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// `sluice jobs dlq <command>`.
#[derive(Debug, Subcommand)]
pub(crate) enum DlqCommand {
    /// List dead letters, oldest first.
    List(ListArgs),
    /// Send dead letters back to the group that gave up on them (attempts reset).
    Replay(ReplayArgs),
}

/// Where the topic lives.
#[derive(Debug, Clone, Args)]
pub(crate) struct TopicArgs {
    #[command(flatten)]
    pub(crate) conn: ConnArgs,
    /// Topic name.
    #[arg(long)]
    pub(crate) topic: String,
    /// Run even if Redis may evict keys (a maxmemory-policy other than noeviction): queued
    /// jobs may then vanish without a trace. Without it, `enqueue` and `dlq replay` refuse
    /// such a server; `stats` and `dlq list` always run and report the policy.
    #[arg(long)]
    pub(crate) allow_eviction: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    #[command(flatten)]
    pub(crate) target: TopicArgs,
    /// The job as JSON, or `-` to read it from stdin. Stored exactly as given (key order,
    /// duplicate keys and number spelling kept); it must be valid JSON.
    #[arg(long, required_unless_present = "lines", conflicts_with = "lines")]
    pub(crate) payload: Option<String>,
    /// Many jobs: a file (or `-`, stdin) of newline-delimited JSON, one job a line, sent in
    /// pipelined batches. Prints {"enqueued", "rejected": [{"line", "reason"}]}; a bad line
    /// is reported by number and the good ones are still enqueued (exit 1 if any was
    /// rejected). Blank lines are skipped.
    #[arg(long, value_name = "FILE|-", conflicts_with_all = ["delay", "dedup"])]
    pub(crate) lines: Option<std::path::PathBuf>,
    /// With --lines: jobs per pipelined batch (1 to 10000).
    #[arg(long, default_value_t = 500, requires = "lines", value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub(crate) batch: u16,
    /// Run after this delay, e.g. 30s, 5m (at most 365 days).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) delay: Option<Duration>,
    /// Drop the job if one with the same key was enqueued within --dedup-ttl.
    #[arg(long)]
    pub(crate) dedup: Option<String>,
    /// How long a dedup key holds (1ms to 365 days).
    #[arg(long, value_parser = parse_duration, default_value = "1h", requires = "dedup")]
    pub(crate) dedup_ttl: Duration,
    /// Attempts for this job (overrides the topic policy), with the default backoff.
    #[arg(long)]
    pub(crate) max_attempts: Option<u32>,
    /// Largest accepted payload, in bytes.
    #[arg(long, default_value_t = sluice_dispatcher::DEFAULT_MAX_PAYLOAD_BYTES)]
    pub(crate) max_payload_bytes: usize,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    target: TopicArgs,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Start after this dead-letter id (paging).
    #[arg(long)]
    after: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    target: TopicArgs,
    /// The dead-letter id to replay (from `dlq list`).
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    id: Option<String>,
    /// Replay every dead letter (up to --limit).
    #[arg(long)]
    all: bool,
    /// With --all: at most this many.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 250ms, 30s, 5m)"))
}

/// Whether a command writes jobs: only those refuse a server that may evict keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

pub(crate) async fn connect(target: &TopicArgs, access: Access) -> Result<Dispatcher, Failure> {
    let config = target.conn.config()?;
    let keyspace = target.conn.keyspace(DEFAULT_PREFIX)?;
    let allow = target.allow_eviction || access == Access::Read;
    let options = DispatcherOptions::new().allow_eviction(allow);
    let shown = target.conn.redis_shown();
    let d = Dispatcher::connect_with(config, keyspace, options)
        .await
        .map_err(|e| match e {
            DispatchError::EvictionPossible { .. } => Failure::new(format!(
                "redis at {shown}: {e}; pass --allow-eviction to run anyway"
            )),
            e => Failure::new(format!("cannot reach redis at {shown}: {e}")),
        })?;
    match d.eviction() {
        None | Some(Eviction::Never) => {}
        Some(other) => crate::output::warn(format_args!("warning: {}", other.describe())),
    }
    Ok(d)
}

pub(crate) fn topic(target: &TopicArgs) -> Result<TopicConfig, Failure> {
    TopicConfig::new(target.topic.clone())
        .map_err(|e| Failure::new(format!("--topic: {}", e.reason())))
}

pub(crate) fn print(value: &impl serde::Serialize) -> Result<i32, Failure> {
    crate::output::json(value)?;
    Ok(0)
}

/// Run one `sluice jobs` command; the exit code on success, the message on failure.
pub(crate) async fn run(cmd: JobsCommand) -> Result<i32, Failure> {
    match cmd {
        JobsCommand::Enqueue(args) => match &args.lines {
            Some(_) => enqueue_lines::run(args).await,
            None => enqueue::run(args).await,
        },
        JobsCommand::Work(args) => work::run(*args).await,
        JobsCommand::Stats(target) => {
            topic(&target)?;
            let d = connect(&target, Access::Read).await?;
            let stats = d
                .stats(&target.topic)
                .await
                .map_err(|e| Failure::new(e.to_string()))?;
            print(&stats)
        }
        JobsCommand::Dlq(DlqCommand::List(args)) => {
            topic(&args.target)?;
            let d = connect(&args.target, Access::Read).await?;
            let letters = d
                .dead_letters(&args.target.topic, args.after.as_deref(), args.limit)
                .await
                .map_err(|e| Failure::new(e.to_string()))?;
            print(&letters)
        }
        JobsCommand::Dlq(DlqCommand::Replay(args)) => {
            topic(&args.target)?;
            let d = connect(&args.target, Access::Write).await?;
            if let Some(id) = &args.id {
                let entry = d
                    .replay_dead_letter(&args.target.topic, id)
                    .await
                    .map_err(|e| Failure::new(e.to_string()))?;
                print(&serde_json::json!({ "replayed": 1, "id": id, "entry_id": entry }))
            } else {
                let n = d
                    .replay_all(&args.target.topic, args.limit)
                    .await
                    .map_err(|e| Failure::new(e.to_string()))?;
                print(&serde_json::json!({ "replayed": n }))
            }
        }
    }
}
