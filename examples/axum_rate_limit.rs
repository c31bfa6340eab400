//! An axum app behind Sluice's tower layer: two routes limited differently, per client IP.
//!
//! ```sh
//! cargo run -p sluice-examples --example axum_rate_limit -- redis://127.0.0.1:6379 127.0.0.1:3000
//! curl -i http://127.0.0.1:3000/items/1                 # 10 per second, bursts of 20
//! curl -i -X POST http://127.0.0.1:3000/orders          # 5 per minute and 50 per hour, together
//! curl -i -X POST -H 'x-bulk: 3' http://127.0.0.1:3000/orders   # costs 3
//! ```
//!
//! The Redis URL comes from the first argument, else `SLUICE_REDIS_URL`, else
//! `redis://127.0.0.1:6379` (a Cluster: comma-separated node URLs); the listen address from
//! the second argument, else `127.0.0.1:3000`. Allowed responses carry `RateLimit-Policy` and
//! `RateLimit`; a denied one is a 429 with `Retry-After` and an `application/problem+json`
//! body. Ctrl-C stops it.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    extract::Path,
    routing::{get, post},
};
use sluice_gateway::layer::{KeyExtractor, OnLimiterError, RateLimitLayer};
use sluice_limiter::{Limiter, OutagePolicy, Rule};
use sluice_shared::{RedisConfig, RedisHandle};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("SLUICE_REDIS_URL").ok())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let addr: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:3000").parse()?;

    let redis = RedisHandle::connect(&RedisConfig::parse(&url)?).await?;
    // Within 50 ms or not at all: a slow or dead Redis lets requests through (the layer's
    // default answer to a limiter error) instead of stalling the app.
    let limiter = Limiter::builder(redis)
        .prefix("example-axum")?
        .timeout(Duration::from_millis(50))?
        .on_outage(OutagePolicy::Error)
        .build();

    let layer = RateLimitLayer::builder(limiter)
        // Clients connect directly here; behind a load balancer use
        // `KeyExtractor::client_ip(ClientIp::behind(TrustedProxies::new([...])?, ...))`.
        .key(KeyExtractor::peer_ip())
        .route(
            "/items/{id}",
            [Rule::gcra("items", 10, Duration::from_secs(1), 20)?],
        )
        .route(
            "/orders",
            [
                Rule::sliding_log("orders-minute", 5, Duration::from_secs(60))?,
                Rule::sliding_log("orders-hour", 50, Duration::from_secs(3600))?,
            ],
        )
        // A bulk order counts as many orders as it says (1 to 5).
        .cost(|req| {
            req.headers
                .get("x-bulk")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map_or(1, |n| n.clamp(1, 5))
        })
        .on_limiter_error(OnLimiterError::FailOpen)
        .build()?;

    let app = Router::new()
        .route(
            "/items/{id}",
            get(|Path(id): Path<u32>| async move { format!("item {id}\n") }),
        )
        .route("/orders", post(|| async { "order placed\n" }))
        .route("/health", get(|| async { "ok\n" }))
        // `route_layer`: matched routes only (unknown paths get axum's 404, uncounted);
        // /health has no rules and no default, so it is not limited.
        .route_layer(layer);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
