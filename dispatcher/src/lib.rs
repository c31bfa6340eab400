//! Durable fan-out job dispatch over Redis Streams, and broadcast over pub/sub.
//!
//! A [`Producer`] publishes typed jobs to a topic (one Redis stream). Every subscribing service
//! is a consumer group and gets every job; inside a service, [`Worker`]s in any number of
//! processes share the work. A job is acknowledged only after its handler succeeds; failures
//! are retried with exponential backoff and jitter, scheduled in Redis; after the last attempt
//! the job goes to the topic's dead-letter stream, from which it can be listed and replayed.
//! Jobs left behind by a dead worker are reclaimed by live ones after a visibility timeout.
//!
//! **Delivery is at-least-once.** A job can run more than once (a worker died after the
//! handler finished but before the acknowledgement reached Redis; a handler outlived the
//! visibility timeout). Make handlers idempotent, keyed on [`Job::id`]. Pub/sub broadcast
//! ([`Publisher`], [`Subscription`]) is at-most-once. `docs/DISPATCHER.md` has the delivery
//! semantics, key layout, retention and failure handling in full.
//!
//! # Quick start
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let server = sluice_tests::standalone_url();
//! # let prefix = sluice_tests::unique_prefix("doc");
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use sluice_dispatcher::{Dispatcher, JobError, TopicConfig, WorkerConfig};
//! use sluice_shared::{Keyspace, RedisConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Email { to: String }
//!
//! let config = RedisConfig::parse(&server)?; // "redis://127.0.0.1:6379", or a cluster list
//! let dispatcher = Dispatcher::connect(config, Keyspace::new(prefix)?).await?;
//! let topic = TopicConfig::new("emails")?;
//!
//! // Producer side.
//! let producer = dispatcher.producer::<Email>(&topic);
//! producer.enqueue(&Email { to: "ada@example.com".into() }).await?;
//!
//! // Worker side: group "mailer", 8 jobs at a time.
//! let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
//! let worker = dispatcher.worker(
//!     &topic,
//!     WorkerConfig::new("mailer")?.set_concurrency(8)?,
//!     move |job: sluice_dispatcher::Job<Email>| {
//!         let done_tx = done_tx.clone();
//!         async move {
//!             // send the mail; `Err(JobError::retry(..))` retries with backoff
//!             let _ = done_tx.send(job.payload().to.clone());
//!             Ok::<(), JobError>(())
//!         }
//!     },
//! );
//! let shutdown = CancellationToken::new();
//! let running = tokio::spawn(worker.run(shutdown.clone()));
//! let sent = tokio::time::timeout(Duration::from_secs(10), done_rx.recv()).await?;
//! assert_eq!(sent.as_deref(), Some("ada@example.com"));
//!
//! shutdown.cancel(); // stop reading, drain in-flight jobs, return
//! let report = running.await??;
//! assert_eq!(report.completed, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Layout
//!
//! Lower modules first; each imports only modules above it in this list (and `worker/` only
//! from outside it).
//!
//! - `error.rs`: [`DispatchError`].
//! - `eviction.rs`: the `maxmemory-policy` check on connect and at worker start (refuse a
//!   server that may evict keys unless allowed; warn once when it can't be read).
//! - `value.rs`: readers of raw `redis::Value` replies (bytes, text, numbers, pairs), RESP2 and
//!   RESP3; used by `delivery.rs`, `dead.rs` and `stats.rs`.
//! - `backoff.rs`: [`Backoff`], the one exponential backoff with jitter (retries, the worker's
//!   pauses after Redis failures, the subscriber's reconnects; public so that tools beside a
//!   worker pause alike).
//! - `codec.rs`: [`Codec`], [`JsonCodec`].
//! - `retry.rs`: [`RetryPolicy`].
//! - `topic.rs`: [`TopicConfig`], name checks, and `TopicKeys`: every Redis key of a topic.
//! - `scripts.rs`: the Lua scripts of `lua/` (enqueue, promote, retry, dead letter, trim,
//!   replay, delete topic), loaded once and run with EVALSHA.
//! - `job.rs`: [`Job`], [`JobError`], [`EnqueueOptions`], [`Enqueued`], the stored metadata.
//! - `delivery.rs`: stream entries out of `XREADGROUP` / `XAUTOCLAIM` replies, into [`Job`]s.
//! - `dead.rs`: [`DeadReason`], [`DeadLetter`]; listing and replaying dead letters.
//! - `stats.rs`: [`TopicStats`], [`GroupStats`].
//! - `metrics/`: Prometheus metrics, registered into the caller's `Registry`.
//!   - `counters.rs`: [`JobMetrics`], event counters, handler durations, jobs in flight.
//!   - `snapshot.rs`: the queue state of topics, read with pipelined O(1) commands.
//!   - `queue_gauges.rs`: [`QueueGauges`], a collector serving the last snapshot at scrape
//!     time, refreshed by a background task.
//! - `pause.rs`: pausing and resuming a consumer group ([`Dispatcher::pause_group`]), and the
//!   worker's view of the flag.
//! - `history.rs`: jobs processed and failed per minute in Redis ([`Dispatcher::history`],
//!   [`TopicHistory`]), and the worker's counter that writes them.
//! - `inspect.rs`: topics, consumers, queue latency, next delayed jobs
//!   ([`Dispatcher::topics`], [`Dispatcher::group_details`], [`Dispatcher::delayed_jobs`]).
//! - `lookup.rs`: where a job is, by id ([`Dispatcher::locate_job`], [`JobLocation`]).
//! - `producer.rs`: [`Producer`].
//! - `pubsub.rs`: [`Publisher`], [`Subscription`], [`SubscribeOptions`], [`Message`].
//! - `worker/`: the worker pool.
//!   - `mod.rs`: [`Worker`], [`WorkerReport`], what the parts share (writes retried through
//!     short outages).
//!   - `config.rs`: [`WorkerConfig`], [`StartFrom`].
//!   - `run.rs`: [`Worker::run`]: start-up, the read loop, the drain at shutdown.
//!   - `housekeeping.rs`: promotion of due delayed jobs and retries, reclaim with
//!     `XAUTOCLAIM`, trimming.
//!   - `outcome.rs`: one job from delivery to outcome: decode, handler, then ack, retry or
//!     dead letter.
//!   - `ack.rs`: the acknowledger task, batching `XACK`s.
//! - `dispatcher.rs`: [`Dispatcher`] and [`DispatcherOptions`], the entry point handing out
//!   all of the above, plus stats, dead letters and `delete_topic`.
//!
//! # Dependencies and why
//! - `sluice-shared`: the connection layer (`RedisHandle`, dedicated connections for blocking
//!   reads), typed Redis errors and hash-tagged key naming.
//! - `redis`: the protocol, streams replies, scripts (EVALSHA with reload) and pub/sub.
//! - `tokio`: runtime, timers, semaphore (the worker's concurrency), channels.
//! - `tokio-util`: `CancellationToken` and `TaskTracker`, for shutdown with a drain deadline.
//! - `futures-util`: `catch_unwind` on handler futures (a panic is a failed attempt), boxed
//!   handler futures, the pub/sub message stream.
//! - `serde` + `serde_json`: typed jobs (JSON is the default codec), job metadata, config files.
//! - `humantime-serde`: durations written as `250ms` in config files and stats output.
//! - `thiserror`: typed, `#[non_exhaustive]` error enums.
//! - `rand`: jitter for the backoff, random job ids and consumer names. The backoff itself is
//!   one small function (`backoff.rs`) shared by retries, the worker and the subscriber: job
//!   retries are scheduled in Redis from the attempt number, so a pure function of that number
//!   fits; the `backoff` and `backon` crates drive in-process retry loops and jitter differently
//!   (`backon` adds up to one more delay instead of drawing within the window).
//! - `tracing`: structured logs, left to the application to collect.
//! - `prometheus`: the metrics ([`JobMetrics`], [`QueueGauges`]), in the registry the
//!   application serves (the crate every Sluice component uses for metrics).
#![warn(missing_docs)]

