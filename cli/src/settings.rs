//! One settings schema for every command: a TOML or YAML file (`--settings FILE`, or
//! `SLUICE_SETTINGS`) and `SLUICE_*` environment variables, read with the `config` crate;
//! flags override both.
//!
//! ```toml
//! prefix = "myapp"
//! [redis]
//! url = "redis://:secret@127.0.0.1:6379"   # or urls = [...] for a cluster's seeds
//! response_timeout = "250ms"
//!
//! [serve]                                   # sluice serve
//! config = "/etc/sluice/ratelimit"          # a YAML file or a directory of them
//! grpc_addr = "127.0.0.1:8081"
//! http_addr = "127.0.0.1:8080"
//! timeout = "50ms"                          # per Redis call, then the outage policy answers
//! retry_interval = "250ms"                  # the breaker: how long calls skip a failed Redis
//! outage = "fail-open"                      # or fail-closed, local
//! legacy_headers = false                    # also X-RateLimit-Limit/-Remaining/-Reset
//! reload_interval = "1s"
//! drain_timeout = "10s"
//! detail_budget = 100
//! [serve.domains.payments]
//! outage = "fail-closed"
//!
//! [work]                                    # sluice jobs work
//! concurrency = 8
//! visibility_timeout = "60s"                # must exceed job_timeout
//! job_timeout = "30s"
//! max_attempts = 5
//! retry_base_delay = "1s"
//! retry_max_delay = "5m"
//! drain_timeout = "30s"
//! metrics_addr = "127.0.0.1:9464"
//! [dashboard]                               # sluice dashboard
//! addr = "127.0.0.1:8090"
//! refresh = "1s"
//! read_only = false
//! user = "ops"                              # basic auth: both or neither
//! password = "s3cret"                       # or SLUICE_DASHBOARD__PASSWORD
//! ```
//!
//! Environment: a variable per field, sections joined by a double underscore:
//! `SLUICE_REDIS__URL`, `SLUICE_REDIS__RESPONSE_TIMEOUT`, `SLUICE_PREFIX`,
//! `SLUICE_SERVE__GRPC_ADDR`, `SLUICE_SERVE__DOMAINS__PAYMENTS__OUTAGE` (environment names are
//! lowercased: give mixed-case domains their policy in the file). (`SLUICE_REDIS_URL`,
//! single underscore, is the `--redis` flag's own variable and beats the settings.)
//! Unknown fields are refused, and every error names the file (or the variable) and the field.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::Duration,
};

use serde::Deserialize;
use sluice_gateway::OutagePolicy;
use sluice_shared::RedisConfig;

use crate::Failure;

/// Everything a settings file may say.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Where Redis is and how long to wait for it (`url` or `urls`, timeouts).
    pub(crate) redis: Option<RedisConfig>,
    /// Key prefix of every command but the load tests (they keep theirs, `sluice-loadtest`,
    /// so their keys never mix with a service's).
    pub(crate) prefix: Option<String>,
    /// `sluice serve`: addresses, timeouts, outage policies, headers.
    #[serde(default)]
    pub(crate) serve: ServeSettings,
    /// `sluice jobs work`: concurrency, timers, attempts, metrics address.
    #[serde(default)]
    pub(crate) work: WorkSettings,
    /// `sluice dashboard`: address, refresh, read-only, basic auth.
    #[serde(default)]
    pub(crate) dashboard: DashboardSettings,
}

/// The `[work]` section (`sluice jobs work`); flags override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkSettings {
    /// Jobs run at once.
    pub(crate) concurrency: Option<usize>,
    /// Time before an unacknowledged job is reclaimed.
    #[serde(default, with = "humantime_serde")]
    pub(crate) visibility_timeout: Option<Duration>,
    /// Attempts per job.
    pub(crate) max_attempts: Option<u32>,
    /// First retry backoff.
    #[serde(default, with = "humantime_serde")]
    pub(crate) retry_base_delay: Option<Duration>,
    /// Longest retry backoff.
    #[serde(default, with = "humantime_serde")]
    pub(crate) retry_max_delay: Option<Duration>,
    /// Longest run of one job.
    #[serde(default, with = "humantime_serde")]
    pub(crate) job_timeout: Option<Duration>,
    /// After SIGTERM, the longest wait for running jobs.
    #[serde(default, with = "humantime_serde")]
    pub(crate) drain_timeout: Option<Duration>,
    /// Where `/metrics` is served.
    pub(crate) metrics_addr: Option<SocketAddr>,
}

/// The `[dashboard]` section (see the module docs); flags override it.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DashboardSettings {
    /// Where the dashboard listens.
    pub(crate) addr: Option<SocketAddr>,
    /// How often it reads Redis.
    #[serde(default, with = "humantime_serde")]
    pub(crate) refresh: Option<Duration>,
    /// Hide every action.
    pub(crate) read_only: Option<bool>,
    /// Basic auth user name.
    pub(crate) user: Option<String>,
    /// Basic auth password.
    pub(crate) password: Option<String>,
}

