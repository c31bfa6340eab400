//! Settings of a worker pool.

use std::{num::NonZeroUsize, time::Duration};

use serde::{Deserialize, Serialize};
use sluice_shared::ConfigError;

use crate::topic::check_name;

/// Where a consumer group starts when it is created (an existing group keeps its position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// Every job still in the stream (the default).
    #[default]
    Beginning,
    /// Only jobs enqueued after the group is created.
    New,
}

/// Settings of one [`crate::Worker`]: its group, its consumer name, how many jobs it runs at
/// once, and its timers.
///
/// ```
/// use std::time::Duration;
/// use sluice_dispatcher::{StartFrom, WorkerConfig};
///
/// let config = WorkerConfig::new("billing")?
///     .set_consumer("billing-host-a-1")?
///     .set_concurrency(16)?
///     .set_start(StartFrom::New)
///     .set_visibility_timeout(Duration::from_secs(60))?;
/// assert_eq!(config.concurrency(), 16);
/// assert!(WorkerConfig::new("billing")?.set_concurrency(0).is_err());
/// # Ok::<(), sluice_shared::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawWorkerConfig", into = "RawWorkerConfig")]
pub struct WorkerConfig {
    group: String,
    consumer: String,
    concurrency: NonZeroUsize,
    start: StartFrom,
    visibility_timeout: Duration,
    max_deliveries: u32,
    poll_interval: Duration,
    shutdown_timeout: Duration,
}

/// Default time a delivered job may stay unacknowledged before other consumers reclaim it.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of deliveries after which a job is dead-lettered as poison.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

fn random_consumer_name() -> String {
    format!("c{}-{:08x}", std::process::id(), rand::random::<u32>())
}

impl WorkerConfig {
    /// A worker of consumer group `group`, with a random consumer name, concurrency 1, and the
    /// default timers.
    pub fn new(group: impl Into<String>) -> Result<Self, ConfigError> {
        let group = group.into();
        check_name("group", &group)?;
        Ok(Self {
            group,
            consumer: random_consumer_name(),
            concurrency: NonZeroUsize::MIN,
            start: StartFrom::default(),
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            poll_interval: Duration::from_millis(200),
            shutdown_timeout: Duration::from_secs(30),
        })
    }

    /// This consumer's name inside the group (unique per running worker).
    pub fn set_consumer(mut self, consumer: impl Into<String>) -> Result<Self, ConfigError> {
        let consumer = consumer.into();
        check_name("consumer", &consumer)?;
        self.consumer = consumer;
        Ok(self)
    }

    /// How many jobs run at once (1 to 10,000).
    pub fn set_concurrency(mut self, concurrency: usize) -> Result<Self, ConfigError> {
        match NonZeroUsize::new(concurrency) {
            Some(n) if concurrency <= 10_000 => {
                self.concurrency = n;
                Ok(self)
            }
            _ => Err(ConfigError::new("concurrency", "must be 1 to 10000")),
        }
    }

