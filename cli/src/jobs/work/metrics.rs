//! `--metrics-addr`: the worker's Prometheus metrics, registered into a `Registry` the command
//! creates (never the global one), served as text at `GET /metrics` by a small axum server.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

use super::Outcome;
use crate::Failure;

/// What the command counts about its handler runs. Labels are bounded: `handler` is `exec` or
/// `http`, `result` one of `success`, `retry`, `dead_letter`, `timeout`.
#[derive(Debug, Clone)]
pub(super) struct WorkMetrics {
    results: IntCounterVec,
    duration: HistogramVec,
    running: IntGauge,
    handler: &'static str,
}

impl WorkMetrics {
    pub(super) fn register(
        registry: &Registry,
        handler: &'static str,
    ) -> Result<Self, prometheus::Error> {
        let results = IntCounterVec::new(
            Opts::new(
                "sluice_work_handler_results_total",
                "Handler runs of `sluice jobs work`, by handler and result.",
            ),
            &["handler", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_work_handler_duration_seconds",
                "Wall time of one handler run (command or HTTP call).",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["handler"],
        )?;
        let running = IntGauge::new(
            "sluice_work_handler_running",
            "Handler runs in progress right now.",
        )?;
        registry.register(Box::new(results.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(running.clone()))?;
        Ok(Self {
            results,
            duration,
            running,
            handler,
        })
    }

    /// A handler run begins; it counts as running until the guard is dropped (also when the
    /// run is cancelled at the drain deadline).
    pub(super) fn started(&self) -> Running {
        self.running.inc();
        Running(self.running.clone())
    }

    pub(super) fn finished(&self, outcome: &Outcome, took: Duration) {
        self.results
            .with_label_values(&[self.handler, outcome.label()])
            .inc();
        self.duration
            .with_label_values(&[self.handler])
            .observe(took.as_secs_f64());
    }
}

/// One handler run in progress, for the `running` gauge.
#[derive(Debug)]
pub(super) struct Running(IntGauge);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Bind `addr` now (so a taken port is a start-up error), then serve until `stop`.
pub(super) async fn serve(
    addr: SocketAddr,
    registry: Registry,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::flag("metrics-addr", format!("cannot listen on {addr}: {e}")))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(registry);
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            crate::output::warn(format_args!("metrics server stopped: {e}"));
        }
    }))
}

async fn metrics(State(registry): State<Registry>) -> Response {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&registry.gather(), &mut body) {
        Ok(()) => (
            [(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
