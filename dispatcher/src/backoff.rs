//! Exponential backoff with jitter: the one formula behind job retries
//! ([`crate::RetryPolicy::backoff`]), the worker's pauses after Redis failures and the
//! subscriber's reconnects.
//!
//! The window doubles with each failure, from `base` up to `max`; the delay is drawn from the
//! window: anywhere in it ([`Jitter::Full`], spreads retries of jobs that failed together) or in
//! its upper half ([`Jitter::Equal`], never retries a failing connection at once). Backoff crates
//! (`backoff`, `backon`) schedule retries in-process from an iterator and jitter differently
//! (`backon` adds up to one more delay); job retries are scheduled in Redis from the attempt
//! number, so a pure function of that number is what fits.

use std::time::Duration;

/// Where in the window a delay falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Jitter {
    /// Uniform in `0..=window`.
    Full,
    /// Uniform in `window/2..=window`.
    Equal,
}

/// A doubling window from `base` to `max`, and how a delay is drawn from it.
///
/// ```
/// use std::time::Duration;
/// use sluice_dispatcher::Backoff;
///
/// // What the worker waits after its third Redis failure in a row: 200 to 400 ms.
/// let pause = Backoff::REDIS_FAILURES.delay(3);
/// assert!(pause >= Duration::from_millis(200) && pause <= Duration::from_millis(400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// The pause after `n` consecutive Redis failures (`delay(n)`): 50 ms doubling up to 2 s,
    /// equal jitter. The worker uses it between failed reads and writes; tools that talk to
    /// Redis beside a worker (`sluice loadtest jobs`) use it too, so both ride out a stall or a
    /// restart alike.
    pub const REDIS_FAILURES: Backoff = Backoff::new(
        Duration::from_millis(50),
        Duration::from_secs(2),
        Jitter::Equal,
    );

    /// A window starting at `base`, doubling up to `max`.
    pub const fn new(base: Duration, max: Duration, jitter: Jitter) -> Self {
        Self { base, max, jitter }
    }

    /// A delay after `doublings` doublings of the window: the window is
    /// `min(max, base * 2^doublings)`.
    pub fn delay(&self, doublings: u32) -> Duration {
        let window = self
            .base
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max);
        let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let low = match self.jitter {
            Jitter::Full => 0,
            Jitter::Equal => millis / 2,
        };
        Duration::from_millis(rand::random_range(low..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_in_the_window() {
        let full = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(1),
            Jitter::Full,
        );
        let equal = Backoff::new(
            Duration::from_millis(50),
            Duration::from_secs(2),
            Jitter::Equal,
        );
        for _ in 0..200 {
            assert!(full.delay(0) <= Duration::from_millis(100));
            assert!(full.delay(2) <= Duration::from_millis(400));
            assert!(full.delay(u32::MAX) <= Duration::from_secs(1));
            let d = equal.delay(1);
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
                "{d:?}"
            );
            let d = equal.delay(40);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
    }
}
