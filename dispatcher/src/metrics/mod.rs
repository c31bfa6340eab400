//! Prometheus metrics of the dispatcher, registered into the caller's `Registry` (never the
//! global one). Every label is a topic or a group name: bounded by the deployment, never by
//! jobs or keys.
//!
//! - `counters.rs`: [`JobMetrics`], the event counters, the handler-duration histogram and the
//!   in-flight gauge, counted by producers and workers as things happen.
//! - `snapshot.rs`: one pipelined read of the queue state of some topics (the numbers behind
//!   the queue gauges), a bounded number of round trips per topic.
//! - `queue_gauges.rs`: [`QueueGauges`], a `prometheus::core::Collector` serving the last
//!   snapshot at scrape time; a background task refreshes it.

mod counters;
mod queue_gauges;
mod snapshot;

pub(crate) use self::counters::{ProducerMetrics, WorkerMetrics};
pub use self::{
    counters::JobMetrics,
    queue_gauges::{DEFAULT_REFRESH_INTERVAL, QueueGauges},
};
