//! Graceful shutdown: stop reading on cancellation, let in-flight jobs finish until the drain
//! deadline, leave the rest pending for other consumers to reclaim. Standalone and Cluster.
#![allow(clippy::unwrap_used)]

mod dispatcher_support;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use dispatcher_support::*;
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{Job, JobError, TopicConfig};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    n: u32,
    hang: bool,
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn in_flight_jobs_finish_and_unread_jobs_stay_queued(name, spec) {
        let d = dispatcher(spec, "drain").await;
        let topic = TopicConfig::new("drain").unwrap();
        let producer = d.producer::<Work>(&topic);
        let jobs: Vec<Work> = (0..10).map(|n| Work { n, hang: false }).collect();
        producer.enqueue_batch(&jobs).await.unwrap();

        let started = Arc::new(AtomicU32::new(0));
        let finished = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let worker = {
            let (started, finished, gate) = (started.clone(), finished.clone(), gate.clone());
            d.worker(
                &topic,
                fast_worker("drainers").set_concurrency(2).unwrap(),
                move |job: Job<Work>| {
                    let (started, finished, gate) =
                        (started.clone(), finished.clone(), gate.clone());
                    async move {
                        started.fetch_add(1, Ordering::SeqCst);
                        // Held until the test opens the gate (bounded).
                        let _ = tokio::time::timeout(Duration::from_secs(30), gate.acquire()).await;
                        finished.lock().unwrap().push(job.payload().n);
                        Ok::<(), JobError>(())
                    }
                },
            )
        };
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        assert!(
            eventually(Duration::from_secs(10), || async {
                started.load(Ordering::SeqCst) == 2
            })
            .await
        );
        // Cancel while two jobs are in flight, then let them finish.
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !running.is_finished(),
            "{name}: run returned before its jobs finished"
        );
        gate.add_permits(100);
        let report = tokio::time::timeout(Duration::from_secs(15), running)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(report.completed, 2, "{name}: {report:?}");
        assert_eq!(report.abandoned, 0, "{name}: {report:?}");
        assert_eq!(finished.lock().unwrap().len(), 2);
        // Nothing else was started, and nothing is left pending: the other 8 wait unread.
        assert_eq!(started.load(Ordering::SeqCst), 2, "{name}");
        let s = d.stats("drain").await.unwrap();
        let g = group(&s, "drainers");
        assert_eq!(g.pending, 0, "{name}: {g:?}");
        assert_eq!(g.lag, Some(8), "{name}: {g:?}");
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn jobs_past_the_drain_deadline_stay_pending_and_are_reclaimed(name, spec) {
        let d = dispatcher(spec, "deadline").await;
        let topic = TopicConfig::new("deadline").unwrap();
        let producer = d.producer::<Work>(&topic);
        producer.enqueue(&Work { n: 1, hang: true }).await.unwrap();

        let started = Arc::new(AtomicU32::new(0));
        let completions = Arc::new(Mutex::new(Vec::<(String, u32)>::new()));
        let make = |consumer: &str, drain: Duration| {
            let (started, completions) = (started.clone(), completions.clone());
            let config = fast_worker("slowpokes")
                .set_consumer(consumer)
                .unwrap()
                .set_visibility_timeout(Duration::from_millis(500))
                .unwrap()
                .set_shutdown_timeout(drain)
                .unwrap();
            let consumer = consumer.to_owned();
            d.worker(&topic, config, move |job: Job<Work>| {
                let (started, completions, consumer) =
                    (started.clone(), completions.clone(), consumer.clone());
                async move {
                    let first = started.fetch_add(1, Ordering::SeqCst) == 0;
                    if job.payload().hang && first {
                        // Far longer than the drain deadline (bounded anyway).
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    completions.lock().unwrap().push((consumer, job.attempt()));
                    Ok::<(), JobError>(())
                }
            })
        };
        let first_stop = CancellationToken::new();
        let first = tokio::spawn(make("first", Duration::from_millis(200)).run(first_stop.clone()));
        assert!(
            eventually(Duration::from_secs(10), || async {
                started.load(Ordering::SeqCst) == 1
            })
            .await
        );
        first_stop.cancel();
        let report = tokio::time::timeout(Duration::from_secs(15), first)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(report.abandoned, 1, "{name}: {report:?}");
        assert_eq!(report.completed, 0);
        let s = d.stats("deadline").await.unwrap();
        assert_eq!(
            group(&s, "slowpokes").pending,
            1,
            "{name}: left pending, not acknowledged"
        );

        // Another consumer reclaims it after the visibility timeout and finishes it; an
        // abandoned run is not a failed attempt.
        let second_stop = CancellationToken::new();
        let second = tokio::spawn(make("second", Duration::from_secs(5)).run(second_stop.clone()));
        assert!(
            eventually(Duration::from_secs(15), || async {
                !completions.lock().unwrap().is_empty()
            })
            .await,
            "{name}: never reclaimed"
        );
        second_stop.cancel();
        let report = second.await.unwrap().unwrap();
        assert_eq!(report.reclaimed, 1, "{name}: {report:?}");
        assert_eq!(report.completed, 1);
        assert_eq!(*completions.lock().unwrap(), vec![("second".to_owned(), 1)]);
        let s = d.stats("deadline").await.unwrap();
        assert_eq!(group(&s, "slowpokes").pending, 0, "{name}");
    }
}
