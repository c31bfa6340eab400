//! Helpers shared by the dashboard tests: a dispatcher under a fresh prefix, a running
//! dashboard, HTTP calls, polling.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod cdp;

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use sluice_dashboard::{Dashboard, DashboardConfig};
use sluice_dispatcher::{Dispatcher, WorkerConfig};
use sluice_shared::{Keyspace, RedisConfig};
use tokio_util::sync::CancellationToken;

pub async fn dispatcher(spec: &str, test: &str) -> Dispatcher {
    Dispatcher::connect(
        RedisConfig::parse(spec).unwrap(),
        Keyspace::new(sluice_tests::unique_prefix(test)).unwrap(),
    )
    .await
    .unwrap()
}

pub fn fast_worker(group: &str) -> WorkerConfig {
    WorkerConfig::new(group)
        .unwrap()
        .set_poll_interval(Duration::from_millis(20))
        .unwrap()
        .set_shutdown_timeout(Duration::from_secs(10))
        .unwrap()
}

/// A dashboard on a free loopback port, refreshing every 200 ms.
pub struct Running {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    dashboard: Option<Dashboard>,
}

impl Running {
    pub async fn start(d: &Dispatcher, config: DashboardConfig) -> Self {
        let shutdown = CancellationToken::new();
        let config = config
            .set_addr("127.0.0.1:0".parse().unwrap())
            .set_refresh(Duration::from_millis(200))
            .unwrap();
        let dashboard = Dashboard::start(d.clone(), config, shutdown.clone())
            .await
            .unwrap();
        Self {
            addr: dashboard.addr(),
            shutdown,
            dashboard: Some(dashboard),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(d) = self.dashboard.take() {
            tokio::time::timeout(Duration::from_secs(10), d.wait())
                .await
                .expect("the dashboard did not stop within 10s")
                .unwrap();
        }
    }
}

/// Poll `check` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET, as (status, JSON body).
pub async fn get(url: &str) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// POST with the given CSRF token (if any), as (status, JSON body).
pub async fn post(url: &str, csrf: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().post(url);
    if let Some(t) = csrf {
        req = req.header(sluice_dashboard::CSRF_HEADER, t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The session's CSRF token.
pub async fn csrf(running: &Running) -> String {
    let (status, body) = get(&running.url("/api/session")).await;
    assert_eq!(status, 200, "{body}");
    body["csrf_token"].as_str().unwrap().to_owned()
}
