//! One script call: building the `EVALSHA`, sending it under a timeout, and reading the reply
//! into named fields.
//!
//! The command is built directly (not through `redis::ScriptInvocation`, which copies every
//! argument once more); on `NOSCRIPT` (after `SCRIPT FLUSH`, a restart or a failover) the
//! script is loaded and the call retried once.

use std::{future::Future, time::Duration};

use redis::{Cmd, ErrorKind, RedisResult, Script, ServerErrorKind, aio::ConnectionLike};
use sluice_shared::RedisError;

use crate::{
    algorithm::Algorithm,
    check::{Check, Served},
    decision::{Answer, MultiDecision, Source},
    error::LimitError,
    script::{mixed_script, script_for},
};

/// One rule in a check or peek script call.
pub(crate) struct CallItem<'a> {
    pub(crate) key: &'a [u8],
    /// limit, window_us, param, cost
    pub(crate) args: [u64; 4],
}

/// One request in a batch script call.
pub(crate) struct BatchItem<'a> {
    pub(crate) key: &'a [u8],
    /// limit, window_us, param, cost
    pub(crate) args: [u64; 4],
    /// Whether to charge it (else a peek).
    pub(crate) consume: bool,
}

/// Script modes (`ARGV[2]`).
pub(crate) const PEEK: u8 = 0;
pub(crate) const CHECK: u8 = 1;
pub(crate) const BATCH: u8 = 2;

/// `EVALSHA <sha> <n> <keys...> <now> <mode> <per-item args...>`
pub(crate) fn evalsha(algorithm: Algorithm, now: u64, mode: u8, items: &[CallItem<'_>]) -> Cmd {
    command(script_for(algorithm), now, mode, items)
}

/// The mixed script's call: [`evalsha`]'s arguments, then each item's algorithm code.
pub(crate) fn evalsha_mixed(
    now: u64,
    mode: u8,
    items: &[CallItem<'_>],
    algorithms: impl Iterator<Item = Algorithm>,
) -> Cmd {
    let mut cmd = command(mixed_script(), now, mode, items);
    for algorithm in algorithms {
        cmd.arg(algorithm.code());
    }
    cmd
}

fn command(script: &Script, now: u64, mode: u8, items: &[CallItem<'_>]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(items.len());
    for item in items {
        cmd.arg(item.key);
    }
    cmd.arg(now).arg(mode);
    for item in items {
        cmd.arg(&item.args[..]);
    }
    cmd
}

/// A batch (`ARGV[2] = 2`) of independent requests of one algorithm, on Redis time:
/// `EVALSHA <sha> <n> <keys...> 0 2 <R> <limit window param>×R <code>×n`, the R distinct rules
/// once each and one number per request, `cost * R + rule index`, negated for a peek (the
/// script's driver.lua reads it). Fewer arguments for Redis to parse and turn into Lua
/// strings: one per request instead of five.
pub(crate) fn evalsha_batch(algorithm: Algorithm, items: &[BatchItem<'_>]) -> Cmd {
    let mut rules: Vec<[u64; 3]> = Vec::with_capacity(1);
    let index: Vec<usize> = items
        .iter()
        .map(|item| {
            let rule = [item.args[0], item.args[1], item.args[2]];
            match rules.iter().position(|r| *r == rule) {
                Some(i) => i,
                None => {
                    rules.push(rule);
                    rules.len() - 1
                }
            }
        })
        .collect();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script_for(algorithm).get_hash()).arg(items.len());
    for item in items {
        cmd.arg(item.key);
    }
    cmd.arg(0).arg(BATCH).arg(rules.len());
    for rule in &rules {
        cmd.arg(&rule[..]);
    }
    let r = rules.len() as u64;
    for (item, i) in items.iter().zip(index) {
        // cost <= MAX_LIMIT (2^40) and R <= 1,000 batch items: well inside a Lua double.
        let code = i64::try_from(item.args[3].saturating_mul(r).saturating_add(i as u64))
            .unwrap_or(i64::MAX);
        cmd.arg(if item.consume { code } else { -code });
    }
    cmd
}

/// The script a call for checks `served` so goes to.
pub(crate) fn script(served: Served) -> &'static Script {
    match served {
        Served::By(algorithm) => script_for(algorithm),
        Served::Mixed => mixed_script(),
    }
}

/// Send `cmd`; load `script` and retry once if Redis no longer knows it.
pub(crate) async fn invoke<C: ConnectionLike>(
    conn: &mut C,
    script: &Script,
    cmd: &Cmd,
) -> RedisResult<Vec<i64>> {
    // After `SCRIPT FLUSH` (or a restart) the script is loaded again and the call resent. A
    // flush can land between the load and the resend (another client flushing in a loop, or
    // a failover), so this repeats, a bounded number of times.
    const ATTEMPTS: usize = 3;
    let mut result = cmd.query_async(conn).await;
    for _ in 1..ATTEMPTS {
        match result {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                script.load_async(conn).await?;
                result = cmd.query_async(conn).await;
            }
            other => return other,
        }
    }
    result
}

/// Await a Redis call for at most `timeout`, with its error typed.
pub(crate) async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = RedisResult<T>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(RedisError::from(e)),
        Err(_) => Err(RedisError::Timeout(timeout)),
    }
}

/// A script reply: `{ now_us, all_allowed, first_denied, then 4 values per item }`.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The clock reading the script decided at.
    pub(crate) now_us: u64,
    /// Whether every item was admitted.
    pub(crate) all_allowed: bool,
    /// One answer per item, in order.
    pub(crate) answers: Vec<Answer>,
}

/// Read the reply of a call that carried `items` items.
pub(crate) fn parse(reply: &[i64], items: usize) -> Result<Reply, RedisError> {
    if reply.len() != 3 + 4 * items {
        return Err(RedisError::Protocol(format!(
            "limiter script returned {} values for {items} items",
            reply.len()
        )));
    }
    let v = |x: i64| u64::try_from(x).unwrap_or(0);
    Ok(Reply {
        now_us: v(reply[0]),
        all_allowed: reply[1] == 1,
        answers: reply[3..]
            .chunks_exact(4)
            .map(|a| Answer {
                allowed: a[0] == 1,
                remaining: v(a[1]),
                reset_after_us: v(a[2]),
                retry_after_us: v(a[3]),
            })
            .collect(),
    })
}

/// The decisions a (non-batch) script reply for `checks` carries.
pub(crate) fn decode(checks: &[Check<'_>], reply: &[i64]) -> Result<MultiDecision, LimitError> {
    let reply = parse(reply, checks.len())?;
    Ok(MultiDecision::assemble(
        checks,
        reply.all_allowed,
        reply.answers,
        reply.now_us,
        Source::Redis,
    ))
}
