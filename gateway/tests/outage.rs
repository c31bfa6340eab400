//! Redis killed under a running service: every domain answers by its outage policy within the
//! per-call timeout, `/healthz` says 503, and after a restart Redis answers again. On a
//! private standalone server the test owns (killed by the fixture on drop).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use sluice_gateway::{OutagePolicy, ServiceOptions};
use sluice_tests::RedisServer;
use support::*;

const OK: i32 = 1;
const OVER: i32 = 2;

fn domain(name: &str) -> String {
    format!(
        "domain: {name}\ndescriptors:\n  - key: k\n    rate_limit: {{unit: hour, requests_per_unit: 2}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_answers_per_policy_then_recovers() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    for name in ["open", "closed", "local"] {
        std::fs::write(dir.path().join(format!("{name}.yaml")), domain(name)).unwrap();
    }
    let mut options: ServiceOptions = options("outage");
    options.timeout = Duration::from_millis(100);
    options.retry_interval = Duration::from_millis(200);
    options
        .domain_outage
        .insert("closed".to_owned(), OutagePolicy::FailClosed);
    options
        .domain_outage
        .insert("local".to_owned(), OutagePolicy::Local);
    // One file per domain, loaded as a directory.
    let handle = sluice_shared::RedisHandle::connect_lazy(
        &sluice_shared::RedisConfig::parse(&redis.url()).unwrap(),
    )
    .unwrap();
    let server = start_with(handle, &domain("placeholder"), options).await;
    server.service.reload(dir.path()).unwrap();
    let mut c = server.client().await;
    let ask = |c: &mut Client, d: &'static str| {
        let mut c = c.clone();
        async move {
            let started = Instant::now();
            let r = call(&mut c, request(d, vec![desc(&[("k", "v")])])).await;
            (r, started.elapsed())
        }
    };
    for d in ["open", "closed", "local"] {
        let (r, _) = ask(&mut c, d).await;
        assert_eq!(
            (r.overall_code, r.statuses[0].limit_remaining),
            (OK, 1),
            "{d}"
        );
    }
    assert_eq!(http_get(server.http, "/healthz").await.status, 200);

    redis.kill();
    // Within the timeout (plus scheduling slack), by policy.
    let bound = Duration::from_millis(100 + 900);
    for round in 0..3 {
        let (open, took) = ask(&mut c, "open").await;
        assert_eq!(open.overall_code, OK, "round {round}");
        assert!(took < bound, "fail-open took {took:?}");
        let (closed, took) = ask(&mut c, "closed").await;
        assert_eq!(closed.overall_code, OVER, "round {round}");
        assert!(took < bound, "fail-closed took {took:?}");
        assert!(header(&closed, "Retry-After").is_some(), "{closed:?}");
    }
    // The local limiter counts on its own: 2 per hour in this process.
    let mut local = Vec::new();
    for _ in 0..3 {
        let (r, took) = ask(&mut c, "local").await;
        assert!(took < bound, "local took {took:?}");
        local.push(r.overall_code);
    }
    assert_eq!(local, [OK, OK, OVER]);
    let h = http_get(server.http, "/healthz").await;
    assert_eq!(h.status, 503, "{h:?}");
    assert!(
        h.json()["redis_error"]
            .as_str()
            .unwrap()
            .starts_with("redis"),
        "{h:?}"
    );
    let m = http_get(server.http, "/metrics").await.body;
    for (d, policy) in [
        ("open", "fail_open"),
        ("closed", "fail_closed"),
        ("local", "local"),
    ] {
        let series =
            format!(r#"sluice_gateway_outage_answers_total{{domain="{d}",policy="{policy}"}}"#);
        assert!(sample(&m, &series).unwrap_or(0.0) >= 3.0, "{series}: {m}");
    }

    redis.restart();
    // Back to Redis: its count (1 left in 'closed') answers again.
    let recovered = eventually(Duration::from_secs(15), || {
        let mut c = c.clone();
        async move {
            let (r, _) = ask(&mut c, "closed").await;
            r.overall_code == OK
        }
    })
    .await;
    assert!(recovered, "fail-closed never recovered after the restart");
    assert!(
        eventually(Duration::from_secs(10), || async {
            http_get(server.http, "/healthz").await.status == 200
        })
        .await
    );
    server.stop().await.unwrap();
}
