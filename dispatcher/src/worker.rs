//! The worker pool: reads a topic as one consumer of a group, runs the handler on up to
//! `concurrency` jobs at once, acknowledges, retries, dead-letters, reclaims.

use std::{
    any::Any,
    collections::HashMap,
    fmt,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{FutureExt, future::BoxFuture};
use redis::Value;
use serde::{Serialize, de::DeserializeOwned};
use sluice_shared::{RedisConfig, RedisError, RedisHandle};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    codec::{Codec, JsonCodec},
    delivery::{self, Delivery, Source},
    error::DispatchError,
    job::{FailureKind, Job, JobError, Meta},
    scripts,
    topic::{TopicConfig, TopicKeys},
    worker_config::{StartFrom, WorkerConfig},
};

type Handler<T> = Arc<dyn Fn(Job<T>) -> BoxFuture<'static, Result<(), JobError>> + Send + Sync>;

/// Why a job went to the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadReason {
    /// Every attempt failed.
    Exhausted,
    /// The handler said not to retry ([`JobError::fatal`]).
    Fatal,
    /// Delivered more than `max_deliveries` times without finishing (it keeps killing or
    /// stalling workers).
    Poison,
    /// The stored job could not be decoded.
    Decode,
}

impl DeadReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeadReason::Exhausted => "exhausted",
            DeadReason::Fatal => "fatal",
            DeadReason::Poison => "poison",
            DeadReason::Decode => "decode",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exhausted" => DeadReason::Exhausted,
            "fatal" => DeadReason::Fatal,
            "poison" => DeadReason::Poison,
            "decode" => DeadReason::Decode,
            _ => return None,
        })
    }
}

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
    /// Fired when the drain deadline passes: running handlers are dropped, their jobs stay
    /// pending.
    hard_stop: CancellationToken,
}

/// Finished entries on their way to the acknowledger.
type AckSender = mpsc::Sender<(Source, String)>;

/// How many times a failing acknowledgement is tried before the job is left pending (and so
/// redelivered later).
const WRITE_TRIES: u32 = 4;
/// Most entry ids in one `XACK`.
const ACK_BATCH: usize = 1024;
/// Most delayed jobs moved per promote call.
const PROMOTE_BATCH: usize = 1000;

