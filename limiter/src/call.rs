//! The client's hot path: building one `EVALSHA` and reading its reply.
//!
//! The command is built directly (not through `redis::ScriptInvocation`, which copies every
//! argument once more); on `NOSCRIPT` (after `SCRIPT FLUSH`, a restart or a failover) the
//! script is loaded and the call retried once.

use redis::{Cmd, ErrorKind, RedisResult, ServerErrorKind, aio::ConnectionLike};
use sluice_shared::RedisError;

use crate::{limiter::script_for, local::Answer, rule::AlgorithmKind};

/// One rule or request in a script call.
pub(crate) struct CallItem<'a> {
    pub(crate) key: &'a [u8],
    /// limit, window_us, param, cost
    pub(crate) args: [u64; 4],
    /// Batch mode only: whether to charge this request.
    pub(crate) consume: Option<bool>,
}

/// Script modes (`ARGV[2]`).
pub(crate) const PEEK: u8 = 0;
pub(crate) const CHECK: u8 = 1;
pub(crate) const BATCH: u8 = 2;

/// `EVALSHA <sha> <n> <keys...> <now> <mode> <per-item args...>`
pub(crate) fn evalsha(kind: AlgorithmKind, now: u64, mode: u8, items: &[CallItem<'_>]) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script_for(kind).get_hash()).arg(items.len());
    for item in items {
        cmd.arg(item.key);
    }
    cmd.arg(now).arg(mode);
    for item in items {
        cmd.arg(&item.args[..]);
        if let Some(consume) = item.consume {
            cmd.arg(u8::from(consume));
        }
    }
    cmd
}

/// Send `cmd`; load the script and retry once if Redis no longer knows it.
pub(crate) async fn invoke<C: ConnectionLike>(
    conn: &mut C,
    kind: AlgorithmKind,
    cmd: &Cmd,
) -> RedisResult<Vec<i64>> {
    match cmd.query_async(conn).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script_for(kind).load_async(conn).await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}

/// A script reply: `{ now_us, all_allowed, first_denied, then 4 values per item }`.
pub(crate) struct Reply {
    pub(crate) now_us: u64,
    pub(crate) all_allowed: bool,
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
            .map(|a| (a[0] == 1, v(a[1]), v(a[2]), v(a[3])))
            .collect(),
    })
}