mod backoff;
mod codec;
mod dead;
mod delivery;
mod dispatcher;
mod error;
mod eviction;
mod history;
mod inspect;
mod job;
mod lookup;
mod metrics;
mod pause;
mod producer;
mod pubsub;
mod retry;
mod scripts;
mod stats;
mod topic;
mod value;
mod worker;

pub use backoff::{Backoff, Jitter};
pub use codec::{Codec, JsonCodec};
pub use dead::{DeadLetter, DeadReason};
pub use dispatcher::{Dispatcher, DispatcherOptions};
pub use error::DispatchError;
pub use history::{GroupHistory, HISTORY_TTL, MAX_HISTORY_MINUTES, TopicHistory};
pub use inspect::{ConsumerStats, DelayedJob, GroupDetail, MAX_TOPICS};
pub use job::{EnqueueOptions, Enqueued, Job, JobError, MAX_DELAY};
pub use lookup::{JobLocation, JobPlace, MAX_LOOKUP_ENTRIES};
pub use metrics::{DEFAULT_REFRESH_INTERVAL, JobMetrics, QueueGauges};
pub use producer::Producer;
pub use pubsub::{Message, Publisher, SubscribeOptions, Subscription};
pub use retry::RetryPolicy;
pub use stats::{GroupStats, TopicStats};
pub use topic::{DEFAULT_DEAD_LETTER_MAX_LEN, DEFAULT_MAX_PAYLOAD_BYTES, TopicConfig};
pub use worker::{
    DEFAULT_MAX_DELIVERIES, DEFAULT_VISIBILITY_TIMEOUT, StartFrom, Worker, WorkerConfig,
    WorkerReport,
};

