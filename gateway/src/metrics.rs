//! Metrics: labels of bounded cardinality ([`MetricKey`], [`DetailBudget`]) and the service's
//! Prometheus metrics ([`ServiceMetrics`]), registered into the caller's `Registry`.
//!
//! Metric labels of bounded cardinality.
//!
//! A matched descriptor's [`MetricKey::rule`] is its config path (`domain.key_value.key`):
//! there are only as many as the config has descriptors (plus one per domain for limit
//! overrides), whatever the traffic. It never holds a request value the config doesn't spell
//! out, so it is the label to use.
//!
//! [`MetricKey::detailed`] is envoy's finer key, set only when the config asks for it
//! (`detailed_metric: true` on the matched descriptor, or `value_to_metric: true` on a level
//! matched by a wildcard or a default key): it holds request values, so its cardinality is the
//! traffic's. Never label with it directly: pass it through a [`DetailBudget`], which lets at
//! most N distinct detailed keys per rule through and folds the rest into the rule's own key,
//! so the labels stay within (descriptors in the config) × (N + 1).

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The metric keys of a matched descriptor (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricKey<'c> {
    /// The config path: bounded by the config.
    pub rule: &'c str,
    /// Envoy's detailed or value-to-metric key, holding request values; `None` unless the
    /// config asks for it, and when it would equal `rule`.
    pub detailed: Option<String>,
}

/// Caps the distinct detailed keys per rule (see the module docs). Shared by a service's
/// request handlers; a config reload may start a new one.
#[derive(Debug)]
pub struct DetailBudget {
    per_rule: usize,
    seen: Mutex<HashMap<String, HashSet<String>>>,
}

impl DetailBudget {
    /// Let at most `per_rule` distinct detailed keys through for each rule.
    pub fn new(per_rule: usize) -> Self {
        Self {
            per_rule,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The label for `key`: its detailed key while the rule's budget lasts (and for keys
    /// already let through), else the rule. Without a detailed key, the rule.
    pub fn label<'k>(&self, key: &'k MetricKey<'_>) -> &'k str {
        let Some(detailed) = key.detailed.as_deref() else {
            return key.rule;
        };
        // A poisoned lock only means another thread panicked mid-insert: the sets are intact.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let set = match seen.get_mut(key.rule) {
            Some(set) => set,
            None => seen.entry(key.rule.to_owned()).or_default(),
        };
        if set.contains(detailed) {
            return detailed;
        }
        if set.len() < self.per_rule {
            set.insert(detailed.to_owned());
            return detailed;
        }
        key.rule
    }
}

/// What a descriptor's decision was, for [`ServiceMetrics`]' `result` label. Exclusive:
/// `ok` + `near_limit` are the admitted ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecisionResult {
    /// Admitted, under 80% of the limit used.
    Ok,
    /// Admitted, with at least 80% of the limit used (envoy's near-limit ratio).
    NearLimit,
    /// Refused.
    OverLimit,
    /// Over the limit in shadow mode: counted here, answered OK.
    ShadowOverLimit,
}

impl DecisionResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionResult::Ok => "ok",
            DecisionResult::NearLimit => "near_limit",
            DecisionResult::OverLimit => "over_limit",
            DecisionResult::ShadowOverLimit => "shadow_over_limit",
        }
    }
}

/// The service's Prometheus metrics. Every label is bounded by the config or by code: a
/// `domain` is a configured domain (`_unknown` otherwise), a `rule` a config path (or a
/// detailed key let through by a [`DetailBudget`]); no label holds a key or a request value
/// the config doesn't spell out.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `sluice_gateway_decisions_total` | counter | `domain`, `rule`, `result` (ok, near_limit, over_limit, shadow_over_limit) |
/// | `sluice_gateway_errors_total` | counter | `kind` (bad_request, limiter, rule) |
/// | `sluice_gateway_outage_answers_total` | counter | `domain`, `policy` (fail_open, fail_closed, local) |
/// | `sluice_gateway_check_seconds` | histogram | none |
/// | `sluice_gateway_config_reloads_total` | counter | `result` (ok, failed) |
/// | `sluice_gateway_config_domains` | gauge | `state` (loaded) |
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    decisions: IntCounterVec,
    errors: IntCounterVec,
    outage: IntCounterVec,
    latency: Histogram,
    reloads: IntCounterVec,
    domains: IntGaugeVec,
    eviction: IntGauge,
}

/// The label for a request's domain when the config has no such domain.
pub const UNKNOWN_DOMAIN: &str = "_unknown";

