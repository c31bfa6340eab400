//! Why a config was refused: [`ConfigError`] names the file and where in it, [`Problem`] says
//! what is wrong (in envoyproxy/ratelimit's words where it has words for it).

use std::{fmt, io, path::PathBuf};

/// A refused rate-limit config. Every variant names the file; [`ConfigError::Invalid`] also
/// names the place in it: the descriptor path in envoy's composite-key form
/// (`test-domain.key1_value1.key2`), followed by the field when one is to blame
/// (`test-domain.key1_value1: rate_limit.unit`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file or directory could not be read.
    #[error("{}: {source}", file.display())]
    Read {
        /// The file or directory.
        file: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The file is not YAML, or its top level is not a mapping.
    #[error("{}: error loading config file: {message}", file.display())]
    Yaml {
        /// The file.
        file: PathBuf,
        /// What the parser said (with the line and column where it has them).
        message: String,
    },
    /// The file is YAML but not a valid config.
    #[error("{}: {at}: {problem}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Where: the descriptor path, and the field if one is to blame.
        at: String,
        /// What is wrong.
        problem: Problem,
    },
    /// Two files configure the same domain.
    #[error("{}: duplicate domain '{domain}' in config file (already in {})", file.display(), first.display())]
    DuplicateDomain {
        /// The second file.
        file: PathBuf,
        /// The domain.
        domain: String,
        /// The file that configured it first.
        first: PathBuf,
    },
}

impl ConfigError {
    /// The file the error is about.
    pub fn file(&self) -> &std::path::Path {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::Yaml { file, .. }
            | ConfigError::Invalid { file, .. }
            | ConfigError::DuplicateDomain { file, .. } => file,
        }
    }

    /// The problem, for [`ConfigError::Invalid`].
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ConfigError::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }
}

/// What is wrong with a config. The first group are the errors envoyproxy/ratelimit refuses
/// configs with, worded as it words them; the rest concern Sluice's extensions and the keys
/// Sluice refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// `domain` is missing or empty.
    #[error("config file cannot have empty domain")]
    EmptyDomain,
    /// A descriptor's `key` is missing or empty.
    #[error("descriptor has empty key")]
    EmptyKey,
    /// Two sibling descriptors have the same key and value (envoy's composite key
    /// `key_value`, or `key` without a value).
    #[error("duplicate descriptor composite key '{0}'")]
    DuplicateCompositeKey(String),
    /// `unit` is not one of second, minute, hour, day, week, month, year (any case).
    #[error("invalid rate limit unit '{0}'")]
    InvalidUnit(String),
    /// `unit` given on an unlimited limit.
    #[error("should not specify rate limit unit when unlimited")]
    UnitWhenUnlimited,
    /// A limit lists its own name in `replaces`.
    #[error("replaces should not contain name of same descriptor")]
    ReplacesSelf,
    /// A `replaces` entry without a name.
    #[error("should not have an empty replaces entry")]
    EmptyReplaces,
    /// A key no level of the config knows (or one that belongs to another level).
    #[error("config error, unknown key '{0}'")]
    UnknownKey(String),
    /// A mapping key that is not a string.
    #[error("config error, key is not of type string: {0}")]
    NonStringKey(String),
    /// A list (`descriptors`, `replaces`, `rate_limits`) holding something other than mappings.
    #[error("config error, yaml file contains list of type other than map: {0}")]
    ListOfNonMap(String),
    /// A value of the wrong type, e.g. `requests_per_unit: ten`.
    #[error("'{key}' must be {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// What it must be.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// `share_threshold: true` on a descriptor whose value has no `*`.
    #[error(
        "share_threshold can only be used with wildcard values (containing '*'), but found key '{0}'"
    )]
    ShareThresholdWithoutWildcard(String),
    /// `metadata` that can't be represented as JSON.
    #[error("error parsing metadata: {0}")]
    Metadata(String),
    /// A key envoyproxy/ratelimit knows that Sluice refuses, and why.
    #[error("'{key}' is not supported: {reason}")]
    Unsupported {
        /// The key.
        key: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
    /// A Sluice extension used wrongly, e.g. `unit` and `window` together.
    #[error("{0}")]
    Extension(String),
    /// A limit the limiter refuses (a granularity that doesn't divide the window, a zero burst).
    #[error("{field}: {reason}")]
    Limit {
        /// The config key to blame.
        field: String,
        /// Why.
        reason: String,
    },
}

/// A short, bounded rendering of a YAML value for messages.
pub(crate) struct Shown<'a>(pub(crate) &'a serde_norway::Value);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use serde_norway::Value;
        match self.0 {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::String(s) if s.chars().count() > 40 => {
                let short: String = s.chars().take(40).collect();
                write!(f, "{short}...")
            }
            Value::String(s) => f.write_str(s),
            Value::Sequence(_) => f.write_str("a list"),
            Value::Mapping(_) => f.write_str("a mapping"),
            Value::Tagged(t) => write!(f, "{} {}", t.tag, Shown(&t.value)),
        }
    }
}
