//! The JSON API against real Redis: the overview holds the numbers Redis holds, actions do what
//! they say, and bad actions (a dead letter already gone, an unknown group, no CSRF token, a
//! read-only dashboard, no credentials) answer with a clear error and change nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_dashboard::{BasicAuth, DashboardConfig};
use sluice_dispatcher::{Job, JobError, TopicConfig};
use support::{Running, csrf, dispatcher, eventually, fast_worker, get, post};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    n: u32,
    bad: bool,
}

sluice_tests::topology_test! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_api_shows_redis_numbers_and_bad_actions_change_nothing(name, spec) {
        let d = dispatcher(spec, "dash-api").await;
        let topic = TopicConfig::new("orders").unwrap();
        let producer = d.producer::<Order>(&topic);
        let worker = d.worker(&topic, fast_worker("billing"), |job: Job<Order>| async move {
            if job.payload().bad {
                Err(JobError::fatal("card declined"))
            } else {
                Ok(())
            }
        });
        worker.ensure_group().await.unwrap();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run(shutdown.clone()));
        for n in 0..10 {
            producer.enqueue(&Order { n, bad: n % 5 == 0 }).await.unwrap();
        }
        let dash = Running::start(&d, DashboardConfig::new()).await;
        // The overview settles on what Redis holds: 8 processed, 2 dead letters, nothing left.
        assert!(eventually(Duration::from_secs(20), || async {
            let (_, o) = get(&dash.url("/api/overview")).await;
            let Some(t) = o["topics"].as_array().and_then(|t| t.first()) else { return false };
            t["stats"]["dead_letters"] == 2
                && t["stats"]["groups"][0]["lag"] == 0
                && t["stats"]["groups"][0]["pending"] == 0
                && t["history_hour"]["processed"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum::<u64>() == 8
        }).await, "{name}: {}", get(&dash.url("/api/overview")).await.1);
        let stats = d.stats("orders").await.unwrap();
        let (status, t) = get(&dash.url("/api/topics/orders")).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(t["stats"]["stream_length"], stats.stream_length, "{name}");
        assert_eq!(t["stats"]["dead_letters"], stats.dead_letters, "{name}");
        assert_eq!(t["groups"][0]["group"], "billing", "{name}");
        assert_eq!(t["groups"][0]["paused"], false, "{name}");
        assert_eq!(t["groups"][0]["consumers"].as_array().unwrap().len(), 1, "{name}");
        assert_eq!(t["dead_letters"][0]["error"], "card declined", "{name}");
        assert_eq!(t["dead_letters"][0]["reason"], "fatal", "{name}");
        assert_eq!(t["dead_letters"][0]["payload"], r#"{"n":0,"bad":true}"#, "{name}");
        let (status, h) = get(&dash.url("/api/topics/orders/history?minutes=1440")).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(h["failed"].as_array().unwrap().len(), 1440, "{name}");
        assert_eq!(get(&dash.url("/api/topics/orders/history?minutes=0")).await.0, 400, "{name}");
        assert_eq!(get(&dash.url("/api/topics/nope")).await.0, 404, "{name}");
        let (_, letters) = get(&dash.url("/api/topics/orders/dead-letters?count=10")).await;
        let ids: Vec<String> = letters.as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), 2, "{name}");
        let (_, loc) = get(&dash.url(&format!("/api/topics/orders/jobs/{}", letters[0]["job_id"].as_str().unwrap()))).await;
        assert_eq!(loc["places"][0]["state"], "dead", "{name}: {loc}");

        // Actions need the CSRF token.
        let token = csrf(&dash).await;
        let replay0 = dash.url(&format!("/api/topics/orders/dead-letters/{}/replay", ids[0]));
        let (status, body) = post(&replay0, None).await;
        assert_eq!(status, 403, "{name}: {body}");
        let (status, body) = post(&replay0, Some("wrong")).await;
        assert_eq!(status, 403, "{name}: {body}");
        assert_eq!(d.stats("orders").await.unwrap().dead_letters, 2, "{name}: changed without a token");

        // Delete one; deleting or replaying it again: 404, a clear message, nothing changed.
        let (status, body) = post(&dash.url(&format!("/api/topics/orders/dead-letters/{}/delete", ids[0])), Some(&token)).await;
        assert_eq!((status, &body["deleted"]), (200, &serde_json::json!(ids[0])), "{name}: {body}");
        for action in ["delete", "replay"] {
            let (status, body) = post(&dash.url(&format!("/api/topics/orders/dead-letters/{}/{action}", ids[0])), Some(&token)).await;
            assert_eq!(status, 404, "{name}: {body}");
            let msg = body["error"].as_str().unwrap();
            assert!(msg.contains(&ids[0]) && msg.contains("nothing was changed"), "{name}: {msg}");
        }
        // A malformed id is no dead letter either.
        let (status, body) = post(&dash.url("/api/topics/orders/dead-letters/not-an-id/delete"), Some(&token)).await;
        assert_eq!(status, 404, "{name}: {body}");
        let left = d.dead_letters("orders", None, 10).await.unwrap();
        assert_eq!(left.len(), 1, "{name}");
        assert_eq!(left[0].id, ids[1], "{name}");
        // An unknown group can't be paused.
        let (status, body) = post(&dash.url("/api/topics/orders/groups/nobody/pause"), Some(&token)).await;
        assert_eq!(status, 404, "{name}: {body}");
        assert!(body["error"].as_str().unwrap().contains("nothing was changed"), "{name}");
        assert!(!d.is_paused("orders", "nobody").await.unwrap(), "{name}");
        // Pause and resume the real one.
        let (status, body) = post(&dash.url("/api/topics/orders/groups/billing/pause"), Some(&token)).await;
        assert_eq!((status, &body["paused"]), (200, &serde_json::json!(true)), "{name}: {body}");
        assert!(d.is_paused("orders", "billing").await.unwrap(), "{name}");
        assert!(eventually(Duration::from_secs(5), || async {
            get(&dash.url("/api/topics/orders")).await.1["groups"][0]["paused"] == true
        }).await, "{name}");
        let (status, _) = post(&dash.url("/api/topics/orders/groups/billing/resume"), Some(&token)).await;
        assert_eq!(status, 200, "{name}");
        assert!(!d.is_paused("orders", "billing").await.unwrap(), "{name}");
        // Purge the last dead letter; a GET on an action path is refused.
        let (status, body) = post(&dash.url("/api/topics/orders/dead-letters/purge"), Some(&token)).await;
        assert_eq!((status, &body["purged"]), (200, &serde_json::json!(1)), "{name}: {body}");
        assert_eq!(get(&dash.url("/api/topics/orders/dead-letters/purge")).await.0, 405, "{name}");

        dash.stop().await;
        shutdown.cancel();
        running.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn read_only_refuses_actions_and_basic_auth_guards_everything(name, spec) {
        let d = dispatcher(spec, "dash-safety").await;
        let topic = TopicConfig::new("t").unwrap();
        let worker = d.worker(&topic, fast_worker("g"), |_: Job<Order>| async { Ok::<(), JobError>(()) });
        worker.ensure_group().await.unwrap();
        let dash = Running::start(&d, DashboardConfig::new().set_read_only(true)).await;
        let (status, session) = get(&dash.url("/api/session")).await;
        assert_eq!((status, &session["read_only"]), (200, &serde_json::json!(true)), "{name}");
        let token = session["csrf_token"].as_str().unwrap().to_owned();
        for path in ["/api/topics/t/groups/g/pause", "/api/topics/t/dead-letters/purge", "/api/topics/t/dead-letters/1-0/replay"] {
            let (status, body) = post(&dash.url(path), Some(&token)).await;
            assert_eq!(status, 405, "{name}: {path}: {body}");
            assert!(body["error"].as_str().unwrap().contains("read-only"), "{name}");
        }
        assert!(!d.is_paused("t", "g").await.unwrap(), "{name}");
        assert_eq!(get(&dash.url("/api/overview")).await.0, 200, "{name}");
        // The page is served, with a policy that allows nothing from elsewhere.
        let page = reqwest::get(dash.url("/")).await.unwrap();
        let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'self'"), "{name}: {csp}");
        assert!(page.text().await.unwrap().contains("/assets/app.js"), "{name}");
        // A foreign Host (DNS rebinding) is refused.
        let r = reqwest::Client::new().get(dash.url("/api/session")).header("host", "evil.example:80").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 421, "{name}");
        dash.stop().await;

        let auth = BasicAuth::new("ops", "s3cret").unwrap();
        let dash = Running::start(&d, DashboardConfig::new().set_auth(Some(auth))).await;
        let r = reqwest::get(dash.url("/api/overview")).await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{name}");
        assert!(r.headers().contains_key("www-authenticate"), "{name}");
        let client = reqwest::Client::new();
        let wrong = client.get(dash.url("/")).basic_auth("ops", Some("nope")).send().await.unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{name}");
        let right = client.get(dash.url("/api/overview")).basic_auth("ops", Some("s3cret")).send().await.unwrap();
        assert_eq!(right.status().as_u16(), 200, "{name}");
        dash.stop().await;
    }
}
