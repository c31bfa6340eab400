//! A tower layer that rate-limits HTTP services (axum, tonic, hyper) with a Sluice
//! [`Limiter`](sluice_limiter::Limiter): per-route rules, a key per client, a cost per
//! request, the IETF `RateLimit` headers, and 429 problem documents.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{net::SocketAddr, time::Duration};
//!
//! use axum::{Router, routing::{get, post}};
//! use sluice_gateway::layer::{ClientIp, KeyExtractor, ProxyHeader, RateLimitLayer, TrustedProxies};
//! use sluice_limiter::{Limiter, OutagePolicy, Rule};
//! use sluice_shared::{RedisConfig, RedisHandle};
//!
//! let redis = RedisHandle::connect(&RedisConfig::parse("redis://127.0.0.1:6379")?).await?;
//! let limiter = Limiter::builder(redis).prefix("api")?.on_outage(OutagePolicy::FailOpen).build();
//!
//! let trusted = TrustedProxies::new(["192.0.2.0/24"])?; // the load balancers
//! let layer = RateLimitLayer::builder(limiter)
//!     .key(KeyExtractor::client_ip(ClientIp::behind(trusted, ProxyHeader::XForwardedFor)))
//!     .route("/orders", [
//!         Rule::sliding_log("orders-burst", 5, Duration::from_secs(1))?,
//!         Rule::sliding_log("orders-hourly", 100, Duration::from_secs(3600))?,
//!     ])
//!     .default_rules([Rule::sliding_log("default", 60, Duration::from_secs(60))?])
//!     .cost(|req| if req.method == http::Method::POST { 5 } else { 1 })
//!     .build()?;
//!
//! let app = Router::new()
//!     .route("/orders", post(|| async { "ordered" }))
//!     .route("/items/{id}", get(|| async { "item" }))
//!     .layer(layer);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // The peer address reaches the layer as `ConnectInfo<SocketAddr>`.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(()) }
//! ```
//!
//! # What a request goes through
//! 1. Its **route**: axum's `MatchedPath` (the template, `/items/{id}`), else its path (a
//!    gRPC method's `/package.Service/Method`). The route's rules apply, else the default
//!    rules, else none: the request passes, not limited, without headers. (`Router::layer`
//!    also wraps axum's fallback, which has no `MatchedPath`: under default rules unmatched
//!    paths then count by path; use `Router::route_layer` to limit matched routes only.)
//! 2. Its **cost** ([`RateLimitLayerBuilder::cost`], default 1; 0 passes uncounted).
//! 3. Its **key** ([`KeyExtractor`]); when a part can't be read, [`MissingKey`] decides: 400
//!    (the default) or pass.
//! 4. One **all-or-nothing check** of every rule of the route: allowed, the request is charged
//!    to all of them; denied, to none. Each rule counts under the id `{<key>}r:<route>` (`d`
//!    for the default rules): the key is the `{hash tag}`, so one client's counters for a
//!    route share a Cluster slot (one script call, whatever the rules' algorithms) while
//!    clients spread over the Cluster. A route's rules need distinct names ([`LayerError`]).
//! 5. The **answer**:
//!    - allowed: the inner service's response, plus `RateLimit-Policy` and `RateLimit`
//!      (one member per rule, named by the rule; [`crate::headers`]), and the legacy
//!      `X-RateLimit-*` with [`RateLimitLayerBuilder::legacy_headers`];
//!    - denied: `429 Too Many Requests`, `Retry-After` (seconds, rounded up), the same headers,
//!      and an RFC 9457 `application/problem+json` body:
//!      `{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"rate limit
//!      'orders-burst' exceeded for route /orders; retry in 1 s","retry_after":1}`;
//!      a request costing more than a rule's capacity gets the 429 without `Retry-After`;
//!    - the limiter errored (its outage policy is `Error` and Redis is down or slower than
//!      its timeout): [`OnLimiterError`] decides, pass (the default) or 503. The limiter's
//!      timeout bounds the wait either way; its other outage policies answer with decisions
//!      (`FailClosed` gives 429s).
//!
//! # Keys and trusted proxies
//! [`KeyExtractor`]s: the peer IP (axum's `ConnectInfo<SocketAddr>`, tonic's `TcpConnectInfo`,
//! a `SocketAddr` extension, or your own lookup via [`ClientIp::peer_from`]); the client IP
//! behind [`TrustedProxies`] from `X-Forwarded-For` or RFC 7239 `Forwarded`
//! ([`ClientIp::behind`]); a header; the route; a request extension or anything in the
//! request's head through a closure. They compose with [`KeyExtractor::and`].
//!
//! A forwarding header is read only when the direct peer is a trusted proxy, and then from
//! the right: the right-most address that is not a trusted proxy is the client. A client
//! that talks to the service directly, or writes its own `X-Forwarded-For` before a trusted
//! proxy appends to it, can't choose its key. See [`ClientIp`] for the corner cases.
//!
//! # tonic and hyper
//! The layer is a `tower::Layer` for any `Service<http::Request<B>, Response =
//! http::Response<ResBody>>`; responses carry a [`ResponseBody<ResBody>`] (the inner body, or
//! the layer's own). For tonic, configure routes by method path (`/pkg.Svc/Method`). A gRPC
//! request (`content-type: application/grpc...`) is answered in gRPC's terms: a "Trailers-Only"
//! response whose `grpc-status` is `RESOURCE_EXHAUSTED` for a denial (`INVALID_ARGUMENT` for an
//! unreadable key, `UNAVAILABLE` for a limiter down), `grpc-message` the detail, and the
//! `ratelimit`, `ratelimit-policy` and `retry-after` headers as metadata; an allowed call's
//! response carries the headers as metadata too.

#[allow(clippy::module_inception)]
mod layer;

mod body;
mod error;
mod future;
mod key;
mod rules;
mod service;

pub use body::ResponseBody;
pub use error::LayerError;
pub use future::ResponseFuture;
pub use key::{ClientIp, KeyExtractor, ProxyHeader, TrustedProxies, connect_info_peer};
pub use layer::{MissingKey, OnLimiterError, RateLimitLayer, RateLimitLayerBuilder};
pub use service::RateLimit;
