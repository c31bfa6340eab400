//! Where Redis is and how long to wait for it.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{error::ConfigError, tls::Tls};

/// Which kind of deployment to talk to. More kinds (Sentinel) will join this enum, hence
/// `#[non_exhaustive]`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Topology {
    /// One server (or a proxy that looks like one).
    Standalone {
        /// `redis://[user:password@]host:port[/db]`, or `rediss://...` for TLS.
        url: String,
    },
    /// A Redis Cluster, reached through any of its seed nodes.
    Cluster {
        /// Seed node URLs; the rest of the cluster is discovered from them.
        urls: Vec<String>,
    },
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Standalone { url } => f
                .debug_struct("Standalone")
                .field("url", &redact(url))
                .finish(),
            Topology::Cluster { urls } => f
                .debug_struct("Cluster")
                .field("urls", &urls.iter().map(|u| redact(u)).collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// Hide the credentials of a URL (`redis://user:pass@host` becomes
/// `redis://<credentials set>@host`) so it can be logged or shown in an error.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!(
                "{}://<credentials set>@{}",
                &url[..scheme_end],
                &url[at + 1..]
            )
        }
        _ => url.to_owned(),
    }
}

/// Connection settings shared by every Sluice component.
///
/// Build it with [`RedisConfig::standalone`], [`RedisConfig::cluster`] or [`RedisConfig::parse`],
/// then adjust timeouts with the `set_*` methods; or deserialize it from a config file (the
/// same validation runs, and errors name the offending field).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRedisConfig", into = "RawRedisConfig")]
pub struct RedisConfig {
    topology: Topology,
    connect_timeout: Duration,
    response_timeout: Duration,
    tls: Option<Tls>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("topology", &self.topology)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Default time allowed to open a TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time allowed for a reply on the shared (multiplexed) connection.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

impl RedisConfig {
    /// A single server at `url`.
    pub fn standalone(url: impl Into<String>) -> Result<Self, ConfigError> {
        let url = url.into();
        check_url("url", &url)?;
        Ok(Self::with_topology(Topology::Standalone { url }))
    }

    /// A Redis Cluster reached through the given seed URLs (at least one).
    pub fn cluster<I, S>(urls: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        if urls.is_empty() {
            return Err(ConfigError::new(
                "urls",
                "a cluster needs at least one seed URL",
            ));
        }
        for url in &urls {
            check_url("urls", url)?;
        }
        let tls = urls.iter().filter(|u| u.starts_with("rediss://")).count();
        if tls != 0 && tls != urls.len() {
            return Err(ConfigError::new(
                "urls",
                "mixes rediss:// and redis:// seeds: a cluster is reached over TLS or not",
            ));
        }
        Ok(Self::with_topology(Topology::Cluster { urls }))
    }

    /// Parse the form used on command lines and in environment variables:
    /// `redis://host:port` is a standalone server; `redis+cluster://host:port[,host:port...]`
    /// or several comma-separated `redis://` URLs name a cluster's seed nodes; `rediss://`
    /// and `rediss+cluster://` the same over TLS.
    pub fn parse(spec: &str) -> Result<Self, ConfigError> {
        let spec = spec.trim();
        for (prefix, scheme) in [
            ("redis+cluster://", "redis"),
            ("rediss+cluster://", "rediss"),
        ] {
            if let Some(rest) = spec.strip_prefix(prefix) {
                let urls = rest.split(',').map(|node| {
                    let node = node.trim();
                    let node = node
                        .strip_prefix("redis://")
                        .or_else(|| node.strip_prefix("rediss://"))
                        .unwrap_or(node);
                    format!("{scheme}://{node}")
                });
                return Self::cluster(urls);
            }
        }
        if spec.contains(',') {
            return Self::cluster(spec.split(',').map(|s| s.trim().to_owned()));
        }
        Self::standalone(spec)
    }

    fn with_topology(topology: Topology) -> Self {
        Self {
            topology,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            tls: None,
        }
    }

    /// TLS settings (CA bundle, client certificate): only for `rediss://` addresses, where
    /// they replace the defaults (the system's roots, no client certificate). Refused for a
    /// plain `redis://` address, which would silently not use them.
    pub fn set_tls(mut self, tls: Tls) -> Result<Self, ConfigError> {
        if !self.uses_tls() {
            return Err(ConfigError::new(
                "tls",
                "TLS files are set but the address is redis://: write rediss:// (or \
                 rediss+cluster://) to connect over TLS",
            ));
        }
        self.tls = Some(tls);
        Ok(self)
    }

    /// The TLS settings, when set.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The address with credentials hidden, for messages (`rediss://127.0.0.1:6380`, or the
    /// cluster's seeds joined by commas).
    pub fn describe(&self) -> String {
        match &self.topology {
            Topology::Standalone { url } => redact(url),
            Topology::Cluster { urls } => {
                urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",")
            }
        }
    }

    /// True when the address is `rediss://` (every URL of a cluster).
    pub fn uses_tls(&self) -> bool {
        match &self.topology {
            Topology::Standalone { url } => url.starts_with("rediss://"),
            Topology::Cluster { urls } => urls.iter().all(|u| u.starts_with("rediss://")),
        }
    }

