//! Flags shared by every command that talks to Redis, declared once and flattened in.
#![expect(
    dead_code,
    reason = "wired into the limit and jobs commands by the restructuring branches"
)]

use clap::Args;
use sluice_shared::{Keyspace, RedisConfig};

use crate::Failure;

/// Where Redis is and which key prefix to use.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnArgs {
    /// Redis: redis://[:password@]host:port, or redis+cluster://host:port,host:port for a
    /// cluster.
    #[arg(long, env = "SLUICE_REDIS_URL")]
    redis: String,
    /// Key prefix [default: sluice; for load tests: sluice-loadtest].
    #[arg(long)]
    prefix: Option<String>,
}

impl ConnArgs {
    /// The parsed `--redis`, or an error naming the flag.
    pub(crate) fn config(&self) -> Result<RedisConfig, Failure> {
        RedisConfig::parse(&self.redis).map_err(|e| Failure::flag("redis", e.reason()))
    }

    /// `--prefix`, or the command's default.
    pub(crate) fn prefix<'a>(&'a self, default: &'a str) -> &'a str {
        self.prefix.as_deref().unwrap_or(default)
    }

    /// The keyspace under `--prefix` (or the command's default), or an error naming the flag.
    pub(crate) fn keyspace(&self, default_prefix: &str) -> Result<Keyspace, Failure> {
        Keyspace::new(self.prefix(default_prefix).to_owned())
            .map_err(|e| Failure::flag("prefix", e.reason()))
    }

    /// `--redis` as it may be shown: credentials hidden.
    pub(crate) fn redis_shown(&self) -> String {
        sluice_shared::config::redact(&self.redis)
    }
}

/// The default prefix of one-off commands (`limit`, `jobs`).
pub(crate) const DEFAULT_PREFIX: &str = "sluice";
/// The default prefix of load tests, so their keys never mix with a service's.
pub(crate) const LOADTEST_PREFIX: &str = "sluice-loadtest";
