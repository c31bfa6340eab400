//! Queue gauges against real Redis, standalone and Cluster (topics spread over the nodes):
//! every gauge equals what Redis holds (`XLEN`, `XPENDING`, `XINFO GROUPS`, the delayed sorted
//! sets) and what `Dispatcher::stats` reports; a scrape serves the cached snapshot; the
//! background refresh keeps it fresh.
#![allow(clippy::unwrap_used)]

mod dispatcher_metrics_support;
mod dispatcher_support;

use std::{collections::HashMap, collections::HashSet, time::Duration};

use dispatcher_metrics_support::*;
use dispatcher_support::*;
use prometheus::Registry;
use redis::Value;
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{Dispatcher, EnqueueOptions, Job, JobError, TopicConfig};
use sluice_shared::RedisHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    n: u32,
}

const TOPICS: [&str; 6] = [
    "q-alpha",
    "q-bravo",
    "q-charlie",
    "q-delta",
    "q-echo",
    "q-fox",
];

async fn num(conn: &mut RedisHandle, cmd: &str, key: &[u8]) -> u64 {
    redis::cmd(cmd).arg(key).query_async(conn).await.unwrap()
}

/// `XPENDING key group` summary: (count, oldest id).
async fn xpending(conn: &mut RedisHandle, key: &[u8], group: &str) -> (u64, Option<String>) {
    let reply: Value = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .query_async(conn)
        .await
        .unwrap();
    let Value::Array(items) = reply else {
        panic!("XPENDING reply {reply:?}")
    };
    let count: u64 = redis::from_redis_value(items[0].clone()).unwrap();
    let oldest: Option<String> = redis::from_redis_value(items[1].clone()).unwrap();
    (count, oldest)
}

/// `XINFO GROUPS key`, by group name.
async fn xinfo_groups(
    conn: &mut RedisHandle,
    key: &[u8],
) -> HashMap<String, HashMap<String, Value>> {
    let rows: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap();
    rows.into_iter()
        .map(|r| (redis::from_redis_value(r["name"].clone()).unwrap(), r))
        .collect()
}

fn ms_of(id: &str) -> u64 {
    id.split('-').next().unwrap().parse().unwrap()
}

async fn redis_now_ms(conn: &mut RedisHandle, on: &[u8]) -> u64 {
    let (s, us): (u64, u64) = conn.query_on_node_of(redis::cmd("TIME"), on).await.unwrap();
    s * 1000 + us / 1000
}

