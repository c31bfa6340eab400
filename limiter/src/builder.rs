//! [`LimiterBuilder`]: a [`Limiter`]'s settings, each checked as it is set.

use std::time::Duration;

use redis::aio::ConnectionLike;
use sluice_shared::{ConfigError, Keyspace};

use crate::{
    clock::Clock,
    coalesce::Coalescing,
    limiter::Limiter,
    outage::{Outage, OutagePolicy},
};

/// Builder for [`Limiter`]. A setter given a value that can't be used returns a
/// [`ConfigError`] naming it.
#[derive(Debug)]
pub struct LimiterBuilder<C> {
    conn: C,
    keyspace: Keyspace,
    timeout: Duration,
    retry_interval: Duration,
    policy: OutagePolicy,
    clock: Clock,
    coalescing: Option<Coalescing>,
}

impl<C> Limiter<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Start building a limiter over `conn`.
    pub fn builder(conn: C) -> LimiterBuilder<C> {
        LimiterBuilder {
            conn,
            keyspace: Keyspace::default(),
            timeout: Duration::from_millis(100),
            retry_interval: Duration::from_millis(250),
            policy: OutagePolicy::default(),
            clock: Clock::default(),
            coalescing: Some(Coalescing::default()),
        }
    }

    /// A limiter with every default: prefix `sluice`, 100 ms timeout, errors on outage.
    pub fn new(conn: C) -> Self {
        Self::builder(conn).build()
    }
}

impl<C> LimiterBuilder<C> {
    /// Key prefix (default `sluice`); see [`Keyspace::new`] for what is allowed.
    pub fn prefix(mut self, prefix: &str) -> Result<Self, ConfigError> {
        self.keyspace = Keyspace::new(prefix)?;
        Ok(self)
    }

    /// Longest wait for Redis per call before the outage policy answers (default 100 ms;
    /// zero is refused).
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        self.timeout = positive("timeout", timeout)?;
        Ok(self)
    }

    /// After Redis failed, how long calls go straight to the outage policy before Redis is
    /// tried again (default 250 ms; zero is refused). Keeps a dead Redis from adding `timeout`
    /// to every call.
    pub fn retry_interval(mut self, interval: Duration) -> Result<Self, ConfigError> {
        self.retry_interval = positive("retry_interval", interval)?;
        Ok(self)
    }

    /// What to do when Redis is slow or down (default [`OutagePolicy::Error`]).
    pub fn on_outage(mut self, policy: OutagePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Where "now" comes from (default Redis `TIME`).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Coalesce concurrent single checks into batched script calls (default: on, 64 per
    /// batch, 4 calls in flight); `None` sends every check as its own call. Batches are used
    /// only with the Redis clock; see the `coalesce` module docs for how batches form.
    pub fn coalescing(mut self, coalescing: Option<Coalescing>) -> Self {
        self.coalescing = coalescing;
        self
    }

    /// The limiter. Inside a Tokio runtime this also starts, in the background, the one-time
    /// check of the server's eviction policy ([`Limiter::server_eviction`]).
    pub fn build(self) -> Limiter<C>
    where
        C: Clone + Send + 'static,
    {
        // One batch shares one `now`, so batching needs the Redis clock.
        let coalescing = match &self.clock {
            Clock::Redis => self.coalescing,
            Clock::Manual(_) => None,
        };
        let limiter = Limiter::from_parts(
            self.conn,
            self.keyspace,
            self.timeout,
            self.clock,
            Outage::new(self.policy, self.retry_interval),
            coalescing,
        );
        limiter.probe_eviction();
        limiter
    }
}

/// `value`, unless it is zero.
fn positive(field: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(field, "must be greater than zero"));
    }
    Ok(value)
}
