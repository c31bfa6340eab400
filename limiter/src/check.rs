//! One rule applied to one key at some cost, the checks a request must pass before anything
//! is sent (and which script answers it), and the folding of checks on one key into one.

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

/// Which script answers a list of checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// Every rule uses this algorithm: its own script (the hot path, unchanged).
    By(Algorithm),
    /// The rules use different algorithms: the mixed script.
    Mixed,
}

/// Refuse what can never be answered (no checks, a zero cost, a cost over the capacity, keys
/// in different slots); returns the script that answers the checks.
pub(crate) fn validate(checks: &[Check<'_>]) -> Result<Served, LimitError> {
    let first = checks.first().ok_or(LimitError::Empty)?;
    let mut served = Served::By(first.rule.algorithm());
    // Only several checks need one tag (one script call, one slot).
    let tag = (checks.len() > 1).then(|| Keyspace::tag_of(first.key));
    for c in checks {
        check_cost(c.rule, c.cost)?;
        if c.rule.algorithm() != first.rule.algorithm() {
            served = Served::Mixed;
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
    Ok(served)
}

/// A cost must be 1 to the rule's capacity.
fn check_cost(rule: &Rule, cost: u64) -> Result<(), LimitError> {
    if cost == 0 {
        return Err(LimitError::ZeroCost);
    }
    if cost > rule.capacity() {
        return Err(LimitError::InsufficientCapacity {
            rule: rule.name().to_owned(),
            cost,
            capacity: rule.capacity(),
        });
    }
    Ok(())
}

/// The checks of one call with those on the same Redis key folded into one, their costs
/// summed, so that they count together: evaluated separately, each would see the state before
/// the other's charge, and together they could pass the limit.
#[derive(Debug)]
pub(crate) struct Merged<'a> {
    /// One check per distinct key, in the order of first appearance.
    pub(crate) checks: Vec<Check<'a>>,
    /// Their Redis keys.
    pub(crate) keys: Vec<Vec<u8>>,
    /// For each check given, the index of the merged check that answers it.
    pub(crate) answered_by: Vec<usize>,
}

/// Fold the checks that share a Redis key (`keys[i]` is the key of `checks[i]`); `None` when
/// no two do (the usual case: nothing is copied). The same key must come with the same rule,
/// and the summed cost must fit its capacity.
pub(crate) fn merge<'a>(
    checks: &[Check<'a>],
    keys: &[Vec<u8>],
) -> Result<Option<Merged<'a>>, LimitError> {
    let first_of = |i: usize| keys[..i].iter().position(|k| *k == keys[i]);
    if !(1..keys.len()).any(|i| first_of(i).is_some()) {
        return Ok(None);
    }
    let mut merged = Merged {
        checks: Vec::with_capacity(checks.len()),
        keys: Vec::with_capacity(checks.len()),
        answered_by: Vec::with_capacity(checks.len()),
    };
    for (i, c) in checks.iter().enumerate() {
        let Some(earlier) = first_of(i) else {
            merged.answered_by.push(merged.checks.len());
            merged.checks.push(*c);
            merged.keys.push(keys[i].clone());
            continue;
        };
        let m = merged.answered_by[earlier];
        let into = &mut merged.checks[m];
        if into.rule != c.rule {
            return Err(LimitError::ConflictingRules {
                rule: c.rule.name().to_owned(),
                first: format!("{:?}", into.rule),
                other: format!("{:?}", c.rule),
            });
        }
        into.cost = into.cost.saturating_add(c.cost);
        check_cost(into.rule, into.cost)?;
        merged.answered_by.push(m);
    }
    Ok(Some(merged))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn checks_on_one_key_are_folded_and_their_costs_summed() {
        let a = Rule::sliding_log("a", 5, Duration::from_secs(1)).unwrap();
        let b = Rule::gcra("b", 5, Duration::from_secs(1), 5).unwrap();
        let checks = [
            Check::new(&a, "{k}"),
            Check::new(&b, "{k}"),
            Check::new(&a, "{k}").cost(3),
        ];
        let keys: Vec<Vec<u8>> = vec![b"a".to_vec(), b"b".to_vec(), b"a".to_vec()];
        assert!(merge(&checks[..2], &keys[..2]).unwrap().is_none());
        let merged = merge(&checks, &keys).unwrap().unwrap();
        assert_eq!(merged.answered_by, [0, 1, 0]);
        assert_eq!(merged.keys, [b"a".to_vec(), b"b".to_vec()]);
        let costs: Vec<u64> = merged.checks.iter().map(|c| c.cost).collect();
        assert_eq!(costs, [4, 1]);
        // Together over the capacity: never admissible.
        let over = [checks[2], checks[2]];
        assert!(matches!(
            merge(&over, &[b"a".to_vec(), b"a".to_vec()]),
            Err(LimitError::InsufficientCapacity {
                cost: 6,
                capacity: 5,
                ..
            })
        ));
        // One key, two definitions of its rule.
        let a10 = Rule::sliding_log("a", 10, Duration::from_secs(1)).unwrap();
        let conflicting = [Check::new(&a, "{k}"), Check::new(&a10, "{k}")];
        let err = merge(&conflicting, &[b"a".to_vec(), b"a".to_vec()]).unwrap_err();
        assert!(matches!(err, LimitError::ConflictingRules { .. }), "{err}");
    }
}
