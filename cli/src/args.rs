//! Flags shared by every command that talks to Redis, declared once and flattened in.

use clap::Args;
use sluice_shared::{Keyspace, RedisConfig};

use crate::{Failure, settings};

/// Where Redis is and which key prefix to use.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnArgs {
    /// Redis: redis://[:password@]host:port, or redis+cluster://host:port,host:port for a
    /// cluster [default: redis.url of --settings].
    #[arg(long, env = "SLUICE_REDIS_URL")]
    redis: Option<String>,
    /// Key prefix [default: sluice; for load tests: sluice-loadtest].
    #[arg(long)]
    prefix: Option<String>,
}

impl ConnArgs {
    /// The parsed `--redis` (or the settings' `redis`), or an error naming the flag.
    pub(crate) fn config(&self) -> Result<RedisConfig, Failure> {
        match (&self.redis, &settings::get().redis) {
            (Some(spec), _) => {
                RedisConfig::parse(spec).map_err(|e| Failure::flag("redis", e.reason()))
            }
            (None, Some(config)) => Ok(config.clone()),
            (None, None) => Err(Failure::flag(
                "redis",
                "missing: give --redis URL, SLUICE_REDIS_URL, or redis.url in --settings FILE",
            )),
        }
    }

    /// `--prefix`, else the settings' `prefix`, else the command's default. Load tests
    /// (default [`LOADTEST_PREFIX`]) skip the settings' prefix: a service's prefix there
    /// would mix their keys with the service's.
    pub(crate) fn prefix<'a>(&'a self, default: &'a str) -> &'a str {
        let configured = match default {
            LOADTEST_PREFIX => None,
            _ => settings::get().prefix.as_deref(),
        };
        self.prefix.as_deref().or(configured).unwrap_or(default)
    }

    /// The keyspace under `--prefix` (or the command's default), or an error naming the flag.
    pub(crate) fn keyspace(&self, default_prefix: &str) -> Result<Keyspace, Failure> {
        Keyspace::new(self.prefix(default_prefix).to_owned())
            .map_err(|e| Failure::flag("prefix", e.reason()))
    }

    /// Where Redis is, as it may be shown: credentials hidden.
    pub(crate) fn redis_shown(&self) -> String {
        match (&self.redis, self.config()) {
            (Some(spec), _) => sluice_shared::config::redact(spec),
            (None, Ok(config)) => format!("{:?}", config.topology()),
            (None, Err(_)) => "(no address given)".to_owned(),
        }
    }
}

/// The default prefix of one-off commands (`limit`, `jobs`).
pub(crate) const DEFAULT_PREFIX: &str = "sluice";
/// The default prefix of load tests, so their keys never mix with a service's.
pub(crate) const LOADTEST_PREFIX: &str = "sluice-loadtest";
