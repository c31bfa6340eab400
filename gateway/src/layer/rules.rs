//! Per-route rules: the rule sets, checked and indexed by route, and the ids their counters
//! live under.

use std::collections::{HashMap, HashSet};

use sluice_limiter::Rule;

use super::error::LayerError;

/// The rules of one route (or the default), checked together, all or nothing.
#[derive(Debug, Clone)]
pub(crate) struct RuleSet {
    /// What follows the tag in a counter's id: `r:<template>`, or `d` for the default.
    scope: String,
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Check a route's (or the default's, `route: None`) rules: at least one, names unique
    /// (algorithms may mix). `field` names them in errors.
    fn new(route: Option<&str>, field: String, rules: Vec<Rule>) -> Result<Self, LayerError> {
        if rules.is_empty() {
            return Err(LayerError::NoRulesForRoute { field });
        }
        let mut names = HashSet::new();
        for (i, rule) in rules.iter().enumerate() {
            if !names.insert(rule.name()) {
                return Err(LayerError::DuplicateRuleName {
                    field: format!("{field}[{i}]"),
                    name: rule.name().to_owned(),
                });
            }
        }
        let scope = match route {
            Some(route) => format!("r:{route}"),
            None => "d".to_owned(),
        };
        Ok(Self { scope, rules })
    }

    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The id every rule of the set counts `key` under: `{<key>}<scope>`. The key (already
    /// escaped: no braces) is the hash tag, so the set's counters for one client share a
    /// Cluster slot (one all-or-nothing script call) while clients spread over slots.
    pub(crate) fn id(&self, key: &[u8]) -> Vec<u8> {
        let mut id = Vec::with_capacity(key.len() + self.scope.len() + 2);
        id.push(b'{');
        id.extend_from_slice(key);
        id.push(b'}');
        id.extend_from_slice(self.scope.as_bytes());
        id
    }
}

/// Every route's rule set, and the default's.
#[derive(Debug, Clone)]
pub(crate) struct RouteRules {
    routes: HashMap<String, RuleSet>,
    default: Option<RuleSet>,
}

impl RouteRules {
    /// Check the builder's routes and default.
    pub(crate) fn new(
        routes: Vec<(String, Vec<Rule>)>,
        default: Option<Vec<Rule>>,
    ) -> Result<Self, LayerError> {
        if routes.is_empty() && default.is_none() {
            return Err(LayerError::NoRules);
        }
        let mut map = HashMap::with_capacity(routes.len());
        for (route, rules) in routes {
            let field = format!("routes[{route:?}]");
            if route.is_empty() {
                return Err(LayerError::EmptyRoute { field });
            }
            if map.contains_key(&route) {
                return Err(LayerError::DuplicateRoute { field });
            }
            let set = RuleSet::new(Some(&route), field, rules)?;
            map.insert(route, set);
        }
        let default = default
            .map(|rules| RuleSet::new(None, "default_rules".to_owned(), rules))
            .transpose()?;
        Ok(Self {
            routes: map,
            default,
        })
    }

    /// The set for `route`: its own, else the default, else none (not limited).
    pub(crate) fn find(&self, route: &str) -> Option<&RuleSet> {
        self.routes.get(route).or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;

    fn log(name: &str) -> Rule {
        Rule::sliding_log(name, 5, Duration::from_secs(1)).unwrap()
    }

    fn err(routes: Vec<(&str, Vec<Rule>)>, default: Option<Vec<Rule>>) -> String {
        let routes = routes.into_iter().map(|(r, v)| (r.to_owned(), v)).collect();
        RouteRules::new(routes, default).unwrap_err().to_string()
    }

    #[test]
    fn bad_sets_are_refused_naming_the_field() {
        assert!(err(vec![], None).starts_with("routes: "));
        assert!(err(vec![("", vec![log("a")])], None).starts_with(r#"routes[""]: "#));
        assert_eq!(
            err(vec![("/a", vec![log("a")]), ("/a", vec![log("a")])], None),
            r#"routes["/a"]: route given twice"#
        );
        assert!(err(vec![("/a", vec![])], None).starts_with(r#"routes["/a"]: at least one"#));
        assert!(err(vec![], Some(vec![log("x"), log("x")])).starts_with("default_rules[1]: "));
        // Algorithms may mix: the limiter checks them in one all-or-nothing call.
        let gcra = Rule::gcra("g", 5, Duration::from_secs(1), 5).unwrap();
        assert!(RouteRules::new(vec![("/a".to_owned(), vec![log("a"), gcra])], None).is_ok());
    }

    #[test]
    fn ids_are_tagged_by_the_key_and_scoped_by_the_set() {
        let rules = RouteRules::new(
            vec![("/a".to_owned(), vec![log("a")])],
            Some(vec![log("d")]),
        )
        .unwrap();
        let a = rules.find("/a").unwrap().id(b"192.0.2.1");
        let other = rules.find("/b").unwrap().id(b"192.0.2.1");
        assert_eq!(a, b"{192.0.2.1}r:/a");
        assert_eq!(other, b"{192.0.2.1}d");
        assert_eq!(sluice_shared::hash_tag(&a), Some(&b"192.0.2.1"[..]));
        let none = RouteRules::new(vec![("/a".to_owned(), vec![log("a")])], None).unwrap();
        assert!(none.find("/b").is_none());
    }
}
