//! Producer, fan-out, delays, dedup, payload limits, retries, dead letters, bad input, stats
//! and retention, against real Redis: standalone and Cluster.
#![allow(clippy::unwrap_used)]

mod dispatcher_support;

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use dispatcher_support::*;
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{
    DeadReason, DispatchError, EnqueueOptions, Enqueued, Job, JobError, RetryPolicy, StartFrom,
    TopicConfig,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Task {
    n: u32,
    kind: String,
}

fn task(n: u32, kind: &str) -> Task {
    Task {
        n,
        kind: kind.to_owned(),
    }
}

type Seen = Arc<Mutex<Vec<(String, u32, u32)>>>; // (group, n, attempt)

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn fan_out_every_group_gets_every_job_once(name, spec) {
        let d = dispatcher(spec, "fanout").await;
        let topic = TopicConfig::new("orders").unwrap();
        let producer = d.producer::<Task>(&topic);
        let jobs: Vec<Task> = (0..300).map(|n| task(n, "ok")).collect();
        let results = producer.enqueue_batch(&jobs).await.unwrap();
        assert_eq!(results.len(), 300, "{name}");
        assert!(results.iter().all(|r| matches!(r, Enqueued::Queued { .. })));

        let seen: Seen = Arc::default();
        let shutdown = CancellationToken::new();
        let mut running = Vec::new();
        for group in ["billing", "shipping", "audit"] {
            for i in 0..2 {
                let seen = seen.clone();
                let config = fast_worker(group)
                    .set_consumer(format!("{group}-{i}"))
                    .unwrap()
                    .set_concurrency(4)
                    .unwrap();
                let worker = d.worker(&topic, config, move |job: Job<Task>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push((
                            job.group().to_owned(),
                            job.payload().n,
                            job.attempt(),
                        ));
                        Ok::<(), JobError>(())
                    }
                });
                running.push(tokio::spawn(worker.run(shutdown.clone())));
            }
        }
        let done = eventually(Duration::from_secs(30), || async {
            seen.lock().unwrap().len() >= 900
        })
        .await;
        assert!(
            done,
            "{name}: only {} deliveries",
            seen.lock().unwrap().len()
        );
        // A little longer: nothing more may arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        shutdown.cancel();
        let mut completed = 0;
        for r in running {
            completed += r.await.unwrap().unwrap().completed;
        }
        assert_eq!(completed, 900, "{name}");
        let seen = seen.lock().unwrap().clone();
        let mut per_group: HashMap<&str, Vec<u32>> = HashMap::new();
        for (g, n, attempt) in seen.iter() {
            assert_eq!(*attempt, 1);
            per_group.entry(g.as_str()).or_default().push(*n);
        }
        for group in ["billing", "shipping", "audit"] {
            let mut ns = per_group.remove(group).unwrap();
            ns.sort_unstable();
            assert_eq!(ns, (0..300).collect::<Vec<_>>(), "{name}: {group}");
        }
        let stats = d.stats("orders").await.unwrap();
        assert_eq!(stats.groups.len(), 3, "{name}");
        for g in &stats.groups {
            assert_eq!(g.pending, 0, "{name}: {g:?}");
            assert_eq!(g.consumers, 2);
        }
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn a_group_can_start_with_new_jobs_only(name, spec) {
        let d = dispatcher(spec, "start-new").await;
        let topic = TopicConfig::new("events").unwrap();
        let producer = d.producer::<Task>(&topic);
        for n in 0..5 {
            producer.enqueue(&task(n, "old")).await.unwrap();
        }
        let seen: Seen = Arc::default();
        let make = |group: &str, start: StartFrom| {
            let seen = seen.clone();
            d.worker(
                &topic,
                fast_worker(group).set_start(start),
                move |job: Job<Task>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock()
                            .unwrap()
                            .push((job.group().to_owned(), job.payload().n, 1));
                        Ok::<(), JobError>(())
                    }
                },
            )
        };
        let newer = make("newer", StartFrom::New);
        let older = make("older", StartFrom::Beginning);
        newer.ensure_group().await.unwrap();
        for n in 5..8 {
            producer.enqueue(&task(n, "new")).await.unwrap();
        }
        let shutdown = CancellationToken::new();
        let a = tokio::spawn(newer.run(shutdown.clone()));
        let b = tokio::spawn(older.run(shutdown.clone()));
        assert!(
            eventually(Duration::from_secs(20), || async {
                seen.lock().unwrap().len() >= 11
            })
            .await,
            "{name}"
        );
        shutdown.cancel();
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        let seen = seen.lock().unwrap();
        let mut newer: Vec<u32> = seen
            .iter()
            .filter(|s| s.0 == "newer")
            .map(|s| s.1)
            .collect();
        let mut older: Vec<u32> = seen
            .iter()
            .filter(|s| s.0 == "older")
            .map(|s| s.1)
            .collect();
        newer.sort_unstable();
        older.sort_unstable();
        assert_eq!(newer, vec![5, 6, 7], "{name}");
        assert_eq!(older, (0..8).collect::<Vec<_>>(), "{name}");
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn delayed_jobs_dedup_and_payload_limit(name, spec) {
        let d = dispatcher(spec, "delay-dedup").await;
        let topic = TopicConfig::new("mail")
            .unwrap()
            .set_max_payload_bytes(200)
            .unwrap();
        let producer = d.producer::<Task>(&topic);

        // Payload limit: a clear error, nothing written.
        let big = task(1, &"x".repeat(500));
        match producer.enqueue(&big).await {
            Err(DispatchError::PayloadTooLarge { size, limit }) => {
                assert!(size > 500);
                assert_eq!(limit, 200);
            }
            other => panic!("{name}: {other:?}"),
        }
        let batch_err = producer
            .enqueue_batch([&task(0, "small"), &big])
            .await
            .unwrap_err();
        assert!(matches!(batch_err, DispatchError::PayloadTooLarge { .. }));
        assert_eq!(d.stats("mail").await.unwrap().stream_length, 0, "{name}");

        // Dedup: the second enqueue with the same key is dropped; the key has a TTL.
        let first = producer
            .enqueue_with(
                &task(1, "welcome"),
                EnqueueOptions::new().dedup("user-1", Duration::from_secs(60)),
            )
            .await
            .unwrap();
        let second = producer
            .enqueue_with(
                &task(1, "welcome"),
                EnqueueOptions::new().dedup("user-1", Duration::from_secs(60)),
            )
            .await
            .unwrap();
        assert_eq!(
            second,
            Enqueued::Duplicate {
                existing_job_id: first.job_id().unwrap().to_owned()
            },
            "{name}"
        );
        let mut conn = handle(&d);
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key(&d, "mail", &["dedup", "user-1"]))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "{name}: dedup TTL {ttl}");
        // Another key is not a duplicate.
        let other = producer
            .enqueue_with(
                &task(2, "welcome"),
                EnqueueOptions::new().dedup("user-2", Duration::from_secs(60)),
            )
            .await
            .unwrap();
        assert!(matches!(other, Enqueued::Queued { .. }));

        // Delays: by duration (server clock) and by time; nothing runs before it is due.
        let delayed = producer
            .enqueue_with(
                &task(3, "later"),
                EnqueueOptions::new().delay(Duration::from_millis(700)),
            )
            .await
            .unwrap();
        let Enqueued::Delayed { due_ms, .. } = delayed else {
            panic!("{name}: {delayed:?}")
        };
        let at = producer
            .enqueue_with(
                &task(4, "at"),
                EnqueueOptions::new().run_at(SystemTime::now() + Duration::from_millis(500)),
            )
            .await
            .unwrap();
        assert!(matches!(at, Enqueued::Delayed { .. }));
        let past = producer
            .enqueue_with(
                &task(5, "past"),
                EnqueueOptions::new().run_at(SystemTime::now() - Duration::from_secs(5)),
            )
            .await
            .unwrap();
        assert!(matches!(past, Enqueued::Queued { .. }), "{name}: {past:?}");
        let stats = d.stats("mail").await.unwrap();
        assert_eq!(stats.delayed, 2, "{name}");
        assert_eq!(stats.stream_length, 3, "{name}");

        let ran: Arc<Mutex<HashMap<u32, u64>>> = Arc::default();
        let shutdown = CancellationToken::new();
        let worker = {
            let ran = ran.clone();
            d.worker(&topic, fast_worker("mailer"), move |job: Job<Task>| {
                let ran = ran.clone();
                async move {
                    ran.lock().unwrap().insert(job.payload().n, unix_ms_now());
                    Ok::<(), JobError>(())
                }
            })
        };
        let running = tokio::spawn(worker.run(shutdown.clone()));
        assert!(
            eventually(Duration::from_secs(20), || async {
                ran.lock().unwrap().len() >= 5
            })
            .await,
            "{name}: {:?}",
            ran.lock().unwrap()
        );
        shutdown.cancel();
        running.await.unwrap().unwrap();
        let ran = ran.lock().unwrap().clone();
        // Same machine, so the server clock and ours agree to well within 50 ms.
        assert!(
            ran[&3] + 50 >= due_ms,
            "{name}: ran at {} before due {due_ms}",
            ran[&3]
        );
        assert_eq!(d.stats("mail").await.unwrap().delayed, 0, "{name}");
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn retries_dead_letters_and_replay(name, spec) {
        let d = dispatcher(spec, "retries").await;
        let policy = RetryPolicy::exponential(
            NonZeroU32::new(3).unwrap(),
            Duration::from_millis(20),
            Duration::from_millis(100),
        )
        .unwrap();
        let topic = TopicConfig::new("payments").unwrap().set_retry(policy);
        let producer = d.producer::<Task>(&topic);
        producer.enqueue(&task(1, "always-fails")).await.unwrap();
        producer.enqueue(&task(2, "fatal")).await.unwrap();
        producer.enqueue(&task(3, "retry-after")).await.unwrap();
        producer
            .enqueue_with(
                &task(4, "no-retry-override"),
                EnqueueOptions::new().retry(RetryPolicy::no_retry()),
            )
            .await
            .unwrap();
        producer.enqueue(&task(5, "flaky")).await.unwrap();

        let seen: Seen = Arc::default();
        let replayed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let make_worker = || {
            let seen = seen.clone();
            let replayed = replayed.clone();
            d.worker(
                &topic,
                fast_worker("ledger").set_concurrency(4).unwrap(),
                move |job: Job<Task>| {
                    let seen = seen.clone();
                    let replayed = replayed.clone();
                    async move {
                        let Task { n, kind } = job.payload().clone();
                        seen.lock()
                            .unwrap()
                            .push(("ledger".into(), n, job.attempt()));
                        match kind.as_str() {
                            "always-fails"
                                if !replayed.load(std::sync::atomic::Ordering::SeqCst) =>
                            {
                                Err(JobError::retry(format!(
                                    "downstream 503 on attempt {}",
                                    job.attempt()
                                )))
                            }
                            "fatal" => Err(JobError::fatal("invalid account")),
                            "retry-after" if job.attempt() == 1 => Err(JobError::retry_after(
                                "rate limited",
                                Duration::from_millis(300),
                            )),
                            "no-retry-override" => {
                                Err(JobError::retry("would retry, but the job says no"))
                            }
                            "flaky" if job.attempt() < 3 => {
                                // `?` on any std error is a retry.
                                let parsed: Result<u32, std::num::ParseIntError> = "x".parse();
                                parsed?;
                                Ok(())
                            }
                            _ => Ok(()),
                        }
                    }
                },
            )
        };
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(make_worker().run(shutdown.clone()));
        let settled = eventually(Duration::from_secs(20), || async {
            let s = d.stats("payments").await.unwrap();
            s.dead_letters == 3
                && group(&s, "ledger").pending == 0
                && group(&s, "ledger").delayed == 0
                && seen.lock().unwrap().iter().any(|e| e.1 == 3 && e.2 == 2)
                && seen.lock().unwrap().iter().any(|e| e.1 == 5 && e.2 == 3)
        })
        .await;
        assert!(
            settled,
            "{name}: {:?} {:?}",
            d.stats("payments").await.unwrap(),
            seen.lock().unwrap()
        );
        let attempts = |n: u32| -> Vec<u32> {
            let mut a: Vec<u32> = seen
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.1 == n)
                .map(|e| e.2)
                .collect();
            a.sort_unstable();
            a
        };
        assert_eq!(
            attempts(1),
            vec![1, 2, 3],
            "{name}: exhausted after max_attempts"
        );
        assert_eq!(attempts(2), vec![1], "{name}: fatal is not retried");
        assert_eq!(attempts(3), vec![1, 2], "{name}");
        assert_eq!(
            attempts(4),
            vec![1],
            "{name}: per-job policy overrides the topic's"
        );
        assert_eq!(attempts(5), vec![1, 2, 3], "{name}");

        let letters = d.dead_letters("payments", None, 10).await.unwrap();
        assert_eq!(letters.len(), 3, "{name}");
        let by_n = |n: u32| {
            letters
                .iter()
                .find(|l| serde_json::from_slice::<Task>(&l.payload).unwrap().n == n)
                .unwrap()
                .clone()
        };
        let exhausted = by_n(1);
        assert_eq!(exhausted.reason, Some(DeadReason::Exhausted));
        assert_eq!(exhausted.attempts, 3);
        assert_eq!(exhausted.group, "ledger");
        assert_eq!(exhausted.error, "downstream 503 on attempt 3");
        assert_eq!(
            serde_json::from_slice::<Task>(&exhausted.payload).unwrap(),
            task(1, "always-fails")
        );
        let fatal = by_n(2);
        assert_eq!(fatal.reason, Some(DeadReason::Fatal));
        assert_eq!(fatal.attempts, 1);
        assert_eq!(fatal.error, "invalid account");
        assert_eq!(by_n(4).reason, Some(DeadReason::Exhausted));

        // Paging.
        let first_page = d.dead_letters("payments", None, 2).await.unwrap();
        let rest = d
            .dead_letters("payments", Some(&first_page[1].id), 10)
            .await
            .unwrap();
        assert_eq!(first_page.len() + rest.len(), 3);

        // Replay: the job runs again from attempt 1, with its id kept, in the same group only.
        replayed.store(true, std::sync::atomic::Ordering::SeqCst);
        d.replay_dead_letter("payments", &exhausted.id)
            .await
            .unwrap();
        assert!(matches!(
            d.replay_dead_letter("payments", &exhausted.id).await,
            Err(DispatchError::NoSuchDeadLetter(_))
        ));
        assert!(
            eventually(Duration::from_secs(10), || async { attempts(1).len() == 4 }).await,
            "{name}"
        );
        assert_eq!(attempts(1), vec![1, 1, 2, 3]);
        assert_eq!(d.stats("payments").await.unwrap().dead_letters, 2);
        shutdown.cancel();
        let report = running.await.unwrap().unwrap();
        assert_eq!(report.dead_lettered, 3, "{name}: {report:?}");
        assert!(report.retried >= 5, "{name}: {report:?}");
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn bad_input_and_panics_do_not_stop_the_worker(name, spec) {
        let d = dispatcher(spec, "bad-input").await;
        let policy = RetryPolicy::exponential(
            NonZeroU32::new(3).unwrap(),
            Duration::from_millis(10),
            Duration::from_millis(50),
        )
        .unwrap();
        let topic = TopicConfig::new("ingest").unwrap().set_retry(policy);
        let seen: Seen = Arc::default();
        let worker = {
            let seen = seen.clone();
            d.worker(
                &topic,
                fast_worker("parser").set_concurrency(2).unwrap(),
                move |job: Job<Task>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push((
                            "parser".into(),
                            job.payload().n,
                            job.attempt(),
                        ));
                        if job.payload().kind == "panics" && job.attempt() == 1 {
                            panic!("handler bug");
                        }
                        Ok::<(), JobError>(())
                    }
                },
            )
        };
        worker.ensure_group().await.unwrap();
        // Entries not written by a Sluice producer: a payload that is not a Task, and no
        // metadata at all.
        let mut conn = handle(&d);
        let stream = key(&d, "ingest", &["stream"]);
        let meta = r#"{"id":"bad-payload-job","attempts":0,"enqueued_at_ms":1}"#;
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("meta")
            .arg(meta)
            .arg("payload")
            .arg(&b"{\"n\": \"not a number\"}"[..])
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("junk")
            .arg("1")
            .query_async(&mut conn)
            .await
            .unwrap();
        let producer = d.producer::<Task>(&topic);
        producer.enqueue(&task(1, "panics")).await.unwrap();
        producer.enqueue(&task(2, "fine")).await.unwrap();

        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        let settled = eventually(Duration::from_secs(20), || async {
            let s = d.stats("ingest").await.unwrap();
            s.dead_letters == 2
                && seen.lock().unwrap().len() == 3
                && group(&s, "parser").pending == 0
        })
        .await;
        assert!(settled, "{name}: {:?}", seen.lock().unwrap());
        let letters = d.dead_letters("ingest", None, 10).await.unwrap();
        assert!(
            letters.iter().all(|l| l.reason == Some(DeadReason::Decode)),
            "{letters:?}"
        );
        let bad = letters
            .iter()
            .find(|l| l.job_id == "bad-payload-job")
            .unwrap();
        assert!(
            bad.error.contains("payload does not decode"),
            "{}",
            bad.error
        );
        assert_eq!(bad.payload, b"{\"n\": \"not a number\"}");
        assert!(
            letters
                .iter()
                .any(|l| l.error.contains("malformed job metadata"))
        );

        // The worker is still alive: a later job runs.
        producer.enqueue(&task(3, "after")).await.unwrap();
        assert!(
            eventually(Duration::from_secs(10), || async {
                seen.lock().unwrap().iter().any(|e| e.1 == 3)
            })
            .await,
            "{name}"
        );
        shutdown.cancel();
        let report = running.await.unwrap().unwrap();
        assert_eq!(report.completed, 3, "{name}: {report:?}");
        assert_eq!(
            report.retried, 1,
            "{name}: the panic was one failed attempt"
        );
        let panicked: Vec<u32> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.1 == 1)
            .map(|e| e.2)
            .collect();
        assert_eq!(panicked, vec![1, 2]);
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn retention_never_trims_what_a_group_still_needs(name, spec) {
        let d = dispatcher(spec, "retention").await;
        let topic = TopicConfig::new("audit").unwrap();
        let producer = d.producer::<Task>(&topic);
        let count = Arc::new(Mutex::new(HashMap::<String, u32>::new()));
        let make = |group: &str| {
            let count = count.clone();
            d.worker(
                &topic,
                fast_worker(group).set_concurrency(8).unwrap(),
                move |job: Job<Task>| {
                    let count = count.clone();
                    async move {
                        *count
                            .lock()
                            .unwrap()
                            .entry(job.group().to_owned())
                            .or_default() += 1;
                        Ok::<(), JobError>(())
                    }
                },
            )
        };
        let fast = make("fast");
        let slow = make("slow");
        fast.ensure_group().await.unwrap();
        slow.ensure_group().await.unwrap();
        let jobs: Vec<Task> = (0..200).map(|n| task(n, "a")).collect();
        producer.enqueue_batch(&jobs).await.unwrap();

        let shutdown = CancellationToken::new();
        let fast_run = tokio::spawn(fast.run(shutdown.clone()));
        assert!(
            eventually(Duration::from_secs(20), || async {
                count.lock().unwrap().get("fast") == Some(&200)
            })
            .await
        );
        // Trimming runs every second; give it a few rounds. "slow" has read nothing, so
        // nothing may go.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let s = d.stats("audit").await.unwrap();
        assert_eq!(
            s.stream_length, 200,
            "{name}: trimmed entries 'slow' has not read"
        );
        assert_eq!(group(&s, "slow").lag, Some(200), "{name}");
        assert_eq!(group(&s, "fast").lag, Some(0), "{name}");

        let slow_run = tokio::spawn(slow.run(shutdown.clone()));
        assert!(
            eventually(Duration::from_secs(20), || async {
                count.lock().unwrap().get("slow") == Some(&200)
            })
            .await
        );
        // Everyone acknowledged everything: memory goes back to (nearly) nothing. The last
        // delivered entry is kept as the trim floor.
        assert!(
            eventually(Duration::from_secs(10), || async {
                d.stats("audit").await.unwrap().stream_length <= 1
            })
            .await,
            "{name}: {:?}",
            d.stats("audit").await.unwrap()
        );
        shutdown.cancel();
        fast_run.await.unwrap().unwrap();
        slow_run.await.unwrap().unwrap();
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn stats_show_pending_lag_age_delayed_and_dead_letters(name, spec) {
        let d = dispatcher(spec, "stats").await;
        let topic = TopicConfig::new("reports")
            .unwrap()
            .set_retry(RetryPolicy::no_retry());
        // Unknown topic: empty, not an error.
        let empty = d.stats("reports").await.unwrap();
        assert_eq!((empty.stream_length, empty.groups.len()), (0, 0));

        let producer = d.producer::<Task>(&topic);
        for n in 0..4 {
            producer.enqueue(&task(n, "hold")).await.unwrap();
        }
        producer.enqueue(&task(9, "dead")).await.unwrap();
        producer
            .enqueue_with(
                &task(10, "later"),
                EnqueueOptions::new().delay(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let started = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let worker = {
            let release = release.clone();
            let started = started.clone();
            d.worker(
                &topic,
                fast_worker("render").set_concurrency(2).unwrap(),
                move |job: Job<Task>| {
                    let release = release.clone();
                    let started = started.clone();
                    async move {
                        if job.payload().kind == "dead" {
                            return Err(JobError::fatal("no template"));
                        }
                        started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        // Hold the job until the test releases it (bounded).
                        let _ =
                            tokio::time::timeout(Duration::from_secs(30), release.acquire()).await;
                        Ok(())
                    }
                },
            )
        };
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        assert!(
            eventually(Duration::from_secs(10), || async {
                started.load(std::sync::atomic::Ordering::SeqCst) == 2
            })
            .await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = d.stats("reports").await.unwrap();
        let g = group(&s, "render");
        assert_eq!(s.stream_length, 5, "{name}");
        assert_eq!(g.pending, 2, "{name}: two held jobs: {g:?}");
        assert_eq!(g.delayed, 1, "{name}");
        assert_eq!(s.delayed, 1);
        // The fatal job may or may not have been read yet: lag counts what is not delivered.
        let lag = g.lag.unwrap();
        assert!(lag == 2 || lag == 3, "{name}: lag {lag}");
        let age = g.oldest_pending_age.unwrap();
        assert!(
            age >= Duration::from_millis(100) && age < Duration::from_secs(60),
            "{age:?}"
        );
        release.add_permits(10);
        assert!(
            eventually(Duration::from_secs(10), || async {
                let s = d.stats("reports").await.unwrap();
                let g = group(&s, "render");
                g.pending == 0 && g.lag == Some(0) && g.dead_letters == 1
            })
            .await,
            "{name}: {:?}",
            d.stats("reports").await.unwrap()
        );
        let g = d.stats("reports").await.unwrap();
        assert_eq!(group(&g, "render").oldest_pending_age, None);
        shutdown.cancel();
        running.await.unwrap().unwrap();
    }
}

sluice_tests::topology_test! {
    /// An idle worker sits in its blocking read: a new job starts when it is added, not at the next
    /// poll (10 s here; housekeeping runs beside the read, never in front of it). Three jobs, spaced
    /// out, each must start well within the poll interval.
    #[tokio::test]
    async fn idle_worker_starts_new_jobs_without_waiting_for_the_poll(name, spec) {
        let d = dispatcher(spec, "idle").await;
        let topic = TopicConfig::new("pings").unwrap();
        let producer = d.producer::<Task>(&topic);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let config = sluice_dispatcher::WorkerConfig::new("idle")
            .unwrap()
            .set_poll_interval(Duration::from_secs(10))
            .unwrap()
            .set_concurrency(4)
            .unwrap();
        let worker = d.worker(&topic, config, move |job: Job<Task>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((job.payload().n, std::time::Instant::now()));
                Ok::<(), JobError>(())
            }
        });
        worker.ensure_group().await.unwrap();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        // The first job also waits out the worker's start-up (connection, script loads).
        producer.enqueue(&task(0, "warm-up")).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
        for n in 1..=3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let sent = std::time::Instant::now();
            producer.enqueue(&task(n, "ping")).await.unwrap();
            let (got, started) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, n, "{name}");
            let waited = started.duration_since(sent);
            assert!(
                waited < Duration::from_secs(2),
                "{name}: job {n} started after {waited:?} (poll interval 10s)"
            );
        }
        shutdown.cancel();
        let report = tokio::time::timeout(Duration::from_secs(15), running)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(report.completed, 4, "{name}: {report:?}");
    }
}

