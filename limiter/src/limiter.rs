//! The limiter: builds script calls, applies the outage policy.

use std::{
    sync::{
        Arc, LazyLock, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use redis::{Script, aio::ConnectionLike};
use sluice_shared::{ConfigError, Keyspace, RedisError, RedisHandle};
use tokio::sync::{mpsc, oneshot};

use crate::{
    call::{self, CallItem},
    coalesce::{self, Coalescing, Pending},
    decision::{Decision, MultiDecision, Source},
    error::LimitError,
    local::{Answer, Item, LocalLimiter},
    rule::{AlgorithmKind, Rule},
};

// Each algorithm's script: its own file, then the shared driver.
const SLIDING_LOG_SOURCE: &str = concat!(
    include_str!("../lua/sliding_log.lua"),
    include_str!("../lua/driver.lua")
);
const SLIDING_COUNTER_SOURCE: &str = concat!(
    include_str!("../lua/sliding_counter.lua"),
    include_str!("../lua/driver.lua")
);
const GCRA_SOURCE: &str = concat!(
    include_str!("../lua/gcra.lua"),
    include_str!("../lua/driver.lua")
);

static SLIDING_LOG: LazyLock<Script> = LazyLock::new(|| Script::new(SLIDING_LOG_SOURCE));
static SLIDING_COUNTER: LazyLock<Script> = LazyLock::new(|| Script::new(SLIDING_COUNTER_SOURCE));
static GCRA: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA_SOURCE));

pub(crate) fn script_for(kind: AlgorithmKind) -> &'static Script {
    match kind {
        AlgorithmKind::Log => &SLIDING_LOG,
        AlgorithmKind::Counter => &SLIDING_COUNTER,
        AlgorithmKind::Gcra => &GCRA,
    }
}

/// The SHA1 of the script that serves `algorithm` (what `EVALSHA` sends), for tooling such as
/// `redis-benchmark` runs of the bare script.
pub fn script_sha(algorithm: crate::Algorithm) -> &'static str {
    script_for(algorithm.kind()).get_hash()
}

/// The full Lua source that serves `algorithm`.
pub fn script_source(algorithm: crate::Algorithm) -> &'static str {
    match algorithm.kind() {
        AlgorithmKind::Log => SLIDING_LOG_SOURCE,
        AlgorithmKind::Counter => SLIDING_COUNTER_SOURCE,
        AlgorithmKind::Gcra => GCRA_SOURCE,
    }
}

/// What to do when Redis does not answer in time or can't be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OutagePolicy {
    /// Return [`LimitError::Redis`]; the caller decides.
    #[default]
    Error,
    /// Admit every request ([`Source::FailOpen`]).
    FailOpen,
    /// Deny every request ([`Source::FailClosed`]).
    FailClosed,
    /// Decide with an in-process limiter running the same rule ([`Source::Local`]). Each
    /// process then limits alone: P processes may admit up to P times the limit in total.
    Local,
}

/// Where "now" comes from.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Clock {
    /// Redis `TIME`, read inside the script: every client agrees, whatever its own clock says.
    #[default]
    Redis,
    /// A clock the caller moves (tests, simulations): its reading is sent with each call.
    Manual(ManualClock),
}

/// A settable clock in microseconds since the Unix epoch, shared by clones.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `now_us`.
    pub fn new(now_us: u64) -> Self {
        Self(Arc::new(AtomicU64::new(now_us)))
    }

    /// The current reading.
    pub fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Set the reading.
    pub fn set_us(&self, now_us: u64) {
        self.0.store(now_us, Ordering::SeqCst);
    }

    /// Move forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_micros() as u64, Ordering::SeqCst);
    }
}

/// One rule applied to one key in a multi-rule check.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    rule: &'a Rule,
    key: &'a [u8],
    cost: u64,
}

impl<'a> Check<'a> {
    /// The four per-rule script arguments: limit, window (µs), parameter, cost.
    pub(crate) fn args(&self) -> [u64; 4] {
        [
            self.rule.limit(),
            self.rule.window_us(),
            self.rule.param(),
            self.cost,
        ]
    }