impl std::fmt::Debug for DashboardSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardSettings")
            .field("addr", &self.addr)
            .field("refresh", &self.refresh)
            .field("read_only", &self.read_only)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "set"))
            .finish()
    }
}

/// The `[serve]` section (see the module docs); flags override it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServeSettings {
    /// The rate-limit config: a YAML file or a directory of them.
    pub(crate) config: Option<PathBuf>,
    /// Where gRPC listens.
    pub(crate) grpc_addr: Option<SocketAddr>,
    /// Where HTTP listens.
    pub(crate) http_addr: Option<SocketAddr>,
    /// Longest wait for Redis per call.
    #[serde(default, with = "humantime_serde")]
    pub(crate) timeout: Option<Duration>,
    /// After a Redis failure, how long calls go straight to the outage policy.
    #[serde(default, with = "humantime_serde")]
    pub(crate) retry_interval: Option<Duration>,
    /// The outage policy of every domain without its own.
    pub(crate) outage: Option<OutagePolicy>,
    /// Per-domain settings, by domain name.
    #[serde(default)]
    pub(crate) domains: HashMap<String, DomainSettings>,
    /// Also send the legacy `X-RateLimit-*` headers.
    pub(crate) legacy_headers: Option<bool>,
    /// How often the config path is looked at for changes.
    #[serde(default, with = "humantime_serde")]
    pub(crate) reload_interval: Option<Duration>,
    /// After SIGTERM, the longest wait for calls in flight.
    #[serde(default, with = "humantime_serde")]
    pub(crate) drain_timeout: Option<Duration>,
    /// Distinct detailed metric keys let through per rule.
    pub(crate) detail_budget: Option<usize>,
}

/// `[serve.domains.NAME]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DomainSettings {
    /// The domain's outage policy.
    pub(crate) outage: Option<OutagePolicy>,
}

/// The variables the environment source reads: the ones naming a settings field. Others under
/// `SLUICE_` (`SLUICE_REDIS_URL`, `SLUICE_SETTINGS`) belong to flags, not to this schema.
const ENV_FIELDS: &[&str] = &["SLUICE_PREFIX"];
const ENV_SECTIONS: &[&str] = &[
    "SLUICE_REDIS__",
    "SLUICE_SERVE__",
    "SLUICE_WORK__",
    "SLUICE_DASHBOARD__",
];

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Read the settings once, at start-up: `file` if given, then the environment over it.
pub(crate) fn load(file: Option<&Path>) -> Result<(), Failure> {
    let settings = read(file, std::env::vars())?;
    // Called once from main; a second call keeps the first reading.
    let _ = SETTINGS.set(settings);
    Ok(())
}

/// The settings read at start-up (empty when none were given).
pub(crate) fn get() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