/// Topic `i`: `i + 3` jobs and 2 delayed ones; group g1 has read 2 (pending, never
/// acknowledged) and has `i` retries waiting; g2 has read nothing; `i + 1` dead letters.
async fn fill(d: &Dispatcher, i: usize, topic: &str) {
    let config = TopicConfig::new(topic).unwrap();
    for g in ["g1", "g2"] {
        d.worker(&config, fast_worker(g), |_: Job<Task>| async {
            Ok::<(), JobError>(())
        })
        .ensure_group()
        .await
        .unwrap();
    }
    let producer = d.producer::<Task>(&config);
    let jobs: Vec<Task> = (0..i as u32 + 3).map(|n| Task { n }).collect();
    producer.enqueue_batch(&jobs).await.unwrap();
    for n in 0..2 {
        producer
            .enqueue_with(
                &Task { n },
                EnqueueOptions::new().delay(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
    }
    let mut conn = handle(d);
    let _: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g1")
        .arg("c1")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(key(d, topic, &["stream"]))
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    for r in 0..i {
        let _: u64 = redis::cmd("ZADD")
            .arg(key(d, topic, &["group", "g1", "delayed"]))
            .arg(4_000_000_000_000u64)
            .arg(format!("retry-{r}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    for r in 0..=i {
        let _: String = redis::cmd("XADD")
            .arg(key(d, topic, &["dead"]))
            .arg("*")
            .arg("job_id")
            .arg(format!("dead-{r}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn queue_gauges_equal_what_redis_holds(name, spec) {
        let d = dispatcher(spec, "metrics-gauges").await;
        let mut conn = handle(&d);
        if conn.is_cluster() {
            // The topics live on more than one node.
            let mut nodes = HashSet::new();
            for t in TOPICS {
                let mut cmd = redis::cmd("CLUSTER");
                cmd.arg("MYID");
                let id: String = conn
                    .query_on_node_of(cmd, &key(&d, t, &["stream"]))
                    .await
                    .unwrap();
                nodes.insert(id);
            }
            assert!(nodes.len() >= 2, "{name}: all topics on one node");
        }
        for (i, t) in TOPICS.iter().enumerate() {
            fill(&d, i, t).await;
        }
        let registry = Registry::new();
        let gauges = d.queue_gauges(TOPICS).unwrap();
        gauges.register(&registry).unwrap();
        // Nothing is served before the first refresh but the snapshot's age.
        let before = samples(&exposition(&registry));
        assert_eq!(value(&before, "sluice_jobs_gauges_age_seconds", &[]), Some(-1.0), "{name}");
        assert_eq!(value(&before, "sluice_jobs_stream_length", &[("topic", TOPICS[0])]), None);
        tokio::time::sleep(Duration::from_millis(300)).await;
        gauges.refresh().await.unwrap();
        let s = samples(&exposition(&registry));

        for (i, t) in TOPICS.iter().enumerate() {
            let stream = key(&d, t, &["stream"]);
            let lt = [("topic", *t)];
            let xlen = num(&mut conn, "XLEN", &stream).await;
            assert_eq!(xlen, i as u64 + 3, "{name} {t}");
            assert_eq!(count(&s, "sluice_jobs_stream_length", &lt), xlen, "{name} {t}");
            let delayed = num(&mut conn, "ZCARD", &key(&d, t, &["delayed"])).await;
            assert_eq!(delayed, 2, "{name} {t}");
            assert_eq!(count(&s, "sluice_jobs_delayed", &lt), delayed, "{name} {t}");
            let dead = num(&mut conn, "XLEN", &key(&d, t, &["dead"])).await;
            assert_eq!(count(&s, "sluice_jobs_dead_letters", &lt), dead, "{name} {t}");

            let info = xinfo_groups(&mut conn, &stream).await;
            let stats = d.stats(t).await.unwrap();
            let now = redis_now_ms(&mut conn, &stream).await;
            for g in ["g1", "g2"] {
                let l = [("topic", *t), ("group", g)];
                let retry = key(&d, t, &["group", g, "retry"]);
                let (p_topic, oldest) = xpending(&mut conn, &stream, g).await;
                let (p_retry, _) = xpending(&mut conn, &retry, g).await;
                let pending = count(&s, "sluice_jobs_pending", &l);
                assert_eq!(pending, p_topic + p_retry, "{name} {t} {g}");
                assert_eq!(pending, group(&stats, g).pending, "{name} {t} {g}");
                let lag: u64 = redis::from_redis_value(info[g]["lag"].clone()).unwrap();
                assert_eq!(count(&s, "sluice_jobs_lag", &l), lag, "{name} {t} {g}");
                assert_eq!(Some(lag), group(&stats, g).lag, "{name} {t} {g}");
                let consumers: u64 =
                    redis::from_redis_value(info[g]["consumers"].clone()).unwrap();
                assert_eq!(count(&s, "sluice_jobs_consumers", &l), consumers, "{name} {t} {g}");
                let retry_delayed =
                    num(&mut conn, "ZCARD", &key(&d, t, &["group", g, "delayed"])).await;
                assert_eq!(
                    count(&s, "sluice_jobs_retry_delayed", &l),
                    retry_delayed,
                    "{name} {t} {g}"
                );
                assert_eq!(
                    retry_delayed + delayed,
                    group(&stats, g).delayed,
                    "{name} {t} {g}"
                );
                // Ages, against the ids Redis holds (the snapshot is a few ms older).
                let age = value(&s, "sluice_jobs_oldest_pending_age_seconds", &l).unwrap();
                let expected = oldest.map_or(0.0, |id| (now - ms_of(&id)) as f64 / 1000.0);
                assert!((expected - age).abs() < 1.0, "{name} {t} {g}: {age} vs {expected}");
                // The oldest undelivered entry: g1 read 2, g2 none.
                let last: String =
                    redis::from_redis_value(info[g]["last-delivered-id"].clone()).unwrap();
                let next: Vec<(String, HashMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(format!("({last}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let latency = value(&s, "sluice_jobs_queue_latency_seconds", &l).unwrap();
                let expected = (now - ms_of(&next[0].0)) as f64 / 1000.0;
                assert!(latency >= 0.3, "{name} {t} {g}: {latency}");
                assert!((expected - latency).abs() < 1.0, "{name} {t} {g}: {latency} vs {expected}");
            }
            let g1 = [("topic", *t), ("group", "g1")];
            assert_eq!(count(&s, "sluice_jobs_pending", &g1), 2, "{name} {t}");
            assert_eq!(count(&s, "sluice_jobs_lag", &g1), i as u64 + 1, "{name} {t}");
            assert_eq!(count(&s, "sluice_jobs_consumers", &g1), 1, "{name} {t}");
            assert_eq!(count(&s, "sluice_jobs_retry_delayed", &g1), i as u64, "{name} {t}");
        }
        let age = value(&s, "sluice_jobs_gauges_age_seconds", &[]).unwrap();
        assert!((0.0..5.0).contains(&age), "{name}: {age}");

        // A scrape serves the snapshot: a new job shows after the next refresh only.
        let producer = d.producer::<Task>(&TopicConfig::new(TOPICS[0]).unwrap());
        producer.enqueue(&Task { n: 99 }).await.unwrap();
        let lt = [("topic", TOPICS[0])];
        let cached = samples(&exposition(&registry));
        assert_eq!(count(&cached, "sluice_jobs_stream_length", &lt), 3, "{name}");
        gauges.refresh().await.unwrap();
        let fresh = samples(&exposition(&registry));
        assert_eq!(count(&fresh, "sluice_jobs_stream_length", &lt), 4, "{name}");

        // The background refresh keeps it current.
        let shutdown = CancellationToken::new();
        let refresher = gauges.spawn(Duration::from_millis(50), shutdown.clone()).unwrap();
        producer.enqueue(&Task { n: 100 }).await.unwrap();
        let refreshed = eventually(Duration::from_secs(10), || async {
            let s = samples(&exposition(&registry));
            count(&s, "sluice_jobs_stream_length", &lt) == 5
        })
        .await;
        assert!(refreshed, "{name}: the background refresh did not pick up the new job");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), refresher)
            .await
            .unwrap()
            .unwrap();
        assert!(gauges.spawn(Duration::ZERO, CancellationToken::new()).is_err());
        let s = samples(&exposition(&registry));
        assert_eq!(count(&s, "sluice_jobs_gauges_refresh_errors_total", &[]), 0, "{name}");
        for t in TOPICS {
            d.delete_topic(t).await.unwrap();
        }
    }

    #[tokio::test]
    async fn gauges_of_a_topic_without_keys_are_zero(name, spec) {
        let d = dispatcher(spec, "metrics-empty").await;
        let registry = Registry::new();
        let gauges = d.queue_gauges(["nothing-here"]).unwrap();
        gauges.register(&registry).unwrap();
        gauges.refresh().await.unwrap();
        let s = samples(&exposition(&registry));
        let lt = [("topic", "nothing-here")];
        assert_eq!(value(&s, "sluice_jobs_stream_length", &lt), Some(0.0), "{name}");
        assert_eq!(value(&s, "sluice_jobs_dead_letters", &lt), Some(0.0), "{name}");
        assert!(!s.iter().any(|x| x.name == "sluice_jobs_pending"), "{name}");
        assert!(d.queue_gauges(["bad name"]).is_err());
    }
}
