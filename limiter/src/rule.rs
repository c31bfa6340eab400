//! Validated limiting rules.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};
use sluice_shared::ConfigError;

use crate::algorithm::Algorithm;

/// Longest window a rule may have (one year).
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most sub-buckets a sliding-window counter may cut its window into. A call may walk every
/// sub-bucket of a window once (evicting those that left it), so this bounds the work of one
/// call: at 100,000 such a call kept Redis busy for ~0.4 s (every other client waited); at
/// 2,000 it takes a few milliseconds.
pub const MAX_BUCKETS: u64 = 2_000;
/// Largest limit (the sliding log's own cap is lower: it may keep one member per unit admitted
/// in a window when every admission costs 1).
pub const MAX_LIMIT: u64 = 1 << 40;

/// A limit: at most `limit` units per `window`, counted by an [`Algorithm`], under a name.
///
/// The name (with the algorithm) picks the Redis keys, so two rules on the same id never share
/// state, and changing a rule's limit keeps its state: the new limit applies on the next call.
/// Rules can't be built invalid: zero limits, zero windows and granularities that don't divide
/// the window are refused with an error naming the field. Build one with
/// [`Rule::sliding_log`], [`Rule::sliding_counter`], [`Rule::gcra`] or [`Rule::fixed_window`],
/// or, when the algorithm
/// is only known at run time, from a [`RuleConfig`] (`Rule::try_from(config)`).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RuleConfig", into = "RuleConfig")]
pub struct Rule {
    name: String,
    limit: u64,
    window: Duration,
    algorithm: Algorithm,
    /// Set for (and only for) the sliding counter.
    granularity: Option<Duration>,
    /// Set for (and only for) GCRA.
    burst: Option<u64>,
}

/// Compact on purpose (`Rule(per-user log: 10 per 1s)`): test failures and tables print it.
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
        if let Some(granularity) = self.granularity {
            write!(f, ", granularity {granularity:?}")?;
        }
        if let Some(burst) = self.burst {
            write!(f, ", burst {burst}")?;
        }
        write!(f, ")")
    }
}

impl Rule {
    /// Validate and build. The parameters must match the algorithm (granularity for the
    /// sliding counter, burst for GCRA); a missing one takes its default (the window, the
    /// limit).
    fn from_parts(
        name: String,
        algorithm: Algorithm,
        limit: u64,
        window: Duration,
        granularity: Option<Duration>,
        burst: Option<u64>,
    ) -> Result<Self, ConfigError> {
        let (granularity, burst) = match algorithm {
            Algorithm::SlidingLog | Algorithm::FixedWindow => {
                only_for_counter(granularity)?;
                only_for_gcra(burst)?;
                (None, None)
            }
            Algorithm::SlidingCounter => {
                only_for_gcra(burst)?;
                (Some(granularity.unwrap_or(window)), None)
            }
            Algorithm::Gcra => {
                only_for_counter(granularity)?;
                (None, Some(burst.unwrap_or(limit)))
            }
        };
        check_name(&name)?;
        check_limit_and_window(limit, window)?;
        match algorithm {
            Algorithm::SlidingLog => check_log_limit(limit)?,
            Algorithm::SlidingCounter => {
                check_granularity(window, granularity.unwrap_or(window))?;
            }
            Algorithm::Gcra => check_units("burst", burst.unwrap_or(limit))?,
            Algorithm::FixedWindow => {}
        }
        Ok(Self {
            name,
            limit,
            window,
            algorithm,
            granularity,
            burst,
        })
    }

    /// An algorithm without parameters (no granularity, no burst).
    fn unparameterized(
        name: String,
        algorithm: Algorithm,
        limit: u64,
        window: Duration,
    ) -> Result<Self, ConfigError> {
        Self::from_parts(name, algorithm, limit, window, None, None)
    }

    /// Exact sliding log: at most `limit` in any window of length `window`.
    pub fn sliding_log(
        name: impl Into<String>,
        limit: u64,
        window: Duration,
    ) -> Result<Self, ConfigError> {
        Self::unparameterized(name.into(), Algorithm::SlidingLog, limit, window)
    }

    /// Sliding-window counter with sub-buckets of `granularity` (which must divide `window`).
    pub fn sliding_counter(
        name: impl Into<String>,
        limit: u64,
        window: Duration,
        granularity: Duration,
    ) -> Result<Self, ConfigError> {
        Self::from_parts(
            name.into(),
            Algorithm::SlidingCounter,
            limit,
            window,
            Some(granularity),
            None,
        )
    }

