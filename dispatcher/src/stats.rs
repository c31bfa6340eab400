//! Queue depth of a topic, per consumer group, from O(1)/O(log n) commands only.

use std::{collections::HashMap, time::Duration};

use redis::Value;
use serde::{Serialize, Serializer};
use sluice_shared::{Eviction, RedisHandle, SAFE_EVICTION_POLICY};

use crate::{error::DispatchError, job::entry_ms, topic::TopicKeys, value};

/// Depth of one topic: [`crate::Dispatcher::stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic's name.
    pub topic: String,
    /// Entries in the topic stream (`XLEN`): not yet trimmed, so including acknowledged ones
    /// that some slower group still holds back.
    pub stream_length: u64,
    /// Jobs waiting in the topic's delayed set (`ZCARD`).
    pub delayed: u64,
    /// Entries in the dead-letter stream (`XLEN`), all groups together.
    pub dead_letters: u64,
    /// One row per consumer group.
    pub groups: Vec<GroupStats>,
    /// Whether the server may evict keys (its `maxmemory-policy`): anything but
    /// [`Eviction::Never`] means queued jobs can vanish under memory pressure. Serialized as
    /// `{"status": "never" | "possible" | "unknown", "policy"?, "reason"?, "safe_policy",
    /// "message"}`.
    #[serde(serialize_with = "eviction_json")]
    pub eviction: Eviction,
}

/// [`TopicStats::eviction`] as JSON: a status word, the policy or the reason, the safe value
/// and one sentence.
fn eviction_json<S: Serializer>(eviction: &Eviction, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Shown<'a> {
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        policy: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        safe_policy: &'static str,
        message: String,
    }
    let (status, policy, reason) = match eviction {
        Eviction::Never => ("never", None, None),
        Eviction::Possible { policy } => ("possible", Some(policy.as_str()), None),
        Eviction::Unknown { reason } => ("unknown", None, Some(reason.as_str())),
        _ => ("unknown", None, None),
    };
    Shown {
        status,
        policy,
        reason,
        safe_policy: SAFE_EVICTION_POLICY,
        message: eviction.describe(),
    }
    .serialize(s)
}

/// Depth of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GroupStats {
    /// The group's name.
    pub group: String,
    /// Entries in the topic stream (the same for every group).
    pub stream_length: u64,
    /// Delivered, not yet acknowledged: topic stream plus the group's retry stream.
    pub pending: u64,
    /// Entries of the topic stream not yet delivered to the group (`XINFO GROUPS` `lag`, Redis
    /// 7+), plus undelivered retries. `None` when the server can't tell (Redis 6.2, or after
    /// deletions in the middle of the stream).
    pub lag: Option<u64>,
    /// Age of the oldest pending job, measured from its stream entry id (when it was added).
    #[serde(with = "humantime_serde")]
    pub oldest_pending_age: Option<Duration>,
    /// Jobs waiting in delayed sets: the topic's plus the group's scheduled retries.
    pub delayed: u64,
    /// Entries in the topic's dead-letter stream (shared by the groups).
    pub dead_letters: u64,
    /// Consumers known to the group (live or not).
    pub consumers: u64,
}

impl TopicStats {
    /// The row of consumer group `group`, if the group exists.
    pub fn group(&self, group: &str) -> Option<&GroupStats> {
        self.groups.iter().find(|g| g.group == group)
    }
}

/// A numeric field of an `XINFO GROUPS` row.
fn number(info: &HashMap<String, Value>, field: &str) -> Option<u64> {
    info.get(field).and_then(value::as_u64)
}

/// The group name of an `XINFO GROUPS` row.
fn name(info: &HashMap<String, Value>) -> Option<String> {
    info.get("name").and_then(value::as_text)
}

/// The reply to a stream command on a key that does not exist (`ERR no such key`).
fn is_no_such_key(err: &redis::RedisError) -> bool {
    err.code() == Some("ERR")
        && err
            .detail()
            .is_some_and(|d| d.trim().eq_ignore_ascii_case("no such key"))
}

