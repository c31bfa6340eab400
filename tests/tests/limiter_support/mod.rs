//! Helpers shared by the limiter test files.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use sluice_limiter::{Clock, Limiter, ManualClock, OutagePolicy};
use sluice_shared::{RedisConfig, RedisHandle};

pub const MS: Duration = Duration::from_millis(1);
pub const SEC: Duration = Duration::from_secs(1);

pub async fn handle(spec: &str) -> RedisHandle {
    RedisHandle::connect(&RedisConfig::parse(spec).unwrap())
        .await
        .unwrap()
}

/// A limiter on `spec` under a fresh prefix, with a manual clock starting at a round time.
pub async fn manual(spec: &str, test: &str) -> (Limiter, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000_000);
    let limiter = Limiter::builder(handle(spec).await)
        .prefix(&sluice_tests::unique_prefix(test))
        .unwrap()
        .timeout(Duration::from_secs(2))
        .unwrap()
        .clock(Clock::Manual(clock.clone()))
        .build();
    (limiter, clock)
}

/// A limiter on Redis time under a fresh prefix.
pub async fn live(spec: &str, test: &str) -> Limiter {
    Limiter::builder(handle(spec).await)
        .prefix(&sluice_tests::unique_prefix(test))
        .unwrap()
        .timeout(Duration::from_secs(2))
        .unwrap()
        .build()
}

/// A limiter whose Redis is a closed port, answering only from the local fallback.
pub fn local_only(clock: &ManualClock) -> Limiter {
    let port = sluice_tests::free_port();
    let config = RedisConfig::parse(&format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .set_connect_timeout(Duration::from_millis(50))
        .unwrap();
    Limiter::builder(RedisHandle::connect_lazy(&config).unwrap())
        .timeout(Duration::from_millis(200))
        .unwrap()
        .retry_interval(Duration::from_secs(3600))
        .unwrap()
        .on_outage(OutagePolicy::Local)
        .clock(Clock::Manual(clock.clone()))
        .build()
}
