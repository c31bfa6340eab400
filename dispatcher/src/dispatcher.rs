//! The entry point: one Redis connection and keyspace, handing out producers, workers,
//! publishers and subscribers.

use std::{future::Future, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};
use sluice_shared::{ConfigError, Eviction, Keyspace, RedisConfig, RedisError, RedisHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    codec::{Codec, JsonCodec},
    dead::{self, DeadLetter},
    error::DispatchError,
    eviction::EvictionGuard,
    job::{Job, JobError},
    metrics::{JobMetrics, QueueGauges},
    producer::Producer,
    pubsub::{self, Publisher, SubscribeOptions, Subscription},
    stats::{self, TopicStats},
    topic::{TopicConfig, TopicKeys, check_name},
    worker::{Link, Worker, WorkerConfig},
};

/// The `COUNT` hint of one `SCAN` step of [`Dispatcher::delete_topic`].
const SCAN_COUNT: u32 = 1000;
/// Bound on the `SCAN` steps of one [`Dispatcher::delete_topic`] (a billion keys at 1,000 a
/// step).
const MAX_SCAN_STEPS: u32 = 1_000_000;

/// `bytes` with the glob characters of `SCAN MATCH` escaped, to match literally.
fn glob_escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 4);
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Options of [`Dispatcher::connect_with`] (and [`Dispatcher::with_options`]).
///
/// ```
/// use sluice_dispatcher::DispatcherOptions;
///
/// // Run on a server whose maxmemory-policy may evict keys: jobs may vanish.
/// let options = DispatcherOptions::new().allow_eviction(true);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DispatcherOptions {
    allow_eviction: bool,
}

impl DispatcherOptions {
    /// The defaults: a server that may evict keys is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accept a server whose `maxmemory-policy` may evict keys (anything but `noeviction`,
    /// `volatile-*` included: every Sluice key has a TTL). Off by default: under memory
    /// pressure such a server drops queued jobs, retries and dead letters without a trace.
    /// When on, the policy is logged once as a warning instead of refused.
    pub fn allow_eviction(mut self, allow: bool) -> Self {
        self.allow_eviction = allow;
        self
    }
}

/// Connection, keyspace and config shared by everything the dispatcher hands out. Cheap to
/// clone.
///
/// On connect, and again when each worker starts, the server's `maxmemory-policy` is read
/// (every master of a cluster): one that may evict keys is refused with
/// [`DispatchError::EvictionPossible`] unless [`DispatcherOptions::allow_eviction`] is set.
/// If the policy can't be read (`CONFIG GET` refused by an ACL), a warning is logged once and
/// the dispatcher goes on.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    config: RedisConfig,
    redis: RedisHandle,
    keyspace: Keyspace,
    guard: Arc<EvictionGuard>,
    eviction: Option<Eviction>,
    metrics: Option<JobMetrics>,
}

impl Dispatcher {
    /// Connect to Redis now (fails if it can't be reached within the connect timeout), and
    /// refuse a server that may evict keys ([`DispatchError::EvictionPossible`]).
    pub async fn connect(config: RedisConfig, keyspace: Keyspace) -> Result<Self, DispatchError> {
        Self::connect_with(config, keyspace, DispatcherOptions::default()).await
    }

    /// [`Dispatcher::connect`] with options (e.g. accept a server that may evict keys).
    pub async fn connect_with(
        config: RedisConfig,
        keyspace: Keyspace,
        options: DispatcherOptions,
    ) -> Result<Self, DispatchError> {
        let redis = RedisHandle::connect(&config).await?;
        let mut dispatcher = Self::new(config, redis, keyspace).with_options(options);
        dispatcher.eviction = Some(dispatcher.check_eviction().await?);
        Ok(dispatcher)
    }

    /// Reuse an existing shared handle (e.g. the limiter's). `config` must describe the same
    /// deployment: workers and subscribers open their own connections from it. Nothing is
    /// checked now: workers still check the eviction policy when they start, and
    /// [`Dispatcher::check_eviction`] checks it on demand.
    pub fn new(config: RedisConfig, redis: RedisHandle, keyspace: Keyspace) -> Self {
        Self {
            config,
            redis,
            keyspace,
            guard: Arc::new(EvictionGuard::default()),
            eviction: None,
            metrics: None,
        }
    }

    /// Register the job metrics ([`JobMetrics`]) into the caller's `registry` (never the
    /// global one); the producers and workers this dispatcher hands out from now on count
    /// into them. Fails if `registry` already holds them: share one [`JobMetrics`] between
    /// dispatchers with [`Dispatcher::with_job_metrics`] instead.
    pub fn with_metrics(self, registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let metrics = JobMetrics::register(registry)?;
        Ok(self.with_job_metrics(&metrics))
    }

