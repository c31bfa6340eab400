//! The counting algorithms, by name: one enum for code, config files, key names and the
//! command line. Their parameters (granularity, burst) belong to a [`crate::Rule`].

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use sluice_shared::ConfigError;

/// How a rule counts.
///
/// Written in files and on the command line as `sliding-log`, `sliding-counter`, `gcra` or
/// `fixed-window`
/// ([`Display`](fmt::Display), [`FromStr`] and `serde` agree); [`Algorithm::code`] is the short
/// form used in Redis key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Algorithm {
    /// Exact: a sorted set of admission times. Memory grows with the limit.
    SlidingLog,
    /// Approximate, O(N) memory: the window cut into `window / granularity` sub-buckets
    /// ([`crate::Rule::granularity`]).
    SlidingCounter,
    /// Generic cell rate algorithm: `limit` per `window` on average, bursts up to
    /// [`crate::Rule::burst`], O(1) memory.
    Gcra,
    /// envoyproxy/ratelimit's: windows aligned to multiples of the window since the Unix epoch,
    /// one counter per key, O(1) memory. Exact within each aligned window; across a boundary,
    /// up to twice the limit in a window's length.
    FixedWindow,
}

impl Algorithm {
    /// Every algorithm, in the order the docs list them.
    pub const ALL: &'static [Algorithm] = &[
        Algorithm::SlidingLog,
        Algorithm::SlidingCounter,
        Algorithm::Gcra,
        Algorithm::FixedWindow,
    ];

    /// The name written in files and on the command line (`sliding-log`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::SlidingLog => "sliding-log",
            Algorithm::SlidingCounter => "sliding-counter",
            Algorithm::Gcra => "gcra",
            Algorithm::FixedWindow => "fixed-window",
        }
    }

    /// Short code used in Redis key names (`log`, `ctr`, `gcra`, `fw`).
    pub fn code(self) -> &'static str {
        match self {
            Algorithm::SlidingLog => "log",
            Algorithm::SlidingCounter => "ctr",
            Algorithm::Gcra => "gcra",
            Algorithm::FixedWindow => "fw",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        Algorithm::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
                ConfigError::new(
                    "algorithm",
                    format!("{s:?} is not one of {}", names.join(", ")),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names every variant; a new variant fails to compile here until it is listed.
    fn listed(a: Algorithm) -> bool {
        match a {
            Algorithm::SlidingLog
            | Algorithm::SlidingCounter
            | Algorithm::Gcra
            | Algorithm::FixedWindow => Algorithm::ALL.contains(&a),
        }
    }

    #[test]
    fn names_round_trip_through_display_fromstr_and_serde() {
        for &a in Algorithm::ALL {
            assert!(listed(a));
            assert_eq!(a.to_string().parse::<Algorithm>(), Ok(a));
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{a}\""));
            assert_eq!(serde_json::from_str::<Algorithm>(&json).unwrap(), a);
        }
        let codes: Vec<&str> = Algorithm::ALL.iter().map(|a| a.code()).collect();
        assert_eq!(codes, ["log", "ctr", "gcra", "fw"]);
        let err = "fixed".parse::<Algorithm>().unwrap_err();
        assert_eq!(err.field(), "algorithm");
        assert!(
            err.reason()
                .contains("sliding-log, sliding-counter, gcra, fixed-window"),
            "{err}"
        );
    }
}
