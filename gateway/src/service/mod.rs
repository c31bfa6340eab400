//! The transport-independent rate-limit service: [`RateLimitService`] holds the config in
//! force (swapped whole on reload, so a request in flight keeps the config it started with),
//! a [`Limiter`] per outage policy, and the metrics; [`RateLimitService::check`] answers one
//! request. The gRPC and HTTP front ends only translate.
//!
//! - `check`: a [`Plan`](crate::Plan) into limiter calls, all of a request's descriptors in
//!   one all-or-nothing call, and the calls' decisions into a [`Response`].
//! - `response`: [`Response`], [`DescriptorStatus`], [`CurrentLimit`], [`Code`].

mod check;
mod response;

use std::{
    collections::HashMap,
    fmt,
    path::Path,
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use sluice_limiter::{LimitError, Limiter};
use sluice_shared::RedisHandle;

pub use response::{Code, CurrentLimit, DescriptorStatus, Response};

use crate::{
    Config, ConfigError,
    headers::HeaderStyle,
    metrics::{DetailBudget, ServiceMetrics},
    request::{Entry, RequestDescriptor},
};

/// What a domain's requests get while Redis is slow or down (after the per-call timeout, and
/// at once while the breaker is open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
#[non_exhaustive]
pub enum OutagePolicy {
    /// Answer OK (Envoy's filter does the same when its rate limit service fails): the
    /// default.
    #[default]
    FailOpen,
    /// Answer OVER_LIMIT.
    FailClosed,
    /// Decide with an in-process limiter of the same rules: each Sluice process then limits
    /// alone (P processes admit up to P times the limit).
    Local,
}

impl OutagePolicy {
    /// Every policy.
    pub const ALL: [OutagePolicy; 3] = [
        OutagePolicy::FailOpen,
        OutagePolicy::FailClosed,
        OutagePolicy::Local,
    ];

    /// The name in settings (`fail-open`, `fail-closed`, `local`).
    pub fn as_str(self) -> &'static str {
        match self {
            OutagePolicy::FailOpen => "fail-open",
            OutagePolicy::FailClosed => "fail-closed",
            OutagePolicy::Local => "local",
        }
    }

    /// The metrics label (`fail_open`, `fail_closed`, `local`).
    pub fn label(self) -> &'static str {
        match self {
            OutagePolicy::FailOpen => "fail_open",
            OutagePolicy::FailClosed => "fail_closed",
            OutagePolicy::Local => "local",
        }
    }

    fn limiter_policy(self) -> sluice_limiter::OutagePolicy {
        match self {
            OutagePolicy::FailOpen => sluice_limiter::OutagePolicy::FailOpen,
            OutagePolicy::FailClosed => sluice_limiter::OutagePolicy::FailClosed,
            OutagePolicy::Local => sluice_limiter::OutagePolicy::Local,
        }
    }
}

impl fmt::Display for OutagePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for OutagePolicy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for OutagePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        OutagePolicy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not one of fail-open, fail-closed, local"))
    }
}

/// How the service runs: key prefix, Redis timeouts, outage policies, headers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceOptions {
    /// Key prefix (default `sluice`).
    pub prefix: String,
    /// Longest wait for Redis per call before the outage policy answers (default 50 ms;
    /// Envoy's filter gives up after 20 ms by default, so keep it under the filter's).
    pub timeout: Duration,
    /// After Redis failed, how long calls go straight to the outage policy (default 250 ms).
    pub retry_interval: Duration,
    /// The outage policy of domains not in [`ServiceOptions::domain_outage`].
    pub outage: OutagePolicy,
    /// Per-domain outage policies.
    pub domain_outage: HashMap<String, OutagePolicy>,
    /// Which headers responses carry.
    pub headers: HeaderStyle,
    /// Distinct detailed metric keys let through per rule (see [`DetailBudget`]).
    pub detail_budget: usize,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            prefix: "sluice".to_owned(),
            timeout: Duration::from_millis(50),
            retry_interval: Duration::from_millis(250),
            outage: OutagePolicy::default(),
            domain_outage: HashMap::new(),
            headers: HeaderStyle::default(),
            detail_budget: 100,
        }
    }
}

