//! [`DashboardConfig`]: where to listen, how often to read Redis, who may look, whether actions
//! are allowed. Invalid values can't be built.

use std::{fmt, net::SocketAddr, time::Duration};

use sluice_shared::ConfigError;

/// The default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8090";
/// The default refresh interval: Redis is read once per interval for every open page.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(1);

/// A user name and password every request must carry (HTTP basic auth).
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    user: String,
    password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"set")
            .finish()
    }
}

impl BasicAuth {
    /// Both must be non-empty; the user name may not contain `:`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Result<Self, ConfigError> {
        let (user, password) = (user.into(), password.into());
        if user.is_empty() || user.contains(':') {
            return Err(ConfigError::new(
                "dashboard.user",
                "must be non-empty, without ':'",
            ));
        }
        if password.is_empty() {
            return Err(ConfigError::new("dashboard.password", "must be non-empty"));
        }
        Ok(Self { user, password })
    }

    /// True when `user` and `password` match (compared in constant time).
    pub(crate) fn accepts(&self, user: &[u8], password: &[u8]) -> bool {
        // Both comparisons always run.
        let a = constant_time_eq(self.user.as_bytes(), user);
        let b = constant_time_eq(self.password.as_bytes(), password);
        a & b
    }
}

/// Equality whose time depends on the lengths only.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How the dashboard runs.
///
/// ```
/// use std::time::Duration;
/// use sluice_dashboard::{BasicAuth, DashboardConfig};
///
/// let config = DashboardConfig::new()
///     .set_addr("127.0.0.1:9000".parse()?)
///     .set_refresh(Duration::from_millis(500))?
///     .set_auth(Some(BasicAuth::new("ops", "s3cret")?))
///     .set_read_only(true);
/// assert!(config.read_only());
/// assert!(DashboardConfig::new().set_refresh(Duration::ZERO).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    addr: SocketAddr,
    refresh: Duration,
    read_only: bool,
    auth: Option<BasicAuth>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl DashboardConfig {
    /// Loopback on port 8090, a refresh a second, actions allowed, no auth.
    pub fn new() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8090)),
            refresh: DEFAULT_REFRESH,
            read_only: false,
            auth: None,
        }
    }

    /// Where to listen (port 0: any free port; [`crate::Dashboard::addr`] tells which).
    pub fn set_addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// How often Redis is read (100 ms to 1 min).
    pub fn set_refresh(mut self, refresh: Duration) -> Result<Self, ConfigError> {
        if refresh < Duration::from_millis(100) || refresh > Duration::from_secs(60) {
            return Err(ConfigError::new("dashboard.refresh", "must be 100ms to 1m"));
        }
        self.refresh = refresh;
        Ok(self)
    }

    /// Hide every action; the mutating endpoints answer 405.
    pub fn set_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Require HTTP basic auth on every request.
    pub fn set_auth(mut self, auth: Option<BasicAuth>) -> Self {
        self.auth = auth;
        self
    }

    /// Where to listen.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How often Redis is read.
    pub fn refresh(&self) -> Duration {
        self.refresh
    }

    /// Whether actions are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The basic auth credentials, if required.
    pub fn auth(&self) -> Option<&BasicAuth> {
        self.auth.as_ref()
    }
}
