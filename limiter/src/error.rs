//! Limiter errors.

use sluice_shared::RedisError;

/// Why a check could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// Redis failed and the outage policy does not cover this failure (a command error), or
    /// the policy is [`crate::OutagePolicy::Error`] (see [`LimitError::is_unavailable`]).
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A request can never pass: it costs more than the rule's capacity (limit, or burst). In a
    /// multi-rule check the same rule and key listed more than once count together, so the
    /// cost is their sum.
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
    /// A multi-rule check naming one rule twice for the same key with two different
    /// definitions (same name and algorithm, other limit, window or parameter): they would
    /// share one Redis key, so one name must mean one rule. (The same rule twice is fine: the
    /// two count together.)
    #[error(
        "rule {rule} appears twice for one key with different definitions: {first:?} and {other:?}"
    )]
    ConflictingRules {
        /// The rule's name.
        rule: String,
        /// The first definition.
        first: String,
        /// The other.
        other: String,
    },
    /// A multi-rule check with no rules.
    #[error("a multi-rule check needs at least one rule")]
    Empty,
    /// The limiter's coalescing task is gone (the runtime that ran it shut down, or it
    /// panicked), so a coalesced check got no answer. The outage policy applies to it as to
    /// an unavailable Redis; this error reaches the caller only under
    /// [`crate::OutagePolicy::Error`].
    #[error("the limiter's coalescing task stopped before answering")]
    CoalescerStopped,
}

impl LimitError {
    /// True when the check could not reach Redis (down, slow, failing over, or the coalescing
    /// task gone), not when the request or the command was at fault: the failures the outage
    /// policy answers.
    pub fn is_unavailable(&self) -> bool {
        match self {
            LimitError::Redis(e) => e.is_unavailable(),
            LimitError::CoalescerStopped => true,
            LimitError::InsufficientCapacity { .. }
            | LimitError::ZeroCost
            | LimitError::CrossSlot { .. }
            | LimitError::ConflictingRules { .. }
            | LimitError::Empty => false,
        }
    }
}
