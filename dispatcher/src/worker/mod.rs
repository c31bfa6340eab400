//! The worker pool: reads a topic as one consumer of a group, runs the handler on up to
//! `concurrency` jobs at once, acknowledges, retries, dead-letters, reclaims.
//!
//! - `mod.rs` (here): the [`Worker`] type, its report and counters, and what every part
//!   shares (the streams of a source, group creation, writes retried through short outages).
//! - `config.rs`: [`WorkerConfig`], its validation and its file form.
//! - `run.rs`: [`Worker::run`]: start-up, the read loop (blocking `XREADGROUP` on a connection
//!   of its own), and the drain at shutdown.
//! - `housekeeping.rs`: beside the reads, promote due delayed jobs and retries, reclaim stalled
//!   entries with `XAUTOCLAIM`, trim.
//! - `outcome.rs`: one job from delivery to outcome (decode, handler, then ack, retry or dead
//!   letter).
//! - `ack.rs`: the acknowledger task, batching `XACK`s.
//!
//! Imports go one way: the files import `mod.rs` (and `ack.rs` for its queue type); `mod.rs`
//! imports none of them but `config.rs`.

mod ack;
mod config;
mod housekeeping;
mod outcome;
mod run;

use std::{
    fmt,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures_util::{FutureExt, future::BoxFuture};
use serde::{Serialize, de::DeserializeOwned};
use sluice_shared::{RedisConfig, RedisError, RedisHandle};
use tokio_util::sync::CancellationToken;

pub use self::config::{
    DEFAULT_MAX_DELIVERIES, DEFAULT_VISIBILITY_TIMEOUT, StartFrom, WorkerConfig,
};
use crate::{
    backoff::Backoff,
    codec::{Codec, JsonCodec},
    delivery::Source,
    error::DispatchError,
    eviction::EvictionGuard,
    history::HistoryCounter,
    job::{Job, JobError},
    metrics::{JobMetrics, WorkerMetrics},
    pause::PauseFlag,
    topic::{TopicConfig, TopicKeys},
};

type Handler<T> = Arc<dyn Fn(Job<T>) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync>;

/// What one [`Worker::run`] did, counted when it returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Jobs whose handler succeeded and that were acknowledged.
    pub completed: u64,
    /// Failed attempts scheduled for a retry.
    pub retried: u64,
    /// Jobs this worker moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Entries taken over from other (dead or stalled) consumers.
    pub reclaimed: u64,
    /// Jobs left pending at shutdown (still running at the deadline, or read but not started):
    /// other consumers reclaim them after the visibility timeout.
    pub abandoned: u64,
}

#[derive(Default)]
struct Counters {
    completed: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    reclaimed: AtomicU64,
    abandoned: AtomicU64,
}

impl Counters {
    fn report(&self) -> WorkerReport {
        WorkerReport {
            completed: self.completed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            reclaimed: self.reclaimed.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
        }
    }
}

/// A pool of `concurrency` job runners: one consumer of one group of one topic.
///
/// Build it with [`crate::Dispatcher::worker`], then [`Worker::run`] it until its cancellation
/// token fires. Any number of workers, in any number of processes, may share a group: each job
/// goes to one of them. Each group gets every job.
pub struct Worker<T, C = JsonCodec> {
    inner: Arc<Inner<T, C>>,
    redis_config: RedisConfig,
}

impl<T, C> fmt::Debug for Worker<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("topic", &self.inner.topic.name())
            .field("config", &self.inner.config)
            .finish()
    }
}

struct Inner<T, C> {
    redis: RedisHandle,
    topic: TopicConfig,
    keys: TopicKeys,
    retry_stream: Vec<u8>,
    retry_delayed: Vec<u8>,
    config: WorkerConfig,
    /// The topic's and the group's names, shared by every [`Job`] (no copy per job).
    topic_name: Arc<str>,
    group: Arc<str>,
    codec: C,
    handler: Handler<T>,
    counters: Counters,
    /// The Prometheus series of this worker (nothing counted without metrics).
    metrics: WorkerMetrics,
    /// Fired when the drain deadline passes: running handlers are dropped, their jobs stay
    /// pending.
    hard_stop: CancellationToken,
    /// The dispatcher's eviction opt-in, checked at start-up.
    eviction: Arc<EvictionGuard>,
    /// The group's pause flag, read by housekeeping, checked before every read.
    pause: PauseFlag,
    /// Processed and failed counts on their way to the per-minute history.
    history: HistoryCounter,
}

/// How many times a failing write (ack, retry, dead letter) is tried before the job is left
/// pending (and so redelivered later).
const WRITE_TRIES: u32 = 4;

