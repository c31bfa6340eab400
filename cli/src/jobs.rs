//! `sluice jobs ...`: enqueue jobs, read queue depth, list and replay dead letters.
//!
//! Every command prints one JSON document on stdout. Errors come back as a [`Failure`]; the
//! caller prints it and exits with 2.
//!
//! A server whose `maxmemory-policy` may evict keys is refused by the commands that write jobs
//! (`enqueue`, `dlq replay`) unless `--allow-eviction` is given; the read-only ones run and
//! report it (`stats` has it in its output); either way a warning goes to stderr.

use std::{io::Read, time::Duration};

use clap::{Args, Subcommand};
use serde_json::value::RawValue;
use sluice_dispatcher::{
    DispatchError, Dispatcher, DispatcherOptions, EnqueueOptions, RetryPolicy, TopicConfig,
};
use sluice_shared::Eviction;

use crate::{
    Failure,
    args::{ConnArgs, DEFAULT_PREFIX},
};

/// `sluice jobs <command>`.
#[derive(Debug, Subcommand)]
pub(crate) enum JobsCommand {
    /// Enqueue one job (a JSON payload); prints its id and where it went.
    Enqueue(EnqueueArgs),
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
    conn: ConnArgs,
    /// Topic name.
    #[arg(long)]
    topic: String,
    /// Run even if Redis may evict keys (a maxmemory-policy other than noeviction): queued
    /// jobs may then vanish without a trace. Without it, `enqueue` and `dlq replay` refuse
    /// such a server; `stats` and `dlq list` always run and report the policy.
    #[arg(long)]
    allow_eviction: bool,
}

#[derive(Debug, Args)]
pub(crate) struct EnqueueArgs {
    #[command(flatten)]
    target: TopicArgs,
    /// The job as JSON, or `-` to read it from stdin. Stored exactly as given (key order,
    /// duplicate keys and number spelling kept); it must be valid JSON.
    #[arg(long)]
    payload: String,
    /// Run after this delay, e.g. 30s, 5m (at most 365 days).
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
    /// Drop the job if one with the same key was enqueued within --dedup-ttl.
    #[arg(long)]
    dedup: Option<String>,
    /// How long a dedup key holds (1ms to 365 days).
    #[arg(long, value_parser = parse_duration, default_value = "1h", requires = "dedup")]
    dedup_ttl: Duration,
    /// Attempts for this job (overrides the topic policy), with the default backoff.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Largest accepted payload, in bytes.
    #[arg(long, default_value_t = sluice_dispatcher::DEFAULT_MAX_PAYLOAD_BYTES)]
    max_payload_bytes: usize,
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

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 250ms, 30s, 5m)"))
}

/// Whether a command writes jobs: only those refuse a server that may evict keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

async fn connect(target: &TopicArgs, access: Access) -> Result<Dispatcher, Failure> {
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

fn topic(target: &TopicArgs) -> Result<TopicConfig, Failure> {
    TopicConfig::new(target.topic.clone())
        .map_err(|e| Failure::new(format!("--topic: {}", e.reason())))
}

fn print(value: &impl serde::Serialize) -> Result<i32, Failure> {
    crate::output::json(value)?;
    Ok(0)
}

/// Run one `sluice jobs` command; the exit code on success, the message on failure.
pub(crate) async fn run(cmd: JobsCommand) -> Result<i32, Failure> {
    match cmd {
        JobsCommand::Enqueue(args) => enqueue(args).await,
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

async fn enqueue(args: EnqueueArgs) -> Result<i32, Failure> {
    let text = if args.payload == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| Failure::new(format!("cannot read the payload from stdin: {e}")))?;
        buf
    } else {
        args.payload.clone()
    };
    // Validated, then stored byte for byte: a `RawValue` is written as it was given (key order,
    // duplicate keys, big integers, `-0` kept), never re-serialized.
    let payload: Box<RawValue> = serde_json::from_str(&text)
        .map_err(|e| Failure::new(format!("--payload is not valid JSON: {e}")))?;
    let topic = topic(&args.target)?
        .set_max_payload_bytes(args.max_payload_bytes)
        .map_err(|e| Failure::new(format!("--max-payload-bytes: {}", e.reason())))?;
    let mut options = EnqueueOptions::new();
    if let Some(delay) = args.delay {
        options = options.delay(delay);
    }
    if let Some(key) = &args.dedup {
        options = options.dedup(key.clone(), args.dedup_ttl);
    }
    if let Some(attempts) = args.max_attempts {
        let attempts = std::num::NonZeroU32::new(attempts)
            .ok_or_else(|| Failure::new("--max-attempts: must be at least 1"))?;
        let default = RetryPolicy::default();
        let policy = RetryPolicy::exponential(attempts, default.base_delay(), default.max_delay())
            .map_err(|e| Failure::new(format!("--max-attempts: {}", e.reason())))?;
        options = options.retry(policy);
    }
    // Refused before connecting; the library's field names are the flags' with dashes.
    options
        .check()
        .map_err(|e| Failure::flag(&e.field().replace('_', "-"), e.reason()))?;
    let d = connect(&args.target, Access::Write).await?;
    let outcome = d
        .producer::<Box<RawValue>>(&topic)
        .enqueue_with(&payload, options)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    print(&outcome)
}
