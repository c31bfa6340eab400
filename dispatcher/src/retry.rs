//! Retry policy: how many attempts, and how long to wait between them.

use std::{num::NonZeroU32, time::Duration};

use serde::{Deserialize, Serialize};
use sluice_shared::ConfigError;

use crate::backoff::{Backoff, Jitter};

/// How a failed job is retried: up to `max_attempts` attempts in total, waiting a random time
/// between zero and `min(max_delay, base_delay * 2^(n-1))` before attempt `n + 1` ("full jitter").
///
/// Full jitter spreads the retries of jobs that failed together (a dependency went down) over
/// the whole window instead of bunching them up again at each doubling, which is what causes
/// retry storms. The formula is the crate's one backoff (`backoff.rs`, shared with the worker's
/// and the subscriber's reconnect pauses); `rand` draws the jitter.
///
/// A topic has one policy ([`crate::TopicConfig::set_retry`]); a job may carry its own
/// ([`crate::EnqueueOptions::retry`]). Handlers may override the delay of one retry
/// ([`crate::JobError::retry_after`]) or ask for none ([`crate::JobError::fatal`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRetryPolicy", into = "RawRetryPolicy")]
pub struct RetryPolicy {
    max_attempts: NonZeroU32,
    base_delay: Duration,
    max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 1 s doubling up to 5 min.
    fn default() -> Self {
        Self {
            max_attempts: NonZeroU32::MIN.saturating_add(4),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with full jitter. `base_delay` must be non-zero and at most
    /// `max_delay`.
    pub fn exponential(
        max_attempts: NonZeroU32,
        base_delay: Duration,
        max_delay: Duration,
    ) -> Result<Self, ConfigError> {
        if base_delay.is_zero() {
            return Err(ConfigError::new("base_delay", "must be greater than zero"));
        }
        if max_delay < base_delay {
            return Err(ConfigError::new("max_delay", "must be at least base_delay"));
        }
        if max_delay > Duration::from_secs(365 * 24 * 3600) {
            return Err(ConfigError::new("max_delay", "must be at most a year"));
        }
        Ok(Self {
            max_attempts,
            base_delay,
            max_delay,
        })
    }

    /// One attempt, no retry: a failure dead-letters the job at once.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: NonZeroU32::MIN,
            ..Self::default()
        }
    }

    /// Attempts in total, the first one included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.get()
    }

    /// The delay scale.
    pub fn base_delay(&self) -> Duration {
        self.base_delay
    }

    /// The largest delay.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// The wait after failed attempt number `attempt` (1-based): uniform in
    /// `0..=min(max_delay, base_delay * 2^(attempt-1))`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        Backoff::new(self.base_delay, self.max_delay, Jitter::Full).delay(attempt.saturating_sub(1))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetryPolicy {
    max_attempts: NonZeroU32,
    #[serde(with = "humantime_serde")]
    base_delay: Duration,
    #[serde(with = "humantime_serde")]
    max_delay: Duration,
}

impl TryFrom<RawRetryPolicy> for RetryPolicy {
    type Error = ConfigError;
    fn try_from(raw: RawRetryPolicy) -> Result<Self, ConfigError> {
        Self::exponential(raw.max_attempts, raw.base_delay, raw.max_delay)
    }
}

impl From<RetryPolicy> for RawRetryPolicy {
    fn from(p: RetryPolicy) -> Self {
        Self {
            max_attempts: p.max_attempts,
            base_delay: p.base_delay,
            max_delay: p.max_delay,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backoff_stays_in_the_doubling_window() {
        let p = RetryPolicy::exponential(
            NonZeroU32::new(10).unwrap(),
            Duration::from_millis(100),
            Duration::from_secs(1),
        )
        .unwrap();
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(100));
            assert!(p.backoff(3) <= Duration::from_millis(400));
            assert!(p.backoff(9) <= Duration::from_secs(1));
            assert!(p.backoff(u32::MAX) <= Duration::from_secs(1));
        }
        // Jitter: not every draw is the same.
        let draws: std::collections::HashSet<_> = (0..50).map(|_| p.backoff(5)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn invalid_policies_are_refused() {
        let one = NonZeroU32::MIN;
        let e = RetryPolicy::exponential(one, Duration::ZERO, Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.field(), "base_delay");
        let e = RetryPolicy::exponential(one, Duration::from_secs(2), Duration::from_secs(1))
            .unwrap_err();
        assert_eq!(e.field(), "max_delay");
        let e = serde_json::from_str::<RetryPolicy>(
            r#"{"max_attempts":0,"base_delay":"1s","max_delay":"2s"}"#,
        );
        assert!(e.is_err());
        let p: RetryPolicy =
            serde_json::from_str(r#"{"max_attempts":3,"base_delay":"250ms","max_delay":"10s"}"#)
                .unwrap();
        assert_eq!(p.max_attempts(), 3);
        assert_eq!(p.base_delay(), Duration::from_millis(250));
    }
}