    /// Where the group starts if this worker creates it.
    pub fn set_start(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// How long a delivered job may stay unacknowledged before live consumers reclaim it
    /// (100 ms to 1 day). Must exceed the longest handler run, or slow jobs run twice.
    pub fn set_visibility_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                "visibility_timeout",
                "must be 100ms to 1 day",
            ));
        }
        self.visibility_timeout = timeout;
        Ok(self)
    }

    /// Deliveries (first read plus reclaims) after which a job is dead-lettered as poison
    /// without running again (at least 1).
    pub fn set_max_deliveries(mut self, deliveries: u32) -> Result<Self, ConfigError> {
        if deliveries == 0 {
            return Err(ConfigError::new("max_deliveries", "must be at least 1"));
        }
        self.max_deliveries = deliveries;
        Ok(self)
    }

    /// Longest wait of one blocking read, and the period of the housekeeping step (moving due
    /// delayed jobs and retries, reclaiming, trimming): 10 ms to 10 s.
    pub fn set_poll_interval(mut self, interval: Duration) -> Result<Self, ConfigError> {
        if interval < Duration::from_millis(10) || interval > Duration::from_secs(10) {
            return Err(ConfigError::new("poll_interval", "must be 10ms to 10s"));
        }
        self.poll_interval = interval;
        Ok(self)
    }

    /// How long in-flight jobs may run on after shutdown is requested (at most 1 hour); the
    /// ones still running then are cancelled and stay pending for other consumers.
    pub fn set_shutdown_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout > Duration::from_secs(3600) {
            return Err(ConfigError::new("shutdown_timeout", "must be at most 1h"));
        }
        self.shutdown_timeout = timeout;
        Ok(self)
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The consumer name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Jobs run at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency.get()
    }

    /// Where a newly created group starts.
    pub fn start(&self) -> StartFrom {
        self.start
    }

    /// The visibility timeout.
    pub fn visibility_timeout(&self) -> Duration {
        self.visibility_timeout
    }

    /// The poison threshold.
    pub fn max_deliveries(&self) -> u32 {
        self.max_deliveries
    }

    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The drain deadline.
    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkerConfig {
    group: String,
    #[serde(default)]
    consumer: Option<String>,
    #[serde(default = "one")]
    concurrency: usize,
    #[serde(default)]
    start: StartFrom,
    #[serde(default = "default_visibility", with = "humantime_serde")]
    visibility_timeout: Duration,
    #[serde(default = "default_max_deliveries")]
    max_deliveries: u32,
    #[serde(default = "default_poll", with = "humantime_serde")]
    poll_interval: Duration,
    #[serde(default = "default_shutdown", with = "humantime_serde")]
    shutdown_timeout: Duration,
}

fn one() -> usize {
    1
}
fn default_visibility() -> Duration {
    DEFAULT_VISIBILITY_TIMEOUT
}
fn default_max_deliveries() -> u32 {
    DEFAULT_MAX_DELIVERIES
}
fn default_poll() -> Duration {
    Duration::from_millis(200)
}
fn default_shutdown() -> Duration {
    Duration::from_secs(30)
}

impl TryFrom<RawWorkerConfig> for WorkerConfig {
    type Error = ConfigError;
    fn try_from(raw: RawWorkerConfig) -> Result<Self, ConfigError> {
        let mut config = Self::new(raw.group)?;
        if let Some(consumer) = raw.consumer {
            config = config.set_consumer(consumer)?;
        }
        config
            .set_concurrency(raw.concurrency)?
            .set_start(raw.start)
            .set_visibility_timeout(raw.visibility_timeout)?
            .set_max_deliveries(raw.max_deliveries)?
            .set_poll_interval(raw.poll_interval)?
            .set_shutdown_timeout(raw.shutdown_timeout)
    }
}

impl From<WorkerConfig> for RawWorkerConfig {
    fn from(c: WorkerConfig) -> Self {
        Self {
            group: c.group,
            consumer: Some(c.consumer),
            concurrency: c.concurrency.get(),
            start: c.start,
            visibility_timeout: c.visibility_timeout,
            max_deliveries: c.max_deliveries,
            poll_interval: c.poll_interval,
            shutdown_timeout: c.shutdown_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn file_form_is_validated() {
        let c: WorkerConfig = serde_json::from_str(
            r#"{"group":"g","concurrency":8,"visibility_timeout":"5s","start":"new"}"#,
        )
        .unwrap();
        assert_eq!(c.concurrency(), 8);
        assert_eq!(c.start(), StartFrom::New);
        assert_eq!(c.visibility_timeout(), Duration::from_secs(5));
        let err = serde_json::from_str::<WorkerConfig>(r#"{"group":"g","concurrency":0}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("concurrency"), "{err}");
        assert!(serde_json::from_str::<WorkerConfig>(r#"{"group":"a:b"}"#).is_err());
        let round: WorkerConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }
}
