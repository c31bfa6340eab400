//! What a check answers: the public [`Decision`]s, and the per-rule [`Answer`] (in the
//! scripts' units) that the script reply and the local fallback both become decisions from.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::check::Check;

/// Which path produced a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Source {
    /// Redis answered (the normal path).
    Redis,
    /// Redis was unavailable; the policy admitted the request.
    FailOpen,
    /// Redis was unavailable; the policy denied the request.
    FailClosed,
    /// Redis was unavailable; the in-process limiter with the same rule answered.
    Local,
}

/// The answer for one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request may pass. In a multi-rule check this says whether *this* rule would
    /// admit it; the request passed only if [`MultiDecision::allowed`].
    pub allowed: bool,
    /// The rule's limit (the burst for GCRA): what `remaining` counts down from.
    pub limit: u64,
    /// Units still available now, after this decision.
    pub remaining: u64,
    /// Time until the rule is back at its full quota if no more requests come.
    #[serde(serialize_with = "ser_micros", rename = "reset_after_us")]
    pub reset_after: Duration,
    /// When denied: the time until a request of the same cost would pass (with no other
    /// traffic meanwhile). `None` when allowed.
    #[serde(serialize_with = "ser_opt_micros", rename = "retry_after_us")]
    pub retry_after: Option<Duration>,
    /// The clock reading the decision was made at (Redis `TIME` unless a clock was injected, or
    /// the local clock on the fallback path), in microseconds since the Unix epoch.
    #[serde(rename = "time_us")]
    pub time_us: u64,
    /// Which path answered.
    pub source: Source,
}

impl Decision {
    /// [`Decision::time_us`] as a `SystemTime`.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.time_us)
    }
}

/// The answer for several rules checked together, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MultiDecision {
    /// True when every rule admitted the request (and all were charged); false when any
    /// denied (and none was charged).
    pub allowed: bool,
    /// Index (into the checks given) of the first rule that denied.
    pub denied_by: Option<usize>,
    /// One decision per check, in the order given.
    pub decisions: Vec<Decision>,
    /// Which path answered.
    pub source: Source,
}

impl MultiDecision {
    /// The largest retry-after among the rules that denied: when to try again.
    pub fn retry_after(&self) -> Option<Duration> {
        self.decisions.iter().filter_map(|d| d.retry_after).max()
    }
}

/// One rule's answer in the scripts' units, as the script replies it (4 integers) and the
/// local fallback computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
    pub(crate) reset_after_us: u64,
    pub(crate) retry_after_us: u64,
}

impl MultiDecision {
    /// The decisions for `checks` from one answer each, all made at `now_us` by `source`;
    /// `all` says whether the request passed every rule.
    pub(crate) fn assemble(
        checks: &[Check<'_>],
        all: bool,
        answers: impl IntoIterator<Item = Answer>,
        now_us: u64,
        source: Source,
    ) -> Self {
        let decisions: Vec<Decision> = checks
            .iter()
            .zip(answers)
            .map(|(c, a)| Decision {
                allowed: a.allowed,
                limit: c.rule.capacity(),
                remaining: a.remaining.min(c.rule.capacity()),
                reset_after: Duration::from_micros(a.reset_after_us),
                retry_after: (!a.allowed).then(|| Duration::from_micros(a.retry_after_us)),
                time_us: now_us,
                source,
            })
            .collect();
        let denied_by = decisions.iter().position(|d| !d.allowed);
        MultiDecision {
            allowed: all,
            denied_by,
            decisions,
            source,
        }
    }
}

impl MultiDecision {
    /// The decisions for the checks given, from those of their merged form
    /// ([`crate::check::Merged`]): each check gets the decision of the merged check that
    /// answered it (the same rule and key, charged their summed cost).
    pub(crate) fn spread(self, answered_by: &[usize]) -> Self {
        let decisions: Vec<Decision> = answered_by
            .iter()
            .filter_map(|&m| self.decisions.get(m).cloned())
            .collect();
        MultiDecision {
            allowed: self.allowed,
            denied_by: decisions.iter().position(|d| !d.allowed),
            decisions,
            source: self.source,
        }
    }
}

fn ser_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_micros() as u64)
}

fn ser_opt_micros<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_micros() as u64)),
        None => s.serialize_none(),
    }
}
