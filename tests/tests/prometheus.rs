//! The real Prometheus (Debian's `prometheus`, installed by `scripts/setup`) scrapes a
//! `/metrics` endpoint served by this test from its own Registry while a real worker processes
//! jobs; the completed count is read back through Prometheus' HTTP API. The Grafana dashboard
//! (`docs/grafana/sluice.json`) names only metrics that a real scrape carries and that
//! Prometheus ingested. Standalone and Cluster.
#![allow(clippy::unwrap_used)]

mod dispatcher_metrics_support;
mod dispatcher_support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use dispatcher_metrics_support::*;
use dispatcher_support::*;
use prometheus::{Encoder, Registry, TextEncoder};
use serde::{Deserialize, Serialize};
use sluice_dispatcher::{Job, JobError, TopicConfig};
use sluice_gateway::{DecisionResult, ServiceMetrics};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    n: u32,
}

/// Debian's `prometheus`, or a failure saying how to get it.
fn prometheus_binary() -> PathBuf {
    let debian = Path::new("/usr/bin/prometheus");
    if debian.is_file() {
        return debian.to_owned();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("prometheus"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("the prometheus binary is missing: run scripts/setup (it apt-get installs Debian's prometheus)")
        })
}

/// A Prometheus server of this test, killed (by its PID, as a child) when dropped.
struct PrometheusServer {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Start Prometheus on a free loopback port, scraping `target` (`127.0.0.1:port`) every
    /// second at `/metrics`.
    fn start(target: &str) -> Self {
        let bin = prometheus_binary();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: sluice\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = sluice_tests::free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Wait (at most 30 s) until `/-/ready` answers 200.
    async fn wait_ready(&self, client: &reqwest::Client) {
        let ready = eventually(Duration::from_secs(30), || async {
            matches!(
                client.get(self.url("/-/ready")).send().await,
                Ok(r) if r.status().is_success()
            )
        })
        .await;
        assert!(
            ready,
            "prometheus not ready within 30s:\n{}",
            self.log_tail()
        );
    }

    /// An instant query through `/api/v1/query`: each result's labels and value.
    async fn query(&self, client: &reqwest::Client, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let Ok(response) = client
            .get(self.url("/api/v1/query"))
            .query(&[("query", promql)])
            .send()
            .await
        else {
            return Vec::new();
        };
        let body: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or_default();
        body["data"]["result"]
            .as_array()
            .map(|results| {
                results
                    .iter()
                    .map(|r| {
                        let v = r["value"][1]
                            .as_str()
                            .unwrap_or("NaN")
                            .parse()
                            .unwrap_or(f64::NAN);
                        (r["metric"].clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serve `registry` at `http://127.0.0.1:<port>/metrics` until `stop`; returns the address.
async fn serve_metrics(registry: Registry, stop: CancellationToken) -> String {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        TextEncoder::new().format_type().to_owned(),
                    )],
                    exposition(&registry),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap();
    });
    addr
}

/// Every `sluice_*` metric name the dashboard's queries (panels and variables) use.
fn dashboard_metric_names() -> BTreeSet<String> {
    let path = sluice_tests::workspace_root().join("docs/grafana/sluice.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    walk(&json, &mut queries);
    let mut names = BTreeSet::new();
    for q in &queries {
        let mut rest = q.as_str();
        while let Some(at) = rest.find("sluice_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    assert!(
        names.len() >= 15,
        "too few metrics in the dashboard: {names:?}"
    );
    names
}

sluice_tests::topology_test! {
    #[tokio::test]
    async fn prometheus_reads_the_completed_count(name, spec) {
        let registry = Registry::new();
        let d = dispatcher(spec, "prometheus").await.with_metrics(&registry).unwrap();
        let topic = TopicConfig::new("scraped").unwrap();
        let gauges = d.queue_gauges(["scraped"]).unwrap();
        gauges.register(&registry).unwrap();
        // The gateway's metrics, from its public API, for the dashboard's limiter panels.
        let gateway = ServiceMetrics::register(&registry).unwrap();
        gateway.decision("shop", "shop.remote_address", DecisionResult::Ok);
        gateway.decision("shop", "shop.remote_address", DecisionResult::OverLimit);
        gateway.error("limiter");
        gateway.latency(Duration::from_micros(300));

        let stop = CancellationToken::new();
        let target = serve_metrics(registry.clone(), stop.clone()).await;
        let refresher = gauges.spawn(Duration::from_millis(200), stop.clone()).unwrap();
        let prometheus = PrometheusServer::start(&target);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        prometheus.wait_ready(&client).await;

        // A real worker processes jobs while Prometheus scrapes.
        let done = Arc::new(AtomicU64::new(0));
        let worker = d.worker(&topic, fast_worker("mailer").set_concurrency(4).unwrap(), {
            let done = done.clone();
            move |_job: Job<Task>| {
                let done = done.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    Ok::<(), JobError>(())
                }
            }
        });
        let running = tokio::spawn(worker.run(stop.clone()));
        let producer = d.producer::<Task>(&topic);
        for n in 0..25 {
            producer.enqueue(&Task { n }).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let finished = eventually(Duration::from_secs(30), || async {
            done.load(Ordering::Relaxed) == 25
                && group(&d.stats("scraped").await.unwrap(), "mailer").pending == 0
        })
        .await;
        assert!(finished, "{name}: the worker did not finish the jobs");

        // Read back through Prometheus (scraped every second; bounded wait).
        let query = r#"sluice_jobs_completed_total{topic="scraped",group="mailer"}"#;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (seen, last) = loop {
            let last = prometheus.query(&client, query).await;
            if last.len() == 1 && last[0].1 == 25.0 {
                break (true, last);
            }
            if Instant::now() >= deadline {
                break (false, last);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            seen,
            "{name}: Prometheus answered {last:?} for {query}\n{}",
            prometheus.log_tail()
        );
        assert_eq!(last[0].0["job"], "sluice", "{name}");

        // Every metric the dashboard names is on a real /metrics scrape...
        let scraped = client
            .get(format!("http://{target}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let on_metrics: BTreeSet<String> = samples(&scraped).into_iter().map(|s| s.name).collect();
        let wanted = dashboard_metric_names();
        let missing: Vec<&String> = wanted.iter().filter(|n| !on_metrics.contains(*n)).collect();
        assert!(missing.is_empty(), "{name}: the dashboard names {missing:?}, not on /metrics");
        // ... and in Prometheus.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (all_in, ingested) = loop {
            let ingested: BTreeSet<String> = prometheus
                .query(&client, r#"count by (__name__) ({__name__=~"sluice_.+"})"#)
                .await
                .into_iter()
                .filter_map(|(m, _)| m["__name__"].as_str().map(str::to_owned))
                .collect();
            if wanted.is_subset(&ingested) {
                break (true, ingested);
            }
            if Instant::now() >= deadline {
                break (false, ingested);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            all_in,
            "{name}: not in Prometheus: {:?}",
            wanted.difference(&ingested).collect::<Vec<_>>()
        );

        stop.cancel();
        running.await.unwrap().unwrap();
        refresher.await.unwrap();
        drop(prometheus);
        d.delete_topic("scraped").await.unwrap();
    }
}
