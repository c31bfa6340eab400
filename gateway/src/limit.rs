//! What a matched descriptor is limited to: [`Limit`] (envoy's `rate_limit`: a name, what it
//! replaces, unlimited or a [`Rate`]), and [`AlgorithmSpec`], how a rate is counted.

use std::{fmt, time::Duration};

use sluice_limiter::Rule;

use crate::unit::Unit;

/// How a [`Rate`] is counted, with the algorithm's parameter.
///
/// `FixedWindow` is envoyproxy/ratelimit's way, and the default: windows aligned to the unit
/// (`unix time / window`), counters reset at each boundary. The others are Sluice's
/// extensions and map onto [`sluice_limiter::Algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlgorithmSpec {
    /// Counter per window aligned to the epoch: what envoy does.
    FixedWindow,
    /// Exact sliding log.
    SlidingLog,
    /// Sliding-window counter with sub-buckets of `granularity` (dividing the window).
    SlidingCounter {
        /// Width of one sub-bucket.
        granularity: Duration,
    },
    /// GCRA with bursts of up to `burst`.
    Gcra {
        /// The most units admitted at once from an idle key.
        burst: u64,
    },
}

impl AlgorithmSpec {
    /// The names written in config files (`algorithm:`).
    pub const NAMES: [&'static str; 4] = ["fixed-window", "sliding-log", "sliding-counter", "gcra"];

    /// The name written in config files.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlgorithmSpec::FixedWindow => "fixed-window",
            AlgorithmSpec::SlidingLog => "sliding-log",
            AlgorithmSpec::SlidingCounter { .. } => "sliding-counter",
            AlgorithmSpec::Gcra { .. } => "gcra",
        }
    }

    /// The limiter's algorithm.
    pub fn limiter_algorithm(&self) -> Option<sluice_limiter::Algorithm> {
        match self {
            AlgorithmSpec::FixedWindow => Some(sluice_limiter::Algorithm::FixedWindow),
            AlgorithmSpec::SlidingLog => Some(sluice_limiter::Algorithm::SlidingLog),
            AlgorithmSpec::SlidingCounter { .. } => Some(sluice_limiter::Algorithm::SlidingCounter),
            AlgorithmSpec::Gcra { .. } => Some(sluice_limiter::Algorithm::Gcra),
        }
    }
}

impl fmt::Display for AlgorithmSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A counted limit: `requests_per_unit` per `window`, counted by an [`AlgorithmSpec`].
///
/// Built only by config validation (or [`Rate::fixed`] for a request's override), so it is
/// always valid: the window is 1 ms to 366 days in whole microseconds; the algorithm's
/// parameters fit the window and limit; `requests_per_unit` is 0 only with the fixed window
/// (envoy accepts 0, which refuses every request that counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    requests_per_unit: u32,
    window: Duration,
    unit: Option<Unit>,
    algorithm: AlgorithmSpec,
    rule: Option<Rule>,
}

impl Rate {
    /// Assemble a rate whose parts were checked by the caller (the rule was built from them).
    pub(crate) fn new(
        requests_per_unit: u32,
        window: Duration,
        algorithm: AlgorithmSpec,
        rule: Option<Rule>,
    ) -> Self {
        Self {
            requests_per_unit,
            window,
            unit: Unit::of_window(window),
            algorithm,
            rule,
        }
    }

    /// Envoy's limit: `requests_per_unit` per `unit` in fixed windows (a request's per-descriptor
    /// override is one).
    pub fn fixed(requests_per_unit: u32, unit: Unit) -> Self {
        let window = unit.duration();
        // Every unit's window is a valid limiter window, so the only rule the limiter refuses
        // here is a zero limit, which needs none: it denies all without asking Redis.
        let rule = Rule::fixed_window(rule_name(window), u64::from(requests_per_unit), window).ok();
        Self::new(requests_per_unit, window, AlgorithmSpec::FixedWindow, rule)
    }

