//! The dashboard as the least-privilege `sluice-dashboard` user of docs/DEPLOY.md: every page
//! and every action works with exactly the documented commands, and the same actions through
//! the read-only `sluice-monitor` user fail with Redis' `NOPERM`, naming the refused command,
//! while changing nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_dashboard::DashboardConfig;
use sluice_dispatcher::{Dispatcher, Job, JobError, TopicConfig};
use sluice_shared::{Keyspace, RedisConfig};
use sluice_tests::{RedisServer, acl, unique_prefix};
use support::{Running, csrf, eventually, fast_worker, get, post};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    n: u32,
    bad: bool,
}

async fn as_user(url: &str, keyspace: &Keyspace) -> Dispatcher {
    Dispatcher::connect(RedisConfig::parse(url).unwrap(), keyspace.clone())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_role_runs_every_page_and_action() {
    let server = RedisServer::start();
    let prefix = unique_prefix("dash-acl");
    let users = acl::create_documented_users(&server.url(), server.port(), &prefix);
    for role in ["producer", "worker", "monitor", "dashboard"] {
        assert!(
            users.contains_key(role),
            "docs/DEPLOY.md has no {role} user"
        );
    }
    let keyspace = Keyspace::new(prefix).unwrap();
    let topic = TopicConfig::new("orders").unwrap();

    // A producer and a worker, each as its own user, leave 6 done and 4 dead letters.
    let producing = as_user(&users["producer"], &keyspace).await;
    let working = as_user(&users["worker"], &keyspace).await;
    let worker = working.worker(
        &topic,
        fast_worker("billing"),
        |job: Job<Order>| async move {
            if job.payload().bad {
                Err(JobError::fatal("card declined"))
            } else {
                Ok(())
            }
        },
    );
    worker.ensure_group().await.unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    let producer = producing.producer::<Order>(&topic);
    for n in 0..10 {
        producer
            .enqueue(&Order { n, bad: n % 3 == 0 })
            .await
            .unwrap();
    }

    // The dashboard as `sluice-dashboard`.
    let dashboard_user = as_user(&users["dashboard"], &keyspace).await;
    let dash = Running::start(&dashboard_user, DashboardConfig::new()).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            let (status, o) = get(&dash.url("/api/overview")).await;
            status == 200
                && o["topics"][0]["stats"]["dead_letters"] == 4
                && o["topics"][0]["stats"]["groups"][0]["pending"] == 0
                && o["topics"][0]["stats"]["groups"][0]["lag"] == 0
        })
        .await,
        "{}",
        get(&dash.url("/api/overview")).await.1
    );
    let (status, t) = get(&dash.url("/api/topics/orders")).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(
        t["groups"][0]["consumers"].as_array().unwrap().len(),
        1,
        "{t}"
    );
    let (status, h) = get(&dash.url("/api/topics/orders/history?minutes=60")).await;
    assert_eq!(status, 200, "{h}");
    let processed: u64 = h["processed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(processed, 6, "{h}");
    let (status, letters) = get(&dash.url("/api/topics/orders/dead-letters?count=10")).await;
    assert_eq!(status, 200, "{letters}");
    let ids: Vec<String> = letters
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 4, "{letters}");
    let job_id = letters[0]["job_id"].as_str().unwrap().to_owned();
    let (status, loc) = get(&dash.url(&format!("/api/topics/orders/jobs/{job_id}"))).await;
    assert_eq!(status, 200, "{loc}");
    assert!(
        loc["places"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["state"] == "dead"),
        "{loc}"
    );

    // The read-only monitor user can't act: NOPERM names the command; nothing changes.
    let monitoring = as_user(&users["monitor"], &keyspace).await;
    let monitor_dash = Running::start(&monitoring, DashboardConfig::new()).await;
    let token = csrf(&monitor_dash).await;
    let (status, body) = post(
        &monitor_dash.url(&format!(
            "/api/topics/orders/dead-letters/{}/delete",
            ids[0]
        )),
        Some(&token),
    )
    .await;
    let message = body["error"].as_str().unwrap_or_default().to_owned();
    assert!(status >= 500, "{status} {body}");
    assert!(
        message.contains("NoPerm") && message.contains("'xdel'"),
        "{message}"
    );
    let (status, body) = post(
        &monitor_dash.url("/api/topics/orders/groups/billing/pause"),
        Some(&token),
    )
    .await;
    let message = body["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        status >= 500 && message.contains("NoPerm"),
        "{status} {body}"
    );
    monitor_dash.stop().await;
    assert_eq!(monitoring.stats("orders").await.unwrap().dead_letters, 4);
    assert!(!monitoring.is_paused("orders", "billing").await.unwrap());

    // Every action as `sluice-dashboard`.
    let token = csrf(&dash).await;
    let act = |path: String| {
        let url = dash.url(&path);
        let token = token.clone();
        async move { post(&url, Some(&token)).await }
    };
    let (status, body) = act(format!("/api/topics/orders/dead-letters/{}/delete", ids[0])).await;
    assert_eq!(status, 200, "delete: {body}");
    let (status, body) = act(format!("/api/topics/orders/dead-letters/{}/replay", ids[1])).await;
    assert_eq!(status, 200, "replay: {body}");
    let (status, body) = act("/api/topics/orders/groups/billing/pause".to_owned()).await;
    assert_eq!(status, 200, "pause: {body}");
    assert!(monitoring.is_paused("orders", "billing").await.unwrap());
    let (status, body) = act("/api/topics/orders/groups/billing/resume".to_owned()).await;
    assert_eq!(status, 200, "resume: {body}");
    assert!(!monitoring.is_paused("orders", "billing").await.unwrap());
    // The replayed order is bad: it fails again, so three dead letters (4 - 1 deleted).
    let three = || async { monitoring.stats("orders").await.unwrap().dead_letters == 3 };
    assert!(eventually(Duration::from_secs(20), three).await);
    let (status, body) = act("/api/topics/orders/dead-letters/replay-all".to_owned()).await;
    assert_eq!(
        (status, &body["replayed"]),
        (200, &serde_json::json!(3)),
        "replay-all: {body}"
    );
    // They fail again, and come back once each (replay-all does not chase its own replays).
    assert!(eventually(Duration::from_secs(20), three).await);
    let (status, body) = act("/api/topics/orders/dead-letters/purge".to_owned()).await;
    assert_eq!(
        (status, &body["purged"]),
        (200, &serde_json::json!(3)),
        "purge: {body}"
    );
    assert_eq!(monitoring.stats("orders").await.unwrap().dead_letters, 0);

    dash.stop().await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
}
