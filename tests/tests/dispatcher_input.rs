//! What a producer is given is what it stores, or a refusal naming the field (issue 8, items 2
//! and 3): payloads kept byte for byte, delays bounded and their due time exact, a dedup TTL of
//! zero refused rather than silently disabling dedup. Standalone and Cluster.
#![allow(clippy::unwrap_used)]

mod dispatcher_support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dispatcher_support::*;
use redis::Value;
use serde_json::value::RawValue;
use sluice_dispatcher::{DispatchError, EnqueueOptions, Enqueued, MAX_DELAY, TopicConfig};

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The `payload` field of every entry of a topic's stream, as stored.
fn stored_payloads(spec: &str, d: &sluice_dispatcher::Dispatcher, topic: &str) -> Vec<Vec<u8>> {
    sluice_tests::stream_field(spec, &key(d, topic, &["stream"]), "payload")
}

fn config_field(err: &DispatchError) -> Option<&'static str> {
    match err {
        DispatchError::Config(e) => Some(e.field()),
        _ => None,
    }
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn raw_json_payloads_are_stored_verbatim(name, spec) {
        let d = dispatcher(spec, "raw").await;
        let topic = TopicConfig::new("raw").unwrap();
        let producer = d.producer::<Box<RawValue>>(&topic);
        let texts = [
            r#"{"z":1,"n":123456789012345678901234}"#,
            r#"{"b":-0,"a":1.50,"a":2}"#,
            r#"[1e400, "\u00e9", {"nested": {"y": true, "x": null}}]"#,
        ];
        for text in texts {
            let raw = RawValue::from_string(text.to_owned()).unwrap();
            producer.enqueue(&raw).await.unwrap();
        }
        // A batch takes the same path.
        let batch: Vec<Box<RawValue>> = texts
            .iter()
            .map(|t| RawValue::from_string((*t).to_owned()).unwrap())
            .collect();
        producer.enqueue_batch(&batch).await.unwrap();
        let stored = stored_payloads(spec, &d, "raw");
        let expected: Vec<&[u8]> = texts.iter().chain(&texts).map(|t| t.as_bytes()).collect();
        assert_eq!(stored, expected, "{name}");
    }

    #[tokio::test]
    async fn delays_are_bounded_and_due_times_exact(name, spec) {
        let d = dispatcher(spec, "delay-bound").await;
        let topic = TopicConfig::new("later").unwrap();
        let producer = d.producer::<u32>(&topic);

        // Beyond the bound: refused, naming the field, nothing written.
        for options in [
            EnqueueOptions::new().delay(MAX_DELAY + Duration::from_secs(1)),
            EnqueueOptions::new().delay(Duration::from_secs(10_000 * 365 * 86_400)),
            EnqueueOptions::new().delay(Duration::MAX),
        ] {
            let err = producer.enqueue_with(&1, options.clone()).await.unwrap_err();
            assert_eq!(config_field(&err), Some("delay"), "{name}: {err}");
            assert!(err.to_string().contains("365 days"), "{name}: {err}");
            assert_eq!(options.check().unwrap_err().field(), "delay");
        }
        let far = SystemTime::now() + MAX_DELAY + Duration::from_secs(60);
        let err = producer
            .enqueue_with(&1, EnqueueOptions::new().run_at(far))
            .await
            .unwrap_err();
        assert_eq!(config_field(&err), Some("run_at"), "{name}: {err}");
        let err = producer
            .enqueue_batch_with([(&1, EnqueueOptions::new().delay(Duration::MAX))])
            .await
            .unwrap_err();
        assert_eq!(config_field(&err), Some("delay"), "{name}: {err}");
        let stats = d.stats("later").await.unwrap();
        assert_eq!((stats.delayed, stats.stream_length), (0, 0), "{name}");

        // The longest delay allowed: stored, and the due time printed is the real one.
        let before = unix_ms_now();
        let done = producer
            .enqueue_with(&2, EnqueueOptions::new().delay(MAX_DELAY))
            .await
            .unwrap();
        let Enqueued::Delayed { due_ms, .. } = done else {
            panic!("{name}: {done:?}")
        };
        let max_ms = MAX_DELAY.as_millis() as u64;
        assert!(
            due_ms >= before + max_ms - 5_000 && due_ms <= unix_ms_now() + max_ms + 5_000,
            "{name}: due_ms {due_ms}"
        );
        let mut conn = handle(&d);
        let score: f64 = redis::cmd("ZRANGE")
            .arg(key(&d, "later", &["delayed"]))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async::<Vec<(Value, f64)>>(&mut conn)
            .await
            .unwrap()[0]
            .1;
        assert_eq!(score as u64, due_ms, "{name}: the stored due time");
        let at = SystemTime::now() + MAX_DELAY - Duration::from_secs(60);
        let done = producer
            .enqueue_with(&3, EnqueueOptions::new().run_at(at))
            .await
            .unwrap();
        let Enqueued::Delayed { due_ms, .. } = done else {
            panic!("{name}: {done:?}")
        };
        let at_ms = at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert_eq!(due_ms, at_ms, "{name}");
    }

    #[tokio::test]
    async fn a_zero_dedup_ttl_is_refused(name, spec) {
        let d = dispatcher(spec, "dedup-zero").await;
        let topic = TopicConfig::new("once").unwrap();
        let producer = d.producer::<u32>(&topic);
        for ttl in [Duration::ZERO, Duration::from_micros(999)] {
            let err = producer
                .enqueue_with(&1, EnqueueOptions::new().dedup("k", ttl))
                .await
                .unwrap_err();
            assert_eq!(config_field(&err), Some("dedup_ttl"), "{name}: {err}");
        }
        let err = producer
            .enqueue_with(&1, EnqueueOptions::new().dedup("k", MAX_DELAY * 2))
            .await
            .unwrap_err();
        assert_eq!(config_field(&err), Some("dedup_ttl"), "{name}: {err}");
        assert_eq!(d.stats("once").await.unwrap().stream_length, 0, "{name}");
        // 1 ms is the smallest TTL, and it works.
        let first = producer
            .enqueue_with(&1, EnqueueOptions::new().dedup("k", Duration::from_secs(30)))
            .await
            .unwrap();
        let second = producer
            .enqueue_with(&1, EnqueueOptions::new().dedup("k", Duration::from_secs(30)))
            .await
            .unwrap();
        assert!(matches!(first, Enqueued::Queued { .. }), "{name}");
        assert!(matches!(second, Enqueued::Duplicate { .. }), "{name}");
    }
}