    /// Charge `rule` one unit for `key`.
    pub fn new(rule: &'a Rule, key: &'a (impl AsRef<[u8]> + ?Sized)) -> Self {
        Self {
            rule,
            key: key.as_ref(),
            cost: 1,
        }
    }

    /// Charge `cost` units instead of one.
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }
}

/// Builder for [`Limiter`].
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

impl<C> LimiterBuilder<C> {
    /// Key prefix (default `sluice`); see [`Keyspace::new`] for what is allowed.
    pub fn prefix(mut self, prefix: &str) -> Result<Self, ConfigError> {
        self.keyspace = Keyspace::new(prefix)?;
        Ok(self)
    }

    /// Longest wait for Redis per call before the outage policy answers (default 100 ms).
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// After Redis failed, how long calls go straight to the outage policy before Redis is
    /// tried again (default 250 ms). Keeps a dead Redis from adding `timeout` to every call.
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
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

    /// The limiter.
    pub fn build(self) -> Limiter<C> {
        // One batch shares one `now`, so batching needs the Redis clock.
        let coalescing = match &self.clock {
            Clock::Redis => self.coalescing,
            Clock::Manual(_) => None,
        };
        Limiter {
            conn: self.conn,
            keyspace: self.keyspace,
            timeout: self.timeout,
            retry_interval: self.retry_interval,
            policy: self.policy,
            clock: self.clock,
            local: Arc::new(LocalLimiter::default()),
            breaker: Arc::new(Breaker::default()),
            coalescing,
            queue: Arc::new(OnceLock::new()),
        }
    }
}

/// Trips after a Redis failure so that, for `retry_interval`, calls skip Redis.
#[derive(Debug)]
struct Breaker {
    epoch: Instant,
    open_until_us: AtomicU64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            open_until_us: AtomicU64::new(0),
        }
    }
}

impl Breaker {
    fn elapsed_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn is_open(&self) -> bool {
        self.elapsed_us() < self.open_until_us.load(Ordering::Relaxed)
    }

    /// Open for `interval`; true if it was closed (the first failure of an outage).
    fn trip(&self, interval: Duration) -> bool {
        let now = self.elapsed_us();
        let before = self
            .open_until_us
            .swap(now + interval.as_micros() as u64, Ordering::Relaxed);
        before <= now
    }
}

/// A distributed rate limiter over Redis.
///
/// Cheap to clone: clones share the connection, the in-process fallback state and the
/// outage breaker. Generic over the connection so any redis-rs async connection works; the
/// default is [`RedisHandle`] (standalone or Cluster).
#[derive(Debug, Clone)]
pub struct Limiter<C = RedisHandle> {
    conn: C,
    keyspace: Keyspace,
    timeout: Duration,
    retry_interval: Duration,
    policy: OutagePolicy,
    clock: Clock,
    local: Arc<LocalLimiter>,
    breaker: Arc<Breaker>,
    coalescing: Option<Coalescing>,
    queue: Arc<OnceLock<mpsc::UnboundedSender<Pending>>>,
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

    /// The Redis key that holds `rule`'s state for `key`.
    pub fn redis_key(&self, rule: &Rule, key: impl AsRef<[u8]>) -> Vec<u8> {
        self.keyspace
            .key(key.as_ref(), &[rule.name(), rule.algorithm().code()])
    }

    fn redis_keys(&self, checks: &[Check<'_>]) -> Vec<Vec<u8>> {
        checks
            .iter()
            .map(|c| self.redis_key(c.rule, c.key))
            .collect()
    }

    /// Charge `cost` units of `rule` to `key`, if they fit. A denied request is not charged.
    pub async fn check(
        &self,
        rule: &Rule,
        key: impl AsRef<[u8]>,
        cost: u64,
    ) -> Result<Decision, LimitError> {
        let check = [Check {
            rule,
            key: key.as_ref(),
            cost,
        }];
        let mut multi = self.run(&check, true).await?;
        multi.decisions.pop().ok_or(LimitError::Empty)
    }

    /// Whether one more unit would pass now, without charging anything.
    pub async fn peek(&self, rule: &Rule, key: impl AsRef<[u8]>) -> Result<Decision, LimitError> {
        let check = [Check {
            rule,
            key: key.as_ref(),
            cost: 1,
        }];
        let mut multi = self.run(&check, false).await?;
        multi.decisions.pop().ok_or(LimitError::Empty)
    }

    /// Check several rules in one atomic script call: the request is charged to every rule
    /// if all admit it, and to none otherwise. The keys must share a `{hash tag}` (so they
    /// live in one Cluster slot) and the rules one algorithm.
    pub async fn check_all(&self, checks: &[Check<'_>]) -> Result<MultiDecision, LimitError> {
        self.run(checks, true).await
    }

    /// Forget `key`'s state under `rule` (in Redis and in the local fallback).
    pub async fn reset(&self, rule: &Rule, key: impl AsRef<[u8]>) -> Result<(), LimitError> {
        let redis_key = self.redis_key(rule, key);
        self.local.reset(&redis_key);
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&redis_key);
        let del = cmd.query_async::<i64>(&mut conn);
        match tokio::time::timeout(self.timeout, del).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(LimitError::Redis(e.into())),
            Err(_) => Err(LimitError::Redis(RedisError::Timeout(self.timeout))),
        }
    }