    /// GCRA: `limit` per `window` on average, with bursts of up to `burst`.
    pub fn gcra(
        name: impl Into<String>,
        limit: u64,
        window: Duration,
        burst: u64,
    ) -> Result<Self, ConfigError> {
        Self::from_parts(
            name.into(),
            Algorithm::Gcra,
            limit,
            window,
            None,
            Some(burst),
        )
    }

    /// Fixed window, as envoyproxy/ratelimit counts: at most `limit` in each window aligned to
    /// a multiple of `window` since the Unix epoch (`window` = 1 minute: every minute on the
    /// minute). Up to twice the limit may pass in one window's length across a boundary.
    pub fn fixed_window(
        name: impl Into<String>,
        limit: u64,
        window: Duration,
    ) -> Result<Self, ConfigError> {
        Self::unparameterized(name.into(), Algorithm::FixedWindow, limit, window)
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

    /// The width of one sub-bucket: `Some` for the sliding counter only.
    pub fn granularity(&self) -> Option<Duration> {
        self.granularity
    }

    /// The most units admitted at once from an idle key: `Some` for GCRA only.
    pub fn burst(&self) -> Option<u64> {
        self.burst
    }

    /// The most units one request can ever be granted: the limit, or the burst for GCRA.
    pub fn capacity(&self) -> u64 {
        self.burst.unwrap_or(self.limit)
    }

    pub(crate) fn window_us(&self) -> u64 {
        self.window.as_micros() as u64
    }

    /// The per-rule parameter passed to the script: granularity (µs), burst, or 0.
    pub(crate) fn param(&self) -> u64 {
        match self.algorithm {
            Algorithm::SlidingLog | Algorithm::FixedWindow => 0,
            Algorithm::SlidingCounter => self.granularity.map_or(0, |g| g.as_micros() as u64),
            Algorithm::Gcra => self.capacity(),
        }
    }
}

fn only_for_counter(granularity: Option<Duration>) -> Result<(), ConfigError> {
    match granularity {
        Some(_) => Err(ConfigError::new(
            "granularity",
            "applies to sliding-counter only",
        )),
        None => Ok(()),
    }
}

fn only_for_gcra(burst: Option<u64>) -> Result<(), ConfigError> {
    match burst {
        Some(_) => Err(ConfigError::new("burst", "applies to gcra only")),
        None => Ok(()),
    }
}

fn check_name(name: &str) -> Result<(), ConfigError> {
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
    Ok(())
}

/// A count of units (a limit, a burst): 1 to [`MAX_LIMIT`].
fn check_units(field: &'static str, units: u64) -> Result<(), ConfigError> {
    if units == 0 {
        return Err(ConfigError::new(field, "must be at least 1"));
    }
    if units > MAX_LIMIT {
        return Err(ConfigError::new(
            field,
            format!("must be at most {MAX_LIMIT}"),
        ));
    }
    Ok(())
}

fn check_limit_and_window(limit: u64, window: Duration) -> Result<(), ConfigError> {
    check_units("limit", limit)?;
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
    Ok(())
}

fn check_log_limit(limit: u64) -> Result<(), ConfigError> {
    if limit > 10_000_000 {
        return Err(ConfigError::new(
            "limit",
            "the sliding log keeps one entry per admission in a window (up to one per unit for cost-1 traffic): at most 10,000,000; use the sliding counter or GCRA above that",
        ));
    }
    Ok(())
}

fn check_granularity(window: Duration, granularity: Duration) -> Result<(), ConfigError> {
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
            format!("must divide the window ({window:?} is not a multiple of {granularity:?})"),
        ));
    }
    if (w / g) as u64 > MAX_BUCKETS {
        return Err(ConfigError::new(
            "granularity",
            format!("cuts the window into more than {MAX_BUCKETS} buckets"),
        ));
    }
    Ok(())
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
    /// `sliding-log`, `sliding-counter`, `gcra` or `fixed-window`.
    pub algorithm: Algorithm,
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

impl TryFrom<RuleConfig> for Rule {
    type Error = ConfigError;

    fn try_from(c: RuleConfig) -> Result<Self, ConfigError> {
        Rule::from_parts(
            c.name,
            c.algorithm,
            c.limit,
            c.window,
            c.granularity,
            c.burst,
        )
    }
}

