//! Sluice limiter: distributed rate limiting in one atomic Redis round trip.
//!
//! Four algorithms, each a Lua script loaded once and called with `EVALSHA` (reloaded by
//! itself after `SCRIPT FLUSH` or a restart), with Redis `TIME` as the clock so clients with
//! skewed clocks agree, and a TTL on every key:
//!
//! | algorithm | exactness | memory per key |
//! |---|---|---|
//! | [`Rule::sliding_log`] | exact: no window of length W ever admits more than the limit | one sorted-set member per admission (at most the limit) |
//! | [`Rule::sliding_counter`] | approximate; over-admission bounded by one sub-bucket's admissions (see `docs/LIMITER.md`) | one hash field per sub-bucket |
//! | [`Rule::gcra`] | exact for its model: any interval d admits at most burst + d·rate | one string |
//! | [`Rule::fixed_window`] | exact per window aligned to the epoch (envoyproxy/ratelimit's); up to 2× the limit across a boundary | one string |
//!
//! Several rules can be checked in one call, all or nothing ([`Limiter::check_all`]), when their
//! keys share a `{hash tag}`: they then live in one Cluster slot. The rules may use different
//! algorithms (one script call all the same), and the same rule and key listed twice count
//! together. When Redis is slow or down, an
//! [`OutagePolicy`] answers within the per-call timeout, and each [`Decision`] says which path
//! answered.
//!
//! # Quick start
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let url = sluice_tests::standalone_url();
//! use std::time::Duration;
//! use sluice_limiter::{Limiter, OutagePolicy, Rule};
//! use sluice_shared::{RedisConfig, RedisHandle};
//!
//! let redis = RedisHandle::connect(&RedisConfig::parse(&url)?).await?;
//! let limiter = Limiter::builder(redis)
//!     .prefix("quickstart")?
//!     .timeout(Duration::from_millis(50))?
//!     .on_outage(OutagePolicy::Local)
//!     .build();
//!
//! // At most 3 requests per second for each user, exactly.
//! let rule = Rule::sliding_log("per-user", 3, Duration::from_secs(1))?;
//! # limiter.reset(&rule, "user:42").await?;
//! for _ in 0..3 {
//!     assert!(limiter.check(&rule, "user:42", 1).await?.allowed);
//! }
//! let denied = limiter.check(&rule, "user:42", 1).await?;
//! assert!(!denied.allowed);
//! assert_eq!(denied.remaining, 0);
//! assert!(denied.retry_after.unwrap() <= Duration::from_secs(1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Layout
//! Each module uses only the ones listed above it.
//! - `error`: [`LimitError`].
//! - `algorithm`: [`Algorithm`], the algorithms by name (files, command line, key codes).
//! - `rule`: [`Rule`] (limit, window, algorithm and its parameters), validated; [`RuleConfig`],
//!   its file form.
//! - `clock`: [`Clock`] and [`ManualClock`], where "now" comes from.
//! - `script`: the Lua sources (`lua/`), one static `redis::Script` per algorithm,
//!   [`script_sha`] and [`script_source`]; and the mixed script (every algorithm file wrapped
//!   in a table keyed by its code, `lua/mixed.lua`, the same driver) for checks that mix
//!   algorithms.
//! - `check`: [`Check`] (one rule, one key, a cost), the validation of a list of them and the
//!   script that answers it, and the folding of checks on one key into one (summed cost).
//! - `decision`: [`Decision`], [`MultiDecision`], [`Source`], and the per-rule answer (in the
//!   scripts' units) that decisions are assembled from.
//! - `local`: the in-process limiter: the four algorithms over process memory.
//! - `call`: one script call: the `EVALSHA` request (one algorithm's script, or the mixed
//!   one), its timeout, `NOSCRIPT` reload, and the reply read into named fields.
//! - `coalesce`: [`Coalescing`] and the background task that batches concurrent checks.
//! - `outage`: [`OutagePolicy`], the breaker, and the fallback answers.
//! - `eviction`: the one-time background check of the server's `maxmemory-policy`
//!   ([`Limiter::server_eviction`]) and its warning.
//! - `limiter`: [`Limiter`], the public type: checks in, script calls out, failures to the
//!   outage policy.
//! - `builder`: [`LimiterBuilder`] and [`Limiter::builder`].
//!
//! # Dependencies and why
//! - `sluice-shared`: the connection handle (standalone/Cluster), typed Redis and config
//!   errors, key naming and Cluster slots.
//! - `redis`: `Script` (the SHA1 and `SCRIPT LOAD` on `NOSCRIPT`) and the async connection
//!   trait.
//! - `tokio`: per-call timeouts, and the coalescing task with its channels and semaphore.
//! - `serde` + `humantime-serde`: rules load from config files (`window = "1m"`), decisions
//!   serialize (the CLI prints them as JSON).
//! - `thiserror`: the typed [`LimitError`].
//! - `tracing`: a warning when the outage policy takes over, and when the server may evict the
//!   limiter's keys.
#![warn(missing_docs)]

mod algorithm;
mod builder;
mod call;
mod check;
mod clock;
mod coalesce;
mod decision;
mod error;
mod eviction;
mod limiter;
mod local;
mod outage;
mod rule;
mod script;

pub use algorithm::Algorithm;
pub use builder::LimiterBuilder;
pub use check::Check;
pub use clock::{Clock, ManualClock};
pub use coalesce::Coalescing;
pub use decision::{Decision, MultiDecision, Source};
pub use error::LimitError;
pub use limiter::Limiter;
pub use outage::OutagePolicy;
pub use rule::{MAX_BUCKETS, MAX_LIMIT, MAX_WINDOW, Rule, RuleConfig};
pub use script::{script_sha, script_source};
pub use sluice_shared::Eviction;

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// Entry points for the criterion benchmarks in `benches/` (not a stable API).
#[doc(hidden)]
pub mod bench_support {
    use crate::{Check, Decision, LimitError, Limiter, Rule, call};

    /// The `EVALSHA` command one check sends, for the rule's Redis key of `id`.
    pub fn check_command<C>(limiter: &Limiter<C>, rule: &Rule, id: &[u8], cost: u64) -> redis::Cmd
    where
        C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
    {
        let key = limiter.redis_key(rule, id);
        let check = Check::new(rule, id).cost(cost);
        let items = [call::CallItem {
            key: &key,
            args: check.args(),
        }];
        call::evalsha(rule.algorithm(), 0, call::CHECK, &items)
    }

    /// The decision a check reply (already parsed to integers) becomes.
    pub fn decode_check(rule: &Rule, reply: &[i64]) -> Result<Decision, LimitError> {
        let checks = [Check::new(rule, b"")];
        let mut multi = call::decode(&checks, reply)?;
        multi.decisions.pop().ok_or(LimitError::Empty)
    }
}