    /// Count into `metrics`, already registered (see [`Dispatcher::with_metrics`]).
    pub fn with_job_metrics(mut self, metrics: &JobMetrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// The job metrics producers and workers count into, if any.
    pub fn metrics(&self) -> Option<&JobMetrics> {
        self.metrics.as_ref()
    }

    /// Queue-state gauges of `topics` (see [`QueueGauges`]): register them into a `Registry`,
    /// then [`QueueGauges::spawn`] their refresh. Refuses invalid topic names.
    pub fn queue_gauges<I, S>(&self, topics: I) -> Result<QueueGauges, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        QueueGauges::new(self.redis.clone(), &self.keyspace, topics)
    }

    /// Apply `options` to this dispatcher and to the workers it hands out from now on.
    pub fn with_options(mut self, options: DispatcherOptions) -> Self {
        self.guard = Arc::new(EvictionGuard::new(options.allow_eviction));
        self
    }

    /// Read the server's `maxmemory-policy` now: [`DispatchError::EvictionPossible`] if it
    /// may evict keys and that was not allowed; otherwise what was read (an allowed or
    /// unreadable policy is logged once as a warning).
    pub async fn check_eviction(&self) -> Result<Eviction, DispatchError> {
        self.guard.check(&self.redis).await
    }

    /// The eviction policy read when this dispatcher connected (`None` when built with
    /// [`Dispatcher::new`]). [`Dispatcher::stats`] reads it afresh.
    pub fn eviction(&self) -> Option<&Eviction> {
        self.eviction.as_ref()
    }

    /// The shared command handle.
    pub fn redis(&self) -> &RedisHandle {
        &self.redis
    }

