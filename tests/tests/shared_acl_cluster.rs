//! The least-privilege users of docs/DEPLOY.md on a Redis Cluster: every node gets each role's
//! line plus the documented Cluster line, and the limiter, producer, worker and monitor run as
//! their users across the three masters. A role without the Cluster line can't even connect,
//! and says which command was refused.
#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use sluice_dispatcher::{Dispatcher, Job, JobError, TopicConfig, WorkerConfig};
use sluice_limiter::{Limiter, Rule};
use sluice_shared::{Keyspace, RedisConfig, RedisHandle};
use sluice_tests::{RedisCluster, acl, unique_prefix};
use tokio_util::sync::CancellationToken;

/// The rules docs/DEPLOY.md gives for every user on a Cluster (`ACL SETUSER <user> ...`).
fn cluster_rules() -> Vec<String> {
    let doc =
        std::fs::read_to_string(sluice_tests::workspace_root().join("docs/DEPLOY.md")).unwrap();
    let line = doc
        .lines()
        .find(|l| l.starts_with("ACL SETUSER <user> "))
        .expect("docs/DEPLOY.md gives the Cluster line `ACL SETUSER <user> ...`");
    line.split_whitespace().skip(3).map(str::to_owned).collect()
}

/// A cluster whose nodes all have the documented users, with (or without) the Cluster line;
/// `role -> comma-separated seed URLs with the role's credentials`.
fn cluster_with_users(prefix: &str, cluster_line: bool) -> (RedisCluster, HashMap<String, String>) {
    let cluster = RedisCluster::start(3);
    let mut urls: HashMap<String, Vec<String>> = HashMap::new();
    for url in cluster.urls() {
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        for (role, user_url) in acl::create_documented_users(&url, port, prefix) {
            urls.entry(role).or_default().push(user_url);
        }
        if cluster_line {
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            for args in acl::documented_users(prefix).values() {
                let () = redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg(&args[0])
                    .arg(cluster_rules())
                    .query(&mut conn)
                    .unwrap();
            }
        }
    }
    let urls = urls.into_iter().map(|(r, u)| (r, u.join(","))).collect();
    (cluster, urls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_runs_on_a_cluster_with_the_cluster_line() {
    let prefix = unique_prefix("acl-cluster");
    let (_cluster, urls) = cluster_with_users(&prefix, true);

    // The limiter, on keys spread over the three masters.
    let redis = RedisHandle::connect(&RedisConfig::parse(&urls["limiter"]).unwrap())
        .await
        .unwrap();
    assert!(redis.is_cluster());
    let limiter = Limiter::builder(redis).prefix(&prefix).unwrap().build();
    let minute = Duration::from_secs(60);
    let rules = [
        Rule::sliding_log("log", 2, minute).unwrap(),
        Rule::sliding_counter("counter", 2, minute, Duration::from_secs(6)).unwrap(),
        Rule::gcra("gcra", 2, minute, 2).unwrap(),
        Rule::fixed_window("fixed", 2, minute).unwrap(),
    ];
    for rule in &rules {
        for k in 0..12 {
            let key = format!("user-{k}");
            let mut allowed = Vec::new();
            for _ in 0..3 {
                allowed.push(limiter.check(rule, &key, 1).await.unwrap().allowed);
            }
            assert_eq!(allowed, [true, true, false], "{} {key}", rule.name());
        }
    }

    // Jobs on several topics (so on several masters): every one done or dead-lettered.
    let keyspace = Keyspace::new(prefix.clone()).unwrap();
    let producing = Dispatcher::connect(
        RedisConfig::parse(&urls["producer"]).unwrap(),
        keyspace.clone(),
    )
    .await
    .unwrap();
    let working = Dispatcher::connect(
        RedisConfig::parse(&urls["worker"]).unwrap(),
        keyspace.clone(),
    )
    .await
    .unwrap();
    let monitoring = Dispatcher::connect(RedisConfig::parse(&urls["monitor"]).unwrap(), keyspace)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let mut running = Vec::new();
    let topics: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    for name in &topics {
        let topic = TopicConfig::new(name).unwrap();
        let config = WorkerConfig::new("g")
            .unwrap()
            .set_poll_interval(Duration::from_millis(20))
            .unwrap();
        let worker = working.worker(&topic, config, |job: Job<u32>| async move {
            if *job.payload() % 5 == 0 {
                Err(JobError::fatal("multiple of five"))
            } else {
                Ok(())
            }
        });
        worker.ensure_group().await.unwrap();
        running.push(tokio::spawn(worker.run(shutdown.clone())));
        let producer = producing.producer::<u32>(&topic);
        for n in 0..10u32 {
            producer.enqueue(&n).await.unwrap();
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for name in &topics {
        loop {
            let stats = monitoring.stats(name).await.unwrap();
            let group = &stats.groups[0];
            if stats.dead_letters == 2 && group.pending == 0 && group.lag == Some(0) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name}: {stats:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    shutdown.cancel();
    for r in running {
        r.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn without_the_cluster_line_a_role_is_refused_by_name() {
    let prefix = unique_prefix("acl-cluster-no");
    let (_cluster, urls) = cluster_with_users(&prefix, false);
    let err = RedisHandle::connect(&RedisConfig::parse(&urls["limiter"]).unwrap())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("NoPerm") && text.contains("'cluster|slots'"),
        "{text}"
    );
    assert!(!text.contains(acl::PASSWORD), "{text}");
}
