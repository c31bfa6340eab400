//! Helpers shared by the limiter test files.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use sluice_limiter::{Clock, Limiter, ManualClock, OutagePolicy, Rule, Source};
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

/// A deterministic xorshift generator: each call `next(m)` gives a number in `0..m`.
pub fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |m| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    }
}

/// The same request on Redis and on the local mirror (`cost: None` peeks): both must answer
/// alike, field by field.
pub async fn assert_same_answer(
    remote: &Limiter,
    local: &Limiter,
    rule: &Rule,
    cost: Option<u64>,
    context: &str,
) {
    let (a, b) = match cost {
        None => (
            remote.peek(rule, "k").await.unwrap(),
            local.peek(rule, "k").await.unwrap(),
        ),
        Some(cost) => (
            remote.check(rule, "k", cost).await.unwrap(),
            local.check(rule, "k", cost).await.unwrap(),
        ),
    };
    assert_eq!(b.source, Source::Local, "{context}");
    assert_eq!(
        (a.allowed, a.remaining, a.reset_after, a.retry_after),
        (b.allowed, b.remaining, b.reset_after, b.retry_after),
        "{context} cost {cost:?}"
    );
}
