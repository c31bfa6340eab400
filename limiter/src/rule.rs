//! Validated limiting rules.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};
use sluice_shared::ConfigError;

/// Longest window a rule may have (one year).
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most sub-buckets a sliding-window counter may cut its window into.
pub const MAX_BUCKETS: u64 = 100_000;
/// Largest limit (the sliding log stores one member per unit; keep that sane).
pub const MAX_LIMIT: u64 = 1 << 40;

/// How a rule counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Exact: a sorted set of admission times. Memory grows with the limit.
    SlidingLog,
    /// Approximate, O(N) memory: the window cut into `window / granularity` sub-buckets.
    SlidingCounter {
        /// Width of one sub-bucket; must divide the window.
        granularity: Duration,
    },
    /// Generic cell rate algorithm: `limit` per `window` on average, bursts up to `burst`,
    /// O(1) memory.
    Gcra {
        /// Most units admitted at once from an idle key.
        burst: u64,
    },
}

impl Algorithm {
    /// Short code used in key names and on the command line.
    pub fn code(&self) -> &'static str {
        match self {
            Algorithm::SlidingLog => "log",
            Algorithm::SlidingCounter { .. } => "ctr",
            Algorithm::Gcra { .. } => "gcra",
        }
    }

    pub(crate) fn kind(&self) -> AlgorithmKind {
        match self {
            Algorithm::SlidingLog => AlgorithmKind::Log,
            Algorithm::SlidingCounter { .. } => AlgorithmKind::Counter,
            Algorithm::Gcra { .. } => AlgorithmKind::Gcra,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AlgorithmKind {
    Log,
    Counter,
    Gcra,
}

/// A limit: at most `limit` units per `window`, counted by an [`Algorithm`], under a name.
///
/// The name (with the algorithm) picks the Redis keys, so two rules on the same id never share
/// state, and changing a rule's limit keeps its state: the new limit applies on the next call.
/// Rules can't be built invalid: zero limits, zero windows and granularities that don't divide
/// the window are refused with an error naming the field.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RuleConfig", into = "RuleConfig")]
pub struct Rule {
    name: String,
    limit: u64,
    window: Duration,
    algorithm: Algorithm,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Rule({} {}: {} per {:?}",
            self.name,
            self.algorithm.code(),
            self.limit,
            self.window
        )?;
        match self.algorithm {
            Algorithm::SlidingCounter { granularity } => {
                write!(f, ", granularity {granularity:?})")
            }
            Algorithm::Gcra { burst } => write!(f, ", burst {burst})"),
            Algorithm::SlidingLog => write!(f, ")"),
        }
    }
}

impl Rule {
    /// A rule named `name` admitting `limit` units per `window` with `algorithm`.
    pub fn new(
        name: impl Into<String>,
        algorithm: Algorithm,
        limit: u64,
        window: Duration,
    ) -> Result<Self, ConfigError> {
        let name = name.into();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ConfigError::new(
                "name",
                "must be 1 to 64 characters of [A-Za-z0-9_.-]",
            ));
        }
        if limit == 0 {
            return Err(ConfigError::new("limit", "must be at least 1"));
        }
        if limit > MAX_LIMIT {
            return Err(ConfigError::new(
                "limit",
                format!("must be at most {MAX_LIMIT}"),
            ));
        }
        if window < Duration::from_millis(1) {
            return Err(ConfigError::new("window", "must be at least 1ms"));
        }
        if window > MAX_WINDOW {
            return Err(ConfigError::new("window", "must be at most 366 days"));
        }
        if window.subsec_nanos() % 1000 != 0 {
            return Err(ConfigError::new(
                "window",
                "must be a whole number of microseconds",
            ));
        }
        match algorithm {
            Algorithm::SlidingLog => {
                if limit > 10_000_000 {
                    return Err(ConfigError::new(
                        "limit",
                        "the sliding log keeps one entry per unit: at most 10,000,000; use the sliding counter or GCRA above that",
                    ));
                }
            }
            Algorithm::SlidingCounter { granularity } => {
                let g = granularity.as_micros();
                if g == 0 || granularity.subsec_nanos() % 1000 != 0 {
                    return Err(ConfigError::new(
                        "granularity",
                        "must be a positive whole number of microseconds",
                    ));
                }
                let w = window.as_micros();
                if w % g != 0 {
                    return Err(ConfigError::new(
                        "granularity",
                        format!(
                            "must divide the window ({window:?} is not a multiple of {granularity:?})"
                        ),
                    ));
                }
                if (w / g) as u64 > MAX_BUCKETS {
                    return Err(ConfigError::new(
                        "granularity",
                        format!("cuts the window into more than {MAX_BUCKETS} buckets"),
                    ));
                }
            }
            Algorithm::Gcra { burst } => {
                if burst == 0 {
                    return Err(ConfigError::new("burst", "must be at least 1"));
                }
                if burst > MAX_LIMIT {
                    return Err(ConfigError::new(
                        "burst",
                        format!("must be at most {MAX_LIMIT}"),
                    ));
                }
            }
        }
        Ok(Self {
            name,
            limit,
            window,
            algorithm,
        })
    }

    /// Exact sliding log: at most `limit` in any window of length `window`.
    pub fn sliding_log(
        name: impl Into<String>,
        limit: u64,
        window: Duration,
    ) -> Result<Self, ConfigError> {
        Self::new(name, Algorithm::SlidingLog, limit, window)
    }

    /// Sliding-window counter with sub-buckets of `granularity` (which must divide `window`).
    pub fn sliding_counter(
        name: impl Into<String>,
        limit: u64,
        window: Duration,
        granularity: Duration,
    ) -> Result<Self, ConfigError> {
        Self::new(
            name,
            Algorithm::SlidingCounter { granularity },
            limit,
            window,
        )
    }

    /// GCRA: `limit` per `window` on average, with bursts of up to `burst`.
    pub fn gcra(
        name: impl Into<String>,
        limit: u64,
        window: Duration,
        burst: u64,
    ) -> Result<Self, ConfigError> {
        Self::new(name, Algorithm::Gcra { burst }, limit, window)
    }

    /// The rule's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Units per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The most units one request can ever be granted: the limit, or the burst for GCRA.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra { burst } => burst,
            _ => self.limit,
        }
    }

    pub(crate) fn window_us(&self) -> u64 {
        self.window.as_micros() as u64
    }

    /// The per-rule parameter passed to the script: granularity (µs) or burst.
    pub(crate) fn param(&self) -> u64 {
        match self.algorithm {
            Algorithm::SlidingLog => 0,
            Algorithm::SlidingCounter { granularity } => granularity.as_micros() as u64,
            Algorithm::Gcra { burst } => burst,
        }
    }
}