/// The service could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A setting was refused (prefix, timeout), naming it.
    #[error("{0}")]
    Setting(#[from] sluice_shared::ConfigError),
    /// The metrics could not be registered (already registered in that registry?).
    #[error("cannot register the metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A request the service could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The request is malformed (empty domain, no descriptors, a limit override with an
    /// unknown unit); gRPC answers INVALID_ARGUMENT, HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// The limiter failed in a way no outage policy covers (a command error).
    #[error(transparent)]
    Limiter(#[from] LimitError),
    /// A limit the limiter refuses (e.g. an override larger than the limiter's maximum).
    #[error("limit {limit}: {reason}")]
    Rule {
        /// The limit.
        limit: String,
        /// Why.
        reason: String,
    },
}

impl CheckError {
    /// The metrics label: `bad_request`, `limiter` or `rule`.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckError::BadRequest(_) => "bad_request",
            CheckError::Limiter(_) => "limiter",
            CheckError::Rule { .. } => "rule",
        }
    }
}

/// What `/healthz` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// True when the config is loaded and Redis answers.
    pub ok: bool,
    /// Domains in the config in force.
    pub domains: usize,
    /// `None` when Redis answered `PING`, else why not.
    pub redis_error: Option<String>,
    /// Whether Redis may evict Sluice's keys ([`sluice_shared::Eviction::describe`]), when
    /// it could be read.
    pub eviction: Option<String>,
    /// The last reload's error, while the config it refused is not fixed.
    pub last_reload_error: Option<String>,
}

struct Loaded {
    config: Arc<Config>,
    budget: DetailBudget,
}

/// The rate-limit service (see the module docs). Share it in an `Arc`.
pub struct RateLimitService {
    loaded: ArcSwap<Loaded>,
    limiters: Vec<(OutagePolicy, Limiter)>,
    options: ServiceOptions,
    metrics: ServiceMetrics,
    redis: RedisHandle,
    last_reload_error: Mutex<Option<String>>,
}

