//! The entry point: one Redis connection and keyspace, handing out producers, workers,
//! publishers and subscribers.

use std::future::Future;

use serde::{Serialize, de::DeserializeOwned};
use sluice_shared::{Keyspace, RedisConfig, RedisHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    codec::{Codec, JsonCodec},
    dead::{self, DeadLetter},
    error::DispatchError,
    job::{Job, JobError},
    producer::Producer,
    pubsub::{self, Publisher, SubscribeOptions, Subscription},
    stats::{self, TopicStats},
    topic::{TopicConfig, TopicKeys, check_name},
    worker::{Worker, WorkerConfig},
};

/// Connection, keyspace and config shared by everything the dispatcher hands out. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    config: RedisConfig,
    redis: RedisHandle,
    keyspace: Keyspace,
}

impl Dispatcher {
    /// Connect to Redis now (fails if it can't be reached within the connect timeout).
    pub async fn connect(config: RedisConfig, keyspace: Keyspace) -> Result<Self, DispatchError> {
        let redis = RedisHandle::connect(&config).await?;
        Ok(Self::new(config, redis, keyspace))
    }

    /// Reuse an existing shared handle (e.g. the limiter's). `config` must describe the same
    /// deployment: workers and subscribers open their own connections from it.
    pub fn new(config: RedisConfig, redis: RedisHandle, keyspace: Keyspace) -> Self {
        Self {
            config,
            redis,
            keyspace,
        }
    }

    /// The shared command handle.
    pub fn redis(&self) -> &RedisHandle {
        &self.redis
    }

    /// The keyspace every key lives under.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keyspace
    }

    fn keys(&self, topic: &str) -> TopicKeys {
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
        Producer::new(
            self.redis.clone(),
            topic.clone(),
            self.keys(topic.name()),
            codec,
        )
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
            self.redis.clone(),
            self.config.clone(),
            topic.clone(),
            self.keys(topic.name()),
            config,
            codec,
            handler,
        )
    }

    /// Queue depth of `topic`, per consumer group (a fixed number of O(1)/O(log n) commands
    /// per group: no KEYS, no SCAN).
    pub async fn stats(&self, topic: &str) -> Result<TopicStats, DispatchError> {
        check_name("topic", topic)?;
        stats::topic_stats(&self.redis, topic, &self.keys(topic)).await
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
    pub async fn replay_all(&self, topic: &str, limit: usize) -> Result<u64, DispatchError> {
        let mut replayed = 0u64;
        let mut after: Option<String> = None;
        while (replayed as usize) < limit {
            let page = self
                .dead_letters(
                    topic,
                    after.as_deref(),
                    (limit - replayed as usize).min(500),
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            for letter in &page {
                match self.replay_dead_letter(topic, &letter.id).await {
                    Ok(_) => replayed += 1,
                    // Replayed concurrently by someone else.
                    Err(DispatchError::NoSuchDeadLetter(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(replayed)
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
