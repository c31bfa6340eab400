//! The least-privilege ACL users of docs/DEPLOY.md, proved sufficient: the test reads the
//! `ACL SETUSER` lines from that file, creates the users on a private redis-server, and runs
//! each role as its user through everything that role does. A command outside a role's list
//! is refused with `NOPERM`, naming the command.
#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, num::NonZeroU32, time::Duration};

use sluice_dispatcher::{
    Dispatcher, EnqueueOptions, Job, JobError, RetryPolicy, TopicConfig, WorkerConfig,
};
use sluice_limiter::{Check, Limiter, Rule};
use sluice_shared::{Keyspace, RedisConfig, RedisHandle};
use sluice_tests::{RedisServer, unique_prefix};
use tokio_util::sync::CancellationToken;

/// `role -> ACL SETUSER arguments` from docs/DEPLOY.md, for `prefix`; every role this test runs
/// is there.
fn documented_users(prefix: &str) -> HashMap<String, Vec<String>> {
    let users = sluice_tests::acl::documented_users(prefix);
    assert!(
        ["limiter", "producer", "worker", "monitor"]
            .iter()
            .all(|r| users.contains_key(*r)),
        "docs/DEPLOY.md lists the roles: {users:?}"
    );
    users
}

fn admin(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// The server with the documented users; the URL of each role.
fn server_with_users(prefix: &str) -> (RedisServer, HashMap<String, String>) {
    let server = RedisServer::start();
    documented_users(prefix);
    let urls = sluice_tests::acl::create_documented_users(&server.url(), server.port(), prefix);
    (server, urls)
}

fn flush_scripts(server: &RedisServer) {
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut admin(server))
        .unwrap();
}

#[tokio::test]
async fn the_limiter_role_runs_every_algorithm() {
    let prefix = unique_prefix("acl-limiter");
    let (server, urls) = server_with_users(&prefix);
    let redis = RedisHandle::connect(&RedisConfig::parse(&urls["limiter"]).unwrap())
        .await
        .unwrap();
    let limiter = Limiter::builder(redis.clone())
        .prefix(&prefix)
        .unwrap()
        .build();
    let minute = Duration::from_secs(60);
    let rules = [
        Rule::sliding_log("log", 2, minute).unwrap(),
        Rule::sliding_counter("counter", 2, minute, Duration::from_secs(6)).unwrap(),
        Rule::gcra("gcra", 2, minute, 2).unwrap(),
        Rule::fixed_window("fixed", 2, minute).unwrap(),
    ];
    for round in 0..2 {
        if round == 1 {
            flush_scripts(&server); // the NOSCRIPT reload path, as this user
        }
        for rule in &rules {
            let key = format!("k{round}");
            let mut allowed = Vec::new();
            for _ in 0..3 {
                allowed.push(limiter.check(rule, &key, 1).await.unwrap().allowed);
            }
            assert_eq!(allowed, [true, true, false], "{}", rule.name());
            assert!(!limiter.peek(rule, &key).await.unwrap().allowed);
            limiter.reset(rule, &key).await.unwrap();
            assert!(limiter.peek(rule, &key).await.unwrap().allowed);
        }
        // All four in one all-or-nothing call (the mixed script).
        let key = format!("{{mixed{round}}}");
        let checks: Vec<Check<'_>> = rules
            .iter()
            .map(|r| Check::new(r, key.as_bytes()))
            .collect();
        assert!(limiter.check_all(&checks).await.unwrap().allowed);
        assert!(limiter.peek_all(&checks).await.unwrap().allowed);
    }
    // Outside the role: refused by name.
    let mut conn = redis.clone();
    let err = redis::cmd("XADD")
        .arg(format!("{prefix}:x"))
        .arg("*")
        .arg("f")
        .arg("v")
        .query_async::<String>(&mut conn)
        .await
        .unwrap_err();
    let text = err.to_string();
    let lower = text.to_lowercase();
    assert!(
        lower.contains("noperm") && lower.contains("'xadd'"),
        "{text}"
    );
    // And outside the prefix.
    let err = redis::cmd("GET")
        .arg("someone-else:key")
        .query_async::<Option<String>>(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("noperm"), "{err}");
}

