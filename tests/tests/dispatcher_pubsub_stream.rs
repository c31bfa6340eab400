//! `Subscription` as a `Stream`: stream combinators see every message in publish order, a
//! message that does not decode is an `Err` item and the stream goes on, and cancelling the
//! subscription ends the stream. Standalone and Cluster.
#![allow(clippy::unwrap_used)]

mod dispatcher_support;

use std::time::Duration;

use dispatcher_support::*;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{DispatchError, SubscribeOptions, Subscription};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Note {
    seq: u32,
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn a_subscription_is_a_stream(name, spec) {
        let d = dispatcher(spec, "pubsub-stream").await;
        let shutdown = CancellationToken::new();
        let mut sub: Subscription<Note> =
            d.subscribe(SubscribeOptions::new().channel("news"), shutdown.clone());
        assert!(sub.wait_subscribed(1, Duration::from_secs(10)).await, "{name}");

        let publisher = d.publisher::<Note>();
        for seq in 0..20 {
            publisher.publish("news", &Note { seq }).await.unwrap();
        }
        // Bytes that are not a Note, published on the same channel.
        let channel = format!("{}:chan:news", d.keyspace().prefix());
        let _: u64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg("not json")
            .query_async(&mut handle(&d))
            .await
            .unwrap();
        publisher.publish("news", &Note { seq: 20 }).await.unwrap();

        // Combinators over the stream: the first 20, in order.
        let first: Vec<u32> = tokio::time::timeout(
            Duration::from_secs(10),
            (&mut sub).take(20).map(|m| m.unwrap().payload.seq).collect::<Vec<_>>(),
        )
        .await
        .expect("20 messages within 10s");
        assert_eq!(first, (0..20).collect::<Vec<_>>(), "{name}");
        // The undecodable one is an error item; the stream goes on.
        let bad = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(bad, Err(DispatchError::Decode(_))), "{name}: {bad:?}");
        let next = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(next.payload, Note { seq: 20 }, "{name}");
        assert_eq!(next.channel, "news", "{name}");

        // Cancelled: the stream ends.
        shutdown.cancel();
        let end = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("the stream ends within 10s of cancellation");
        assert!(end.is_none(), "{name}: {end:?}");
    }
}
