//! When Redis is slow or down: the [`OutagePolicy`], the breaker that keeps a dead Redis from
//! costing every call its timeout, and the fallback answers (canned, or the in-process
//! limiter).

use std::{
    borrow::Cow,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use crate::{
    check::Check,
    decision::{Decision, MultiDecision, Source},
    error::LimitError,
    local::{Item, LocalLimiter},
};

/// What to do when Redis does not answer in time or can't be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OutagePolicy {
    /// Return the error ([`LimitError::Redis`], or [`LimitError::CoalescerStopped`]); the
    /// caller decides.
    #[default]
    Error,
    /// Admit every request ([`Source::FailOpen`]).
    FailOpen,
    /// Deny every request ([`Source::FailClosed`]).
    FailClosed,
    /// Decide with an in-process limiter running the same rule ([`Source::Local`]). Each
    /// process then limits alone: P processes may admit up to P times the limit in total.
    Local,
}

/// The outage side of a limiter, shared by its clones: the policy, the breaker and the
/// in-process limiter's state.
#[derive(Debug)]
pub(crate) struct Outage {
    policy: OutagePolicy,
    retry_interval: Duration,
    breaker: Breaker,
    local: LocalLimiter,
}

impl Outage {
    pub(crate) fn new(policy: OutagePolicy, retry_interval: Duration) -> Self {
        Self {
            policy,
            retry_interval,
            breaker: Breaker::default(),
            local: LocalLimiter::default(),
        }
    }

    /// True while calls should skip Redis: a recent failure tripped the breaker and the
    /// policy has an answer of its own.
    pub(crate) fn skips_redis(&self) -> bool {
        self.policy != OutagePolicy::Error && self.breaker.is_open()
    }

    /// Apply the policy to `failure`: errors the policy does not cover (and every error under
    /// [`OutagePolicy::Error`]) are returned; otherwise the breaker trips and the policy
    /// answers as [`Outage::answer`] does.
    pub(crate) fn recover<'k>(
        &self,
        failure: LimitError,
        checks: &[Check<'_>],
        keys: impl FnOnce() -> Cow<'k, [Vec<u8>]>,
        now_us: u64,
        consume: bool,
    ) -> Result<MultiDecision, LimitError> {
        if !failure.is_unavailable() || self.policy == OutagePolicy::Error {
            return Err(failure);
        }
        if self.breaker.trip(self.retry_interval) {
            tracing::warn!(error = %failure, policy = ?self.policy, "redis unavailable; applying the outage policy");
        }
        Ok(self.answer(checks, keys, now_us, consume))
    }

    /// The policy's answer for `checks` at `now_us`, without asking Redis. `keys` gives the
    /// checks' Redis keys (only the local limiter needs them).
    pub(crate) fn answer<'k>(
        &self,
        checks: &[Check<'_>],
        keys: impl FnOnce() -> Cow<'k, [Vec<u8>]>,
        now_us: u64,
        consume: bool,
    ) -> MultiDecision {
        match self.policy {
            OutagePolicy::FailOpen => self.canned(checks, true, Source::FailOpen, now_us),
            OutagePolicy::FailClosed | OutagePolicy::Error => {
                self.canned(checks, false, Source::FailClosed, now_us)
            }
            OutagePolicy::Local => {
                let keys = keys();
                let items: Vec<Item<'_>> = checks
                    .iter()
                    .zip(keys.iter())
                    .map(|(c, key)| Item {
                        key,
                        rule: c.rule,
                        cost: c.cost,
                    })
                    .collect();
                let (all, answers) = self.local.decide(&items, now_us, consume);
                MultiDecision::assemble(checks, all, answers, now_us, Source::Local)
            }
        }
    }

    /// Forget a key in the local fallback.
    pub(crate) fn reset(&self, key: &[u8]) {
        self.local.reset(key);
    }

    /// Admit or deny every check, without state.
    fn canned(
        &self,
        checks: &[Check<'_>],
        allowed: bool,
        source: Source,
        now_us: u64,
    ) -> MultiDecision {
        let decisions: Vec<Decision> = checks
            .iter()
            .map(|c| Decision {
                allowed,
                limit: c.rule.capacity(),
                remaining: if allowed {
                    c.rule.capacity() - c.cost
                } else {
                    0
                },
                reset_after: Duration::ZERO,
                retry_after: (!allowed).then_some(self.retry_interval),
                time_us: now_us,
                source,
            })
            .collect();
        MultiDecision {
            allowed,
            denied_by: (!allowed).then_some(0),
            decisions,
            source,
        }
    }
}

/// Trips after a Redis failure so that, for `retry_interval`, calls skip Redis.
#[derive(Debug)]
struct Breaker {
    epoch: Instant,
    open_until_us: AtomicU64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            open_until_us: AtomicU64::new(0),
        }
    }
}

impl Breaker {
    fn elapsed_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn is_open(&self) -> bool {
        self.elapsed_us() < self.open_until_us.load(Ordering::Relaxed)
    }

    /// Open for `interval`; true if it was closed (the first failure of an outage).
    fn trip(&self, interval: Duration) -> bool {
        let now = self.elapsed_us();
        let before = self
            .open_until_us
            .swap(now + interval.as_micros() as u64, Ordering::Relaxed);
        before <= now
    }
}
