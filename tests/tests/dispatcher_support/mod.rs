//! Helpers shared by the dispatcher test files.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::{
    future::Future,
    time::{Duration, Instant},
};

use sluice_dispatcher::{Dispatcher, GroupStats, TopicStats, WorkerConfig};
use sluice_shared::{Keyspace, RedisConfig};

/// A dispatcher on `spec` under a fresh prefix.
pub async fn dispatcher(spec: &str, test: &str) -> Dispatcher {
    let config = RedisConfig::parse(spec).unwrap();
    Dispatcher::connect(
        config,
        Keyspace::new(sluice_tests::unique_prefix(test)).unwrap(),
    )
    .await
    .unwrap()
}

/// A worker config with fast timers for tests.
pub fn fast_worker(group: &str) -> WorkerConfig {
    WorkerConfig::new(group)
        .unwrap()
        .set_poll_interval(Duration::from_millis(20))
        .unwrap()
        .set_shutdown_timeout(Duration::from_secs(10))
        .unwrap()
}

/// Poll `check` every 20 ms until it returns true or `limit` passes; returns the last result.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stats row of `group`.
pub fn group<'a>(stats: &'a TopicStats, name: &str) -> &'a GroupStats {
    stats
        .groups
        .iter()
        .find(|g| g.group == name)
        .unwrap_or_else(|| panic!("no group {name} in {stats:?}"))
}

/// A command handle for looking at keys directly.
pub fn handle(d: &Dispatcher) -> sluice_shared::RedisHandle {
    d.redis().clone()
}

/// The key `<prefix>:{topic}:<parts>` of a topic.
pub fn key(d: &Dispatcher, topic: &str, parts: &[&str]) -> Vec<u8> {
    d.keyspace().key(topic.as_bytes(), parts)
}
