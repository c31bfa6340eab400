//! The public [`Limiter`]: turns checks into script calls (alone, or coalesced with others)
//! and hands failures to the outage policy.

use std::{
    borrow::Cow,
    sync::{Arc, OnceLock},
    time::Duration,
};

use redis::aio::ConnectionLike;
use sluice_shared::{Eviction, Keyspace, RedisHandle};

use crate::{
    algorithm::Algorithm,
    call::{self, CallItem},
    check::{self, Check, Served},
    clock::Clock,
    coalesce::{Coalescer, Coalescing},
    decision::{Decision, MultiDecision, Source},
    error::LimitError,
    eviction::EvictionProbe,
    outage::Outage,
    rule::Rule,
};

/// A distributed rate limiter over Redis.
///
/// Cheap to clone: clones share the connection, the in-process fallback state and the
/// outage breaker. Generic over the connection so any redis-rs async connection works; the
/// default is [`RedisHandle`] (standalone or Cluster). Build one with [`Limiter::builder`].
#[derive(Debug, Clone)]
pub struct Limiter<C = RedisHandle> {
    conn: C,
    keyspace: Keyspace,
    timeout: Duration,
    clock: Clock,
    outage: Arc<Outage>,
    coalescing: Option<Coalescing>,
    queue: Arc<OnceLock<Coalescer>>,
    eviction: Arc<EvictionProbe>,
}

impl<C> Limiter<C> {
    /// A limiter from the builder's settings.
    pub(crate) fn from_parts(
        conn: C,
        keyspace: Keyspace,
        timeout: Duration,
        clock: Clock,
        outage: Outage,
        coalescing: Option<Coalescing>,
    ) -> Self {
        Self {
            conn,
            keyspace,
            timeout,
            clock,
            outage: Arc::new(outage),
            coalescing,
            queue: Arc::new(OnceLock::new()),
            eviction: Arc::new(EvictionProbe::new()),
        }
    }

    /// Start the background check of the server's `maxmemory-policy` (once; only on a
    /// [`RedisHandle`], and only inside a runtime, else at the first call).
    pub(crate) fn probe_eviction(&self)
    where
        C: Clone + Send + 'static,
    {
        self.eviction.start(&self.conn, self.timeout);
    }

    /// Whether the server may evict this limiter's keys (`maxmemory-policy`), as read once in
    /// the background when the limiter was built (on a Cluster, from every master); `None`
    /// until that check has answered, when it could not reach Redis, or when the connection is
    /// not a [`RedisHandle`]. Any policy but `noeviction` lets Redis drop a key under memory
    /// pressure, and an evicted key forgets what it admitted: the limiter then under-counts.
    /// The limiter logs a warning (once per process) when that is possible, and once when
    /// `CONFIG GET` is refused ([`Eviction::Unknown`]); it keeps working either way.
    pub fn server_eviction(&self) -> Option<Eviction> {
        self.eviction.get()
    }

    /// [`Limiter::server_eviction`], waiting at most `wait` for the check to answer (for a
    /// command-line tool or a health check that has just built the limiter).
    pub async fn server_eviction_within(&self, wait: Duration) -> Option<Eviction>
    where
        C: Clone + Send + 'static,
    {
        self.probe_eviction();
        self.eviction.wait(wait).await
    }
}

