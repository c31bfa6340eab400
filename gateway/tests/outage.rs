//! Redis gone under a running service: every domain answers by its outage policy within the
//! per-call timeout, `/healthz` says 503 (standalone), and once Redis is back its counts answer
//! again. Three ways to lose it, on private servers the tests own (killed by the fixture on
//! drop): a standalone server killed (`SIGKILL`), a standalone server stalled (`SIGSTOP`: the
//! connection stays open and nothing answers, the case a timeout exists for), and the Cluster
//! nodes holding the domains killed.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use sluice_gateway::{OutagePolicy, ServiceOptions};
use sluice_tests::{RedisCluster, RedisServer};
use support::*;

const OK: i32 = 1;
const OVER: i32 = 2;
const DOMAINS: [&str; 3] = ["open", "closed", "local"];

fn domain(name: &str) -> String {
    format!(
        "domain: {name}\ndescriptors:\n  - key: k\n    rate_limit: {{unit: hour, requests_per_unit: 2}}\n"
    )
}

/// How the test loses Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    Killed,
    Stalled,
    ClusterNodesKilled,
}

/// `SIGSTOP` / `SIGCONT` to a server this test started; continued on drop, so a failing test
/// never leaves a stopped process behind (the fixture then kills it).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Self {
        signal("-STOP", pid);
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(sig: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// Starts a service over `spec` with one domain per outage policy, loses Redis by `lose`,
/// checks every answer, then `heal`s and waits for Redis' counts to answer again.
async fn answers_per_policy_then_recovers(
    spec: &str,
    loss: Loss,
    lose: impl FnOnce(),
    heal: impl FnOnce(),
) {
    let dir = tempfile::tempdir().unwrap();
    for name in DOMAINS {
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
    let handle =
        sluice_shared::RedisHandle::connect_lazy(&sluice_shared::RedisConfig::parse(spec).unwrap())
            .unwrap();
    let server = start_with(handle, &domain("placeholder"), options).await;
    // One file per domain, loaded as a directory.
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
    for d in DOMAINS {
        let (r, _) = ask(&mut c, d).await;
        assert_eq!(
            (r.overall_code, r.statuses[0].limit_remaining),
            (OK, 1),
            "{d}"
        );
    }
    if loss != Loss::ClusterNodesKilled {
        assert_eq!(http_get(server.http, "/healthz").await.status, 200);
    }

    lose();
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
    if loss != Loss::ClusterNodesKilled {
        // A Cluster may still answer PING from a node that is up.
        let h = http_get(server.http, "/healthz").await;
        assert_eq!(h.status, 503, "{h:?}");
        let reason = h.json()["redis_error"].as_str().unwrap().to_owned();
        assert!(reason.starts_with("redis"), "{h:?}");
        if loss == Loss::Stalled {
            // The connection's response timeout or /healthz's own wait, whichever fires first.
            assert!(
                reason.contains("timed out") || reason.contains("no answer within"),
                "{reason}"
            );
        }
    }
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

    heal();
    // Back to Redis: a fresh counter of 'closed' admits again (fail-closed would refuse).
    // Not the old one: calls that timed out during a stall were still queued on the socket,
    // and Redis runs them when it resumes; a timeout never tells whether a call counted.
    let recovered = eventually(Duration::from_secs(20), || {
        let mut c = c.clone();
        async move {
            let r = call(&mut c, request("closed", vec![desc(&[("k", "after")])])).await;
            r.overall_code == OK
        }
    })
    .await;
    assert!(recovered, "fail-closed never recovered after {loss:?}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            http_get(server.http, "/healthz").await.status == 200
        })
        .await
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_answers_per_policy_then_recovers() {
    let redis = std::cell::RefCell::new(RedisServer::start());
    let url = redis.borrow().url();
    answers_per_policy_then_recovers(
        &url,
        Loss::Killed,
        || redis.borrow_mut().kill(),
        || redis.borrow_mut().restart(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stalled_mid_run_answers_per_policy_then_recovers() {
    let redis = RedisServer::start();
    let pid = redis.pid().unwrap();
    let stopped = std::cell::RefCell::new(None);
    answers_per_policy_then_recovers(
        &redis.url(),
        Loss::Stalled,
        || *stopped.borrow_mut() = Some(Stopped::new(pid)),
        || drop(stopped.borrow_mut().take()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nodes_killed_mid_run_answer_per_policy_then_recover() {
    let cluster = std::cell::RefCell::new(RedisCluster::start(3));
    let spec = cluster.borrow().spec();
    // The nodes holding the domains' slots (every key of a domain shares its hash tag).
    let mut nodes: Vec<usize> = DOMAINS
        .iter()
        .map(|d| {
            let slot = sluice_shared::slot(format!("{{{d}}}").as_bytes());
            cluster.borrow().node_for_slot(slot)
        })
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    answers_per_policy_then_recovers(
        &spec,
        Loss::ClusterNodesKilled,
        || {
            for &n in &nodes {
                cluster.borrow_mut().node_mut(n).kill();
            }
        },
        || {
            for &n in &nodes {
                cluster.borrow_mut().node_mut(n).restart();
            }
            cluster.borrow().wait_healthy(Duration::from_secs(20));
        },
    )
    .await;
}