/// Pause after `n` consecutive Redis failures (reads, writes): 50 ms doubling up to 2 s.
const ERROR_BACKOFF: Backoff = Backoff::REDIS_FAILURES;

/// What a worker takes from its dispatcher.
pub(crate) struct Link {
    /// The shared command handle.
    pub(crate) redis: RedisHandle,
    /// For the worker's own (blocking-read) connection.
    pub(crate) redis_config: RedisConfig,
    /// The eviction opt-in, checked at start-up.
    pub(crate) eviction: Arc<EvictionGuard>,
    /// The dispatcher's metrics, if it has any.
    pub(crate) metrics: Option<JobMetrics>,
}

impl<T, C> Worker<T, C>
where
    T: DeserializeOwned + Send + 'static,
    C: Codec,
{
    pub(crate) fn new<F, Fut>(
        link: Link,
        topic: TopicConfig,
        keys: TopicKeys,
        config: WorkerConfig,
        codec: C,
        handler: F,
    ) -> Self
    where
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let Link {
            redis,
            redis_config,
            eviction,
            metrics,
        } = link;
        let metrics = metrics.map_or_else(WorkerMetrics::default, |m| {
            m.worker(topic.name(), config.group())
        });
        let handler: Handler<T> = Arc::new(move |job| handler(job).boxed());
        let retry_stream = keys.retry_stream(config.group());
        let retry_delayed = keys.retry_delayed(config.group());
        let pause = PauseFlag::new(keys.paused(config.group()));
        let history = HistoryCounter::new(keys.clone(), config.group());
        Self {
            inner: Arc::new(Inner {
                redis,
                topic: topic.clone(),
                keys,
                retry_stream,
                retry_delayed,
                topic_name: Arc::from(topic.name()),
                group: Arc::from(config.group()),
                config,
                codec,
                handler,
                counters: Counters::default(),
                metrics,
                hard_stop: CancellationToken::new(),
                eviction,
                pause,
                history,
            }),
            redis_config,
        }
    }

    /// The worker's settings.
    pub fn config(&self) -> &WorkerConfig {
        &self.inner.config
    }

    /// Count what this worker does in `metrics` (labels: its topic and group). Workers from a
    /// dispatcher built with [`crate::Dispatcher::with_metrics`] already do.
    pub fn with_metrics(mut self, metrics: &JobMetrics) -> Self {
        let series = metrics.worker(self.inner.topic.name(), self.inner.config.group());
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.metrics = series,
            // A worker is shared only once it runs, and `run` takes it by value.
            None => tracing::warn!("worker already running; metrics not attached"),
        }
        self
    }

    /// Create the consumer group (and the topic stream) if missing. [`Worker::run`] does this
    /// itself; call it earlier to make the group exist before jobs are enqueued.
    pub async fn ensure_group(&self) -> Result<(), DispatchError> {
        self.inner.ensure_groups().await
    }
}

impl<T, C> Inner<T, C>
where
    T: DeserializeOwned + Send + 'static,
    C: Codec,
{
    fn stream_of(&self, source: Source) -> &[u8] {
        match source {
            Source::Topic => &self.keys.stream,
            Source::Retry => &self.retry_stream,
        }
    }

    async fn ensure_groups(&self) -> Result<(), DispatchError> {
        let start = match self.config.start() {
            StartFrom::Beginning => "0",
            StartFrom::New => "$",
        };
        let mut conn = self.redis.clone();
        for (key, start) in [(&self.keys.stream, start), (&self.retry_stream, "0")] {
            let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key.as_slice())
                .arg(self.config.group())
                .arg(start)
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Run a write a few times while Redis is unavailable. `None` when it never succeeded: the
    /// entry stays pending and is redelivered after the visibility timeout (at-least-once).
    async fn with_retries<'a, R, F, Fut>(&'a self, what: &str, op: F) -> Option<R>
    where
        F: Fn(RedisHandle) -> Fut,
        Fut: Future<Output = Result<R, redis::RedisError>> + 'a,
    {
        for attempt in 1..=WRITE_TRIES {
            match op(self.redis.clone()).await {
                Ok(r) => return Some(r),
                Err(e) => {
                    let e = RedisError::from(e);
                    if !e.is_unavailable() || attempt == WRITE_TRIES {
                        tracing::warn!(error = %e, what, "write failed; the job stays pending");
                        return None;
                    }
                    tokio::time::sleep(ERROR_BACKOFF.delay(attempt)).await;
                }
            }
        }
        None
    }
}
