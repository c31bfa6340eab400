//! The CLI's one error type: a message for stderr, exit status 2.

use std::fmt;

use sluice_shared::ConfigError;

/// A failure to report: the message goes to stderr and the process exits with 2.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// A value given to `--flag` was refused: `--flag: reason`.
    pub(crate) fn flag(flag: &str, reason: impl fmt::Display) -> Self {
        Self::new(format!("--{flag}: {reason}"))
    }

    /// A validation error whose field is the name of the flag that carried it.
    pub(crate) fn config(e: &ConfigError) -> Self {
        Self::flag(e.field(), e.reason())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
