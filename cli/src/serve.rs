//! `sluice serve`: Envoy's rate limit service (gRPC) and an HTTP check for nginx and Traefik,
//! over the rate-limit config at `--config`; `sluice serve --check` validates the config and
//! exits (0 valid, 2 invalid, with the file and the problem).
//!
//! Settings: the `[serve]` section of `--settings` and `SLUICE_SERVE__*` (see `settings.rs`),
//! flags over both. SIGTERM (or Ctrl-C) stops accepting, drains the calls in flight, exits.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use clap::Args;
use sluice_gateway::{
    Config, RateLimitService, ServiceOptions,
    headers::HeaderStyle,
    server::{Server, ServerOptions},
};
use sluice_shared::RedisHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    Failure,
    args::{ConnArgs, DEFAULT_PREFIX},
    output, settings,
};

/// Default gRPC address (envoyproxy/ratelimit's port).
const GRPC_ADDR: &str = "127.0.0.1:8081";
/// Default HTTP address (envoyproxy/ratelimit's port).
const HTTP_ADDR: &str = "127.0.0.1:8080";

/// `sluice serve` flags.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Rate-limit config: a YAML file, or a directory of them (one domain each), in
    /// envoyproxy/ratelimit's format [default: serve.config of --settings].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Validate the config and exit: 0 valid, 2 invalid (with the file and the problem).
    #[arg(long)]
    check: bool,
    /// gRPC address (Envoy's ShouldRateLimit) [default: serve.grpc_addr, else 127.0.0.1:8081].
    #[arg(long, value_name = "HOST:PORT")]
    grpc_addr: Option<SocketAddr>,
    /// HTTP address (/v1/check, /metrics, /healthz) [default: serve.http_addr, else
    /// 127.0.0.1:8080].
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<SocketAddr>,
}

fn positive(field: &str, d: Duration) -> Result<Duration, Failure> {
    if d.is_zero() {
        return Err(Failure::new(format!(
            "settings: serve.{field} must be greater than zero"
        )));
    }
    Ok(d)
}

pub(crate) async fn run(args: ServeArgs) -> Result<i32, Failure> {
    let s = &settings::get().serve;
    let path = args
        .config
        .clone()
        .or_else(|| s.config.clone())
        .ok_or_else(|| {
            Failure::flag(
                "config",
                "missing: give --config PATH or serve.config in --settings FILE",
            )
        })?;
    let config = Config::load(&path).map_err(|e| Failure::new(e.to_string()))?;
    if args.check {
        let names: Vec<&str> = config.domains().map(|d| d.name()).collect();
        output::line(format_args!(
            "{}: valid, {} domain(s): {}",
            path.display(),
            names.len(),
            names.join(", ")
        ))?;
        return Ok(0);
    }

    let mut options = ServiceOptions::default();
    options.prefix = args.conn.prefix(DEFAULT_PREFIX).to_owned();
    if let Some(t) = s.timeout {
        options.timeout = positive("timeout", t)?;
    }
    if let Some(t) = s.retry_interval {
        options.retry_interval = positive("retry_interval", t)?;
    }
    if let Some(p) = s.outage {
        options.outage = p;
    }
    options.domain_outage = s
        .domains
        .iter()
        .filter_map(|(name, d)| d.outage.map(|p| (name.clone(), p)))
        .collect();
    options.headers = HeaderStyle::with_legacy(s.legacy_headers.unwrap_or(false));
    if let Some(n) = s.detail_budget {
        options.detail_budget = n;
    }

    // Lazy: the service starts (and answers by its outage policy) while Redis is down.
    let redis = RedisHandle::connect_lazy(&args.conn.config()?)
        .map_err(|e| Failure::new(format!("redis: {e}")))?;
    let registry = prometheus::Registry::new();
    let service = RateLimitService::new(redis, config, options, &registry).map_err(|e| {
        Failure::new(match e {
            sluice_gateway::ServiceError::Setting(e) => Failure::config(&e).to_string(),
            other => other.to_string(),
        })
    })?;

    let default = |addr: &str| addr.parse::<SocketAddr>().ok();
    let mut server_options = ServerOptions::default();
    server_options.grpc_addr = args
        .grpc_addr
        .or(s.grpc_addr)
        .or_else(|| default(GRPC_ADDR));
    server_options.http_addr = args
        .http_addr
        .or(s.http_addr)
        .or_else(|| default(HTTP_ADDR));
    server_options.watch = Some(path.clone());
    if let Some(t) = s.reload_interval {
        server_options.reload_interval = positive("reload_interval", t)?;
    }
    if let Some(t) = s.drain_timeout {
        server_options.drain_timeout = positive("drain_timeout", t)?;
    }
    let server = Server::bind(Arc::new(service), registry, server_options)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    let shown = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
    output::line(format_args!(
        "sluice serve: grpc {}, http {}, config {}, redis {}",
        shown(server.grpc_addr()),
        shown(server.http_addr()),
        path.display(),
        args.conn.redis_shown()
    ))?;

    let token = CancellationToken::new();
    tokio::spawn(stop_on_signal(token.clone()));
    server
        .run(token)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    Ok(0)
}

/// Cancel `token` on SIGTERM or Ctrl-C.
pub(crate) async fn stop_on_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
}
