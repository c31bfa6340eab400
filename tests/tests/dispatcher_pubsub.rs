//! Pub/sub broadcast: three subscribers all receive every message while connected, patterns
//! match, and a subscription resubscribes by itself after its server restarts. Standalone and
//! Cluster.
#![allow(clippy::unwrap_used)]

mod dispatcher_support;

use std::time::{Duration, Instant};

use dispatcher_support::*;
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{Dispatcher, SubscribeOptions, Subscription};
use sluice_shared::{Keyspace, RedisConfig};
use sluice_tests::{RedisCluster, RedisServer};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Note {
    seq: u32,
}

async fn next(sub: &mut Subscription<Note>) -> sluice_dispatcher::Message<Note> {
    tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("no message within 10s")
        .expect("subscription ended")
        .expect("message decodes")
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn three_subscribers_receive_every_message(name, spec) {
        let d = dispatcher(spec, "broadcast").await;
        let shutdown = CancellationToken::new();
        let mut subs: Vec<Subscription<Note>> = (0..3)
            .map(|_| {
                d.subscribe(
                    SubscribeOptions::new().channel("news").pattern("alerts.*"),
                    shutdown.clone(),
                )
            })
            .collect();
        for sub in &subs {
            assert!(
                sub.wait_subscribed(1, Duration::from_secs(10)).await,
                "{name}"
            );
        }
        let publisher = d.publisher::<Note>();
        for seq in 0..100 {
            publisher.publish("news", &Note { seq }).await.unwrap();
        }
        publisher
            .publish("alerts.disk", &Note { seq: 1000 })
            .await
            .unwrap();
        publisher
            .publish("elsewhere", &Note { seq: 2000 })
            .await
            .unwrap();
        // Order holds per channel; across channels it does not on a Cluster (each channel's
        // PUBLISH goes to a different node, which relays it over the cluster bus).
        for (i, sub) in subs.iter_mut().enumerate() {
            let mut news = Vec::new();
            let mut alerts = Vec::new();
            for _ in 0..101 {
                let msg = next(sub).await;
                match msg.channel.as_str() {
                    "news" => {
                        assert_eq!(msg.pattern, None);
                        news.push(msg.payload.seq);
                    }
                    "alerts.disk" => {
                        assert_eq!(msg.pattern.as_deref(), Some("alerts.*"));
                        alerts.push(msg.payload.seq);
                    }
                    other => panic!("{name}: subscriber {i} got {other}"),
                }
            }
            assert_eq!(news, (0..100).collect::<Vec<_>>(), "{name}: subscriber {i}");
            assert_eq!(alerts, vec![1000], "{name}: subscriber {i}");
        }
        // A message that does not decode is an error item; the subscription goes on.
        let mut conn = handle(&d);
        let channel = format!("{}:chan:news", d.keyspace().prefix());
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg("not json")
            .query_async(&mut conn)
            .await
            .unwrap();
        publisher.publish("news", &Note { seq: 7 }).await.unwrap();
        for sub in subs.iter_mut() {
            let bad = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .unwrap()
                .unwrap();
            assert!(bad.is_err());
            assert_eq!(next(sub).await.payload.seq, 7);
        }
        // Cancelling ends the subscriptions.
        shutdown.cancel();
        for sub in subs.iter_mut() {
            let end = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if sub.recv().await.is_none() {
                        break;
                    }
                }
            })
            .await;
            assert!(end.is_ok(), "{name}");
        }
    }
}

/// Publish `seq` until the subscriber hears it (messages sent while it reconnects are lost:
/// at-most-once). Bounded in time.
async fn publish_until_heard(d: &Dispatcher, sub: &mut Subscription<Note>, seq: u32) -> bool {
    let publisher = d.publisher::<Note>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let _ = publisher.publish("news", &Note { seq }).await;
        if let Ok(Some(Ok(msg))) =
            tokio::time::timeout(Duration::from_millis(200), sub.recv()).await
        {
            if msg.payload.seq == seq {
                return true;
            }
        }
    }
    false
}

async fn resubscribes_after_restart(name: &str, spec: &str, restart: impl FnOnce()) {
    let config = RedisConfig::parse(spec)
        .unwrap()
        .set_connect_timeout(Duration::from_millis(300))
        .unwrap();
    let d = Dispatcher::connect(
        config,
        Keyspace::new(sluice_tests::unique_prefix("resub")).unwrap(),
    )
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    let mut sub: Subscription<Note> =
        d.subscribe(SubscribeOptions::new().channel("news"), shutdown.clone());
    assert!(sub.wait_subscribed(1, Duration::from_secs(10)).await);
    assert!(
        publish_until_heard(&d, &mut sub, 1).await,
        "{name}: before the restart"
    );
    restart();
    assert!(
        sub.wait_subscribed(2, Duration::from_secs(30)).await,
        "{name}: did not resubscribe"
    );
    assert!(sub.reconnects() >= 1);
    assert!(
        publish_until_heard(&d, &mut sub, 2).await,
        "{name}: after the restart"
    );
    assert!(sub.is_connected());
    shutdown.cancel();
}

#[tokio::test]
async fn subscription_resubscribes_after_the_server_restarts_standalone() {
    // A private server we may kill.
    let mut server = RedisServer::start();
    let url = server.url();
    resubscribes_after_restart("standalone", &url, || server.restart()).await;
}

#[tokio::test]
async fn subscription_resubscribes_after_the_server_restarts_cluster() {
    // A private 3-master cluster; the subscriber sits on the first seed node, which is killed
    // and restarted (it keeps its identity and slots).
    let mut cluster = RedisCluster::start(3);
    let spec = cluster.spec();
    let restart = || {
        cluster.node_mut(0).restart();
        cluster.wait_healthy(Duration::from_secs(30));
    };
    resubscribes_after_restart("cluster", &spec, restart).await;
}
