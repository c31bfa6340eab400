//! `sluice`: rate-limit checks and job queues against Redis, from the shell.
//!
//! Exit status: 0 success (or "allowed"), 1 "denied", 2 error, with the reason on stderr;
//! 141 when stdout's reader went away (`sluice ... | head -1`).
//!
//! # Layout
//! - `main.rs`: the command tree, the runtime, exit statuses.
//! - `args.rs`: flags every Redis-facing command shares (`ConnArgs`: `--redis`, `--prefix`).
//! - `failure.rs`: the one error type, `Failure`.
//! - `settings.rs`: the settings file and `SLUICE_*` environment every command reads.
//! - `output.rs`: every write to stdout/stderr (no write can panic).
//! - `limit.rs`: `sluice limit check|peek|reset` and the rule flags.
//! - `jobs/`: `sluice jobs enqueue|work|stats|dlq` (see its module docs).
//! - `serve.rs`: `sluice serve` (gRPC and HTTP rate limit service) and `sluice serve --check`.
//! - `dashboard.rs`: `sluice dashboard`, the web UI over the job queues.
//! - `loadtest/`: `sluice loadtest limit|jobs`, one file each, phases as functions;
//!   `common.rs` holds what both measure with (Redis CPU, histograms, the report printer).
//!
//! Dependencies and why: `clap` parses arguments (and names the flag in every parse error),
//! `humantime` reads durations like `250ms`, `serde_json` prints one JSON object per line,
//! `tracing-subscriber` shows library logs when `RUST_LOG` is set, `mimalloc` is the allocator (a
//! gRPC call through tonic and h2 makes dozens of small allocations; with glibc's malloc they
//! were a fifth of `sluice serve`'s instructions per call, measured with callgrind). For
//! `sluice jobs work`: `shlex` splits `--exec 'CMD ARGS'` like a POSIX shell without running
//! one, `nix` sends SIGKILL to a timed-out command's process group (`killpg`, with no `unsafe`
//! here), `reqwest` makes the `--http` calls, `httpdate` reads a `Retry-After` date, `axum`
//! serves `--metrics-addr` (as in `sluice serve`), `prometheus` holds the metrics.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};

pub(crate) use failure::Failure;

mod args;
mod dashboard;
mod failure;
mod jobs;
mod limit;
mod loadtest;
mod output;
mod serve;
mod settings;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Most runtime threads `--threads` accepts.
const MAX_THREADS: i64 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Redis traffic control: rate limits and job queues"
)]
struct Cli {
    /// Runtime threads, 1 to 64 (1: a single-threaded runtime). More than the machine's
    /// cores only adds switching.
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=MAX_THREADS))]
    threads: u16,
    /// Settings file (TOML or YAML): redis, prefix, ...; flags override it, and so do
    /// SLUICE_* variables (SLUICE_REDIS__URL, SLUICE_PREFIX).
    #[arg(long, global = true, env = "SLUICE_SETTINGS")]
    settings: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rate-limit checks.
    #[command(subcommand)]
    Limit(limit::LimitCommand),
    /// Job queues: enqueue, work, stats, dead letters.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Load tests: size limits and workers, measure Sluice.
    #[command(subcommand)]
    Loadtest(loadtest::LoadtestCommand),
    /// Envoy's rate limit service (gRPC) and an HTTP check, over a rate-limit config.
    Serve(serve::ServeArgs),
    /// A web UI over the job queues: topics, groups, dead letters, history, job lookup.
    Dashboard(dashboard::DashboardArgs),
}

/// Durations as humans write them: `500ms`, `1s`, `2m`, `1h 30m`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 250ms, 1s, 1m)"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        // Without RUST_LOG: errors only, and none of redis-rs' own lines (connection attempts
        // to an unreachable or misconfigured server): the command reports those itself, once.
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,redis=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(failure) = settings::load(cli.settings.as_deref()) {
        return exit_with(&failure);
    }
    // One thread by default: the command's work is I/O on a few connections, and a single
    // thread spares the cross-thread wake-ups a work-stealing pool pays per reply (it roughly
    // halves client CPU per request in `sluice loadtest`). `--threads N` asks for a pool.
    let mut builder = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(cli.threads));
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            output::warn(format_args!("cannot start the runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Limit(cmd) => limit::run(cmd).await,
            Command::Jobs(cmd) => jobs::run(cmd).await,
            Command::Loadtest(cmd) => loadtest::run(cmd).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Dashboard(args) => dashboard::run(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(failure) => exit_with(&failure),
    }
}

fn exit_with(failure: &Failure) -> ExitCode {
    let (code, message) = failure.exit();
    if let Some(message) = message {
        output::warn(message);
    }
    ExitCode::from(code)
}
