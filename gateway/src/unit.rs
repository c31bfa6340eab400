//! Envoy's time units: their names in config files, their numbers in the protocol, their
//! lengths.

use std::{fmt, time::Duration};

/// A rate-limit unit, as envoyproxy/ratelimit counts them: a month is 30 days and a year 365
/// (its fixed windows are `unix time / length`, so these lengths are the windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// 1 second.
    Second,
    /// 60 seconds.
    Minute,
    /// 3,600 seconds.
    Hour,
    /// 86,400 seconds.
    Day,
    /// 7 days.
    Week,
    /// 30 days.
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    /// Every unit, shortest first.
    pub const ALL: [Unit; 7] = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ];

    /// The unit's length in seconds.
    pub const fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }

    /// The unit's length.
    pub const fn duration(self) -> Duration {
        Duration::from_secs(self.seconds())
    }

    /// The lowercase name (`second` ... `year`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// The number of `envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit` (note WEEK
    /// is 7, after MONTH and YEAR; 0 is UNKNOWN, which no [`Unit`] is).
    pub const fn envoy_number(self) -> i32 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 2,
            Unit::Hour => 3,
            Unit::Day => 4,
            Unit::Month => 5,
            Unit::Year => 6,
            Unit::Week => 7,
        }
    }

    /// The unit of an Envoy enum number; `None` for UNKNOWN (0) and numbers Envoy doesn't
    /// define (a request's limit override with either can't be applied).
    pub fn from_envoy_number(number: i32) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.envoy_number() == number)
    }

    /// The unit named `name`, in any case (`minute`, `MINUTE`), as envoy reads them.
    pub fn parse(name: &str) -> Option<Unit> {
        Unit::ALL
            .into_iter()
            .find(|u| u.as_str().eq_ignore_ascii_case(name))
    }

    /// The unit whose length is exactly `window`, if any.
    pub fn of_window(window: Duration) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.duration() == window)
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_lengths() {
        for unit in Unit::ALL {
            assert_eq!(Unit::parse(unit.as_str()), Some(unit));
            assert_eq!(Unit::parse(&unit.as_str().to_uppercase()), Some(unit));
            assert_eq!(Unit::from_envoy_number(unit.envoy_number()), Some(unit));
            assert_eq!(Unit::of_window(unit.duration()), Some(unit));
        }
        assert_eq!(Unit::parse("unknown"), None);
        assert_eq!(Unit::parse(""), None);
        assert_eq!(Unit::from_envoy_number(0), None);
        assert_eq!(Unit::from_envoy_number(8), None);
        assert_eq!(Unit::Week.envoy_number(), 7);
        assert_eq!(Unit::Month.seconds(), 2_592_000);
        assert_eq!(Unit::of_window(Duration::from_secs(90)), None);
    }
}
