//! Rate-limit rules for gateways: envoyproxy/ratelimit's YAML config (as it is, plus Sluice's
//! extensions), validated, and the matching of a request's descriptors to the limits that
//! apply. Pure logic: no Redis, no network. `sluice serve` builds on it: it loads a
//! [`Config`], [`Config::plan`]s each request, checks the planned limits with
//! `sluice-limiter` in one call, and answers.
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
#![warn(missing_docs)]

mod config;
mod error;
pub mod grpc;
pub mod headers;
pub mod http;
mod key;
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
