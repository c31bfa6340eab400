//! Rate limits for gateways: envoyproxy/ratelimit's YAML config (as it is, plus Sluice's
//! extensions), validated; the matching of a request's descriptors to the limits that apply;
//! and the service `sluice serve` runs: [`RateLimitService`] checks a request's planned limits
//! with `sluice-limiter` in one all-or-nothing call and answers through gRPC (Envoy's
//! `ShouldRateLimit`, [`grpc`]) or HTTP ([`http`]), with the IETF rate-limit [`headers`],
//! Prometheus metrics ([`ServiceMetrics`]), config [`reload`]s and a graceful [`server`].
//!
//! A config is a file or a directory of files, one domain each. An envoy config with no
//! Sluice option means what it means to envoy: the same matching (nested descriptors, values
//! with `*` wildcards anywhere, keys without a value counting each value apart), the same
//! limits, counted in fixed windows aligned to the unit. Sluice adds `algorithm`, `window`,
//! `granularity`, `burst` and several limits per descriptor (`rate_limits`); see
//! `docs/GATEWAY.md`.
//!
//! # Quick start
//!
//! ```
//! use sluice_gateway::{Answer, Config, RequestDescriptor, Unit};
//!
//! let config = Config::from_yaml(
//!     "api.yaml",
//!     r#"
//! domain: api
//! descriptors:
//!   - key: user                 # no value: one counter per user
//!     rate_limits:              # Sluice: several limits, all checked
//!       - {unit: second, requests_per_unit: 10, algorithm: gcra, burst: 20}
//!       - {unit: day, requests_per_unit: 10000}
//!   - key: path
//!     value: /health
//!     rate_limit: {unlimited: true}
//! "#,
//! )?;
//!
//! let user: &[(&str, &str)] = &[("user", "42")];
//! let health: &[(&str, &str)] = &[("path", "/health")];
//! let plan = config.plan("api", &[RequestDescriptor::new(user), RequestDescriptor::new(health)], 1);
//!
//! let [per_user, health] = plan.descriptors() else { unreachable!() };
//! assert_eq!(per_user.answer(), Answer::Check);
//! assert_eq!(per_user.limits()[0].current_limit(), (10, Some(Unit::Second), ""));
//! assert_eq!(per_user.key_id().map(|k| k.as_bytes()), Some(&b"{api}api:user=42"[..]));
//! assert_eq!(health.answer(), Answer::Unlimited);
//! assert_eq!(plan.checks().count(), 2); // one all-or-nothing call, one hash tag
//! # Ok::<(), sluice_gateway::ConfigError>(())
//! ```
//!
//! # Layout
//! - `error`: [`ConfigError`] (names the file and the descriptor path) and [`Problem`].
//! - `unit`: [`Unit`], envoy's time units: names, protocol numbers, lengths.
//! - `limit`: [`Limit`] (a `rate_limit`: name, replaces, unlimited or a [`Rate`]) and
//!   [`AlgorithmSpec`].
//! - `pattern`: values with `*` wildcards.
//! - `config`: [`Config`], [`Domain`], [`DescriptorConfig`] (the validated tree and its
//!   lookup); `config/yaml` reads a file's YAML with envoy's shape checks, `config/validate`
//!   checks meaning and builds the tree, `config/load` reads files and directories.
//! - `request`: [`Entry`], [`RequestDescriptor`], [`LimitOverride`], [`hits`]: a request as
//!   the matcher reads it.
//! - `key`: [`KeyId`], what a matched descriptor counts under, tagged by the domain.
//! - `metrics`: [`MetricKey`] and [`DetailBudget`], labels of bounded cardinality.
//! - `matcher`: [`Config::plan`] and [`Domain::find`]: [`Plan`], [`DescriptorPlan`],
//!   [`Applied`], [`Answer`]; `replaces` across descriptors; limit overrides.
//! - [`headers`]: `RateLimit-Policy`, `RateLimit`, `Retry-After`, legacy `X-RateLimit-*`
//!   (RFC 9651 structured fields), for any transport or a tower layer.
//! - `metrics` (also): [`ServiceMetrics`], registered into the caller's `Registry`.
//! - `service`: [`RateLimitService`] (the config in force, a limiter per [`OutagePolicy`],
//!   [`RateLimitService::check`]) and its [`Response`]; `service/check` turns a plan into
//!   limiter calls and decisions into statuses.
//! - [`grpc`]: [`grpc::GrpcService`], `ShouldRateLimit` over the `envoy-types` protos.
//! - [`http`]: the axum router: `/v1/check`, `/metrics`, `/healthz`.
//! - [`reload`]: [`reload::watch`], polling the config path.
//! - [`server`]: [`server::Server`]: listeners, the watch, graceful drain on a
//!   `CancellationToken`.
//! - [`layer`]: the tower layer for axum, tonic and hyper services, in tower's layout:
//!   `layer/layer` ([`layer::RateLimitLayer`] and its builder: config only), `layer/service`
//!   ([`layer::RateLimit`], the per-request work), `layer/future`
//!   ([`layer::ResponseFuture`]), `layer/body` ([`layer::ResponseBody`]), `layer/key` (the
//!   [`layer::KeyExtractor`]s, [`layer::ClientIp`] and [`layer::TrustedProxies`]),
//!   `layer/rules` (per-route rule sets and their counter ids), `layer/error`
//!   ([`layer::LayerError`]).
//!
//! # Dependencies and why
//! - `sluice-limiter`: a rate's limiter [`Rule`](sluice_limiter::Rule) is built (and so
//!   checked, with the limiter's own rules and words) when the config loads.
//! - `serde_norway`: YAML. `serde_yaml` is deprecated and unmaintained; `serde_norway` is its
//!   maintained fork (same API and `Value`, fixes released), pure Rust over a safe libyaml
//!   port. The config is read as a `Value` and walked by hand, so every error can name the
//!   descriptor path and use envoy's wording.
//! - `serde_json`: descriptors' `metadata`, kept as JSON for a response's dynamic metadata.
//! - `humantime`: `window` and `granularity` durations (`90s`, `1h 30m`).
//! - `thiserror`: the typed, `#[non_exhaustive]` errors.
//! - `sluice-shared`: the Redis handle the service's limiters share, `PING` and the eviction
//!   policy for `/healthz`.
//! - `envoy-types` + `tonic`: Envoy's rate limit service protos, generated and maintained
//!   upstream (no `protoc` at build time, no hand-written protos), and the gRPC server they are
//!   generated for; re-exported as [`envoy_types`] so clients build from the same protos.
//! - `axum`: the HTTP front end (the same hyper stack tonic runs on).
//! - `prometheus`: the metrics and their text format, in a registry the caller owns.
//! - `arc-swap`: the config in force, swapped whole on reload with no lock on the request path.
//! - `percent-encoding`: `/v1/check`'s descriptor entries, decoded after splitting on `,`/`:`.
//! - `tokio`, `tokio-util`: timers, listeners, signals' `CancellationToken`.
//! - `serde`: JSON bodies; outage policies read from settings.
//! - `tracing`: reload and outage log lines.
//! - `redis`: `PING` for `/healthz`.
//! - `tower`: the `Layer` and `Service` traits the [`layer`] implements (no default features:
//!   the traits only), so it stacks with axum, tonic, hyper and tower-http.
//! - `http`, `http-body`, `bytes`, `pin-project-lite`: the request and response types every
//!   tower HTTP stack shares, the `Body` trait and its frames for [`layer::ResponseBody`]
//!   (which wraps the inner body, so the layer keeps body types generic), pinned without
//!   `unsafe`.
//! - `ipnet`: [`layer::TrustedProxies`]' CIDR networks and their `contains` (the crate
//!   reqwest and hickory use; IPv4 and IPv6 alike).
//! - `reqwest` (dev): the real HTTP client the layer's tests drive an axum app with.
#![warn(missing_docs)]

mod config;
mod error;
pub mod grpc;
pub mod headers;
pub mod http;
mod key;
pub mod layer;
mod limit;
mod matcher;
mod metrics;
mod pattern;
pub mod reload;
mod request;
pub mod server;
mod service;
mod unit;

pub use envoy_types;

pub use config::{Config, DescriptorConfig, Domain};
pub use error::{ConfigError, Problem};
pub use key::KeyId;
pub use limit::{AlgorithmSpec, Limit, Rate};
pub use matcher::{Answer, Applied, DescriptorPlan, LimitSource, Plan};
pub use metrics::{DecisionResult, DetailBudget, MetricKey, ServiceMetrics, UNKNOWN_DOMAIN};
pub use request::{Entry, LimitOverride, RequestDescriptor, hits};
pub use service::{
    CheckError, Code, CurrentLimit, DescriptorStatus, Health, OutagePolicy, RateLimitService,
    Response, ServiceError, ServiceOptions,
};
pub use unit::Unit;
