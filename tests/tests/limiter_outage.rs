//! Redis killed, frozen and restarted mid-run: the outage policy answers within the per-call
//! timeout, and calls return to Redis by themselves once it is back.
#![allow(clippy::unwrap_used)]

mod limiter_support;

use std::time::{Duration, Instant};

use sluice_limiter::{LimitError, Limiter, OutagePolicy, Rule, Source};
use sluice_shared::{RedisConfig, RedisHandle};
use sluice_tests::{RedisCluster, RedisServer};

const TIMEOUT: Duration = Duration::from_millis(100);
/// Scheduling slack on a loaded 2-core machine; the policy itself answers within TIMEOUT.
const SLACK: Duration = Duration::from_millis(400);

fn limiter(spec: &str, policy: OutagePolicy) -> Limiter {
    let config = RedisConfig::parse(spec)
        .unwrap()
        .set_connect_timeout(Duration::from_millis(100))
        .unwrap()
        .set_response_timeout(Duration::from_millis(200))
        .unwrap();
    Limiter::builder(RedisHandle::connect_lazy(&config).unwrap())
        .prefix(&sluice_tests::unique_prefix("outage"))
        .unwrap()
        .timeout(TIMEOUT)
        .unwrap()
        .retry_interval(Duration::from_millis(50))
        .unwrap()
        .on_outage(policy)
        .build()
}

async fn timed_check(
    limiter: &Limiter,
    rule: &Rule,
    key: &str,
) -> (Result<sluice_limiter::Decision, LimitError>, Duration) {
    let start = Instant::now();
    let r = limiter.check(rule, key, 1).await;
    (r, start.elapsed())
}

/// Keep checking until Redis answers again; returns how long that took.
async fn until_redis_answers(
    limiter: &Limiter,
    rule: &Rule,
    key: &str,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(d) = limiter.check(rule, key, 1).await {
            if d.source == Source::Redis {
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < limit,
            "calls did not return to Redis within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_policy_answers_while_redis_is_dead_and_recovery_is_automatic_standalone() {
    let mut server = RedisServer::start();
    let rule = Rule::sliding_log("outage", 3, Duration::from_secs(60)).unwrap();
    for policy in [
        OutagePolicy::Local,
        OutagePolicy::FailOpen,
        OutagePolicy::FailClosed,
        OutagePolicy::Error,
    ] {
        let limiter = limiter(&server.url(), policy);
        let d = limiter.check(&rule, "k", 1).await.unwrap();
        assert_eq!(d.source, Source::Redis);
        server.kill();
        for i in 0..5 {
            let (result, elapsed) = timed_check(&limiter, &rule, "k").await;
            assert!(
                elapsed <= TIMEOUT + SLACK,
                "{policy:?}: answered after {elapsed:?}"
            );
            match policy {
                OutagePolicy::Local => {
                    let d = result.unwrap();
                    assert_eq!(d.source, Source::Local);
                    // The local limiter enforces the same rule: 3 pass, then denials.
                    assert_eq!(d.allowed, i < 3, "{policy:?} call {i}");
                }
                OutagePolicy::FailOpen => {
                    let d = result.unwrap();
                    assert!(d.allowed && d.source == Source::FailOpen);
                }
                OutagePolicy::FailClosed => {
                    let d = result.unwrap();
                    assert!(!d.allowed && d.source == Source::FailClosed);
                    assert!(d.retry_after.is_some());
                }
                _ => match result {
                    Err(LimitError::Redis(e)) => assert!(e.is_unavailable(), "{e}"),
                    other => panic!("expected a typed Redis error, got {other:?}"),
                },
            }
        }
        server.restart();
        let took = until_redis_answers(&limiter, &rule, "k", Duration::from_secs(15)).await;
        eprintln!("{policy:?}: back on Redis {took:?} after the restart");
    }
}

#[tokio::test]
async fn a_frozen_redis_hits_the_timeout_not_the_caller_standalone() {
    let server = RedisServer::start();
    let limiter = limiter(&server.url(), OutagePolicy::Local);
    let rule = Rule::gcra("frozen", 100, Duration::from_secs(1), 10).unwrap();
    assert_eq!(
        limiter.check(&rule, "k", 1).await.unwrap().source,
        Source::Redis
    );
    let pid = server.pid().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let (result, elapsed) = timed_check(&limiter, &rule, "k").await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    let d = result.unwrap();
    assert_eq!(d.source, Source::Local);
    assert!(elapsed <= TIMEOUT + SLACK, "answered after {elapsed:?}");
    until_redis_answers(&limiter, &rule, "k", Duration::from_secs(15)).await;
}

#[tokio::test]
async fn a_node_killed_and_restarted_cluster() {
    let mut cluster = RedisCluster::start(3);
    let limiter = limiter(&cluster.spec(), OutagePolicy::FailClosed);
    let rule = Rule::sliding_counter(
        "outage",
        100,
        Duration::from_secs(1),
        Duration::from_millis(100),
    )
    .unwrap();
    assert_eq!(
        limiter.check(&rule, "k", 1).await.unwrap().source,
        Source::Redis
    );
    let node = cluster.node_for_slot(sluice_shared::slot(&limiter.redis_key(&rule, "k")));
    cluster.node_mut(node).kill();
    for _ in 0..3 {
        let (result, elapsed) = timed_check(&limiter, &rule, "k").await;
        let d = result.unwrap();
        assert_eq!(d.source, Source::FailClosed);
        assert!(elapsed <= TIMEOUT + SLACK, "answered after {elapsed:?}");
    }
    cluster.node_mut(node).restart();
    cluster.wait_healthy(Duration::from_secs(30));
    let took = until_redis_answers(&limiter, &rule, "k", Duration::from_secs(30)).await;
    eprintln!("cluster: back on Redis {took:?} after the node restarted");
}

/// The coalescing task runs on the runtime that first used the limiter. When that runtime
/// shuts down, later checks can't be coalesced: the outage policy answers them as it would an
/// unavailable Redis, and under `OutagePolicy::Error` the caller gets a typed error that says
/// so (not a protocol error).
#[test]
fn a_stopped_coalescer_falls_to_the_outage_policy_standalone() {
    let spec = sluice_tests::standalone_url();
    let rule = Rule::sliding_log("coalescer", 3, Duration::from_secs(60)).unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    for policy in [
        OutagePolicy::Local,
        OutagePolicy::FailOpen,
        OutagePolicy::FailClosed,
        OutagePolicy::Error,
    ] {
        let first = runtime();
        let limiter = first.block_on(async {
            let limiter = limiter(&spec, policy);
            let d = limiter.check(&rule, "k", 1).await.unwrap();
            assert_eq!(d.source, Source::Redis, "{policy:?}");
            limiter
        });
        // Ends the coalescing task the first check started.
        drop(first);
        let result = runtime().block_on(limiter.check(&rule, "k", 1));
        match policy {
            OutagePolicy::Local => {
                let d = result.unwrap();
                assert!(d.allowed && d.source == Source::Local, "{d:?}");
            }
            OutagePolicy::FailOpen => {
                let d = result.unwrap();
                assert!(d.allowed && d.source == Source::FailOpen, "{d:?}");
            }
            OutagePolicy::FailClosed => {
                let d = result.unwrap();
                assert!(!d.allowed && d.source == Source::FailClosed, "{d:?}");
            }
            _ => {
                let err = result.unwrap_err();
                assert!(matches!(err, LimitError::CoalescerStopped), "{err:?}");
                assert!(err.is_unavailable());
            }
        }
    }
}