sluice_tests::topology_test! {
    /// Many short jobs at concurrency 50: every one runs once and is acknowledged (the
    /// acknowledgements go out in batches, after success), nothing is left pending, and the
    /// report counts what was acknowledged.
    #[tokio::test]
    async fn busy_worker_acknowledges_every_job_after_success(name, spec) {
        let d = dispatcher(spec, "busy").await;
        let topic = TopicConfig::new("bulk").unwrap();
        let producer = d.producer::<Task>(&topic);
        let counts = Arc::new(Mutex::new(HashMap::<u32, u32>::new()));
        let config = fast_worker("busy").set_concurrency(50).unwrap();
        let seen = counts.clone();
        let worker = d.worker(&topic, config, move |job: Job<Task>| {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap().entry(job.payload().n).or_default() += 1;
                Ok::<(), JobError>(())
            }
        });
        worker.ensure_group().await.unwrap();
        let jobs: Vec<Task> = (0..3000).map(|n| task(n, "ok")).collect();
        for chunk in jobs.chunks(500) {
            producer.enqueue_batch(chunk).await.unwrap();
        }
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        assert!(
            eventually(Duration::from_secs(30), || async {
                group(&d.stats("bulk").await.unwrap(), "busy").pending == 0
                    && counts.lock().unwrap().len() == 3000
            })
            .await,
            "{name}: not drained"
        );
        shutdown.cancel();
        let report = tokio::time::timeout(Duration::from_secs(15), running)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(report.completed, 3000, "{name}: {report:?}");
        let ran_once = counts.lock().unwrap().values().all(|&c| c == 1);
        assert!(ran_once, "{name}: a job ran twice");
        let s = d.stats("bulk").await.unwrap();
        assert_eq!(group(&s, "busy").pending, 0, "{name}");
        assert_eq!(group(&s, "busy").lag, Some(0), "{name}");
    }
}