impl ServiceMetrics {
    /// Create the metrics and register them into `registry` (never the global one).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let decisions = counter(
            "sluice_gateway_decisions_total",
            "Descriptor decisions by domain, rule (config path) and result.",
            &["domain", "rule", "result"],
        )?;
        let errors = counter(
            "sluice_gateway_errors_total",
            "Requests answered with an error, by kind.",
            &["kind"],
        )?;
        let outage = counter(
            "sluice_gateway_outage_answers_total",
            "Requests answered by the outage policy while Redis was unavailable.",
            &["domain", "policy"],
        )?;
        let reloads = counter(
            "sluice_gateway_config_reloads_total",
            "Config reloads, by result (a failed one leaves the old config in force).",
            &["result"],
        )?;
        let latency = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_gateway_check_seconds",
                "Time to answer one rate-limit request (match, Redis, response).",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 1.0,
            ]),
        )?;
        registry.register(Box::new(latency.clone()))?;
        let domains = IntGaugeVec::new(
            Opts::new(
                "sluice_gateway_config_domains",
                "Domains in the config in force.",
            ),
            &["state"],
        )?;
        registry.register(Box::new(domains.clone()))?;
        let eviction = IntGauge::with_opts(Opts::new(
            "sluice_redis_eviction_possible",
            "1 when Redis' maxmemory-policy may evict keys (limits then under-count), 0 when it \
             is noeviction, -1 when it could not be read (e.g. an ACL refuses CONFIG GET) or \
             is not known yet.",
        ))?;
        eviction.set(-1);
        registry.register(Box::new(eviction.clone()))?;
        Ok(Self {
            decisions,
            errors,
            outage,
            latency,
            reloads,
            domains,
            eviction,
        })
    }

    /// What the limiter learnt of Redis' eviction policy (`None`: not known yet).
    pub fn eviction(&self, eviction: Option<&sluice_shared::Eviction>) {
        self.eviction.set(match eviction {
            Some(sluice_shared::Eviction::Never) => 0,
            Some(sluice_shared::Eviction::Possible { .. }) => 1,
            _ => -1,
        });
    }

    /// One descriptor's decision.
    pub fn decision(&self, domain: &str, rule: &str, result: DecisionResult) {
        self.decisions
            .with_label_values(&[domain, rule, result.as_str()])
            .inc();
    }

    /// One request answered with an error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }

    /// One request answered by the outage policy `policy`.
    pub fn outage_answer(&self, domain: &str, policy: &str) {
        self.outage.with_label_values(&[domain, policy]).inc();
    }

    /// The time one request took.
    pub fn latency(&self, took: Duration) {
        self.latency.observe(took.as_secs_f64());
    }

    /// A config reload, and the domains now in force.
    pub fn reload(&self, ok: bool, domains: usize) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        self.loaded(domains);
    }

    /// The domains in force.
    pub fn loaded(&self, domains: usize) {
        self.domains
            .with_label_values(&["loaded"])
            .set(i64::try_from(domains).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_metrics_register_into_the_callers_registry() {
        let registry = Registry::new();
        let m = ServiceMetrics::register(&registry).unwrap();
        m.decision("d", "d.k", DecisionResult::NearLimit);
        m.reload(false, 2);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(
            names.contains(&"sluice_gateway_decisions_total".to_owned()),
            "{names:?}"
        );
        assert!(names.contains(&"sluice_gateway_config_reloads_total".to_owned()));
        // Registering twice into one registry is refused, not silently merged.
        assert!(ServiceMetrics::register(&registry).is_err());
        assert!(
            prometheus::gather().is_empty()
                || !prometheus::gather()
                    .iter()
                    .any(|f| f.name().starts_with("sluice_gateway"))
        );
    }

    #[test]
    fn the_budget_folds_new_details_into_the_rule() {
        let budget = DetailBudget::new(2);
        let key = |d: Option<&str>| MetricKey {
            rule: "d.user",
            detailed: d.map(str::to_owned),
        };
        let (a, b, c, none) = (
            key(Some("d.user_a")),
            key(Some("d.user_b")),
            key(Some("d.user_c")),
            key(None),
        );
        assert_eq!(budget.label(&a), "d.user_a");
        assert_eq!(budget.label(&b), "d.user_b");
        assert_eq!(budget.label(&c), "d.user");
        assert_eq!(budget.label(&a), "d.user_a");
        assert_eq!(budget.label(&none), "d.user");
        let other = MetricKey {
            rule: "d.ip",
            detailed: Some("d.ip_1".to_owned()),
        };
        assert_eq!(budget.label(&other), "d.ip_1");
    }
}