    /// The keyspace every key lives under.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    pub(crate) fn keys(&self, topic: &str) -> TopicKeys {
        TopicKeys::new(&self.keyspace, topic)
    }

    /// A producer of JSON-encoded jobs of type `T` for `topic`.
    pub fn producer<T: Serialize>(&self, topic: &TopicConfig) -> Producer<T> {
        self.producer_with_codec(topic, JsonCodec)
    }

    /// A producer with another codec.
    pub fn producer_with_codec<T: Serialize, C: Codec>(
        &self,
        topic: &TopicConfig,
        codec: C,
    ) -> Producer<T, C> {
        let producer = Producer::new(
            self.redis.clone(),
            topic.clone(),
            self.keys(topic.name()),
            codec,
        );
        match &self.metrics {
            Some(metrics) => producer.with_metrics(metrics),
            None => producer,
        }
    }

    /// A worker pool running `handler` on JSON-decoded jobs of `topic` (see [`Worker::run`]).
    pub fn worker<T, F, Fut>(
        &self,
        topic: &TopicConfig,
        config: WorkerConfig,
        handler: F,
    ) -> Worker<T>
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.worker_with_codec(topic, config, JsonCodec, handler)
    }

    /// A worker pool with another codec.
    pub fn worker_with_codec<T, C, F, Fut>(
        &self,
        topic: &TopicConfig,
        config: WorkerConfig,
        codec: C,
        handler: F,
    ) -> Worker<T, C>
    where
        T: DeserializeOwned + Send + 'static,
        C: Codec,
        F: Fn(Job<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        Worker::new(
            Link {
                redis: self.redis.clone(),
                redis_config: self.config.clone(),
                eviction: self.guard.clone(),
                metrics: self.metrics.clone(),
            },
            topic.clone(),
            self.keys(topic.name()),
            config,
            codec,
            handler,
        )
    }

    /// Queue depth of `topic`, per consumer group (a fixed number of O(1)/O(log n) commands
    /// per group: no KEYS, no SCAN), and whether the server may evict keys
    /// ([`TopicStats::eviction`], read afresh; never refused here).
    pub async fn stats(&self, topic: &str) -> Result<TopicStats, DispatchError> {
        check_name("topic", topic)?;
        // Stats report the policy; they are not refused over it, nor over failing to read it.
        let eviction = self
            .redis
            .clone()
            .eviction()
            .await
            .unwrap_or_else(|e| Eviction::Unknown {
                reason: e.to_string(),
            });
        stats::topic_stats(&self.redis, topic, &self.keys(topic), eviction).await
    }

    /// Up to `count` dead letters of `topic`, oldest first, after the id `after` (for paging).
    pub async fn dead_letters(
        &self,
        topic: &str,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<DeadLetter>, DispatchError> {
        check_name("topic", topic)?;
        dead::list(&self.redis, &self.keys(topic), after, count).await
    }

    /// Send one dead letter back to the group that gave up on it (attempts reset, same job
    /// id). Returns the new stream entry id.
    pub async fn replay_dead_letter(&self, topic: &str, id: &str) -> Result<String, DispatchError> {
        check_name("topic", topic)?;
        dead::replay(&self.redis, &self.keys(topic), id).await
    }

    /// Replay up to `limit` dead letters, oldest first. Returns how many were replayed.
    ///
    /// It replays the dead letters there were when it started (their ids are read first): a
    /// replayed job that fails again while it runs becomes a new dead letter and is left
    /// for the next call, so a job that always fails is not replayed over and over.
    pub async fn replay_all(&self, topic: &str, limit: usize) -> Result<u64, DispatchError> {
        let mut ids: Vec<String> = Vec::new();
        let mut after: Option<String> = None;
        while ids.len() < limit {
            let page = self
                .dead_letters(topic, after.as_deref(), (limit - ids.len()).min(500))
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            ids.extend(page.into_iter().map(|letter| letter.id));
        }
        let mut replayed = 0u64;
        for id in &ids {
            match self.replay_dead_letter(topic, id).await {
                Ok(_) => replayed += 1,
                // Replayed or deleted concurrently by someone else.
                Err(DispatchError::NoSuchDeadLetter(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(replayed)
    }

    /// Delete one dead letter ([`DispatchError::NoSuchDeadLetter`] when it is not there:
    /// replayed, deleted or trimmed meanwhile; nothing is changed then).
    pub async fn delete_dead_letter(&self, topic: &str, id: &str) -> Result<(), DispatchError> {
        check_name("topic", topic)?;
        dead::delete(&self.redis, &self.keys(topic), id).await
    }

    /// Delete every dead letter of `topic`. Returns how many there were.
    pub async fn purge_dead_letters(&self, topic: &str) -> Result<u64, DispatchError> {
        check_name("topic", topic)?;
        dead::purge(&self.redis, &self.keys(topic)).await
    }

    /// Delete every key of `topic`: its stream, delayed jobs, dead letters, dedup markers, and
    /// each group's retries (groups go with the stream). Returns how many keys were deleted.
    ///
    /// Stop the topic's workers first: a running worker recreates its group and streams. The
    /// keys are found with `SCAN` on the node that holds the topic (all of a topic's keys share
    /// its hash tag, so on a Cluster they live on one node), in steps of about 1,000 keys, each
    /// followed by one `UNLINK` of what it found; so the cost grows with the number of keys on
    /// that node, not with the topic alone. Not atomic: jobs enqueued meanwhile may survive.
    pub async fn delete_topic(&self, topic: &str) -> Result<u64, DispatchError> {
        check_name("topic", topic)?;
        let keys = self.keys(topic);
        let prefix = keys.key_prefix();
        let mut pattern = glob_escape(&prefix);
        pattern.push(b'*');
        let mut conn = self.redis.clone();
        let mut cursor = String::from("0");
        let mut deleted = 0u64;
        for _ in 0..MAX_SCAN_STEPS {
            // SCAN names no key, so it is sent to the node holding the topic's slot.
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor.as_str())
                .arg("MATCH")
                .arg(pattern.as_slice())
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, found): (String, Vec<Vec<u8>>) =
                conn.query_on_node_of(scan, &keys.stream).await?;
            // MATCH is a glob; keep only what truly starts with the prefix. The keys share the
            // topic's hash tag, so one UNLINK takes them all, on a Cluster too.
            let mine: Vec<&Vec<u8>> = found.iter().filter(|k| k.starts_with(&prefix)).collect();
            if !mine.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&mine)
                    .query_async(&mut conn)
                    .await
                    .map_err(RedisError::from)?;
                deleted += n;
            }
            if next == "0" {
                return Ok(deleted);
            }
            cursor = next;
        }
        Err(RedisError::Protocol(format!(
            "deleting topic {topic}: SCAN did not finish within {MAX_SCAN_STEPS} steps"
        ))
        .into())
    }

    /// A publisher of JSON-encoded broadcast messages.
    pub fn publisher<T: Serialize>(&self) -> Publisher<T> {
        Publisher::new(self.redis.clone(), self.keyspace.clone(), JsonCodec)
    }

    /// Subscribe to channels and patterns, on a connection of its own; it resubscribes after
    /// reconnects until `shutdown` is cancelled or the subscription is dropped. Must be called
    /// inside a Tokio runtime.
    pub fn subscribe<T: DeserializeOwned + Send + 'static>(
        &self,
        options: SubscribeOptions,
        shutdown: CancellationToken,
    ) -> Subscription<T> {
        pubsub::subscribe(&self.config, &self.keyspace, options, JsonCodec, shutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(
            glob_escape(b"a*b?[c]\\d:{t}:"),
            b"a\\*b\\?\\[c\\]\\\\d:{t}:"
        );
    }
}
