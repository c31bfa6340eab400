//! Limiter errors.

use sluice_shared::{ConfigError, RedisError};

/// Why a check could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// Redis failed and the outage policy does not cover this failure (a command error), or
    /// the policy is [`crate::OutagePolicy::Error`].
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A request can never pass: it costs more than the rule's capacity (limit, or burst).
    #[error("cost {cost} exceeds the capacity {capacity} of rule {rule}: it can never be admitted")]
    InsufficientCapacity {
        /// The rule's name.
        rule: String,
        /// Requested cost.
        cost: u64,
        /// The rule's limit (burst for GCRA).
        capacity: u64,
    },
    /// A cost of zero was asked for.
    #[error("cost must be at least 1")]
    ZeroCost,
    /// A multi-rule check whose keys would live in different Cluster slots: give the keys a
    /// common `{hash tag}` (e.g. `user:{42}:minute`, `route:/x:{42}`).
    #[error("keys of one multi-rule check must share a hash tag; {first:?} and {other:?} do not")]
    CrossSlot {
        /// The first key.
        first: String,
        /// A key with another tag.
        other: String,
    },
    /// A multi-rule check mixing algorithms (each algorithm is one script).
    #[error("one multi-rule check must use one algorithm; found {0} and {1}")]
    MixedAlgorithms(&'static str, &'static str),
    /// A multi-rule check with no rules.
    #[error("a multi-rule check needs at least one rule")]
    Empty,
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
}