/// The file form of a [`Rule`] (what `serde` reads), e.g. in TOML:
///
/// ```toml
/// name = "per-user"
/// algorithm = "sliding-counter"
/// limit = 100
/// window = "1m"
/// granularity = "1s"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name.
    pub name: String,
    /// `sliding-log`, `sliding-counter` or `gcra`.
    pub algorithm: AlgorithmName,
    /// Units per window.
    pub limit: u64,
    /// Window length (`1s`, `1m`, `250ms`).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Sub-bucket width, sliding counter only (default: the window, i.e. the classic two-window
    /// weighting).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub granularity: Option<Duration>,
    /// Burst, GCRA only (default: the limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

/// Algorithm names as written in files and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum AlgorithmName {
    /// [`Algorithm::SlidingLog`]
    SlidingLog,
    /// [`Algorithm::SlidingCounter`]
    SlidingCounter,
    /// [`Algorithm::Gcra`]
    Gcra,
}

impl TryFrom<RuleConfig> for Rule {
    type Error = ConfigError;

    fn try_from(c: RuleConfig) -> Result<Self, ConfigError> {
        let algorithm = match c.algorithm {
            AlgorithmName::SlidingLog => {
                if c.granularity.is_some() {
                    return Err(ConfigError::new(
                        "granularity",
                        "applies to sliding-counter only",
                    ));
                }
                if c.burst.is_some() {
                    return Err(ConfigError::new("burst", "applies to gcra only"));
                }
                Algorithm::SlidingLog
            }
            AlgorithmName::SlidingCounter => {
                if c.burst.is_some() {
                    return Err(ConfigError::new("burst", "applies to gcra only"));
                }
                Algorithm::SlidingCounter {
                    granularity: c.granularity.unwrap_or(c.window),
                }
            }
            AlgorithmName::Gcra => {
                if c.granularity.is_some() {
                    return Err(ConfigError::new(
                        "granularity",
                        "applies to sliding-counter only",
                    ));
                }
                Algorithm::Gcra {
                    burst: c.burst.unwrap_or(c.limit),
                }
            }
        };
        Rule::new(c.name, algorithm, c.limit, c.window)
    }
}

impl From<Rule> for RuleConfig {
    fn from(r: Rule) -> Self {
        let (algorithm, granularity, burst) = match r.algorithm {
            Algorithm::SlidingLog => (AlgorithmName::SlidingLog, None, None),
            Algorithm::SlidingCounter { granularity } => {
                (AlgorithmName::SlidingCounter, Some(granularity), None)
            }
            Algorithm::Gcra { burst } => (AlgorithmName::Gcra, None, Some(burst)),
        };
        Self {
            name: r.name,
            algorithm,
            limit: r.limit,
            window: r.window,
            granularity,
            burst,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn invalid_rules_cannot_be_built() {
        assert_eq!(Rule::sliding_log("a", 0, S).unwrap_err().field(), "limit");
        assert_eq!(
            Rule::sliding_log("a", 1, Duration::ZERO)
                .unwrap_err()
                .field(),
            "window"
        );
        assert_eq!(Rule::sliding_log("a b", 1, S).unwrap_err().field(), "name");
        assert_eq!(
            Rule::sliding_counter("a", 1, S, Duration::from_millis(3))
                .unwrap_err()
                .field(),
            "granularity"
        );
        assert_eq!(
            Rule::sliding_counter("a", 1, S, Duration::ZERO)
                .unwrap_err()
                .field(),
            "granularity"
        );
        assert_eq!(
            Rule::sliding_counter("a", 1, S, Duration::from_micros(1))
                .unwrap_err()
                .field(),
            "granularity"
        );
        assert_eq!(Rule::gcra("a", 1, S, 0).unwrap_err().field(), "burst");
        assert!(Rule::sliding_counter("a", 10, S, Duration::from_millis(1)).is_ok());
    }

    #[test]
    fn rules_load_from_files_and_errors_name_the_field() {
        let r: Rule = serde_json::from_str(
            r#"{"name":"u","algorithm":"sliding-counter","limit":5,"window":"1s","granularity":"100ms"}"#,
        )
        .unwrap();
        assert_eq!(
            r.algorithm(),
            Algorithm::SlidingCounter {
                granularity: Duration::from_millis(100)
            }
        );
        let err = serde_json::from_str::<Rule>(
            r#"{"name":"u","algorithm":"gcra","limit":0,"window":"1s"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid limit"), "{err}");
        let err = serde_json::from_str::<Rule>(
            r#"{"name":"u","algorithm":"gcra","limit":1,"window":"1s","colour":"red"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
    }
}