impl<C> Limiter<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
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
        let check = [Check::new(rule, key.as_ref()).cost(cost)];
        let mut multi = self.run(&check, true).await?;
        multi.decisions.pop().ok_or(LimitError::Empty)
    }

    /// Whether one more unit would pass now, without charging anything.
    pub async fn peek(&self, rule: &Rule, key: impl AsRef<[u8]>) -> Result<Decision, LimitError> {
        let check = [Check::new(rule, key.as_ref())];
        let mut multi = self.run(&check, false).await?;
        multi.decisions.pop().ok_or(LimitError::Empty)
    }

    /// Check several rules in one atomic script call: the request is charged to every rule
    /// if all admit it, and to none otherwise. The keys must share a `{hash tag}` (so they
    /// live in one Cluster slot); the rules may use different algorithms (one script call all
    /// the same). The same rule and key listed twice count together: they are decided as one
    /// check of their summed cost, and both get that decision.
    pub async fn check_all(&self, checks: &[Check<'_>]) -> Result<MultiDecision, LimitError> {
        self.run(checks, true).await
    }

    /// What [`Limiter::check_all`] would answer now, charging nothing. As there, checks of
    /// the same rule and key count together: evaluated at their summed cost.
    pub async fn peek_all(&self, checks: &[Check<'_>]) -> Result<MultiDecision, LimitError> {
        self.run(checks, false).await
    }

    /// Forget `key`'s state under `rule` (in Redis and in the local fallback).
    pub async fn reset(&self, rule: &Rule, key: impl AsRef<[u8]>) -> Result<(), LimitError> {
        let redis_key = self.redis_key(rule, key);
        self.outage.reset(&redis_key);
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&redis_key);
        call::within(self.timeout, cmd.query_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    async fn run(&self, checks: &[Check<'_>], consume: bool) -> Result<MultiDecision, LimitError> {
        let served = check::validate(checks)?;
        self.probe_eviction();
        if checks.len() == 1 {
            return self.decide(served, checks, None, consume).await;
        }
        let keys = self.redis_keys(checks);
        match check::merge(checks, &keys)? {
            None => self.decide(served, checks, Some(&keys), consume).await,
            Some(merged) => Ok(self
                .decide(served, &merged.checks, Some(&merged.keys), consume)
                .await?
                .spread(&merged.answered_by)),
        }
    }

    /// Decide `checks` (validated, no two on one key): Redis, or the outage policy when it is
    /// unavailable. `known`: their Redis keys, when already built.
    async fn decide(
        &self,
        served: Served,
        checks: &[Check<'_>],
        known: Option<&[Vec<u8>]>,
        consume: bool,
    ) -> Result<MultiDecision, LimitError> {
        let keys = || match known {
            Some(keys) => Cow::Borrowed(keys),
            None => Cow::Owned(self.redis_keys(checks)),
        };
        if self.outage.skips_redis() {
            return Ok(self
                .outage
                .answer(checks, keys, self.clock.local_now_us(), consume));
        }
        let outcome = match (self.coalescing, checks, served) {
            (Some(limits), [check], Served::By(algorithm)) => {
                self.coalesced(limits, algorithm, check, consume).await
            }
            _ => self.direct(served, &keys(), checks, consume).await,
        };
        outcome.or_else(|failure| {
            self.outage
                .recover(failure, checks, keys, self.clock.local_now_us(), consume)
        })
    }

    /// One script call for these checks (all or nothing when consuming).
    async fn direct(
        &self,
        served: Served,
        keys: &[Vec<u8>],
        checks: &[Check<'_>],
        consume: bool,
    ) -> Result<MultiDecision, LimitError> {
        let items: Vec<CallItem<'_>> = checks
            .iter()
            .zip(keys)
            .map(|(c, key)| CallItem {
                key,
                args: c.args(),
            })
            .collect();
        let mode = if consume { call::CHECK } else { call::PEEK };
        let now = self.clock.script_now_us();
        let cmd = match served {
            Served::By(algorithm) => call::evalsha(algorithm, now, mode, &items),
            Served::Mixed => {
                call::evalsha_mixed(now, mode, &items, checks.iter().map(|c| c.rule.algorithm()))
            }
        };
        let mut conn = self.conn.clone();
        let script = call::script(served);
        let reply = call::within(self.timeout, call::invoke(&mut conn, script, &cmd)).await?;
        call::decode(checks, &reply)
    }

    /// A single check through the coalescing queue.
    async fn coalesced(
        &self,
        limits: Coalescing,
        algorithm: Algorithm,
        check: &Check<'_>,
        consume: bool,
    ) -> Result<MultiDecision, LimitError> {
        let queue = self
            .queue
            .get_or_init(|| Coalescer::spawn(self.conn.clone(), self.timeout, limits));
        let key = self.redis_key(check.rule, check.key);
        let answered = queue.submit(algorithm, key, check.args(), consume).await?;
        Ok(MultiDecision::assemble(
            std::slice::from_ref(check),
            answered.answer.allowed,
            [answered.answer],
            answered.now_us,
            Source::Redis,
        ))
    }
}
