//! `sluice jobs work --http` with the real binary on real Redis (standalone and Cluster),
//! against a small axum server in the test process: 2xx acknowledges, 429/503 retry (after
//! `Retry-After` when given), other 4xx dead-letter, 5xx and timeouts retry, an endpoint that
//! is down is retried and then dead-lettered with the reason. Also `--metrics-addr`.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use nix::sys::signal::Signal;
use support::worker::{Target, Worker, wait_for};

/// One request the endpoint got.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    id: String,
    attempt: u32,
    topic: String,
    group: String,
    content_type: String,
    body: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Answers as the payload's `mode` says, on the given attempt.
async fn endpoint(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> Response {
    let body = String::from_utf8_lossy(&body).into_owned();
    let attempt: u32 = header(&headers, "sluice-job-attempt").parse().unwrap_or(0);
    log.lock().unwrap().push(Seen {
        at: Instant::now(),
        id: header(&headers, "sluice-job-id"),
        attempt,
        topic: header(&headers, "sluice-topic"),
        group: header(&headers, "sluice-group"),
        content_type: header(&headers, "content-type"),
        body: body.clone(),
    });
    let mode = body.split('"').nth(3).unwrap_or_default().to_owned();
    match (mode.as_str(), attempt) {
        ("429", 1) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response(),
        ("503", 1) => (StatusCode::SERVICE_UNAVAILABLE, "later").into_response(),
        ("404", _) => (StatusCode::NOT_FOUND, "no such user").into_response(),
        ("500", 1 | 2) => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        ("slow", 1) => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
        ("204", _) => StatusCode::NO_CONTENT.into_response(),
        _ => StatusCode::OK.into_response(),
    }
}

/// The endpoint on a free loopback port, served from a thread of its own for the test's life.
fn start_endpoint() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let app = Router::new()
        .route("/jobs", post(endpoint))
        .with_state(log.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (rx.recv().unwrap(), log)
}

/// `GET /metrics` over a plain socket; the body.
fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text
}

fn requests(log: &Log, mode: &str) -> Vec<Seen> {
    let needle = format!(r#""mode":"{mode}""#);
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.body.contains(&needle))
        .cloned()
        .collect()
}

