//! [`QueueGauges`]: the queue state of some topics as Prometheus gauges, served at scrape time
//! from a cached snapshot that a background task refreshes.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{StreamExt, TryStreamExt};
use prometheus::{
    Gauge, GaugeVec, IntCounter, IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use sluice_shared::{ConfigError, Keyspace, RedisError, RedisHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::snapshot::{self, TopicSnapshot};
use crate::{
    error::DispatchError,
    topic::{TopicKeys, check_name},
};

/// The refresh interval [`QueueGauges::spawn`] is usually given: 5 s.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Topics read at once during a refresh (each is two pipelined round trips).
const TOPICS_IN_FLIGHT: usize = 256;

/// The queue state of some topics, per consumer group, as gauges: a
/// `prometheus::core::Collector` to register into the caller's `Registry`.
///
/// **A scrape never waits on Redis.** `collect` serves the last snapshot, which a background
/// task ([`QueueGauges::spawn`]) refreshes every interval (or [`QueueGauges::refresh`], called
/// by hand). A refresh costs two pipelined round trips per topic (the topics in parallel, 256
/// at a time) and `4 + 5 x groups` O(1) / O(log n) commands per topic; a refresh that fails
/// or outlives its bound (the interval, at least 1 s) leaves the previous snapshot in place
/// and counts `sluice_jobs_gauges_refresh_errors_total`; `sluice_jobs_gauges_age_seconds`
/// says how old the served snapshot is.
///
/// | metric | labels | what |
/// |---|---|---|
/// | `sluice_jobs_stream_length` | `topic` | entries in the topic stream (`XLEN`, acknowledged ones not yet trimmed included) |
/// | `sluice_jobs_delayed` | `topic` | jobs waiting in the topic's delayed set (`ZCARD`) |
/// | `sluice_jobs_dead_letters` | `topic` | entries in the dead-letter stream (`XLEN`) |
/// | `sluice_jobs_lag` | `topic`, `group` | entries not yet delivered to the group (topic + retry stream; absent on Redis 6.2) |
/// | `sluice_jobs_pending` | `topic`, `group` | delivered, not acknowledged (`XPENDING`, topic + retry stream) |
/// | `sluice_jobs_oldest_pending_age_seconds` | `topic`, `group` | age of the oldest pending entry (0: none) |
/// | `sluice_jobs_queue_latency_seconds` | `topic`, `group` | age of the oldest topic entry not yet delivered to the group (0: none) |
/// | `sluice_jobs_retry_delayed` | `topic`, `group` | the group's retries waiting out their backoff (`ZCARD`) |
/// | `sluice_jobs_consumers` | `topic`, `group` | consumers known to the group |
/// | `sluice_jobs_gauges_age_seconds` | none | age of the served snapshot (-1: none yet) |
/// | `sluice_jobs_gauges_refresh_seconds` | none | how long the last successful refresh took |
/// | `sluice_jobs_gauges_refresh_errors_total` | none | refreshes that failed or timed out |
///
/// ```no_run
/// # async fn demo(dispatcher: sluice_dispatcher::Dispatcher) -> Result<(), Box<dyn std::error::Error>> {
/// use prometheus::Registry;
/// use sluice_dispatcher::DEFAULT_REFRESH_INTERVAL;
/// use tokio_util::sync::CancellationToken;
///
/// let registry = Registry::new();
/// let gauges = dispatcher.queue_gauges(["emails", "invoices"])?;
/// gauges.register(&registry)?;
/// let shutdown = CancellationToken::new();
/// let refresher = gauges.spawn(DEFAULT_REFRESH_INTERVAL, shutdown.clone())?;
/// // ... serve registry.gather() on /metrics ...
/// shutdown.cancel();
/// refresher.await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct QueueGauges {
    inner: Arc<State>,
}

#[derive(Debug)]
struct State {
    redis: RedisHandle,
    topics: Vec<(String, TopicKeys)>,
    stream_length: IntGaugeVec,
    delayed: IntGaugeVec,
    dead_letters: IntGaugeVec,
    lag: IntGaugeVec,
    pending: IntGaugeVec,
    oldest_pending_age: GaugeVec,
    queue_latency: GaugeVec,
    retry_delayed: IntGaugeVec,
    consumers: IntGaugeVec,
    age: Gauge,
    refresh_seconds: Gauge,
    refresh_errors: IntCounter,
    /// When the served snapshot was taken. Held while a snapshot is published and while a
    /// scrape copies it, so a scrape never sees half of one (never held across Redis calls).
    published: Mutex<Option<Instant>>,
}

fn int_vec(name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(Opts::new(name, help), labels)
}

fn float_vec(name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, prometheus::Error> {
    GaugeVec::new(Opts::new(name, help), labels)
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl QueueGauges {
    /// Gauges of `topics` (validated names) read through `redis` under `keyspace`. See
    /// [`crate::Dispatcher::queue_gauges`].
    pub(crate) fn new<I, S>(
        redis: RedisHandle,
        keyspace: &Keyspace,
        topics: I,
    ) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut named = Vec::new();
        for topic in topics {
            let topic = topic.into();
            check_name("topic", &topic)?;
            if named.iter().any(|(t, _)| *t == topic) {
                continue;
            }
            let keys = TopicKeys::new(keyspace, &topic);
            named.push((topic, keys));
        }
        Self::build(redis, named).map_err(|e| ConfigError::new("metrics", e.to_string()))
    }

    fn build(
        redis: RedisHandle,
        topics: Vec<(String, TopicKeys)>,
    ) -> Result<Self, prometheus::Error> {
        let t = &["topic"];
        let tg = &["topic", "group"];
        let age = Gauge::with_opts(Opts::new(
            "sluice_jobs_gauges_age_seconds",
            "Age of the queue-state snapshot served (-1: none yet).",
        ))?;
        age.set(-1.0);
        Ok(Self {
            inner: Arc::new(State {
                redis,
                topics,
                stream_length: int_vec(
                    "sluice_jobs_stream_length",
                    "Entries in the topic stream (XLEN), acknowledged ones not yet trimmed included.",
                    t,
                )?,
                delayed: int_vec(
                    "sluice_jobs_delayed",
                    "Jobs waiting in the topic's delayed set.",
                    t,
                )?,
                dead_letters: int_vec(
                    "sluice_jobs_dead_letters",
                    "Entries in the topic's dead-letter stream.",
                    t,
                )?,
                lag: int_vec(
                    "sluice_jobs_lag",
                    "Entries not yet delivered to the group (topic and retry stream).",
                    tg,
                )?,
                pending: int_vec(
                    "sluice_jobs_pending",
                    "Entries delivered to the group and not acknowledged (topic and retry stream).",
                    tg,
                )?,
                oldest_pending_age: float_vec(
                    "sluice_jobs_oldest_pending_age_seconds",
                    "Age of the group's oldest pending entry (0: none pending).",
                    tg,
                )?,
                queue_latency: float_vec(
                    "sluice_jobs_queue_latency_seconds",
                    "Age of the oldest topic entry not yet delivered to the group (0: none).",
                    tg,
                )?,
                retry_delayed: int_vec(
                    "sluice_jobs_retry_delayed",
                    "The group's retries waiting out their backoff.",
                    tg,
                )?,
                consumers: int_vec("sluice_jobs_consumers", "Consumers known to the group.", tg)?,
                age,
                refresh_seconds: Gauge::with_opts(Opts::new(
                    "sluice_jobs_gauges_refresh_seconds",
                    "How long the last successful queue-state refresh took.",
                ))?,
                refresh_errors: IntCounter::with_opts(Opts::new(
                    "sluice_jobs_gauges_refresh_errors_total",
                    "Queue-state refreshes that failed or timed out (the previous snapshot stays).",
                ))?,
                published: Mutex::new(None),
            }),
        })
    }

    /// Register into `registry` (never the global one).
    pub fn register(&self, registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.clone()))
    }

    /// The topics watched.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.inner.topics.iter().map(|(t, _)| t.as_str())
    }

    /// Read the queue state now and serve it from the next scrape on. On an error nothing
    /// changes (the previous snapshot stays) and the error counter goes up.
    pub async fn refresh(&self) -> Result<(), DispatchError> {
        let started = Instant::now();
        let state = self.inner.clone();
        // Owned per-topic futures (an index into the shared state), so the refresh can run in
        // a spawned task.
        let read: Result<Vec<TopicSnapshot>, DispatchError> =
            futures_util::stream::iter(0..self.inner.topics.len())
                .map(move |i| {
                    let state = state.clone();
                    async move {
                        let (topic, keys) = &state.topics[i];
                        snapshot::read_topic(&state.redis, topic, keys).await
                    }
                })
                .buffered(TOPICS_IN_FLIGHT)
                .try_collect()
                .await;
        match read {
            Ok(topics) => {
                self.publish(&topics, started);
                Ok(())
            }
            Err(e) => {
                self.inner.refresh_errors.inc();
                Err(e)
            }
        }
    }

    fn publish(&self, topics: &[TopicSnapshot], started: Instant) {
        let s = &self.inner;
        let mut published = s.published.lock().unwrap_or_else(|e| e.into_inner());
        for v in [
            &s.stream_length,
            &s.delayed,
            &s.dead_letters,
            &s.lag,
            &s.pending,
            &s.retry_delayed,
            &s.consumers,
        ] {
            v.reset();
        }
        s.oldest_pending_age.reset();
        s.queue_latency.reset();
        for t in topics {
            let topic = t.topic.as_str();
            s.stream_length
                .with_label_values(&[topic])
                .set(gauge_value(t.stream_length));
            s.delayed
                .with_label_values(&[topic])
                .set(gauge_value(t.delayed));
            s.dead_letters
                .with_label_values(&[topic])
                .set(gauge_value(t.dead_letters));
            for g in &t.groups {
                let l = &[topic, g.group.as_str()];
                if let Some(lag) = g.lag {
                    s.lag.with_label_values(l).set(gauge_value(lag));
                }
                s.pending.with_label_values(l).set(gauge_value(g.pending));
                s.oldest_pending_age
                    .with_label_values(l)
                    .set(g.oldest_pending_age.as_secs_f64());
                s.queue_latency
                    .with_label_values(l)
                    .set(g.queue_latency.as_secs_f64());
                s.retry_delayed
                    .with_label_values(l)
                    .set(gauge_value(g.retry_delayed));
                s.consumers
                    .with_label_values(l)
                    .set(gauge_value(g.consumers));
            }
        }
        s.refresh_seconds.set(started.elapsed().as_secs_f64());
        *published = Some(started);
    }

    /// Refresh every `every` (10 ms to 1 hour) until `shutdown` is cancelled, in a task of its
    /// own (must be called inside a Tokio runtime). Each refresh is bounded by `every` (at
    /// least 1 s); failures are logged and counted, and the next tick tries again.
    pub fn spawn(
        &self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, ConfigError> {
        if every < Duration::from_millis(10) || every > Duration::from_secs(3600) {
            return Err(ConfigError::new("refresh_interval", "must be 10ms to 1h"));
        }
        let gauges = self.clone();
        let bound = every.max(Duration::from_secs(1));
        Ok(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let refreshed = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    r = tokio::time::timeout(bound, gauges.refresh()) => r,
                };
                match refreshed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "queue gauges: refresh failed"),
                    Err(_) => {
                        gauges.inner.refresh_errors.inc();
                        let e = DispatchError::from(RedisError::Timeout(bound));
                        tracing::warn!(error = %e, "queue gauges: refresh timed out");
                    }
                }
            }
        }))
    }
}

impl QueueGauges {
    /// Every metric it exports, in export order.
    fn parts(&self) -> [&dyn Collector; 12] {
        let s = &self.inner;
        [
            &s.stream_length,
            &s.delayed,
            &s.dead_letters,
            &s.lag,
            &s.pending,
            &s.retry_delayed,
            &s.consumers,
            &s.oldest_pending_age,
            &s.queue_latency,
            &s.age,
            &s.refresh_seconds,
            &s.refresh_errors,
        ]
    }
}

impl Collector for QueueGauges {
    fn desc(&self) -> Vec<&Desc> {
        self.parts().into_iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.inner;
        // Only an in-memory copy under the lock: a scrape never waits on Redis.
        let published = s.published.lock().unwrap_or_else(|e| e.into_inner());
        s.age
            .set(published.map_or(-1.0, |at| at.elapsed().as_secs_f64()));
        self.parts().into_iter().flat_map(|c| c.collect()).collect()
    }
}
