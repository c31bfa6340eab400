//! Typed errors for everything that talks to Redis.

use std::time::Duration;

/// What went wrong while talking to Redis, sorted by what a caller can do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The server could not be reached or the connection broke (refused, reset, cluster down,
    /// `LOADING`, `MASTERDOWN`, `TRYAGAIN`). Retrying later may succeed.
    #[error("redis unavailable: {0}")]
    Unavailable(#[source] redis::RedisError),
    /// No reply arrived within the configured time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The server answered with an error that retrying will not fix (wrong type, script error,
    /// `CROSSSLOT`, ACL denial, ...).
    #[error("redis command failed: {0}")]
    Command(#[source] redis::RedisError),
    /// The reply did not have the shape the caller expected.
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// The address names the wrong kind of deployment (a cluster node given as one server, or
    /// the reverse); the message says which form to use.
    #[error("{0}")]
    Topology(String),
    /// TLS could not be set up: a certificate or key file could not be read, or the handshake
    /// refused the server's certificate (expired, another CA, not valid for the address); the
    /// message names the file or the check. Retrying will not fix it.
    #[error("TLS: {0}")]
    Tls(String),
}

impl RedisError {
    /// True when the failure is about reaching Redis (down, slow, failing over), not about the
    /// command itself. Fallback policies apply only to these.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RedisError::Unavailable(_) | RedisError::Timeout(_))
    }
}

impl From<redis::RedisError> for RedisError {
    fn from(err: redis::RedisError) -> Self {
        use redis::{ErrorKind, ServerErrorKind};
        let unavailable = err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || matches!(
                err.kind(),
                ErrorKind::ClusterConnectionNotFound
                    | ErrorKind::Server(
                        ServerErrorKind::ClusterDown
                            | ServerErrorKind::BusyLoading
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::MasterDown
                    )
            );
        if err.is_timeout() {
            // redis-rs' own response timeout; report it as unavailable with its source kept.
            return RedisError::Unavailable(err);
        }
        if unavailable {
            RedisError::Unavailable(err)
        } else if matches!(
            err.kind(),
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType
        ) {
            RedisError::Protocol(err.to_string())
        } else {
            RedisError::Command(err)
        }
    }
}

/// A configuration value that can't be used; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConfigError {
    field: &'static str,
    reason: String,
}

impl ConfigError {
    /// A new error about `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The name of the offending field, as written in config files and on the command line.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why the value was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