    /// Time allowed to open a connection (default 1 s). Zero is refused.
    pub fn set_connect_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::new(
                "connect_timeout",
                "must be greater than zero",
            ));
        }
        self.connect_timeout = timeout;
        Ok(self)
    }

    /// Time allowed for any reply on the shared connection (default 1 s). Zero is refused.
    /// Blocking reads use their own connection and are not bound by this.
    pub fn set_response_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::new(
                "response_timeout",
                "must be greater than zero",
            ));
        }
        self.response_timeout = timeout;
        Ok(self)
    }

    /// The deployment this config points at.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// True for a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }

    /// Time allowed to open a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Time allowed for a reply on the shared connection.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }
}

/// The forms a Redis address may take, for error messages.
pub const ACCEPTED_FORMS: &str = "redis://[[user]:password@]host[:port][/db] for one server; \
redis+cluster://host:port[,host:port...] or comma-separated redis:// URLs for a cluster; \
rediss:// and rediss+cluster:// for TLS";

fn check_url(field: &'static str, url: &str) -> Result<(), ConfigError> {
    use redis::IntoConnectionInfo;
    let shown = redact(url);
    let refuse =
        |what: String| ConfigError::new(field, format!("{what} (accepted: {ACCEPTED_FORMS})"));
    if url.is_empty() {
        return Err(refuse("empty address".to_owned()));
    }
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(refuse(format!(
            "'{shown}' has no scheme: write redis://{shown}"
        )));
    };
    match scheme {
        "redis" | "rediss" => {}
        "unix" | "redis+unix" => {
            return Err(refuse(format!("'{shown}': unix sockets are not supported")));
        }
        other => return Err(refuse(format!("'{shown}': unsupported scheme '{other}'"))),
    }
    let parsed = url::Url::parse(url).map_err(|e| refuse(format!("'{shown}': {e}")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(refuse(format!("'{shown}': no host")));
    }
    if parsed.port() == Some(0) {
        return Err(refuse(format!("'{shown}': port 0")));
    }
    url.into_connection_info()
        .map(|_| ())
        .map_err(|e| refuse(format!("'{shown}': {e}")))
}

/// The on-disk shape of [`RedisConfig`]: `url = "redis://..."` for one server or
/// `urls = [...]` for a cluster's seeds, plus optional timeouts; converted with validation.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedisConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    urls: Option<Vec<String>>,
    #[serde(default = "default_connect", with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(default = "default_response", with = "humantime_serde")]
    response_timeout: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tls: Option<Tls>,
}

fn default_connect() -> Duration {
    DEFAULT_CONNECT_TIMEOUT
}

fn default_response() -> Duration {
    DEFAULT_RESPONSE_TIMEOUT
}

impl TryFrom<RawRedisConfig> for RedisConfig {
    type Error = ConfigError;

    fn try_from(raw: RawRedisConfig) -> Result<Self, Self::Error> {
        let config = match (raw.url, raw.urls) {
            // `url` takes every command-line form, `redis+cluster://...` included.
            (Some(url), None) => Self::parse(&url)?,
            (None, Some(urls)) => Self::cluster(urls)?,
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "url",
                    "give `url` (one server) or `urls` (cluster seeds), not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "url",
                    "missing: give `url` (one server) or `urls` (cluster seeds)",
                ));
            }
        };
        let config = config
            .set_connect_timeout(raw.connect_timeout)?
            .set_response_timeout(raw.response_timeout)?;
        match raw.tls {
            Some(tls) => config.set_tls(tls.validate()?),
            None => Ok(config),
        }
    }
}

impl From<RedisConfig> for RawRedisConfig {
    fn from(c: RedisConfig) -> Self {
        let (url, urls) = match c.topology {
            Topology::Standalone { url } => (Some(url), None),
            Topology::Cluster { urls } => (None, Some(urls)),
        };
        Self {
            url,
            urls,
            connect_timeout: c.connect_timeout,
            response_timeout: c.response_timeout,
            tls: c.tls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        assert!(
            !RedisConfig::parse("redis://127.0.0.1:6379")
                .unwrap()
                .is_cluster()
        );
        let c = RedisConfig::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert_eq!(
            c.topology(),
            &Topology::Cluster {
                urls: vec![
                    "redis://127.0.0.1:7000".into(),
                    "redis://127.0.0.1:7001".into()
                ]
            }
        );
        assert!(
            RedisConfig::parse("redis://a:1,redis://b:2")
                .unwrap()
                .is_cluster()
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = RedisConfig::parse("http://nope").unwrap_err();
        assert_eq!(err.field(), "url");
        let err = RedisConfig::cluster(Vec::<String>::new()).unwrap_err();
        assert_eq!(err.field(), "urls");
        let err = RedisConfig::parse("redis://127.0.0.1:1")
            .unwrap()
            .set_response_timeout(Duration::ZERO)
            .unwrap_err();
        assert_eq!(err.field(), "response_timeout");
    }

    #[test]
    fn debug_hides_passwords() {
        let c = RedisConfig::parse("redis://user:hunter2@127.0.0.1:6379").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("127.0.0.1:6379"));
    }
}