impl fmt::Debug for RateLimitService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("domains", &self.loaded.load().config.domains().len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RateLimitService {
    /// A service over `redis` answering with `config`, its metrics registered into
    /// `registry`.
    pub fn new(
        redis: RedisHandle,
        config: Config,
        options: ServiceOptions,
        registry: &Registry,
    ) -> Result<Self, ServiceError> {
        let metrics = ServiceMetrics::register(registry)?;
        let mut limiters = Vec::with_capacity(OutagePolicy::ALL.len());
        for policy in OutagePolicy::ALL {
            let limiter = Limiter::builder(redis.clone())
                .prefix(&options.prefix)?
                .timeout(options.timeout)?
                .retry_interval(options.retry_interval)?
                .on_outage(policy.limiter_policy())
                .build();
            limiters.push((policy, limiter));
        }
        metrics.loaded(config.domains().len());
        Ok(Self {
            loaded: ArcSwap::from_pointee(Loaded {
                config: Arc::new(config),
                budget: DetailBudget::new(options.detail_budget),
            }),
            limiters,
            options,
            metrics,
            redis,
            last_reload_error: Mutex::new(None),
        })
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.loaded.load().config)
    }

    /// Put `config` in force. Requests in flight finish with the config they started with.
    pub fn replace_config(&self, config: Config) {
        let domains = config.domains().len();
        self.loaded.store(Arc::new(Loaded {
            config: Arc::new(config),
            budget: DetailBudget::new(self.options.detail_budget),
        }));
        self.metrics.loaded(domains);
    }

    /// Load `path` and put it in force; a config that fails to load is refused with a log
    /// line and the reload-failed metric, and the old one stays in force.
    pub fn reload(&self, path: &Path) -> Result<usize, ConfigError> {
        let mut last = self
            .last_reload_error
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match Config::load(path) {
            Ok(config) => {
                let domains = config.domains().len();
                self.replace_config(config);
                self.metrics.reload(true, domains);
                *last = None;
                tracing::info!(path = %path.display(), domains, "config reloaded");
                Ok(domains)
            }
            Err(e) => {
                self.metrics
                    .reload(false, self.loaded.load().config.domains().len());
                tracing::error!(error = %e, "config refused; the previous one stays in force");
                *last = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The settings it runs with.
    pub fn options(&self) -> &ServiceOptions {
        &self.options
    }

    /// Its metrics.
    pub fn metrics(&self) -> &ServiceMetrics {
        &self.metrics
    }

    /// The outage policy of `domain`.
    pub fn outage_policy(&self, domain: &str) -> OutagePolicy {
        self.options
            .domain_outage
            .get(domain)
            .copied()
            .unwrap_or(self.options.outage)
    }

    fn limiter(&self, policy: OutagePolicy) -> &Limiter {
        // Built for every policy in `new`.
        let found = self.limiters.iter().find(|(p, _)| *p == policy);
        match found.or(self.limiters.first()) {
            Some((_, limiter)) => limiter,
            None => unreachable!("a limiter per outage policy is built in RateLimitService::new"),
        }
    }

    /// Answer one request: `domain`, its descriptors, and the request's `hits_addend` (0
    /// means 1). Every limit of every descriptor is checked in one all-or-nothing limiter
    /// call: a refused request charges none of them. Redis trouble is answered by the
    /// domain's outage policy within the per-call timeout.
    pub async fn check<E: Entry>(
        &self,
        domain: &str,
        descriptors: &[RequestDescriptor<'_, E>],
        hits_addend: u64,
    ) -> Result<Response, CheckError> {
        let started = Instant::now();
        let result = self.check_inner(domain, descriptors, hits_addend).await;
        self.metrics.latency(started.elapsed());
        if let Err(e) = &result {
            self.metrics.error(e.kind());
        }
        result
    }

    async fn check_inner<E: Entry>(
        &self,
        domain: &str,
        descriptors: &[RequestDescriptor<'_, E>],
        hits_addend: u64,
    ) -> Result<Response, CheckError> {
        if domain.is_empty() {
            return Err(CheckError::BadRequest(
                "rate limit domain must not be empty".to_owned(),
            ));
        }
        if descriptors.is_empty() {
            return Err(CheckError::BadRequest(
                "rate limit descriptor list must not be empty".to_owned(),
            ));
        }
        let loaded = self.loaded.load_full();
        let plan = loaded.config.plan(domain, descriptors, hits_addend);
        let policy = self.outage_policy(domain);
        check::run(self, &loaded.budget, &plan, domain, policy).await
    }

    /// Bring the metrics that are read rather than counted up to date (called before a scrape):
    /// Redis' eviction policy, as the limiter read it once at start.
    pub fn refresh_metrics(&self) {
        let eviction = self.limiters.first().and_then(|(_, l)| l.server_eviction());
        self.metrics().eviction(eviction.as_ref());
    }

    /// Whether the service can answer from Redis: the config is loaded (always, once built)
    /// and Redis answers `PING` within a second; with Redis' eviction policy.
    pub async fn health(&self) -> Health {
        const WAIT: Duration = Duration::from_secs(1);
        let mut redis = self.redis.clone();
        let ping =
            tokio::time::timeout(WAIT, redis::cmd("PING").query_async::<String>(&mut redis)).await;
        let redis_error = match ping {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("redis: {e}")),
            Err(_) => Some(format!("redis: no answer within {WAIT:?}")),
        };
        let eviction = match redis_error {
            None => match tokio::time::timeout(WAIT, redis.eviction()).await {
                Ok(Ok(e)) => Some(e.describe()),
                Ok(Err(e)) => Some(format!("maxmemory-policy could not be read: {e}")),
                Err(_) => None,
            },
            Some(_) => None,
        };
        Health {
            ok: redis_error.is_none(),
            domains: self.loaded.load().config.domains().len(),
            redis_error,
            eviction,
            last_reload_error: self
                .last_reload_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}