impl<T, C> Worker<T, C>
where
    T: DeserializeOwned + Send + 'static,
    C: Codec,
{
    pub(crate) fn new<F, Fut>(
        redis: RedisHandle,
        redis_config: RedisConfig,
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
        let handler: Handler<T> = Arc::new(move |job| handler(job).boxed());
        let retry_stream = keys.retry_stream(config.group());
        let retry_delayed = keys.retry_delayed(config.group());
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
                hard_stop: CancellationToken::new(),
            }),
            redis_config,
        }
    }

    /// The worker's settings.
    pub fn config(&self) -> &WorkerConfig {
        &self.inner.config
    }

    /// Create the consumer group (and the topic stream) if missing. [`Worker::run`] does this
    /// itself; call it earlier to make the group exist before jobs are enqueued.
    pub async fn ensure_group(&self) -> Result<(), DispatchError> {
        self.inner.ensure_groups().await
    }

    /// Run until `shutdown` is cancelled, then stop reading, let in-flight jobs finish until the
    /// drain deadline ([`WorkerConfig::set_shutdown_timeout`]), and return. Jobs still running at
    /// the deadline are cancelled (their futures dropped) and stay pending for other consumers.
    ///
    /// Transient Redis failures are logged and retried with backoff; the worker keeps going.
    /// Errors are returned only when the worker can't start (no connection, no group).
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerReport, DispatchError> {
        let inner = self.inner;
        let poll = inner.config.poll_interval();
        // Blocking reads get a connection of their own; its reply timeout covers the block.
        let reader_timeout = poll + self.redis_config.response_timeout() + Duration::from_secs(1);
        let mut reader = RedisHandle::dedicated(&self.redis_config, Some(reader_timeout)).await?;
        inner.ensure_groups().await?;
        let mut writer = inner.redis.clone();
        for script in [
            &*scripts::PROMOTE,
            &*scripts::RETRY,
            &*scripts::DEAD_LETTER,
            &*scripts::TRIM,
        ] {
            scripts::load(&mut writer, script).await?;
        }

        let tracker = TaskTracker::new();
        let concurrency = inner.config.concurrency();
        let permits = Arc::new(Semaphore::new(concurrency));
        // Finished jobs wait here for the acknowledger; bounded, so at most `concurrency` plus
        // this many entries are finished but not yet acknowledged.
        let (acks, ack_rx) = mpsc::channel(concurrency.saturating_mul(2).max(ACK_BATCH));
        let acker = tokio::spawn(inner.clone().acknowledge(ack_rx));
        // Housekeeping (promote, reclaim, trim) runs beside the reads, never in front of them:
        // an idle worker always sits in its blocking read, so a new job starts at once. It
        // stops with `shutdown`, and also when this future is dropped (the guard).
        let stop_housekeeping = shutdown.child_token();
        let _stop_on_drop = stop_housekeeping.clone().drop_guard();
        let housekeeper = tokio::spawn(inner.clone().housekeeping_loop(
            stop_housekeeping,
            permits.clone(),
            tracker.clone(),
            acks.clone(),
        ));
        let mut failures = 0u32;
        let mut full = false;
        let mut entries = Vec::with_capacity(concurrency);
        tracing::debug!(
            topic = inner.topic.name(),
            group = inner.config.group(),
            consumer = inner.config.consumer(),
            "worker started"
        );

        'run: while !shutdown.is_cancelled() {
            // Wait for a free runner, then read as many entries as there are free runners.
            // The runner is not held during the blocking read, so housekeeping can hand it a
            // reclaimed job meanwhile (read entries then wait for the next free runner).
            let count = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'run,
                permit = permits.acquire() => match permit {
                    Ok(permit) => {
                        drop(permit);
                        if full {
                            // Busy: the last read filled every free runner. Let the jobs just
                            // started run first, so this read fetches for all the runners they
                            // free instead of one (fewer, larger reads; no timer involved).
                            tokio::task::yield_now().await;
                        }
                        permits.available_permits()
                    }
                    Err(_) => break 'run,
                },
            };
            let read = tokio::select! {
                biased;
                // Dropping an in-flight read is safe: whatever it delivered stays pending under
                // this consumer and is reclaimed after the visibility timeout.
                _ = shutdown.cancelled() => break 'run,
                read = inner.read(&mut reader, count, poll, &mut entries) => read,
            };
            if let Err(e) = read {
                entries.clear();
                failures = failures.saturating_add(1);
                if is_nogroup(&e) {
                    tracing::warn!(error = %e, "group or stream vanished; recreating");
                    if let Err(e) = inner.ensure_groups().await {
                        tracing::warn!(error = %e, "could not recreate the group");
                    }
                } else {
                    tracing::warn!(error = %e, failures, "read failed; backing off");
                }
                let pause = error_backoff(failures);
                tokio::select! {
                    _ = shutdown.cancelled() => break 'run,
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
            failures = 0;
            full = entries.len() >= count;
            let mut read = entries.drain(..);
            while let Some((source, entry)) = read.next() {
                let permit = match permits.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    // Housekeeping took a runner for a reclaimed job meanwhile: wait.
                    Err(_) => tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => {
                            // Read but not started: left pending for reclaim.
                            let left = 1 + read.len() as u64;
                            inner.counters.abandoned.fetch_add(left, Ordering::Relaxed);
                            break 'run;
                        }
                        permit = permits.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break 'run,
                        },
                    },
                };
                let job = inner.clone();
                let acks = acks.clone();
                tracker.spawn(async move { job.process(source, entry, None, permit, acks).await });
            }
        }

        // Housekeeping stops with the same token; wait for it, so nothing new is spawned.
        if let Err(e) = housekeeper.await {
            tracing::error!(error = %e, "housekeeping task failed");
        }
        // Drain: nothing new starts; running jobs get until the deadline.
        tracker.close();
        let deadline = inner.config.shutdown_timeout();
        if tokio::time::timeout(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?deadline,
                "drain deadline passed; leaving running jobs pending"
            );
            inner.hard_stop.cancel();
            // Handlers are dropped at their next await point; this wait is short.
            if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
                .await
                .is_err()
            {
                tracing::error!("job tasks did not stop within 10s of cancellation");
            }
        }
        // Every job task is gone, and with them the other senders: the acknowledger flushes
        // what is queued and ends.
        drop(acks);
        match tokio::time::timeout(Duration::from_secs(10), acker).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "acknowledger task failed"),
            Err(_) => tracing::error!(
                "acknowledgements did not finish within 10s; those jobs stay pending"
            ),
        }
        Ok(inner.counters.report())
    }
}

