//! One rule applied to one key at some cost, and the checks a request must pass before
//! anything is sent.

use sluice_shared::Keyspace;

use crate::{algorithm::Algorithm, error::LimitError, rule::Rule};

/// One rule applied to one key in a multi-rule check.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub(crate) rule: &'a Rule,
    pub(crate) key: &'a [u8],
    pub(crate) cost: u64,
}

impl<'a> Check<'a> {
    /// Charge `rule` one unit for `key`.
    pub fn new(rule: &'a Rule, key: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        Self {
            rule,
            key: key.as_ref(),
            cost: 1,
        }
    }

    /// Charge `cost` units instead of one.
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    /// The four per-rule script arguments: limit, window (µs), parameter, cost.
    pub(crate) fn args(&self) -> [u64; 4] {
        [
            self.rule.limit(),
            self.rule.window_us(),
            self.rule.param(),
            self.cost,
        ]
    }
}

/// Refuse what can never be answered (no checks, a zero cost, a cost over the capacity, mixed
/// algorithms, keys in different slots); returns the one algorithm the checks use.
pub(crate) fn validate(checks: &[Check<'_>]) -> Result<Algorithm, LimitError> {
    let first = checks.first().ok_or(LimitError::Empty)?;
    let algorithm = first.rule.algorithm();
    // Only several checks need one tag (one script call, one slot).
    let tag = (checks.len() > 1).then(|| Keyspace::tag_of(first.key));
    for c in checks {
        if c.cost == 0 {
            return Err(LimitError::ZeroCost);
        }
        if c.cost > c.rule.capacity() {
            return Err(LimitError::InsufficientCapacity {
                rule: c.rule.name().to_owned(),
                cost: c.cost,
                capacity: c.rule.capacity(),
            });
        }
        if c.rule.algorithm() != algorithm {
            return Err(LimitError::MixedAlgorithms(
                algorithm.code(),
                c.rule.algorithm().code(),
            ));
        }
        if tag
            .as_ref()
            .is_some_and(|tag| Keyspace::tag_of(c.key) != *tag)
        {
            return Err(LimitError::CrossSlot {
                first: String::from_utf8_lossy(first.key).into_owned(),
                other: String::from_utf8_lossy(c.key).into_owned(),
            });
        }
    }
    Ok(algorithm)
}