/// The client-side hot paths, exposed for `benches/benches/dispatcher.rs` (criterion) only.
/// They call the very functions the producer and the worker run; not a stable API.
#[doc(hidden)]
pub mod bench_support {
    use std::sync::Arc;

    use redis::Value;
    use serde::{Serialize, de::DeserializeOwned};

    use crate::{
        Codec, DispatchError, EnqueueOptions, Job, JsonCodec, Producer, delivery,
        job::{Meta, new_job_id},
    };

    /// Encode `job` and build its enqueue command, as [`Producer::enqueue`] does, packed into
    /// the bytes that go to Redis.
    pub fn enqueue_command<T: Serialize, C: Codec>(
        producer: &Producer<T, C>,
        job: &T,
    ) -> Result<Vec<u8>, DispatchError> {
        let prepared = producer.prepare(job, &EnqueueOptions::default())?;
        Ok(prepared.cmd.get_packed_command())
    }

    /// An `XREADGROUP` reply as Redis sends it (RESP2 bytes) for `count` fresh jobs whose
    /// payloads are `payload`, from the stream `stream`.
    pub fn read_reply_bytes(stream: &[u8], payload: &[u8], count: usize) -> Vec<u8> {
        fn bulk(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        let mut out = b"*1\r\n*2\r\n".to_vec();
        bulk(&mut out, stream);
        out.extend_from_slice(format!("*{count}\r\n").as_bytes());
        for i in 0..count {
            let meta = Meta {
                id: new_job_id(),
                attempts: 0,
                enqueued_at_ms: 1_763_800_000_000,
                retry: None,
            };
            out.extend_from_slice(b"*2\r\n");
            bulk(&mut out, format!("1763800000000-{i}").as_bytes());
            out.extend_from_slice(b"*4\r\n");
            bulk(&mut out, b"meta");
            bulk(&mut out, meta.to_json().as_bytes());
            bulk(&mut out, b"payload");
            bulk(&mut out, payload);
        }
        out
    }

    /// Decode an `XREADGROUP` reply into the jobs the handlers get, as the worker does (entries
    /// out of the reply, metadata, payload with [`JsonCodec`], the [`Job`]).
    pub fn decode_read_reply<T: DeserializeOwned>(
        reply: Value,
        retry_stream: &[u8],
        topic: &Arc<str>,
        group: &Arc<str>,
    ) -> Result<Vec<Job<T>>, String> {
        let mut entries = Vec::new();
        delivery::parse_read_reply(reply, retry_stream, &mut entries)?;
        entries
            .into_iter()
            .map(|(_, entry)| {
                let meta = delivery::decode_meta(&entry.meta)?;
                let payload = delivery::decode_payload(&JsonCodec, &entry.payload)?;
                Ok(delivery::job(payload, &meta, &entry.id, topic, group))
            })
            .collect()
    }
}