sluice_tests::topology_test! {
    #[test]
    fn http_status_codes_map_to_acknowledge_retry_and_dead_letter(name, spec) {
        let dir = tempfile::tempdir().unwrap();
        let (addr, log) = start_endpoint();
        let target = Target::new(spec, "work-http");
        let modes = ["ok", "204", "429", "503", "404", "500", "slow"];
        let payloads: Vec<String> = modes.iter().map(|m| format!(r#"{{"mode":"{m}","x":[1, 2]}}"#)).collect();
        target.enqueue(&payloads);
        let url = format!("http://{addr}/jobs");
        let metrics = format!("127.0.0.1:{}", sluice_tests::free_port());
        let worker = Worker::start(
            &target,
            &["--http", &url, "--group", "g", "--concurrency", "4", "--job-timeout", "1500ms",
              "--visibility-timeout", "5s", "--max-attempts", "4", "--retry-base-delay", "20ms",
              "--retry-max-delay", "50ms", "--metrics-addr", &metrics],
            dir.path(),
        );
        wait_for(Duration::from_secs(30), "the 404 dead letter", || !target.dead_letters().is_empty());
        wait_for(Duration::from_secs(30), "the queue to drain", || target.drained("g"));
        let scraped = scrape(&metrics);
        let ended = worker.stop(Signal::SIGTERM, Duration::from_secs(10));
        assert_eq!(ended.code, Some(0), "{name}: {ended:?}");
        let report = ended.report();
        assert_eq!(report["completed"], 6, "{name}: {report}");
        assert_eq!(report["dead_lettered"], 1, "{name}: {report}");
        // 429, 503, slow: one retry each; 500: two.
        assert_eq!(report["retried"], 5, "{name}: {report}");

        // Every request carried the job: body as enqueued, id, attempt, topic, group.
        let all = log.lock().unwrap().clone();
        for seen in &all {
            assert!(payloads.contains(&seen.body), "{name}: {seen:?}");
            assert_eq!((seen.topic.as_str(), seen.group.as_str()), ("t", "g"), "{name}: {seen:?}");
            assert_eq!(seen.id.len(), 32, "{name}: {seen:?}");
            assert_eq!(seen.content_type, "application/json", "{name}: {seen:?}");
        }
        let attempts = |mode: &str| requests(&log, mode).iter().map(|s| s.attempt).collect::<Vec<_>>();
        assert_eq!(attempts("ok"), [1], "{name}");
        assert_eq!(attempts("204"), [1], "{name}");
        assert_eq!(attempts("404"), [1], "{name}");
        assert_eq!(attempts("503"), [1, 2], "{name}");
        assert_eq!(attempts("slow"), [1, 2], "{name}");
        assert_eq!(attempts("500"), [1, 2, 3], "{name}");
        // 429 with Retry-After: 1 waited a second (not the 20 ms backoff).
        let tries = requests(&log, "429");
        assert_eq!(tries.iter().map(|s| s.attempt).collect::<Vec<_>>(), [1, 2], "{name}");
        let waited = tries[1].at - tries[0].at;
        assert!(waited >= Duration::from_millis(950), "{name}: retried after {waited:?}");
        assert_eq!(tries[0].id, tries[1].id, "{name}");

        let letters = target.dead_letters();
        assert_eq!(letters.len(), 1, "{name}: {letters:?}");
        assert_eq!(letters[0]["reason"], "fatal", "{name}: {letters:?}");
        assert_eq!(letters[0]["attempts"], 1, "{name}: {letters:?}");
        assert_eq!(letters[0]["error"], format!("POST {url}: HTTP 404 Not Found: no such user"), "{name}");

        // The command's metrics, by result.
        for line in [
            r#"sluice_work_handler_results_total{handler="http",result="success"} 6"#,
            r#"sluice_work_handler_results_total{handler="http",result="retry"} 5"#,
            r#"sluice_work_handler_results_total{handler="http",result="dead_letter"} 1"#,
            r#"sluice_work_handler_duration_seconds_count{handler="http"} 12"#,
            "sluice_work_handler_running 0",
        ] {
            assert!(scraped.contains(line), "{name}: no {line:?} in\n{scraped}");
        }
        // The dispatcher's own counters (topic and group labels), and the topic's queue gauges'
        // exporter (its first snapshot may not be taken yet: a refresh runs in the background).
        for (series, value) in [
            ("sluice_jobs_completed_total{", " 6"),
            ("sluice_jobs_dead_lettered_total{", " 1"),
            ("sluice_jobs_gauges_age_seconds", ""),
        ] {
            assert!(
                scraped
                    .lines()
                    .any(|l| l.starts_with(series) && l.ends_with(value)),
                "{name}: no {series}...{value} in\n{scraped}"
            );
        }
    }

    #[test]
    fn an_endpoint_that_is_down_is_retried_then_dead_lettered_with_the_reason(name, spec) {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::new(spec, "work-http-down");
        target.enqueue(&[r#"{"mode":"ok"}"#.to_owned()]);
        // Nothing listens there.
        let url = format!("http://127.0.0.1:{}/jobs", sluice_tests::free_port());
        let worker = Worker::start(
            &target,
            &["--http", &url, "--group", "g", "--max-attempts", "3", "--retry-base-delay", "20ms"],
            dir.path(),
        );
        wait_for(Duration::from_secs(30), "the dead letter", || !target.dead_letters().is_empty());
        wait_for(Duration::from_secs(10), "the queue to drain", || target.drained("g"));
        let ended = worker.stop(Signal::SIGTERM, Duration::from_secs(10));
        assert_eq!(ended.code, Some(0), "{name}: {ended:?}");
        let report = ended.report();
        assert_eq!((report["retried"].as_u64(), report["dead_lettered"].as_u64()), (Some(2), Some(1)), "{name}: {report}");
        let letters = target.dead_letters();
        assert_eq!(letters[0]["reason"], "exhausted", "{name}: {letters:?}");
        assert_eq!(letters[0]["attempts"], 3, "{name}: {letters:?}");
        assert_eq!(letters[0]["payload"], r#"{"mode":"ok"}"#, "{name}: {letters:?}");
        let error = letters[0]["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("POST {url}: ")), "{name}: {error}");
        assert!(error.to_lowercase().contains("connection refused"), "{name}: {error}");
    }
}