/// `XPENDING key group` summary: (count, oldest pending id).
async fn pending_summary(
    conn: &mut RedisHandle,
    key: &[u8],
    group: &str,
) -> Result<(u64, Option<String>), DispatchError> {
    let reply: Result<Value, redis::RedisError> = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .query_async(conn)
        .await;
    let reply = match reply {
        Ok(v) => v,
        // The group's retry stream does not exist until its first worker starts.
        Err(e) if e.code() == Some("NOGROUP") => return Ok((0, None)),
        Err(e) => return Err(e.into()),
    };
    let Value::Array(items) = reply else {
        return Ok((0, None));
    };
    Ok((
        items.first().and_then(value::as_u64).unwrap_or(0),
        items.get(1).and_then(value::as_text),
    ))
}

/// Undelivered retries of `group`: 0 when its retry stream or its group there does not exist
/// yet (no worker of the group has started); any other failure is an error.
async fn retry_lag(
    conn: &mut RedisHandle,
    key: &[u8],
    group: &str,
) -> Result<Option<u64>, DispatchError> {
    let groups: Result<Vec<HashMap<String, Value>>, redis::RedisError> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await;
    let groups = match groups {
        Ok(groups) => groups,
        Err(e) if is_no_such_key(&e) => return Ok(Some(0)),
        Err(e) => return Err(e.into()),
    };
    Ok(groups
        .iter()
        .find(|g| name(g).as_deref() == Some(group))
        .map(|g| number(g, "lag"))
        .unwrap_or(Some(0)))
}

pub(crate) async fn topic_stats(
    redis: &RedisHandle,
    topic: &str,
    keys: &TopicKeys,
    eviction: Eviction,
) -> Result<TopicStats, DispatchError> {
    let mut conn = redis.clone();
    let (stream_length, delayed, dead_letters, time): (u64, u64, u64, (u64, u64)) = redis::pipe()
        .cmd("XLEN")
        .arg(keys.stream.as_slice())
        .cmd("ZCARD")
        .arg(keys.delayed.as_slice())
        .cmd("XLEN")
        .arg(keys.dead.as_slice())
        .cmd("TIME")
        .query_async(&mut conn)
        .await?;
    let now_ms = time.0 * 1000 + time.1 / 1000;
    let groups: Vec<HashMap<String, Value>> = if stream_length == 0 {
        // XINFO GROUPS fails on a missing key; an empty stream may still have groups.
        let exists: bool = redis::cmd("EXISTS")
            .arg(keys.stream.as_slice())
            .query_async(&mut conn)
            .await?;
        if exists {
            redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(keys.stream.as_slice())
                .query_async(&mut conn)
                .await?
        } else {
            Vec::new()
        }
    } else {
        redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(keys.stream.as_slice())
            .query_async(&mut conn)
            .await?
    };
    let mut rows = Vec::with_capacity(groups.len());
    for info in groups {
        let Some(group) = name(&info) else {
            continue;
        };
        let retry_stream = keys.retry_stream(&group);
        let (topic_pending, topic_oldest) =
            pending_summary(&mut conn, &keys.stream, &group).await?;
        let (retry_pending, retry_oldest) =
            pending_summary(&mut conn, &retry_stream, &group).await?;
        let retry_delayed: u64 = redis::cmd("ZCARD")
            .arg(keys.retry_delayed(&group))
            .query_async(&mut conn)
            .await?;
        let topic_lag = number(&info, "lag");
        let lag = match (
            topic_lag,
            retry_lag(&mut conn, &retry_stream, &group).await?,
        ) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        let oldest = [topic_oldest, retry_oldest]
            .into_iter()
            .flatten()
            .filter_map(|id| entry_ms(&id))
            .min();
        rows.push(GroupStats {
            group,
            stream_length,
            pending: topic_pending + retry_pending,
            lag,
            oldest_pending_age: oldest.map(|ms| Duration::from_millis(now_ms.saturating_sub(ms))),
            delayed: delayed + retry_delayed,
            dead_letters,
            consumers: number(&info, "consumers").unwrap_or(0),
        });
    }
    Ok(TopicStats {
        topic: topic.to_owned(),
        stream_length,
        delayed,
        dead_letters,
        groups: rows,
        eviction,
    })
}
