//! Flags shared by every command that talks to Redis, declared once and flattened in.

use clap::Args;
use std::path::PathBuf;

use sluice_shared::{Keyspace, RedisConfig, Tls};

use crate::{Failure, settings};

/// Where Redis is and which key prefix to use.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnArgs {
    /// Redis: redis://[:password@]host:port, or redis+cluster://host:port,host:port for a
    /// cluster; rediss:// and rediss+cluster:// for TLS [default: redis.url of --settings].
    #[arg(long, env = "SLUICE_REDIS_URL")]
    redis: Option<String>,
    /// TLS: PEM CA bundle that signs the server's certificate (rediss:// only) [default: the
    /// system's roots, or redis.tls.ca of --settings].
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// TLS: PEM client certificate, for servers that require one (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Key prefix [default: sluice; for load tests: sluice-loadtest].
    #[arg(long)]
    prefix: Option<String>,
}

impl ConnArgs {
    /// The parsed `--redis` (or the settings' `redis`), or an error naming the flag.
    pub(crate) fn config(&self) -> Result<RedisConfig, Failure> {
        let config = match (&self.redis, &settings::get().redis) {
            (Some(spec), _) => {
                RedisConfig::parse(spec).map_err(|e| Failure::flag("redis", e.reason()))?
            }
            (None, Some(config)) => config.clone(),
            (None, None) => {
                return Err(Failure::flag(
                    "redis",
                    "missing: give --redis URL, SLUICE_REDIS_URL, or redis.url in --settings FILE",
                ));
            }
        };
        self.with_tls_flags(config)
    }

    /// The `--tls-*` flags, when given, in place of the settings' `redis.tls`.
    fn with_tls_flags(&self, config: RedisConfig) -> Result<RedisConfig, Failure> {
        if self.tls_ca.is_none() && self.tls_cert.is_none() {
            return Ok(config);
        }
        let mut tls = Tls::new();
        if let Some(ca) = &self.tls_ca {
            tls = tls
                .ca(ca)
                .map_err(|e| Failure::flag("tls-ca", e.reason()))?;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.client_cert(cert, key).map_err(|e| {
                let flag = if e.field() == "tls.key" {
                    "tls-key"
                } else {
                    "tls-cert"
                };
                Failure::flag(flag, e.reason())
            })?;
        }
        config
            .set_tls(tls)
            .map_err(|e| Failure::flag("tls-ca", e.reason()))
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
