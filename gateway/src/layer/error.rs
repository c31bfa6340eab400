//! Why a layer's config was refused: every variant names the field to blame, as the builder
//! spells it (`routes["/orders"][1]`, `trusted_proxies[0]`).

/// A refused [`RateLimitLayer`](super::RateLimitLayer) config, from
/// [`RateLimitLayerBuilder::build`](super::RateLimitLayerBuilder::build) or
/// [`TrustedProxies::new`](super::TrustedProxies::new).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// Neither a route nor default rules were given: the layer would limit nothing.
    #[error("routes: no route and no default rules: the layer would limit nothing")]
    NoRules,
    /// A route template was empty.
    #[error("{field}: a route template must not be empty")]
    EmptyRoute {
        /// The field (`routes[""]`).
        field: String,
    },
    /// A route was given twice.
    #[error("{field}: route given twice")]
    DuplicateRoute {
        /// The field (`routes["/orders"]`).
        field: String,
    },
    /// A route (or the default) was given no rules.
    #[error("{field}: at least one rule is needed")]
    NoRulesForRoute {
        /// The field (`routes["/orders"]`, or `default_rules`).
        field: String,
    },
    /// Two rules of one route share a name: they would share a counter.
    #[error("{field}: rule name '{name}' is used twice in this route")]
    DuplicateRuleName {
        /// The field of the second rule (`routes["/orders"][1]`).
        field: String,
        /// The name.
        name: String,
    },
    /// A trusted proxy entry is not an IP address or a CIDR.
    #[error("{field}: '{value}' is not an IP address or a CIDR (e.g. 192.0.2.0/24, 2001:db8::/32)")]
    InvalidCidr {
        /// The field (`trusted_proxies[2]`).
        field: String,
        /// The entry as given.
        value: String,
    },
}