#[tokio::test]
async fn producer_and_worker_roles_run_the_job_life_cycle() {
    let prefix = unique_prefix("acl-jobs");
    let (server, urls) = server_with_users(&prefix);
    let keyspace = Keyspace::new(prefix.clone()).unwrap();
    let retry = RetryPolicy::exponential(
        NonZeroU32::new(2).unwrap(),
        Duration::from_millis(20),
        Duration::from_millis(50),
    )
    .unwrap();
    let topic = TopicConfig::new("acl").unwrap().set_retry(retry);

    let producing = Dispatcher::connect(
        RedisConfig::parse(&urls["producer"]).unwrap(),
        keyspace.clone(),
    )
    .await
    .unwrap();
    let producer = producing.producer::<String>(&topic);
    // The worker's group exists before the jobs are written (it reads from the start anyway).
    let working = Dispatcher::connect(RedisConfig::parse(&urls["worker"]).unwrap(), keyspace)
        .await
        .unwrap();

    flush_scripts(&server);
    let mut expected = Vec::new();
    for i in 0..5 {
        producer.enqueue(&format!("ok-{i}")).await.unwrap();
        expected.push(format!("ok-{i}"));
    }
    let batch: Vec<String> = (0..5).map(|i| format!("batch-{i}")).collect();
    producer.enqueue_batch(batch.iter()).await.unwrap();
    expected.extend(batch.iter().cloned());
    producer
        .enqueue_with(
            &"delayed".to_owned(),
            EnqueueOptions::new().delay(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    expected.push("delayed".to_owned());
    let dedup = EnqueueOptions::new().dedup("once", Duration::from_secs(60));
    assert!(
        producer
            .enqueue_with(&"dedup".to_owned(), dedup.clone())
            .await
            .unwrap()
            .job_id()
            .is_some()
    );
    assert!(
        producer
            .enqueue_with(&"dedup".to_owned(), dedup)
            .await
            .unwrap()
            .job_id()
            .is_none()
    );
    expected.push("dedup".to_owned());
    producer.enqueue(&"fails-once".to_owned()).await.unwrap();
    producer.enqueue(&"always-fails".to_owned()).await.unwrap();
    expected.push("fails-once".to_owned());

    // A consumer of the worker's group that takes a job and dies: the worker reclaims it
    // (XAUTOCLAIM) after the visibility timeout. Done as the worker's user too.
    let stream = format!("{prefix}:{{acl}}:stream");
    let mut raw = RedisHandle::connect(&RedisConfig::parse(&urls["worker"]).unwrap())
        .await
        .unwrap();
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut raw)
        .await
        .unwrap();
    let taken: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("died")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_ne!(taken, redis::Value::Nil, "the dead consumer took a job");

    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = working.worker(
        &topic,
        WorkerConfig::new("g")
            .unwrap()
            .set_concurrency(4)
            .unwrap()
            .set_visibility_timeout(Duration::from_millis(500))
            .unwrap(),
        move |job: Job<String>| {
            let done_tx = done_tx.clone();
            async move {
                let payload = job.payload().clone();
                match payload.as_str() {
                    "fails-once" if job.attempt() == 1 => Err(JobError::retry("first try fails")),
                    "always-fails" => Err(JobError::retry("never works")),
                    _ => {
                        let _ = done_tx.send(payload);
                        Ok(())
                    }
                }
            }
        },
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let mut done = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while done.len() < expected.len() && tokio::time::Instant::now() < deadline {
        if let Ok(Some(p)) = tokio::time::timeout(Duration::from_secs(1), done_rx.recv()).await {
            done.push(p);
        }
    }
    // The dead-letter stream, read by the admin (reading it is the monitor's job).
    let dead = format!("{prefix}:{{acl}}:dead");
    let dead_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut letters = 0u64;
    while tokio::time::Instant::now() < dead_deadline {
        letters = redis::cmd("XLEN")
            .arg(&dead)
            .query(&mut admin(&server))
            .unwrap();
        if letters > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    let report = running.await.unwrap().unwrap();
    done.sort();
    expected.sort();
    assert_eq!(done, expected, "{report:?}");
    assert_eq!(letters, 1, "always-fails is dead-lettered: {report:?}");

    // The monitor: stats, dead letters and the queue gauges, read-only.
    let monitoring = Dispatcher::connect(
        RedisConfig::parse(&urls["monitor"]).unwrap(),
        Keyspace::new(prefix.clone()).unwrap(),
    )
    .await
    .unwrap();
    let stats = monitoring.stats("acl").await.unwrap();
    assert_eq!(stats.dead_letters, 1, "{stats:?}");
    assert_eq!(
        monitoring
            .dead_letters("acl", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // The worker wrote its per-minute history as its user (a refused write is only logged
    // by the worker, so look for it here).
    let history = monitoring.history("acl", 60).await.unwrap();
    let processed: u64 = history.processed.iter().sum();
    assert!(processed >= 10, "{history:?}");
    let gauges = monitoring.queue_gauges(["acl"]).unwrap();
    gauges.refresh().await.unwrap();
    let registry = prometheus::Registry::new();
    gauges.register(&registry).unwrap();
    let families = registry.gather();
    assert!(
        families
            .iter()
            .any(|f| f.name() == "sluice_jobs_dead_letters"),
        "{families:?}"
    );
    let mut monitor_conn = RedisHandle::connect(&RedisConfig::parse(&urls["monitor"]).unwrap())
        .await
        .unwrap();
    let err = redis::cmd("XADD")
        .arg(format!("{prefix}:x"))
        .arg("*")
        .arg("f")
        .arg("v")
        .query_async::<String>(&mut monitor_conn)
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("noperm"), "{err}");
    assert!(report.retried >= 2, "{report:?}");
    assert!(report.reclaimed >= 1, "{report:?}");

    // Outside the producer's role: refused by name.
    let mut conn = RedisHandle::connect(&RedisConfig::parse(&urls["producer"]).unwrap())
        .await
        .unwrap();
    let err = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c")
        .arg("STREAMS")
        .arg(format!("{prefix}:x"))
        .arg(">")
        .query_async::<redis::Value>(&mut conn)
        .await
        .unwrap_err();
    let text = err.to_string();
    let lower = text.to_lowercase();
    assert!(
        lower.contains("noperm") && lower.contains("'xreadgroup'"),
        "{text}"
    );
}
