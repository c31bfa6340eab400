//! The CLI's one error type: a message for stderr, exit status 2.

use std::fmt;

use sluice_shared::ConfigError;

/// A failure to report: the message goes to stderr and the process exits with 2; or stdout's
/// reader went away, and the process exits quietly with 141.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    broken_pipe: bool,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            broken_pipe: false,
        }
    }

    /// Stdout is a pipe whose reader has gone: nothing to report, stop.
    pub(crate) fn broken_pipe() -> Self {
        Self {
            message: String::new(),
            broken_pipe: true,
        }
    }

    /// The exit status and, unless the pipe broke, the message for stderr.
    pub(crate) fn exit(&self) -> (u8, Option<&str>) {
        if self.broken_pipe {
            (141, None)
        } else {
            (2, Some(&self.message))
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
