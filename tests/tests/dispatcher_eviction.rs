//! A server that may evict keys loses queued jobs without a trace (issue 8, item 1): a
//! dispatcher refuses it on connect and a worker at start-up, unless the user opted in; a
//! policy that can't be read (ACL) is accepted; stats report the policy. Private servers only:
//! the shared ones keep their config.
#![allow(clippy::unwrap_used)]

mod dispatcher_support;

use std::time::Duration;

use dispatcher_support::*;
use sluice_dispatcher::{DispatchError, Dispatcher, DispatcherOptions, Job, JobError, TopicConfig};
use sluice_shared::{Eviction, Keyspace, RedisConfig};
use sluice_tests::{RedisCluster, RedisServer};
use tokio_util::sync::CancellationToken;

/// A user `app` (password `pw`) that may do anything but `CONFIG`, on the server at `url`.
fn add_user_without_config(url: &str) {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config",
        ])
        .query(&mut c)
        .unwrap();
}

/// `spec` with `app:pw@` in every URL.
fn as_app(spec: &str) -> String {
    spec.split(',')
        .map(|u| u.replacen("redis://", "redis://app:pw@", 1))
        .collect::<Vec<_>>()
        .join(",")
}

async fn connect(spec: &str, options: DispatcherOptions) -> Result<Dispatcher, DispatchError> {
    Dispatcher::connect_with(
        RedisConfig::parse(spec).unwrap(),
        Keyspace::new(sluice_tests::unique_prefix("evict")).unwrap(),
        options,
    )
    .await
}

fn assert_refused(err: &DispatchError, policy: &str, what: &str) {
    match err {
        DispatchError::EvictionPossible { policy: p } => assert_eq!(p, policy, "{what}"),
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
    let text = err.to_string();
    for needed in ["maxmemory-policy", policy, "noeviction", "allow_eviction"] {
        assert!(
            text.contains(needed),
            "{what}: {needed:?} missing from {text}"
        );
    }
}

/// Run one worker of `d` until it has handled one job of `topic` (or fails to start).
async fn worker_handles_a_job(d: &Dispatcher, topic: &TopicConfig) -> Result<(), DispatchError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Kept here, so a worker that refuses to start (and drops its handler) does not end `rx`.
    let _keep = tx.clone();
    let worker = d.worker(topic, fast_worker("g"), move |job: Job<u32>| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(*job.payload());
            Ok::<(), JobError>(())
        }
    });
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    d.producer::<u32>(topic).enqueue(&7).await?;
    let got = tokio::select! {
        got = rx.recv() => got,
        result = async { running.await.unwrap() } => return result.map(|_| ()),
        _ = tokio::time::sleep(Duration::from_secs(10)) => None,
    };
    shutdown.cancel();
    assert_eq!(got, Some(7), "the worker ran no job");
    Ok(())
}

/// The whole check against `spec`, whose node at `evicting` gets each policy in turn.
async fn eviction_is_refused_unless_allowed(spec: &str, evicting: &str, topology: &str) {
    let topic = TopicConfig::new("jobs").unwrap();
    // noeviction: nothing to say.
    let safe = connect(spec, DispatcherOptions::new()).await.unwrap();
    assert_eq!(safe.eviction(), Some(&Eviction::Never), "{topology}");
    assert_eq!(safe.stats("jobs").await.unwrap().eviction, Eviction::Never);

    for policy in ["allkeys-lru", "volatile-lru"] {
        sluice_tests::config_set(evicting, "maxmemory-policy", policy);
        let what = format!("{topology} {policy}");
        // Connect refuses.
        let err = connect(spec, DispatcherOptions::new()).await.unwrap_err();
        assert_refused(&err, policy, &what);
        // A worker of a dispatcher connected before the change refuses at start-up.
        let err = worker_handles_a_job(&safe, &topic).await.unwrap_err();
        assert_refused(&err, policy, &format!("{what}, worker"));
        // Stats never refuse; they say it.
        let stats = safe.stats("jobs").await.unwrap();
        assert_eq!(
            stats.eviction,
            Eviction::Possible {
                policy: policy.into()
            },
            "{what}"
        );
        let shown = serde_json::to_value(&stats).unwrap();
        assert_eq!(shown["eviction"]["status"], "possible", "{what}: {shown}");
        assert_eq!(shown["eviction"]["policy"], policy, "{what}: {shown}");
        assert_eq!(
            shown["eviction"]["safe_policy"], "noeviction",
            "{what}: {shown}"
        );
        // Opted in: connect and workers go on.
        let allowed = connect(spec, DispatcherOptions::new().allow_eviction(true))
            .await
            .unwrap();
        assert_eq!(
            allowed.eviction(),
            Some(&Eviction::Possible {
                policy: policy.into()
            }),
            "{what}"
        );
        worker_handles_a_job(&allowed, &topic).await.unwrap();
    }
    sluice_tests::config_set(evicting, "maxmemory-policy", "noeviction");
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn a_server_that_may_evict_is_refused_unless_allowed(topology, _spec) {
        if topology == "standalone" {
            let server = RedisServer::start();
            eviction_is_refused_unless_allowed(&server.url(), &server.url(), topology).await;
        } else {
            let cluster = RedisCluster::start(3);
            // One master of three that may evict is enough to lose jobs.
            let urls = cluster.urls();
            eviction_is_refused_unless_allowed(&cluster.spec(), &urls[1], topology).await;
        }
    }

    #[tokio::test]
    async fn a_policy_hidden_by_an_acl_is_accepted(topology, _spec) {
        let server;
        let cluster;
        let (spec, urls) = if topology == "standalone" {
            server = RedisServer::start();
            (server.url(), vec![server.url()])
        } else {
            cluster = RedisCluster::start(3);
            (cluster.spec(), cluster.urls())
        };
        for url in &urls {
            sluice_tests::config_set(url, "maxmemory-policy", "allkeys-lru");
            add_user_without_config(url);
        }
        let d = connect(&as_app(&spec), DispatcherOptions::new()).await.unwrap();
        let Some(Eviction::Unknown { reason }) = d.eviction() else {
            panic!("{topology}: {:?}", d.eviction());
        };
        assert!(reason.contains("NOPERM"), "{topology}: {reason}");
        worker_handles_a_job(&d, &TopicConfig::new("jobs").unwrap())
            .await
            .unwrap();
        let shown = serde_json::to_value(d.stats("jobs").await.unwrap()).unwrap();
        assert_eq!(shown["eviction"]["status"], "unknown", "{topology}: {shown}");
    }
}
