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
};

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

#[cfg(test)]
mod tests {
    use super::*;

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
