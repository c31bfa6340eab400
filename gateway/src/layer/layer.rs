//! [`RateLimitLayer`] and its builder: the layer's config, checked when it is built.

use std::{
    fmt,
    sync::{Arc, atomic::AtomicBool},
};

use http::request::Parts;
use sluice_limiter::{Limiter, Rule};
use sluice_shared::RedisHandle;
use tower::Layer;

use super::{error::LayerError, key::KeyExtractor, rules::RouteRules, service::RateLimit};
use crate::headers::HeaderStyle;

/// How many units a request costs.
type CostFn = Arc<dyn Fn(&Parts) -> u64 + Send + Sync>;

/// What to do with a request whose key can't be read (a header it lacks, no peer address, a
/// client IP that no trusted proxy vouches for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingKey {
    /// Answer 400 with a problem document naming the part that is missing (the default: a
    /// request that can't be counted is not let through uncounted).
    #[default]
    Reject,
    /// Pass the request through, not limited (e.g. a key from an optional API-key header, for
    /// requests that other means limit).
    Skip,
}

/// What to do when the limiter returns an error instead of a decision: with the limiter's
/// [`OutagePolicy::Error`](sluice_limiter::OutagePolicy::Error), Redis down or slower than the
/// limiter's timeout. (The other outage policies answer with a decision, which the layer
/// follows: `FailClosed` denies with a 429.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnLimiterError {
    /// Pass the request through, not limited, without rate-limit headers (the default, like
    /// Envoy's rate limit filter).
    #[default]
    FailOpen,
    /// Answer 503 with a problem document.
    Unavailable,
}

/// The layer's config, shared by every service it makes.
pub(crate) struct Config<C> {
    pub(crate) limiter: Limiter<C>,
    pub(crate) key: KeyExtractor,
    pub(crate) rules: RouteRules,
    pub(crate) cost: Option<CostFn>,
    pub(crate) missing_key: MissingKey,
    pub(crate) on_error: OnLimiterError,
    pub(crate) style: HeaderStyle,
    pub(crate) problem_type: String,
    /// Whether the last check failed: an outage is logged when it starts and when it ends,
    /// not once per request.
    pub(crate) failing: AtomicBool,
}

impl<C: fmt::Debug> fmt::Debug for Config<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("limiter", &self.limiter)
            .field("key", &self.key)
            .field("rules", &self.rules)
            .field("cost", &self.cost.as_ref().map(|_| "fn"))
            .field("missing_key", &self.missing_key)
            .field("on_error", &self.on_error)
            .field("style", &self.style)
            .field("problem_type", &self.problem_type)
            .finish()
    }
}

/// A tower [`Layer`] that rate-limits HTTP requests (axum, tonic, hyper) with a Sluice
/// [`Limiter`]: see the [module docs](super). Cheap to clone; build it with
/// [`RateLimitLayer::builder`].
pub struct RateLimitLayer<C = RedisHandle> {
    config: Arc<Config<C>>,
}

impl<C> Clone for RateLimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for RateLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<C> RateLimitLayer<C> {
    /// Start a layer's config over `limiter` (its prefix, timeout and outage policy apply).
    pub fn builder(limiter: Limiter<C>) -> RateLimitLayerBuilder<C> {
        RateLimitLayerBuilder {
            limiter,
            key: KeyExtractor::default(),
            routes: Vec::new(),
            default: None,
            cost: None,
            missing_key: MissingKey::default(),
            on_error: OnLimiterError::default(),
            legacy_headers: false,
            problem_type: "about:blank".to_owned(),
        }
    }
}

impl<S, C> Layer<S> for RateLimitLayer<C> {
    type Service = RateLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, Arc::clone(&self.config))
    }
}

/// The config of a [`RateLimitLayer`]; [`RateLimitLayerBuilder::build`] checks it.
pub struct RateLimitLayerBuilder<C> {
    limiter: Limiter<C>,
    key: KeyExtractor,
    routes: Vec<(String, Vec<Rule>)>,
    default: Option<Vec<Rule>>,
    cost: Option<CostFn>,
    missing_key: MissingKey,
    on_error: OnLimiterError,
    legacy_headers: bool,
    problem_type: String,
}

impl<C: fmt::Debug> fmt::Debug for RateLimitLayerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("limiter", &self.limiter)
            .field("key", &self.key)
            .field("routes", &self.routes)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl<C> RateLimitLayerBuilder<C> {
    /// What requests are counted under (default [`KeyExtractor::peer_ip`]).
    pub fn key(mut self, key: KeyExtractor) -> Self {
        self.key = key;
        self
    }

    /// The rules of the route `template` (axum's route template as written in
    /// `Router::route`, e.g. `/users/{id}`; or a request path where there is no router, e.g.
    /// a gRPC method's `/package.Service/Method`). Every rule is checked for each request, all
    /// or nothing: a request denied by one is charged to none. The rules must use one
    /// algorithm and distinct names.
    pub fn route(
        mut self,
        template: impl Into<String>,
        rules: impl IntoIterator<Item = Rule>,
    ) -> Self {
        self.routes
            .push((template.into(), rules.into_iter().collect()));
        self
    }

    /// The rules of every route not given its own (default: none, such routes are not
    /// limited). All those routes share the counters for a key, unless the key holds the route
    /// ([`KeyExtractor::route`]).
    pub fn default_rules(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.default = Some(rules.into_iter().collect());
        self
    }

    /// How many units a request costs (default 1), from its head (method, path, headers,
    /// extensions). 0 lets the request through without counting it. A cost over a rule's
    /// capacity can never pass: such a request gets a 429 without `Retry-After`.
    pub fn cost(mut self, cost: impl Fn(&Parts) -> u64 + Send + Sync + 'static) -> Self {
        self.cost = Some(Arc::new(cost));
        self
    }

    /// What to do with a request whose key can't be read (default [`MissingKey::Reject`]).
    pub fn on_missing_key(mut self, missing: MissingKey) -> Self {
        self.missing_key = missing;
        self
    }

    /// What to do when the limiter errors (default [`OnLimiterError::FailOpen`]).
    pub fn on_limiter_error(mut self, on_error: OnLimiterError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Also send the legacy `X-RateLimit-Limit`, `-Remaining` and `-Reset` (default off).
    pub fn legacy_headers(mut self, legacy: bool) -> Self {
        self.legacy_headers = legacy;
        self
    }

    /// The `type` of the problem documents the layer answers with (RFC 9457; default
    /// `about:blank`, meaning the status code says it all).
    pub fn problem_type(mut self, uri: impl Into<String>) -> Self {
        self.problem_type = uri.into();
        self
    }

    /// The layer, or the first problem with its config ([`LayerError`], naming the field): no
    /// rules at all, an empty or repeated route, a route without rules, rules of one route
    /// with the same name or different algorithms.
    pub fn build(self) -> Result<RateLimitLayer<C>, LayerError> {
        let rules = RouteRules::new(self.routes, self.default)?;
        Ok(RateLimitLayer {
            config: Arc::new(Config {
                limiter: self.limiter,
                key: self.key,
                rules,
                cost: self.cost,
                missing_key: self.missing_key,
                on_error: self.on_error,
                style: HeaderStyle::with_legacy(self.legacy_headers),
                problem_type: self.problem_type,
                failing: AtomicBool::new(false),
            }),
        })
    }
}
