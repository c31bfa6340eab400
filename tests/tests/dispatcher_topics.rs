//! Topic administration against real Redis, standalone and Cluster: `delete_topic` removes every
//! key of a topic and nothing else; `stats` reads a missing retry stream or group as lag 0 and
//! reports any other failure on it as an error.
#![allow(clippy::unwrap_used)]

mod dispatcher_support;

use std::time::Duration;

use dispatcher_support::*;
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{DispatchError, Dispatcher, EnqueueOptions, Job, JobError, TopicConfig};
use sluice_shared::{RedisConfig, RedisError};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    n: u32,
}

/// How many of `keys` exist.
async fn existing(d: &Dispatcher, keys: &[Vec<u8>]) -> u64 {
    let mut conn = handle(d);
    let mut n = 0;
    for key in keys {
        let exists: u64 = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        n += exists;
    }
    n
}

/// Every kind of key a topic has: stream, delayed set, dead letters, a dedup marker, and a
/// group's retry stream and scheduled retries.
async fn fill(d: &Dispatcher, topic: &TopicConfig) {
    let producer = d.producer::<Step>(topic);
    producer.enqueue(&Step { n: 0 }).await.unwrap();
    producer.enqueue(&Step { n: 1 }).await.unwrap();
    producer
        .enqueue_with(
            &Step { n: 2 },
            EnqueueOptions::new().delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    producer
        .enqueue_with(
            &Step { n: 3 },
            EnqueueOptions::new().dedup("once", Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let worker = d.worker(topic, fast_worker("g"), |job: Job<Step>| async move {
        match job.payload().n {
            0 => Err(JobError::fatal("dead")),
            1 => Err(JobError::retry_after("later", Duration::from_secs(3600))),
            _ => Ok(()),
        }
    });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let name = topic.name().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || async {
            let s = d.stats(&name).await.unwrap();
            s.dead_letters == 1
                && s.group("g")
                    .is_some_and(|g| g.delayed == 2 && g.pending == 0)
        })
        .await,
        "{:?}",
        d.stats(&name).await.unwrap()
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

fn keys_of(d: &Dispatcher, topic: &str) -> Vec<Vec<u8>> {
    [
        &["stream"][..],
        &["delayed"],
        &["dead"],
        &["dedup", "once"],
        &["group", "g", "retry"],
        &["group", "g", "delayed"],
    ]
    .iter()
    .map(|parts| key(d, topic, parts))
    .collect()
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn delete_topic_removes_every_key_of_the_topic_and_no_other(name, spec) {
        let d = dispatcher(spec, "delete-topic").await;
        // "a*" is a glob pattern: deleting it must not touch "ab".
        let doomed = TopicConfig::new("a*").unwrap();
        let kept = TopicConfig::new("ab").unwrap();
        fill(&d, &doomed).await;
        fill(&d, &kept).await;
        assert_eq!(existing(&d, &keys_of(&d, "a*")).await, 6, "{name}");
        assert_eq!(existing(&d, &keys_of(&d, "ab")).await, 6, "{name}");

        // The six keys above plus the per-minute history hash the worker wrote.
        assert_eq!(d.delete_topic("a*").await.unwrap(), 7, "{name}");
        assert_eq!(existing(&d, &keys_of(&d, "a*")).await, 0, "{name}");
        assert_eq!(existing(&d, &keys_of(&d, "ab")).await, 6, "{name}");
        let s = d.stats("a*").await.unwrap();
        assert_eq!((s.stream_length, s.delayed, s.dead_letters), (0, 0, 0), "{name}");
        assert!(s.groups.is_empty(), "{name}: {s:?}");
        // Deleting again finds nothing; a bad name is refused.
        assert_eq!(d.delete_topic("a*").await.unwrap(), 0, "{name}");
        assert!(matches!(
            d.delete_topic("a b").await,
            Err(DispatchError::Config(_))
        ));
    }

    #[tokio::test]
    async fn stats_read_a_missing_retry_stream_or_group_as_lag_zero(name, spec) {
        let d = dispatcher(spec, "stats-missing").await;
        let topic = TopicConfig::new("t").unwrap();
        let producer = d.producer::<Step>(&topic);
        for n in 0..3 {
            producer.enqueue(&Step { n }).await.unwrap();
        }
        // A group made by hand: no retry stream.
        let mut conn = handle(&d);
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key(&d, "t", &["stream"]))
            .arg("byhand")
            .arg("0")
            .query_async(&mut conn)
            .await
            .unwrap();
        let s = d.stats("t").await.unwrap();
        let g = s.group("byhand").unwrap();
        assert_eq!((g.lag, g.pending), (Some(3), 0), "{name}: {g:?}");
        // A retry stream without the group on it.
        let _: String = redis::cmd("XADD")
            .arg(key(&d, "t", &["group", "byhand", "retry"]))
            .arg("*")
            .arg("x")
            .arg("1")
            .query_async(&mut conn)
            .await
            .unwrap();
        let s = d.stats("t").await.unwrap();
        assert_eq!(s.group("byhand").unwrap().lag, Some(3), "{name}: {s:?}");
    }

    #[tokio::test]
    async fn stats_report_a_failure_on_the_retry_stream(name, spec) {
        let d = dispatcher(spec, "stats-fail").await;
        let topic = TopicConfig::new("t").unwrap();
        d.producer::<Step>(&topic).enqueue(&Step { n: 0 }).await.unwrap();
        d.worker(&topic, fast_worker("g"), |_: Job<Step>| async { Ok::<(), JobError>(()) })
            .ensure_group()
            .await
            .unwrap();
        assert_eq!(d.stats("t").await.unwrap().group("g").unwrap().lag, Some(1));

        // A user that may run everything except XINFO on the retry stream (Redis 7 selector):
        // the stats call fails there, as it would in an outage, and must say so.
        let user = format!("u{:08x}", rand::random::<u32>());
        let topic_stream = String::from_utf8(key(&d, "t", &["stream"])).unwrap();
        let urls: Vec<&str> = spec.split(',').collect();
        acl(
            &urls,
            &[
                "SETUSER",
                &user,
                "on",
                ">pw",
                "+@all",
                "~*",
                "&*",
                "-xinfo",
                &format!("(+xinfo ~{topic_stream})"),
            ],
        )
        .await;
        let limited_spec = urls
            .iter()
            .map(|u| u.replacen("redis://", &format!("redis://{user}:pw@"), 1))
            .collect::<Vec<_>>()
            .join(",");
        let limited = Dispatcher::connect(
            RedisConfig::parse(&limited_spec).unwrap(),
            d.keyspace().clone(),
        )
            .await
            .unwrap();
        let result = limited.stats("t").await;
        acl(&urls, &["DELUSER", &user]).await;
        match result {
            Err(DispatchError::Redis(RedisError::Command(e))) => {
                assert_eq!(e.code(), Some("NOPERM"), "{name}: {e}");
            }
            other => panic!("{name}: expected the failure on the retry stream, got {other:?}"),
        }
    }
}

/// `ACL <args>` on every node.
async fn acl(urls: &[&str], args: &[&str]) {
    for url in urls {
        let mut c = redis::Client::open(*url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: redis::Value = redis::cmd("ACL")
            .arg(args)
            .query_async(&mut c)
            .await
            .unwrap();
    }
}
