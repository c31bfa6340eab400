//! The per-minute history every worker writes, and job lookup by id. Oracles: the history's
//! totals equal what the handlers did (processed = successes, failed = failed attempts), per
//! group; a looked-up job is where the test put it.
#![allow(clippy::unwrap_used)]

mod dispatcher_support;

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use dispatcher_support::{dispatcher, eventually, fast_worker, group, handle, key};
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{
    EnqueueOptions, Enqueued, Job, JobError, JobPlace, RetryPolicy, TopicConfig,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct Step {
    /// 0: succeeds; 1: fails once, then succeeds; 2: fatal.
    kind: u8,
}

fn job_id(e: Enqueued) -> String {
    match e {
        Enqueued::Queued { job_id, .. } | Enqueued::Delayed { job_id, .. } => job_id,
        other => panic!("{other:?}"),
    }
}

sluice_tests::topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_workers_counts_land_in_the_minute_history_of_their_group(name, spec) {
        let d = dispatcher(spec, "history").await;
        let policy = RetryPolicy::exponential(
            NonZeroU32::new(3).unwrap(),
            Duration::from_millis(10),
            Duration::from_millis(20),
        )
        .unwrap();
        let topic = TopicConfig::new("h").unwrap().set_retry(policy);
        let producer = d.producer::<Step>(&topic);
        let handled = Arc::new(AtomicU64::new(0));
        let failed_attempts = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        let mut running = Vec::new();
        // Two workers of group "a" (the counts of both add up) and one of group "b".
        for group_name in ["a", "a", "b"] {
            let (handled, failed_attempts) = (handled.clone(), failed_attempts.clone());
            let worker = d.worker(&topic, fast_worker(group_name), move |job: Job<Step>| {
                let (handled, failed_attempts) = (handled.clone(), failed_attempts.clone());
                async move {
                    handled.fetch_add(1, Ordering::Relaxed);
                    match (job.payload().kind, job.attempt()) {
                        (1, 1) | (2, _) => {
                            failed_attempts.fetch_add(1, Ordering::Relaxed);
                            Err(if job.payload().kind == 2 {
                                JobError::fatal("bad job")
                            } else {
                                JobError::retry("first attempt fails")
                            })
                        }
                        _ => Ok(()),
                    }
                }
            });
            worker.ensure_group().await.unwrap();
            running.push(tokio::spawn(worker.run(shutdown.clone())));
        }
        // 40 succeed, 10 fail once then succeed, 5 are fatal: per group 50 processed, 15 failed.
        for i in 0..55u32 {
            let kind = if i < 40 { 0 } else if i < 50 { 1 } else { 2 };
            producer.enqueue(&Step { kind }).await.unwrap();
        }
        assert!(eventually(Duration::from_secs(30), || async {
            let s = d.stats("h").await.unwrap();
            s.dead_letters == 10
                && ["a", "b"].iter().all(|g| {
                    let row = group(&s, g);
                    row.pending == 0 && row.lag == Some(0) && row.delayed == 0
                })
        }).await, "{name}: jobs did not finish: {:?}", d.stats("h").await);
        shutdown.cancel();
        for r in running {
            r.await.unwrap().unwrap();
        }
        assert_eq!(failed_attempts.load(Ordering::Relaxed), 30, "{name}");
        // Workers flush at shutdown: the history holds every count.
        for minutes in [60, 1440] {
            let h = d.history("h", minutes).await.unwrap();
            assert_eq!(h.processed.len(), minutes as usize, "{name}");
            assert_eq!(h.processed.iter().sum::<u64>(), 100, "{name}: {minutes}");
            assert_eq!(h.failed.iter().sum::<u64>(), 30, "{name}: {minutes}");
            let groups: Vec<(&str, u64, u64)> = h
                .groups
                .iter()
                .map(|g| (g.group.as_str(), g.processed.iter().sum(), g.failed.iter().sum()))
                .collect();
            assert_eq!(groups, vec![("a", 50, 15), ("b", 50, 15)], "{name}: {minutes}");
            // All of it in the last two minutes (the run was short).
            let recent: u64 = h.processed[minutes as usize - 2..].iter().sum();
            assert_eq!(recent, 100, "{name}");
        }
        // The hash of the current hour lives 25 hours from its last write.
        let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut handle(&d)).await.unwrap();
        let mut ttl = -2i64;
        for hour in [secs / 3600, secs / 3600 - 1] {
            let k = key(&d, "h", &["history", &hour.to_string()]);
            let t: i64 = redis::cmd("TTL").arg(k).query_async(&mut handle(&d)).await.unwrap();
            ttl = ttl.max(t);
        }
        assert!((89_000..=90_000).contains(&ttl), "{name}: ttl {ttl}");
        // Bad windows are refused; a topic without history reads zeros.
        assert!(d.history("h", 0).await.is_err(), "{name}");
        assert!(d.history("h", 1441).await.is_err(), "{name}");
        let empty = d.history("nothing-here", 5).await.unwrap();
        assert_eq!(empty.processed, vec![0; 5], "{name}");
        assert!(empty.groups.is_empty(), "{name}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_is_found_where_it_is(name, spec) {
        let d = dispatcher(spec, "lookup").await;
        let topic = TopicConfig::new("l").unwrap();
        let producer = d.producer::<Step>(&topic);
        let gate = Arc::new(Semaphore::new(0));
        let worker = {
            let gate = gate.clone();
            d.worker(&topic, fast_worker("g").set_consumer("c-1").unwrap(), move |job: Job<Step>| {
                let gate = gate.clone();
                async move {
                    match job.payload().kind {
                        2 => Err(JobError::fatal("bad job")),
                        _ => {
                            let _p = gate.acquire().await.map_err(|e| JobError::retry(e.to_string()))?;
                            Ok(())
                        }
                    }
                }
            })
        };
        worker.ensure_group().await.unwrap();
        let delayed = job_id(
            producer
                .enqueue_with(&Step { kind: 0 }, EnqueueOptions::new().delay(Duration::from_secs(3600)))
                .await
                .unwrap(),
        );
        let dead = job_id(producer.enqueue(&Step { kind: 2 }).await.unwrap());
        let held = job_id(producer.enqueue(&Step { kind: 0 }).await.unwrap());
        // Waiting: not yet read by anyone.
        let loc = d.locate_job("l", &held).await.unwrap();
        assert!(matches!(&loc.places[..], [JobPlace::Waiting { group, retry: false, .. }] if group == "g"), "{name}: {loc:?}");

        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        assert!(eventually(Duration::from_secs(10), || async {
            let s = d.stats("l").await.unwrap();
            s.dead_letters == 1 && group(&s, "g").pending == 1
        }).await, "{name}");

        let loc = d.locate_job("l", &held).await.unwrap();
        assert!(matches!(&loc.places[..], [JobPlace::Pending { group, consumer, deliveries: 1, .. }] if group == "g" && consumer == "c-1"), "{name}: {loc:?}");
        let loc = d.locate_job("l", &delayed).await.unwrap();
        assert!(matches!(&loc.places[..], [JobPlace::Delayed { group: None, attempts: 0, .. }]), "{name}: {loc:?}");
        let loc = d.locate_job("l", &dead).await.unwrap();
        let letters = d.dead_letters("l", None, 10).await.unwrap();
        // Dead; until the stream is trimmed (every second) its entry also shows as done there.
        let dead_places: Vec<&JobPlace> = loc
            .places
            .iter()
            .filter(|p| !matches!(p, JobPlace::Acknowledged { group, .. } if group == "g"))
            .collect();
        assert!(matches!(&dead_places[..], [JobPlace::Dead { dead_letter_id, group, error, .. }]
            if *dead_letter_id == letters[0].id && group == "g" && error == "bad job"), "{name}: {loc:?}");
        let loc = d.locate_job("l", "0123456789abcdef").await.unwrap();
        assert!(loc.places.is_empty(), "{name}: {loc:?}");

        // Done: acknowledged (the stream keeps its last delivered entry; trimmed ones are held
        // nowhere).
        gate.add_permits(1);
        assert!(eventually(Duration::from_secs(10), || async {
            matches!(&d.locate_job("l", &held).await.unwrap().places[..],
                [JobPlace::Acknowledged { group, .. }] if group == "g")
        }).await, "{name}: {:?}", d.locate_job("l", &held).await);
        // The next delayed jobs show it too.
        let next = d.delayed_jobs("l", 5).await.unwrap();
        assert_eq!(next.len(), 1, "{name}");
        assert_eq!(next[0].job_id, delayed, "{name}");
        // Dead letters: delete one, a second delete finds nothing, purge the rest.
        d.delete_dead_letter("l", &letters[0].id).await.unwrap();
        assert!(matches!(
            d.delete_dead_letter("l", &letters[0].id).await,
            Err(sluice_dispatcher::DispatchError::NoSuchDeadLetter(_))
        ), "{name}");
        producer.enqueue(&Step { kind: 2 }).await.unwrap();
        producer.enqueue(&Step { kind: 2 }).await.unwrap();
        assert!(eventually(Duration::from_secs(10), || async {
            d.stats("l").await.unwrap().dead_letters == 2
        }).await, "{name}");
        assert_eq!(d.purge_dead_letters("l").await.unwrap(), 2, "{name}");
        assert_eq!(d.stats("l").await.unwrap().dead_letters, 0, "{name}");
        // Topics: this one is listed.
        assert_eq!(d.topics().await.unwrap(), vec!["l".to_owned()], "{name}");
        let details = d.group_details("l").await.unwrap();
        assert_eq!(details.len(), 1, "{name}");
        assert_eq!(details[0].consumers.len(), 1, "{name}: {details:?}");
        assert_eq!(details[0].consumers[0].name, "c-1", "{name}");
        shutdown.cancel();
        running.await.unwrap().unwrap();
    }
}
