//! Dispatcher metrics against real Redis, standalone and Cluster: the counters equal what
//! happened (an oracle kept by the handlers and Redis), the queue gauges equal what Redis
//! holds, and no label grows with jobs.
#![allow(clippy::unwrap_used)]

mod dispatcher_metrics_support;
mod dispatcher_support;

use std::{
    collections::BTreeSet,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use dispatcher_metrics_support::*;
use dispatcher_support::*;
use prometheus::Registry;
use redis::Value;
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{
    Dispatcher, EnqueueOptions, Enqueued, Job, JobError, RetryPolicy, TopicConfig,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    n: u32,
    kind: String,
}

fn task(n: u32) -> Task {
    let kind = match n % 10 {
        0 => "retry",
        5 => "fatal",
        _ => "ok",
    };
    Task {
        n,
        kind: kind.to_owned(),
    }
}

/// Handler runs and successes, counted by the handler itself.
#[derive(Default)]
struct Oracle {
    runs: AtomicU64,
    ok: AtomicU64,
}

/// A worker of `group` whose handler fails `retry` jobs (retryable) and `fatal` jobs (not).
fn worker(
    d: &Dispatcher,
    topic: &TopicConfig,
    group: &str,
    oracle: &Arc<Oracle>,
) -> sluice_dispatcher::Worker<Task> {
    let oracle = oracle.clone();
    d.worker(
        topic,
        fast_worker(group).set_concurrency(4).unwrap(),
        move |job: Job<Task>| {
            let oracle = oracle.clone();
            async move {
                oracle.runs.fetch_add(1, Ordering::Relaxed);
                match job.payload().kind.as_str() {
                    "retry" => Err(JobError::retry("boom")),
                    "fatal" => Err(JobError::fatal("bad job")),
                    _ => {
                        oracle.ok.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                }
            }
        },
    )
}

fn two_attempts() -> RetryPolicy {
    RetryPolicy::exponential(
        NonZeroU32::new(2).unwrap(),
        Duration::from_millis(10),
        Duration::from_millis(20),
    )
    .unwrap()
}

/// Label names and values of every `sluice_jobs_*` series, `le` (histogram buckets) aside.
fn series(samples: &[Sample]) -> BTreeSet<(String, Vec<(String, String)>)> {
    samples
        .iter()
        .filter(|s| s.name.starts_with("sluice_jobs_"))
        .map(|s| {
            let labels = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            (s.name.clone(), labels)
        })
        .collect()
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn counters_match_what_happened(name, spec) {
        let registry = Registry::new();
        let d = dispatcher(spec, "metrics-oracle")
            .await
            .with_metrics(&registry)
            .unwrap();
        let topic = TopicConfig::new("orders").unwrap().set_retry(two_attempts());
        let producer = d.producer::<Task>(&topic);
        // 60 jobs: 6 fail twice (retried once, then dead-lettered), 6 fail fatally
        // (dead-lettered at once), 48 succeed; plus one dedup'd job written once of twice.
        let jobs: Vec<Task> = (0..60).map(task).collect();
        producer.enqueue_batch(&jobs).await.unwrap();
        let dedup = || EnqueueOptions::new().dedup("once", Duration::from_secs(60));
        let first = producer.enqueue_with(&task(1), dedup()).await.unwrap();
        let second = producer.enqueue_with(&task(1), dedup()).await.unwrap();
        assert!(matches!(first, Enqueued::Queued { .. }), "{name}");
        assert!(matches!(second, Enqueued::Duplicate { .. }), "{name}");
        let (ok, retry, fatal) = (49u64, 6u64, 6u64);

        let oracle = Arc::new(Oracle::default());
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker(&d, &topic, "billing", &oracle).run(shutdown.clone()));
        let settled = eventually(Duration::from_secs(30), || async {
            let stats = d.stats("orders").await.unwrap();
            oracle.ok.load(Ordering::Relaxed) == ok
                && stats.dead_letters == retry + fatal
                && group(&stats, "billing").pending == 0
                && group(&stats, "billing").delayed == 0
        })
        .await;
        assert!(settled, "{name}: jobs did not settle: {:?}", d.stats("orders").await);
        shutdown.cancel();
        let report = running.await.unwrap().unwrap();

        let s = samples(&exposition(&registry));
        let t = [("topic", "orders")];
        let tg = [("topic", "orders"), ("group", "billing")];
        assert_eq!(count(&s, "sluice_jobs_enqueued_total", &t), 61, "{name}");
        assert_eq!(count(&s, "sluice_jobs_completed_total", &tg), ok, "{name}");
        assert_eq!(report.completed, ok, "{name}");
        // Each retry job failed twice, each fatal one once.
        assert_eq!(count(&s, "sluice_jobs_failed_total", &tg), 2 * retry + fatal, "{name}");
        assert_eq!(count(&s, "sluice_jobs_retried_total", &tg), retry, "{name}");
        assert_eq!(report.retried, retry, "{name}");
        assert_eq!(count(&s, "sluice_jobs_dead_lettered_total", &tg), retry + fatal, "{name}");
        assert_eq!(report.dead_lettered, retry + fatal, "{name}");
        assert_eq!(count(&s, "sluice_jobs_reclaimed_total", &tg), 0, "{name}");
        assert_eq!(
            count(&s, "sluice_jobs_handler_duration_seconds_count", &tg),
            oracle.runs.load(Ordering::Relaxed),
            "{name}"
        );
        assert_eq!(oracle.runs.load(Ordering::Relaxed), ok + 2 * retry + fatal, "{name}");
        assert_eq!(value(&s, "sluice_jobs_in_flight", &tg), Some(0.0), "{name}");
        // Redis agrees on the dead letters.
        let dead_len: u64 = redis::cmd("XLEN")
            .arg(key(&d, "orders", &["dead"]))
            .query_async(&mut handle(&d))
            .await
            .unwrap();
        assert_eq!(dead_len, retry + fatal, "{name}");
        d.delete_topic("orders").await.unwrap();
    }

    #[tokio::test]
    async fn reclaimed_entries_are_counted(name, spec) {
        let registry = Registry::new();
        let d = dispatcher(spec, "metrics-reclaim")
            .await
            .with_metrics(&registry)
            .unwrap();
        let topic = TopicConfig::new("stalls").unwrap();
        let oracle = Arc::new(Oracle::default());
        let config = fast_worker("g")
            .set_visibility_timeout(Duration::from_millis(300))
            .unwrap();
        let w = d.worker(&topic, config, {
            let oracle = oracle.clone();
            move |_job: Job<Task>| {
                let oracle = oracle.clone();
                async move {
                    oracle.ok.fetch_add(1, Ordering::Relaxed);
                    Ok::<(), JobError>(())
                }
            }
        });
        w.ensure_group().await.unwrap();
        let jobs: Vec<Task> = (1..=5).map(|n| Task { n, kind: "ok".into() }).collect();
        d.producer::<Task>(&topic).enqueue_batch(&jobs).await.unwrap();
        // A consumer reads the five and dies without acknowledging them.
        let read: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("dead-consumer")
            .arg("COUNT")
            .arg(5)
            .arg("STREAMS")
            .arg(key(&d, "stalls", &["stream"]))
            .arg(">")
            .query_async(&mut handle(&d))
            .await
            .unwrap();
        assert!(matches!(read, Value::Array(_) | Value::Map(_)), "{name}: {read:?}");
        tokio::time::sleep(Duration::from_millis(350)).await;

        let shutdown = CancellationToken::new();
        let running = tokio::spawn(w.run(shutdown.clone()));
        let done = eventually(Duration::from_secs(20), || async {
            oracle.ok.load(Ordering::Relaxed) == 5
                && group(&d.stats("stalls").await.unwrap(), "g").pending == 0
        })
        .await;
        assert!(done, "{name}: the stalled jobs were not reclaimed");
        shutdown.cancel();
        let report = running.await.unwrap().unwrap();
        let s = samples(&exposition(&registry));
        let tg = [("topic", "stalls"), ("group", "g")];
        assert_eq!(count(&s, "sluice_jobs_reclaimed_total", &tg), report.reclaimed, "{name}");
        assert_eq!(report.reclaimed, 5, "{name}");
        assert_eq!(count(&s, "sluice_jobs_completed_total", &tg), 5, "{name}");
        d.delete_topic("stalls").await.unwrap();
    }

    #[tokio::test]
    async fn no_label_grows_with_jobs(name, spec) {
        let registry = Registry::new();
        let d = dispatcher(spec, "metrics-labels")
            .await
            .with_metrics(&registry)
            .unwrap();
        let topic = TopicConfig::new("bounded").unwrap().set_retry(two_attempts());
        let gauges = d.queue_gauges(["bounded"]).unwrap();
        gauges.register(&registry).unwrap();
        let producer = d.producer::<Task>(&topic);
        let oracle = Arc::new(Oracle::default());
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker(&d, &topic, "audit", &oracle).run(shutdown.clone()));

        let mut seen = Vec::new();
        let mut expected_ok = 0;
        for round in [20u32, 200] {
            let jobs: Vec<Task> = (0..round).map(task).collect();
            producer.enqueue_batch(&jobs).await.unwrap();
            expected_ok += u64::from(round) * 8 / 10;
            let settled = eventually(Duration::from_secs(30), || async {
                oracle.ok.load(Ordering::Relaxed) == expected_ok
                    && group(&d.stats("bounded").await.unwrap(), "audit").delayed == 0
            })
            .await;
            assert!(settled, "{name}: round of {round} did not settle");
            gauges.refresh().await.unwrap();
            seen.push(series(&samples(&exposition(&registry))));
        }
        shutdown.cancel();
        running.await.unwrap().unwrap();
        // Ten times the jobs, the same series; every label is a topic or a group.
        assert_eq!(seen[0], seen[1], "{name}");
        for (metric, labels) in &seen[1] {
            for (k, v) in labels {
                match k.as_str() {
                    "topic" => assert_eq!(v, "bounded", "{name}: {metric}"),
                    "group" => assert_eq!(v, "audit", "{name}: {metric}"),
                    other => panic!("{name}: {metric} has label {other}={v}"),
                }
            }
        }
        assert!(seen[1].len() >= 15, "{name}: {:?}", seen[1]);
        d.delete_topic("bounded").await.unwrap();
    }
}