    fn validate(&self, checks: &[Check<'_>]) -> Result<AlgorithmKind, LimitError> {
        let first = checks.first().ok_or(LimitError::Empty)?;
        let kind = first.rule.algorithm().kind();
        // Only several checks need one tag (one script call, one slot).
        let tag = (checks.len() > 1).then(|| Keyspace::tag_of(first.key));
        for c in checks {
            if c.cost == 0 {
                return Err(LimitError::ZeroCost);
            }
            if c.cost > c.rule.capacity() {
                return Err(LimitError::InsufficientCapacity {
                    rule: c.rule.name().to_owned(),
                    cost: c.cost,
                    capacity: c.rule.capacity(),
                });
            }
            if c.rule.algorithm().kind() != kind {
                return Err(LimitError::MixedAlgorithms(
                    first.rule.algorithm().code(),
                    c.rule.algorithm().code(),
                ));
            }
            if tag
                .as_ref()
                .is_some_and(|tag| Keyspace::tag_of(c.key) != *tag)
            {
                return Err(LimitError::CrossSlot {
                    first: String::from_utf8_lossy(first.key).into_owned(),
                    other: String::from_utf8_lossy(c.key).into_owned(),
                });
            }
        }
        Ok(kind)
    }

    async fn run(&self, checks: &[Check<'_>], consume: bool) -> Result<MultiDecision, LimitError> {
        let kind = self.validate(checks)?;
        if self.policy != OutagePolicy::Error && self.breaker.is_open() {
            return self.fallback(checks, consume, None);
        }
        let outcome = match (self.coalescing, checks) {
            (Some(limits), [check]) => {
                let key = self.redis_key(check.rule, check.key);
                self.coalesced(limits, kind, key, check, consume).await
            }
            _ => {
                let keys = self.redis_keys(checks);
                self.direct(kind, &keys, checks, consume).await
            }
        };
        let failure = match outcome {
            Ok(decision) => return Ok(decision),
            Err(LimitError::Redis(failure)) if failure.is_unavailable() => failure,
            Err(other) => return Err(other),
        };
        self.fallback(checks, consume, Some(failure))
    }

    /// One script call for these checks (all or nothing when consuming).
    async fn direct(
        &self,
        kind: AlgorithmKind,
        keys: &[Vec<u8>],
        checks: &[Check<'_>],
        consume: bool,
    ) -> Result<MultiDecision, LimitError> {
        let now = match &self.clock {
            Clock::Redis => 0,
            Clock::Manual(clock) => clock.now_us(),
        };
        let items: Vec<CallItem<'_>> = checks
            .iter()
            .zip(keys)
            .map(|(c, key)| CallItem {
                key,
                args: c.args(),
                consume: None,
            })
            .collect();
        let cmd = call::evalsha(
            kind,
            now,
            if consume { call::CHECK } else { call::PEEK },
            &items,
        );
        let mut conn = self.conn.clone();
        let call = call::invoke(&mut conn, kind, &cmd);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(reply)) => decode(checks, &reply),
            Ok(Err(e)) => Err(LimitError::Redis(e.into())),
            Err(_) => Err(LimitError::Redis(RedisError::Timeout(self.timeout))),
        }
    }

    /// A single check through the coalescing queue.
    async fn coalesced(
        &self,
        limits: Coalescing,
        kind: AlgorithmKind,
        key: Vec<u8>,
        check: &Check<'_>,
        consume: bool,
    ) -> Result<MultiDecision, LimitError> {
        let queue = self
            .queue
            .get_or_init(|| coalesce::spawn(self.conn.clone(), self.timeout, limits));
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            kind,
            slot: sluice_shared::slot(&key),
            key,
            args: check.args(),
            consume,
            reply,
        };
        if queue.send(pending).is_err() {
            return Err(LimitError::Redis(RedisError::Protocol(
                "the coalescing task has stopped".into(),
            )));
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(Ok((now, a)))) => Ok(assemble(
                std::slice::from_ref(check),
                a.0,
                vec![a],
                now,
                Source::Redis,
            )),
            Ok(Ok(Err(e))) => Err(LimitError::Redis(e)),
            Ok(Err(_)) => Err(LimitError::Redis(RedisError::Protocol(
                "the coalescing task dropped a request".into(),
            ))),
            Err(_) => Err(LimitError::Redis(RedisError::Timeout(self.timeout))),
        }
    }

    fn fallback(
        &self,
        checks: &[Check<'_>],
        consume: bool,
        failure: Option<RedisError>,
    ) -> Result<MultiDecision, LimitError> {
        if let Some(failure) = failure {
            if self.policy == OutagePolicy::Error {
                return Err(LimitError::Redis(failure));
            }
            if self.breaker.trip(self.retry_interval) {
                tracing::warn!(error = %failure, policy = ?self.policy, "redis unavailable; applying the outage policy");
            }
        }
        let now = self.local_now_us();
        let canned = |allowed: bool, source: Source| {
            let decisions: Vec<Decision> = checks
                .iter()
                .map(|c| Decision {
                    allowed,
                    limit: c.rule.capacity(),
                    remaining: if allowed {
                        c.rule.capacity() - c.cost
                    } else {
                        0
                    },
                    reset_after: Duration::ZERO,
                    retry_after: (!allowed).then_some(self.retry_interval),
                    time_us: now,
                    source,
                })
                .collect();
            MultiDecision {
                allowed,
                denied_by: (!allowed).then_some(0),
                decisions,
                source,
            }
        };
        match self.policy {
            OutagePolicy::FailOpen => Ok(canned(true, Source::FailOpen)),
            OutagePolicy::FailClosed | OutagePolicy::Error => Ok(canned(false, Source::FailClosed)),
            OutagePolicy::Local => {
                let keys = self.redis_keys(checks);
                let items: Vec<Item<'_>> = checks
                    .iter()
                    .zip(&keys)
                    .map(|(c, key)| Item {
                        key,
                        rule: c.rule,
                        cost: c.cost,
                    })
                    .collect();
                let (all, answers) = self.local.decide(&items, now, consume);
                Ok(assemble(checks, all, answers, now, Source::Local))
            }
        }
    }

    fn local_now_us(&self) -> u64 {
        match &self.clock {
            Clock::Manual(clock) => clock.now_us(),
            Clock::Redis => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
        }
    }
}

pub(crate) fn decode(checks: &[Check<'_>], reply: &[i64]) -> Result<MultiDecision, LimitError> {
    let reply = call::parse(reply, checks.len())?;
    Ok(assemble(
        checks,
        reply.all_allowed,
        reply.answers,
        reply.now_us,
        Source::Redis,
    ))
}

fn assemble(
    checks: &[Check<'_>],
    all: bool,
    answers: Vec<Answer>,
    now: u64,
    source: Source,
) -> MultiDecision {
    let decisions: Vec<Decision> = checks
        .iter()
        .zip(answers)
        .map(|(c, (allowed, remaining, reset, retry))| Decision {
            allowed,
            limit: c.rule.capacity(),
            remaining: remaining.min(c.rule.capacity()),
            reset_after: Duration::from_micros(reset),
            retry_after: (!allowed).then(|| Duration::from_micros(retry)),
            time_us: now,
            source,
        })
        .collect();
    let denied_by = decisions.iter().position(|d| !d.allowed);
    MultiDecision {
        allowed: all,
        denied_by,
        decisions,
        source,
    }
}