impl From<Rule> for RuleConfig {
    fn from(r: Rule) -> Self {
        Self {
            name: r.name,
            algorithm: r.algorithm,
            limit: r.limit,
            window: r.window,
            granularity: r.granularity,
            burst: r.burst,
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
        assert_eq!(Rule::fixed_window("a", 0, S).unwrap_err().field(), "limit");
        assert_eq!(
            Rule::fixed_window("a", 1, Duration::from_nanos(1_000_500))
                .unwrap_err()
                .field(),
            "window"
        );
        assert_eq!(
            Rule::fixed_window("a", 1, MAX_WINDOW + S)
                .unwrap_err()
                .field(),
            "window"
        );
        assert!(Rule::sliding_counter("a", 10, S, Duration::from_millis(1)).is_ok());
    }

    #[test]
    fn rules_load_from_files_and_errors_name_the_field() {
        let r: Rule = serde_json::from_str(
            r#"{"name":"u","algorithm":"sliding-counter","limit":5,"window":"1s","granularity":"100ms"}"#,
        )
        .unwrap();
        assert_eq!(r.algorithm(), Algorithm::SlidingCounter);
        assert_eq!(r.granularity(), Some(Duration::from_millis(100)));
        assert_eq!(r.burst(), None);
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
        let r: Rule = serde_json::from_str(
            r#"{"name":"per-day","algorithm":"fixed-window","limit":1000,"window":"1day"}"#,
        )
        .unwrap();
        assert_eq!(r, Rule::fixed_window("per-day", 1000, 86_400 * S).unwrap());
        let err = serde_json::from_str::<Rule>(
            r#"{"name":"u","algorithm":"fixed-window","limit":1,"window":"1s","burst":2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("burst"), "{err}");
    }

    #[test]
    fn parameters_belong_to_their_algorithm() {
        let config = |algorithm, granularity, burst| RuleConfig {
            name: "p".into(),
            algorithm,
            limit: 10,
            window: S,
            granularity,
            burst,
        };
        let log = Rule::try_from(config(Algorithm::SlidingLog, None, None)).unwrap();
        assert_eq!(
            (log.granularity(), log.burst(), log.capacity()),
            (None, None, 10)
        );
        let ctr = Rule::try_from(config(Algorithm::SlidingCounter, None, None)).unwrap();
        assert_eq!((ctr.granularity(), ctr.burst()), (Some(S), None));
        let gcra = Rule::try_from(config(Algorithm::Gcra, None, Some(4))).unwrap();
        assert_eq!((gcra.burst(), gcra.capacity()), (Some(4), 4));
        let fw = Rule::try_from(config(Algorithm::FixedWindow, None, None)).unwrap();
        assert_eq!(fw, Rule::fixed_window("p", 10, S).unwrap());
        assert_eq!(
            (fw.granularity(), fw.burst(), fw.capacity(), fw.param()),
            (None, None, 10, 0)
        );
        let defaulted = Rule::try_from(config(Algorithm::Gcra, None, None)).unwrap();
        assert_eq!(defaulted, Rule::gcra("p", 10, S, 10).unwrap());
        let g = Some(Duration::from_millis(100));
        for (algorithm, granularity, burst, field) in [
            (Algorithm::SlidingLog, g, None, "granularity"),
            (Algorithm::SlidingLog, None, Some(1), "burst"),
            (Algorithm::SlidingCounter, g, Some(1), "burst"),
            (Algorithm::Gcra, g, Some(1), "granularity"),
            (Algorithm::FixedWindow, g, None, "granularity"),
            (Algorithm::FixedWindow, None, Some(1), "burst"),
        ] {
            let err = Rule::try_from(config(algorithm, granularity, burst)).unwrap_err();
            assert_eq!(err.field(), field, "{algorithm}");
        }
        // A rule's file form reads back as the same rule.
        for rule in [log, ctr, gcra, fw] {
            assert_eq!(
                Rule::try_from(RuleConfig::from(rule.clone())).unwrap(),
                rule
            );
        }
        assert_eq!(
            format!(
                "{:?}",
                Rule::sliding_counter("d", 5, S, Duration::from_millis(100)).unwrap()
            ),
            "Rule(d ctr: 5 per 1s, granularity 100ms)"
        );
        assert_eq!(
            format!("{:?}", Rule::gcra("d", 5, S, 2).unwrap()),
            "Rule(d gcra: 5 per 1s, burst 2)"
        );
    }
}
