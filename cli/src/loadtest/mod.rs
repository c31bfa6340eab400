//! `sluice loadtest ...`: load generators that size limits and workers, and feed
//! `scripts/bench-peers`. Every run is bounded in time and in count.
//!
//! Why these dependencies: `hdrhistogram` records latencies without coordinated-omission
//! blind spots and with fixed memory; `indicatif` draws the progress bar (hidden when stderr is
//! not a terminal); `cpu-time` reads this process' CPU time (getrusage) for client-CPU-per-op.

use clap::Subcommand;

use crate::Failure;

pub(crate) mod common;
pub(crate) mod jobs;
pub(crate) mod limit;

#[derive(Debug, Subcommand)]
pub(crate) enum LoadtestCommand {
    /// Hammer the limiter: decisions/s, latency percentiles, Redis CPU per decision, accuracy.
    Limit(limit::LimitArgs),
    /// Push jobs through the dispatcher: enqueue and processing rates, enqueue-to-start latency.
    Jobs(jobs::JobsArgs),
}

pub(crate) async fn run(cmd: LoadtestCommand) -> Result<i32, Failure> {
    match cmd {
        LoadtestCommand::Limit(args) => limit::run(args).await,
        LoadtestCommand::Jobs(args) => jobs::run(args).await,
    }
}
