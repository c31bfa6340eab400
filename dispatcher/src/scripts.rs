//! The Lua scripts, each built once (code and SHA1) and run with EVALSHA; `Script::invoke_async`
//! reloads a script after `NOSCRIPT` (a restarted or flushed server). EVALSHA inside a pipeline
//! does not reload by itself: the pipelined batch enqueue catches `NOSCRIPT` ([`is_noscript`]),
//! [`load`]s the script and sends the batch once more; the worker [`load`]s its scripts when
//! it starts.

use std::sync::LazyLock;

use redis::{Script, aio::ConnectionLike};

/// `lua/enqueue.lua`: dedup check, then XADD or park in the delayed set.
pub(crate) static ENQUEUE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/enqueue.lua")));
/// `lua/promote.lua`: move due members of a delayed set into a stream.
pub(crate) static PROMOTE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/promote.lua")));
/// `lua/retry.lua`: XACK a failed attempt and schedule the next one.
pub(crate) static RETRY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/retry.lua")));
/// `lua/dead_letter.lua`: XACK a job and append its dead letter.
pub(crate) static DEAD_LETTER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/dead_letter.lua")));
/// `lua/trim.lua`: XTRIM MINID below everything some group still needs.
pub(crate) static TRIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/trim.lua")));
/// `lua/replay.lua`: move a dead letter back into a group's retry stream.
pub(crate) static REPLAY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/replay.lua")));

/// `lua/history.lua`: add a worker's processed and failed counts to the current minute.
pub(crate) static HISTORY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/history.lua")));

/// `SCRIPT LOAD` one script (on a cluster: on every node).
pub(crate) async fn load<C: ConnectionLike>(
    conn: &mut C,
    script: &Script,
) -> Result<(), redis::RedisError> {
    script.load_async(conn).await.map(|_| ())
}

/// True for a `NOSCRIPT` reply.
pub(crate) fn is_noscript(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
}