    /// Requests allowed per window.
    pub fn requests_per_unit(&self) -> u32 {
        self.requests_per_unit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The envoy unit whose length is the window; `None` for windows such as `90s` (a
    /// response's `current_limit` then says UNKNOWN, and the IETF headers carry the window).
    pub fn unit(&self) -> Option<Unit> {
        self.unit
    }

    /// How it is counted.
    pub fn algorithm(&self) -> AlgorithmSpec {
        self.algorithm
    }

    /// True when `requests_per_unit` is 0: every request that counts is over the limit
    /// (as in envoy), so no Redis call is needed to say so.
    pub fn denies_all(&self) -> bool {
        self.requests_per_unit == 0
    }

    /// The limiter rule for this rate, named [`Rate::rule_name`]; `None` only when
    /// [`Rate::denies_all`] (a zero limit needs no rule).
    pub fn rule(&self) -> Option<&Rule> {
        self.rule.as_ref()
    }

    /// The rule name to count this rate under: its window (`1s`, `1500ms`, `250us`), so a
    /// changed `requests_per_unit` keeps its counts and a changed window starts afresh. Two
    /// rates on one descriptor never share a window and an algorithm (config validation
    /// refuses it), and the limiter's keys carry the algorithm, so the name tells them apart.
    pub fn rule_name(&self) -> String {
        rule_name(self.window)
    }
}

/// See [`Rate::rule_name`].
pub(crate) fn rule_name(window: Duration) -> String {
    let us = window.as_micros();
    if us % 1_000_000 == 0 {
        format!("{}s", us / 1_000_000)
    } else if us % 1_000 == 0 {
        format!("{}ms", us / 1_000)
    } else {
        format!("{us}us")
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unit {
            Some(unit) => write!(f, "{} per {unit}", self.requests_per_unit)?,
            None => write!(
                f,
                "{} per {}",
                self.requests_per_unit,
                humantime::format_duration(self.window)
            )?,
        }
        match self.algorithm {
            AlgorithmSpec::SlidingCounter { granularity } => write!(
                f,
                " (sliding-counter, granularity {})",
                humantime::format_duration(granularity)
            ),
            AlgorithmSpec::Gcra { burst } => write!(f, " (gcra, burst {burst})"),
            other => write!(f, " ({other})"),
        }
    }
}

/// One `rate_limit` of a descriptor: unlimited, or a [`Rate`]; with the name other limits can
/// replace it by, and the names it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    name: Option<String>,
    replaces: Vec<String>,
    rate: Option<Rate>,
}

impl Limit {
    pub(crate) fn new(name: Option<String>, replaces: Vec<String>, rate: Option<Rate>) -> Self {
        Self {
            name,
            replaces,
            rate,
        }
    }

    /// `name:`: what a response's `current_limit.name` says, and what `replaces` refers to.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The names of the limits this one replaces, across the request's descriptors.
    pub fn replaces(&self) -> &[String] {
        &self.replaces
    }

    /// `unlimited: true`: the descriptor is answered OK with remaining 4294967295, and
    /// nothing is counted.
    pub fn is_unlimited(&self) -> bool {
        self.rate.is_none()
    }

    /// The counted rate; `None` when unlimited.
    pub fn rate(&self) -> Option<&Rate> {
        self.rate.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_follow_the_window() {
        assert_eq!(rule_name(Duration::from_secs(60)), "60s");
        assert_eq!(rule_name(Duration::from_millis(1500)), "1500ms");
        assert_eq!(rule_name(Duration::from_micros(250)), "250us");
        let rate = Rate::fixed(10, Unit::Minute);
        assert_eq!(rate.rule_name(), "60s");
        assert_eq!(rate.unit(), Some(Unit::Minute));
        assert_eq!(
            rate.rule().map(|r| r.algorithm()),
            Some(sluice_limiter::Algorithm::FixedWindow)
        );
        assert!(Rate::fixed(0, Unit::Second).rule().is_none());
        assert_eq!(rate.to_string(), "10 per minute (fixed-window)");
        assert!(Rate::fixed(0, Unit::Second).denies_all());
    }
}
