//! Issue 8 #1, limiter side: on a server that may evict keys (`allkeys-lru`), a denied limiter key
//! came back allowed without a word. A limiter now reads `maxmemory-policy` once, in the
//! background, when it is built: it warns (once per process) that eviction under-counts, says
//! once when `CONFIG GET` is refused, goes on working either way, and exposes the answer.
//! Private servers only: the shared ones' configuration is never changed.
#![allow(clippy::unwrap_used)]

mod limiter_support;

use std::time::Duration;

use limiter_support::*;
use sluice_limiter::{Eviction, Limiter, Rule, Source};
use sluice_tests::{RedisCluster, RedisServer};

const WAIT: Duration = Duration::from_secs(5);

async fn limiter(spec: &str) -> Limiter {
    Limiter::builder(handle(spec).await)
        .prefix(&sluice_tests::unique_prefix("evict"))
        .unwrap()
        .build()
}

sluice_tests::topology_test! {
    /// The shared servers run with the default `noeviction`.
    #[tokio::test]
    async fn a_noeviction_server_reads_as_never(name, spec) {
        let limiter = limiter(spec).await;
        assert_eq!(
            limiter.server_eviction_within(WAIT).await,
            Some(Eviction::Never),
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_evicting_standalone_server_is_reported_and_the_limiter_goes_on() {
    let server = RedisServer::start();
    sluice_tests::config_set(&server.url(), "maxmemory-policy", "allkeys-lru");
    let limiter = limiter(&server.url()).await;
    let eviction = limiter.server_eviction_within(WAIT).await;
    assert_eq!(
        eviction,
        Some(Eviction::Possible {
            policy: "allkeys-lru".into()
        })
    );
    assert_eq!(
        limiter.server_eviction(),
        eviction,
        "kept for later readers"
    );
    let describe = eviction.unwrap().describe();
    assert!(
        describe.contains("allkeys-lru") && describe.contains("noeviction"),
        "{describe}"
    );
    let rule = Rule::sliding_log("e", 1, SEC).unwrap();
    let d = limiter.check(&rule, "k", 1).await.unwrap();
    assert!(d.allowed && d.source == Source::Redis, "{d:?}");
}

#[tokio::test]
async fn an_acl_that_refuses_config_get_reads_as_unknown_and_the_limiter_goes_on() {
    let server = RedisServer::start();
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("limited")
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("+@all")
        .arg("-config")
        .query(&mut admin)
        .unwrap();
    let url = format!("redis://limited:pw@127.0.0.1:{}", server.port());
    let limiter = limiter(&url).await;
    let eviction = limiter.server_eviction_within(WAIT).await;
    assert!(
        matches!(&eviction, Some(Eviction::Unknown { reason }) if reason.contains("NOPERM")),
        "{eviction:?}"
    );
    let rule = Rule::gcra("e", 1, SEC, 1).unwrap();
    assert!(limiter.check(&rule, "k", 1).await.unwrap().allowed);
}

/// On a Cluster every master is asked: one evicting master is enough to warn.
#[tokio::test]
async fn one_evicting_cluster_master_is_reported() {
    let cluster = RedisCluster::start(3);
    sluice_tests::config_set(&cluster.urls()[2], "maxmemory-policy", "volatile-lru");
    let limiter = limiter(&cluster.spec()).await;
    assert_eq!(
        limiter.server_eviction_within(WAIT).await,
        Some(Eviction::Possible {
            policy: "volatile-lru".into()
        })
    );
}

/// A connection that is not a Sluice handle is not asked: the answer stays `None`.
#[tokio::test]
async fn other_connection_types_are_not_asked() {
    let client = redis::Client::open(sluice_tests::standalone_url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let limiter = Limiter::builder(conn)
        .prefix(&sluice_tests::unique_prefix("evict-other"))
        .unwrap()
        .build();
    assert_eq!(
        limiter
            .server_eviction_within(Duration::from_millis(200))
            .await,
        None
    );
    let rule = Rule::gcra("e", 1, SEC, 1).unwrap();
    assert!(limiter.check(&rule, "k", 1).await.unwrap().allowed);
}