/// Timers of the housekeeping step.
struct Housekeeping {
    next: Instant,
    every: Duration,
    next_trim: Instant,
    next_claim: Instant,
    claim_every: Duration,
    cursors: [String; 2],
}

impl Housekeeping {
    fn new(config: &WorkerConfig) -> Self {
        let now = Instant::now();
        Self {
            next: now,
            every: config.poll_interval(),
            next_trim: now,
            next_claim: now,
            claim_every: (config.visibility_timeout() / 4).max(config.poll_interval()),
            cursors: ["0-0".to_owned(), "0-0".to_owned()],
        }
    }

    fn until_due(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }
}

const TRIM_EVERY: Duration = Duration::from_secs(1);

fn error_backoff(failures: u32) -> Duration {
    let cap = Duration::from_millis(50)
        .saturating_mul(1 << failures.min(6))
        .min(Duration::from_secs(2));
    let millis = u64::try_from(cap.as_millis()).unwrap_or(2000);
    Duration::from_millis(rand::random_range(millis / 2..=millis))
}

fn is_nogroup(err: &DispatchError) -> bool {
    match err {
        DispatchError::Redis(RedisError::Command(e)) => {
            e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
        }
        _ => false,
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
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

    /// One blocking `XREADGROUP` of both streams; the entries are appended to `out`.
    async fn read(
        &self,
        reader: &mut RedisHandle,
        count: usize,
        block: Duration,
        out: &mut Vec<(Source, Delivery)>,
    ) -> Result<(), DispatchError> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(self.config.group())
            .arg(self.config.consumer())
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(1000).max(1))
            .arg("STREAMS")
            .arg(self.keys.stream.as_slice())
            .arg(self.retry_stream.as_slice())
            .arg(">")
            .arg(">")
            .query_async(reader)
            .await?;
        delivery::parse_read_reply(reply, &self.retry_stream, out)
            .map_err(|e| RedisError::Protocol(e).into())
    }

    /// The housekeeping task: every poll interval, until `shutdown`.
    async fn housekeeping_loop(
        self: Arc<Self>,
        shutdown: CancellationToken,
        permits: Arc<Semaphore>,
        tracker: TaskTracker,
        acks: AckSender,
    ) {
        let mut state = Housekeeping::new(&self.config);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                // Dropping a step midway is safe: each script is atomic, and entries an
                // interrupted XAUTOCLAIM took stay pending and are reclaimed again.
                _ = self.housekeeping(&mut state, &permits, &tracker, &acks) => {}
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(state.until_due()) => {}
            }
        }
    }

    /// Move due delayed jobs and retries into their streams, reclaim stalled entries, trim.
    async fn housekeeping(
        self: &Arc<Self>,
        state: &mut Housekeeping,
        permits: &Arc<Semaphore>,
        tracker: &TaskTracker,
        acks: &AckSender,
    ) {
        let now = Instant::now();
        state.next = now + state.every;
        let mut conn = self.redis.clone();
        for (from, to) in [
            (&self.keys.delayed, &self.keys.stream),
            (&self.retry_delayed, &self.retry_stream),
        ] {
            let moved: Result<u64, _> = scripts::PROMOTE
                .key(from.as_slice())
                .key(to.as_slice())
                .arg(PROMOTE_BATCH)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = moved {
                tracing::warn!(error = %e, "moving due jobs failed; will try again");
            }
        }
        if now >= state.next_claim {
            state.next_claim = now + state.claim_every;
            for (i, source) in [Source::Topic, Source::Retry].into_iter().enumerate() {
                if let Err(e) = self
                    .reclaim(source, &mut state.cursors[i], permits, tracker, acks)
                    .await
                {
                    tracing::warn!(error = %e, "reclaiming stalled jobs failed; will try again");
                }
            }
        }
        if now >= state.next_trim {
            state.next_trim = now + TRIM_EVERY;
            for key in [&self.keys.stream, &self.retry_stream] {
                let trimmed: Result<u64, _> = scripts::TRIM
                    .key(key.as_slice())
                    .invoke_async(&mut conn)
                    .await;
                if let Err(e) = trimmed {
                    tracing::warn!(error = %e, "trimming failed; will try again");
                }
            }
        }
    }

    /// `XAUTOCLAIM` entries idle longer than the visibility timeout, as many as there are free
    /// runners; dead-letter the ones delivered too often (poison), run the others.
    async fn reclaim(
        self: &Arc<Self>,
        source: Source,
        cursor: &mut String,
        permits: &Arc<Semaphore>,
        tracker: &TaskTracker,
        acks: &AckSender,
    ) -> Result<(), DispatchError> {
        let free = permits.available_permits();
        if free == 0 {
            return Ok(());
        }
        let stream = self.stream_of(source);
        let mut conn = self.redis.clone();
        let min_idle =
            u64::try_from(self.config.visibility_timeout().as_millis()).unwrap_or(u64::MAX);
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(self.config.group())
            .arg(self.config.consumer())
            .arg(min_idle)
            .arg(cursor.as_str())
            .arg("COUNT")
            .arg(free)
            .query_async(&mut conn)
            .await?;
        let mut claimed = Vec::new();
        *cursor = delivery::parse_autoclaim_reply(reply, source, &mut claimed)
            .map_err(RedisError::Protocol)?;
        if claimed.is_empty() {
            return Ok(());
        }
        // Delivery counts of what was just claimed (XAUTOCLAIM does not return them).
        let mut pipe = redis::pipe();
        for (_, entry) in &claimed {
            pipe.cmd("XPENDING")
                .arg(stream)
                .arg(self.config.group())
                .arg(entry.id.as_str())
                .arg(entry.id.as_str())
                .arg(1);
        }
        let pending: Vec<Vec<(String, String, u64, u64)>> = pipe.query_async(&mut conn).await?;
        let deliveries: HashMap<String, u64> = pending
            .into_iter()
            .flatten()
            .map(|(id, _, _, count)| (id, count))
            .collect();
        for (source, entry) in claimed {
            self.counters.reclaimed.fetch_add(1, Ordering::Relaxed);
            let delivered = deliveries.get(&entry.id).copied().unwrap_or(1);
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // No free runner after all: it stays pending here and is reclaimed again.
                continue;
            };
            let job = self.clone();
            let acks = acks.clone();
            tracker.spawn(async move {
                job.process(source, entry, Some(delivered), permit, acks)
                    .await
            });
        }
        Ok(())
    }

    async fn process(
        self: Arc<Self>,
        source: Source,
        entry: Delivery,
        delivered: Option<u64>,
        permit: OwnedSemaphorePermit,
        acks: AckSender,
    ) {
        let Delivery {
            id: entry_id,
            meta: raw_meta,
            payload: payload_bytes,
        } = entry;
        let meta = match delivery::decode_meta(&raw_meta) {
            Ok(meta) => meta,
            Err(error) => {
                // Boxed: rare paths stay out of the per-job future (smaller to spawn).
                Box::pin(self.dead_letter(
                    source,
                    &entry_id,
                    None,
                    &raw_meta,
                    &payload_bytes,
                    DeadReason::Decode,
                    &error,
                ))
                .await;
                return;
            }
        };
        if let Some(delivered) = delivered {
            if delivered > u64::from(self.config.max_deliveries()) {
                let error = format!(
                    "delivered {delivered} times without finishing (max_deliveries {})",
                    self.config.max_deliveries()
                );
                Box::pin(self.dead_letter(
                    source,
                    &entry_id,
                    Some(&meta),
                    &raw_meta,
                    &payload_bytes,
                    DeadReason::Poison,
                    &error,
                ))
                .await;
                return;
            }
        }
        let payload: T = match delivery::decode_payload(&self.codec, &payload_bytes) {
            Ok(payload) => payload,
            Err(error) => {
                Box::pin(self.dead_letter(
                    source,
                    &entry_id,
                    Some(&meta),
                    &raw_meta,
                    &payload_bytes,
                    DeadReason::Decode,
                    &error,
                ))
                .await;
                return;
            }
        };
        let job = delivery::job(payload, &meta, &entry_id, &self.topic_name, &self.group);
        let handler = self.handler.clone();
        // The handler is called inside the guarded future, so a panic while building its
        // future is caught as well as one while it runs.
        let run = AssertUnwindSafe(async move { handler(job).await }).catch_unwind();
        let outcome = tokio::select! {
            biased;
            outcome = run => outcome,
            _ = self.hard_stop.cancelled() => {
                self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let failure = match outcome {
            Ok(Ok(())) => {
                // Queued for the acknowledger, which batches acknowledgements into one XACK;
                // the runner is freed once the entry is queued (the queue is bounded).
                if acks.send((source, entry_id)).await.is_err() {
                    tracing::warn!("acknowledger gone; the job stays pending");
                }
                drop(permit);
                return;
            }
            Ok(Err(err)) => err,
            Err(panic) => JobError::retry(format!("handler panicked: {}", panic_message(&*panic))),
        };
        Box::pin(self.fail(source, &entry_id, meta, &raw_meta, payload_bytes, failure)).await;
    }

    /// The acknowledger task: takes finished entries off the queue and acknowledges them, as
    /// many as have queued up while the previous `XACK` was in flight in one `XACK` per stream.
    /// No timer: a lone job is acknowledged at once. Ends when every sender is gone and the
    /// queue is empty.
    async fn acknowledge(self: Arc<Self>, mut queue: mpsc::Receiver<(Source, String)>) {
        let mut topic_ids: Vec<String> = Vec::with_capacity(ACK_BATCH);
        let mut retry_ids: Vec<String> = Vec::new();
        while let Some((source, id)) = queue.recv().await {
            let mut next = Some((source, id));
            while let Some((source, id)) = next.take() {
                match source {
                    Source::Topic => topic_ids.push(id),
                    Source::Retry => retry_ids.push(id),
                }
                if topic_ids.len() + retry_ids.len() < ACK_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            for (source, ids) in [
                (Source::Topic, &mut topic_ids),
                (Source::Retry, &mut retry_ids),
            ] {
                if !ids.is_empty() {
                    self.ack(source, ids).await;
                    ids.clear();
                }
            }
        }
    }

    async fn ack(&self, source: Source, ids: &[String]) {
        let stream = self.stream_of(source);
        let acked = self
            .with_retries("ack", |mut conn| async move {
                redis::cmd("XACK")
                    .arg(stream)
                    .arg(self.config.group())
                    .arg(ids)
                    .query_async::<u64>(&mut conn)
                    .await
            })
            .await;
        if acked.is_some() {
            self.counters
                .completed
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
        }
    }

    async fn fail(
        &self,
        source: Source,
        entry_id: &str,
        meta: Meta,
        raw_meta: &[u8],
        payload: Vec<u8>,
        failure: JobError,
    ) {
        let attempt = meta.attempts.saturating_add(1);
        let policy = meta
            .retry
            .clone()
            .unwrap_or_else(|| self.topic.retry().clone());
        let delay = match failure.kind {
            FailureKind::Fatal => None,
            _ if attempt >= policy.max_attempts() => None,
            FailureKind::Retry(Some(after)) => Some(after),
            FailureKind::Retry(None) => Some(policy.backoff(attempt)),
        };
        let Some(delay) = delay else {
            let reason = if failure.is_fatal() {
                DeadReason::Fatal
            } else {
                DeadReason::Exhausted
            };
            let mut final_meta = meta;
            final_meta.attempts = attempt;
            self.dead_letter(
                source,
                entry_id,
                Some(&final_meta),
                raw_meta,
                &payload,
                reason,
                failure.message(),
            )
            .await;
            return;
        };
        tracing::debug!(job = %meta.id, attempt, ?delay, error = failure.message(), "retrying");
        let next = Meta {
            attempts: attempt,
            ..meta
        };
        let mut member = next.to_json().into_bytes();
        member.push(b'\n');
        member.extend_from_slice(&payload);
        let stream = self.stream_of(source);
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let member = &member;
        let scheduled = self
            .with_retries("retry", |mut conn| async move {
                scripts::RETRY
                    .key(stream)
                    .key(self.retry_delayed.as_slice())
                    .arg(self.config.group())
                    .arg(entry_id)
                    .arg(delay_ms)
                    .arg(member.as_slice())
                    .invoke_async::<u64>(&mut conn)
                    .await
            })
            .await;
        if scheduled == Some(1) {
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn dead_letter(
        &self,
        source: Source,
        entry_id: &str,
        meta: Option<&Meta>,
        raw_meta: &[u8],
        payload: &[u8],
        reason: DeadReason,
        error: &str,
    ) {
        tracing::warn!(
            entry = entry_id,
            reason = reason.as_str(),
            error,
            "dead-lettering job"
        );
        let stored_meta = meta
            .map(|m| m.to_json().into_bytes())
            .unwrap_or_else(|| raw_meta.to_vec());
        let job_id = meta.map(|m| m.id.as_str()).unwrap_or("");
        let attempts = meta.map(|m| m.attempts).unwrap_or(0).to_string();
        let stream = self.stream_of(source);
        let stored_meta = &stored_meta;
        let attempts = &attempts;
        let written = self
            .with_retries("dead-letter", |mut conn| async move {
                scripts::DEAD_LETTER
                    .key(stream)
                    .key(self.keys.dead.as_slice())
                    .arg(self.config.group())
                    .arg(entry_id)
                    .arg(self.topic.dead_letter_max_len())
                    .arg("job_id")
                    .arg(job_id)
                    .arg("group")
                    .arg(self.config.group())
                    .arg("reason")
                    .arg(reason.as_str())
                    .arg("error")
                    .arg(error)
                    .arg("attempts")
                    .arg(attempts.as_str())
                    .arg("entry_id")
                    .arg(entry_id)
                    .arg("meta")
                    .arg(stored_meta.as_slice())
                    .arg("payload")
                    .arg(payload)
                    .invoke_async::<u64>(&mut conn)
                    .await
            })
            .await;
        if written == Some(1) {
            self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        }
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
                    tokio::time::sleep(error_backoff(attempt)).await;
                }
            }
        }
        None
    }
}
