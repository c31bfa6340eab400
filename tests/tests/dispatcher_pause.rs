//! Pausing a consumer group: a paused worker takes no new jobs (reads nor reclaims), finishes the
//! ones it holds, and drains the backlog once resumed; other groups run on. Oracle: every job
//! completed exactly once per group, none while paused.
#![allow(clippy::unwrap_used)]

mod dispatcher_support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use dispatcher_support::{dispatcher, eventually, fast_worker, group};
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{DispatchError, Job, JobError, TopicConfig};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct Step {
    n: u32,
}

type Done = Arc<Mutex<HashMap<u32, u32>>>;

fn count(done: &Done) -> usize {
    done.lock().unwrap().len()
}

sluice_tests::topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paused_group_takes_no_new_jobs_finishes_what_it_holds_and_drains_on_resume(name, spec) {
        let d = dispatcher(spec, "pause").await;
        let topic = TopicConfig::new("work").unwrap();
        let producer = d.producer::<Step>(&topic);
        // Job 0 holds its runner until the gate opens: it is in flight when the pause lands.
        let gate = Arc::new(Semaphore::new(0));
        let done: Done = Arc::default();
        let other: Done = Arc::default();
        let worker = {
            let (gate, done) = (gate.clone(), done.clone());
            d.worker(&topic, fast_worker("paused"), move |job: Job<Step>| {
                let (gate, done) = (gate.clone(), done.clone());
                async move {
                    if job.payload().n == 0 {
                        let _permit = gate.acquire().await.map_err(|e| JobError::retry(e.to_string()))?;
                    }
                    *done.lock().unwrap().entry(job.payload().n).or_default() += 1;
                    Ok::<(), JobError>(())
                }
            })
        };
        let bystander = {
            let other = other.clone();
            d.worker(&topic, fast_worker("bystander"), move |job: Job<Step>| {
                let other = other.clone();
                async move {
                    *other.lock().unwrap().entry(job.payload().n).or_default() += 1;
                    Ok::<(), JobError>(())
                }
            })
        };
        worker.ensure_group().await.unwrap();
        bystander.ensure_group().await.unwrap();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        let running_other = tokio::spawn(bystander.run(shutdown.clone()));

        producer.enqueue(&Step { n: 0 }).await.unwrap();
        assert!(eventually(Duration::from_secs(10), || async {
            group(&d.stats("work").await.unwrap(), "paused").pending == 1
        }).await, "{name}: job 0 never started");

        d.pause_group("work", "paused").await.unwrap();
        assert!(d.is_paused("work", "paused").await.unwrap(), "{name}");
        assert!(!d.is_paused("work", "bystander").await.unwrap(), "{name}");
        // Housekeeping reads the flag every poll interval (20 ms here); give it a few.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for n in 1..=50 {
            producer.enqueue(&Step { n }).await.unwrap();
        }
        // The job it held finishes while paused.
        gate.add_permits(1);
        assert!(eventually(Duration::from_secs(10), || async {
            count(&done) == 1
        }).await, "{name}: the held job did not finish while paused");
        // The other group runs everything; the paused one takes nothing new.
        assert!(eventually(Duration::from_secs(20), || async {
            count(&other) == 51
        }).await, "{name}: the other group stopped too");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(count(&done), 1, "{name}: a paused worker took new jobs");
        let stats = d.stats("work").await.unwrap();
        let row = group(&stats, "paused");
        assert_eq!(row.pending, 0, "{name}: {row:?}");
        assert_eq!(row.lag, Some(50), "{name}: {row:?}");
        let detail = d.group_details("work").await.unwrap();
        assert!(detail.iter().any(|g| g.group == "paused" && g.paused), "{name}: {detail:?}");
        assert!(
            detail.iter().any(|g| g.group == "paused"
                && g.queue_latency.is_some_and(|l| l > Duration::ZERO)),
            "{name}: {detail:?}"
        );

        d.resume_group("work", "paused").await.unwrap();
        assert!(!d.is_paused("work", "paused").await.unwrap(), "{name}");
        assert!(eventually(Duration::from_secs(20), || async {
            count(&done) == 51
        }).await, "{name}: the backlog did not drain after resume ({} done)", count(&done));
        assert!(eventually(Duration::from_secs(10), || async {
            group(&d.stats("work").await.unwrap(), "paused").lag == Some(0)
        }).await, "{name}");
        shutdown.cancel();
        running.await.unwrap().unwrap();
        running_other.await.unwrap().unwrap();
        for (n, times) in done.lock().unwrap().iter().chain(other.lock().unwrap().iter()) {
            assert_eq!(*times, 1, "{name}: job {n} ran {times} times");
        }
    }

    #[tokio::test]
    async fn a_worker_started_while_paused_takes_nothing_and_names_are_checked(name, spec) {
        let d = dispatcher(spec, "pause-start").await;
        let topic = TopicConfig::new("work").unwrap();
        let producer = d.producer::<Step>(&topic);
        let done: Done = Arc::default();
        let worker = {
            let done = done.clone();
            d.worker(&topic, fast_worker("g"), move |job: Job<Step>| {
                let done = done.clone();
                async move {
                    *done.lock().unwrap().entry(job.payload().n).or_default() += 1;
                    Ok::<(), JobError>(())
                }
            })
        };
        worker.ensure_group().await.unwrap();
        d.pause_group("work", "g").await.unwrap();
        // Pausing twice is fine.
        d.pause_group("work", "g").await.unwrap();
        for n in 0..5 {
            producer.enqueue(&Step { n }).await.unwrap();
        }
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(count(&done), 0, "{name}");
        d.resume_group("work", "g").await.unwrap();
        assert!(eventually(Duration::from_secs(10), || async { count(&done) == 5 }).await, "{name}");
        shutdown.cancel();
        let report = running.await.unwrap().unwrap();
        assert_eq!(report.completed, 5, "{name}");
        assert!(matches!(d.pause_group("work", "a b").await, Err(DispatchError::Config(_))), "{name}");
        assert!(matches!(d.resume_group("a:b", "g").await, Err(DispatchError::Config(_))), "{name}");
    }
}