fn read(
    file: Option<&Path>,
    env: impl Iterator<Item = (String, String)>,
) -> Result<Settings, Failure> {
    let mut builder = config::Config::builder();
    let origin = match file {
        Some(path) => {
            builder = builder.add_source(config::File::from(path).required(true));
            format!("{} (or the SLUICE_* environment)", path.display())
        }
        None => "the SLUICE_* environment".to_owned(),
    };
    let vars: config::Map<String, String> = env
        .filter(|(k, _)| {
            ENV_FIELDS.contains(&k.as_str()) || ENV_SECTIONS.iter().any(|s| k.starts_with(s))
        })
        .collect();
    let environment = config::Environment::with_prefix("SLUICE")
        .prefix_separator("_")
        .separator("__")
        .source(Some(vars));
    builder
        .add_source(environment)
        .build()
        .and_then(config::Config::try_deserialize::<Settings>)
        .map_err(|e| Failure::new(format!("settings from {origin}: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn file(text: &str, ext: &str) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new().suffix(ext).tempfile().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn a_toml_file_and_the_environment_over_it() {
        let f = file(
            "prefix = \"app\"\n[redis]\nurl = \"redis://127.0.0.1:6379\"\n",
            ".toml",
        );
        let s = read(Some(f.path()), env(&[])).unwrap();
        assert_eq!(s.prefix.as_deref(), Some("app"));
        assert!(!s.redis.unwrap().is_cluster());
        let s = read(
            Some(f.path()),
            env(&[
                ("SLUICE_PREFIX", "other"),
                (
                    "SLUICE_REDIS__URL",
                    "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
                ),
                // The flag's own variable and the fixture's are not settings fields.
                ("SLUICE_REDIS_URL", "redis://ignored:1"),
                ("SLUICE_REDIS_ENV", "/tmp/x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.prefix.as_deref(), Some("other"));
        assert!(s.redis.unwrap().is_cluster());
    }

    #[test]
    fn yaml_works_too() {
        let f = file("redis:\n  urls: [\"redis://127.0.0.1:7000\"]\n", ".yaml");
        assert!(
            read(Some(f.path()), env(&[]))
                .unwrap()
                .redis
                .unwrap()
                .is_cluster()
        );
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let f = file("[redis]\nurl = \"http://x\"\n", ".toml");
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(err.contains("unsupported scheme 'http'"), "{err}");
        let f = file("prefx = \"typo\"\n", ".toml");
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("prefx"), "{err}");
        let f = file(
            "[redis]\nurl = \"redis://127.0.0.1:1\"\nresponse_timeout = \"0s\"\n",
            ".toml",
        );
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("response_timeout"), "{err}");
        let err = read(Some(Path::new("/nonexistent/sluice.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/sluice.toml"), "{err}");
    }

    #[test]
    fn the_serve_section_from_a_file_and_the_environment() {
        let f = file(
            "[serve]\nconfig = \"/etc/rl\"\ngrpc_addr = \"127.0.0.1:9081\"\ntimeout = \"20ms\"\n\
             outage = \"fail-closed\"\n[serve.domains.pay]\noutage = \"local\"\n",
            ".toml",
        );
        let s = read(Some(f.path()), env(&[])).unwrap().serve;
        assert_eq!(s.config.as_deref(), Some(Path::new("/etc/rl")));
        assert_eq!(s.grpc_addr, Some("127.0.0.1:9081".parse().unwrap()));
        assert_eq!(s.timeout, Some(Duration::from_millis(20)));
        assert_eq!(s.outage, Some(OutagePolicy::FailClosed));
        assert_eq!(s.domains["pay"].outage, Some(OutagePolicy::Local));
        let s = read(
            Some(f.path()),
            env(&[
                ("SLUICE_SERVE__HTTP_ADDR", "127.0.0.1:9080"),
                ("SLUICE_SERVE__LEGACY_HEADERS", "true"),
                ("SLUICE_SERVE__OUTAGE", "local"),
                ("SLUICE_SERVE__DETAIL_BUDGET", "7"),
                ("SLUICE_SERVE__DOMAINS__SHOP__OUTAGE", "fail-open"),
            ]),
        )
        .unwrap()
        .serve;
        assert_eq!(s.http_addr, Some("127.0.0.1:9080".parse().unwrap()));
        assert_eq!(s.legacy_headers, Some(true));
        assert_eq!(s.outage, Some(OutagePolicy::Local));
        assert_eq!(s.detail_budget, Some(7));
        assert_eq!(s.domains["shop"].outage, Some(OutagePolicy::FailOpen));
        assert_eq!(s.domains["pay"].outage, Some(OutagePolicy::Local));
        let f = file("[serve]\noutage = \"sometimes\"\n", ".toml");
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("sometimes") && err.contains("fail-open"),
            "{err}"
        );
        let f = file("[serve]\ngrpc = \"x\"\n", ".toml");
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("grpc"), "{err}");
    }

    #[test]
    fn the_work_section_from_a_file_and_the_environment() {
        let f = file(
            "[work]\nconcurrency = 8\njob_timeout = \"5s\"\nmetrics_addr = \"127.0.0.1:9464\"\n",
            ".toml",
        );
        let w = read(Some(f.path()), env(&[("SLUICE_WORK__MAX_ATTEMPTS", "3")]))
            .unwrap()
            .work;
        assert_eq!(w.concurrency, Some(8));
        assert_eq!(w.job_timeout, Some(Duration::from_secs(5)));
        assert_eq!(w.max_attempts, Some(3));
        assert_eq!(w.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        let f = file("[work]\njob_timout = \"5s\"\n", ".toml");
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("job_timout"), "{err}");
    }

    #[test]
    fn the_dashboard_section_from_a_file_and_the_environment() {
        let f = file(
            "[dashboard]\naddr = \"127.0.0.1:9090\"\nrefresh = \"500ms\"\nuser = \"ops\"\n",
            ".toml",
        );
        let s = read(
            Some(f.path()),
            env(&[
                ("SLUICE_DASHBOARD__PASSWORD", "hunter2"),
                ("SLUICE_DASHBOARD__READ_ONLY", "true"),
            ]),
        )
        .unwrap()
        .dashboard;
        assert_eq!(s.addr, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(s.refresh, Some(Duration::from_millis(500)));
        assert_eq!(s.read_only, Some(true));
        assert_eq!(s.user.as_deref(), Some("ops"));
        assert_eq!(s.password.as_deref(), Some("hunter2"));
        assert!(!format!("{s:?}").contains("hunter2"));
        let f = file("[dashboard]\nadress = \"x\"\n", ".toml");
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
    }

    #[test]
    fn a_password_in_a_bad_url_is_not_shown() {
        let f = file(
            "[redis]\nurl = \"redis://:hunter2@127.0.0.1:99999\"\n",
            ".toml",
        );
        let err = read(Some(f.path()), env(&[])).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
