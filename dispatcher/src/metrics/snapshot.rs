//! The queue state of topics, read with a bounded cost: per topic, two pipelined round trips
//! on the node that holds it (every key of a topic shares its hash tag), `4 + 5 x groups`
//! O(1) / O(log n) commands in all: `XLEN`, `ZCARD`, `TIME`, `XINFO GROUPS`, `XPENDING`
//! (summary form) and `XRANGE ... COUNT 1`. No `KEYS`, no `SCAN`.

use std::{collections::HashMap, time::Duration};

use redis::Value;
use sluice_shared::{RedisError, RedisHandle};

use crate::{error::DispatchError, job::entry_ms, topic::TopicKeys, value};

/// One topic's queue state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicSnapshot {
    pub(crate) topic: String,
    /// `XLEN` of the topic stream.
    pub(crate) stream_length: u64,
    /// `ZCARD` of the topic's delayed set.
    pub(crate) delayed: u64,
    /// `XLEN` of the dead-letter stream.
    pub(crate) dead_letters: u64,
    pub(crate) groups: Vec<GroupSnapshot>,
}

/// One consumer group's queue state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupSnapshot {
    pub(crate) group: String,
    /// Delivered, not acknowledged: topic stream plus the group's retry stream.
    pub(crate) pending: u64,
    /// Not yet delivered: topic stream (`XINFO GROUPS` lag) plus retry stream; `None` when
    /// the server can't tell (Redis 6.2).
    pub(crate) lag: Option<u64>,
    /// Age of the oldest pending entry (0 when none is pending).
    pub(crate) oldest_pending_age: Duration,
    /// Age of the oldest entry of the topic stream not yet delivered to the group (0 when
    /// every entry was delivered).
    pub(crate) queue_latency: Duration,
    /// `ZCARD` of the group's delayed retries.
    pub(crate) retry_delayed: u64,
    /// Consumers known to the group.
    pub(crate) consumers: u64,
}

fn server_error(v: &Value) -> Option<redis::RedisError> {
    match v {
        Value::ServerError(e) => Some(redis::RedisError::from(e.clone())),
        _ => None,
    }
}

/// `v`, or the error Redis sent in its place.
fn ok(v: Value) -> Result<Value, DispatchError> {
    match server_error(&v) {
        Some(e) => Err(e.into()),
        None => Ok(v),
    }
}

fn number(v: Value, what: &str) -> Result<u64, DispatchError> {
    let v = ok(v)?;
    value::as_u64(&v)
        .ok_or_else(|| RedisError::Protocol(format!("{what}: not a number: {v:?}")).into())
}

/// A stream command on a key that does not exist (`ERR no such key`).
fn is_no_such_key(e: &redis::RedisError) -> bool {
    e.detail()
        .is_some_and(|d| d.trim().eq_ignore_ascii_case("no such key"))
}

/// The rows of an `XINFO GROUPS` reply; none when the stream does not exist.
fn groups(v: Value) -> Result<Vec<HashMap<String, Value>>, DispatchError> {
    if let Some(e) = server_error(&v) {
        return if is_no_such_key(&e) {
            Ok(Vec::new())
        } else {
            Err(e.into())
        };
    }
    redis::from_redis_value(v)
        .map_err(|e| RedisError::Protocol(format!("XINFO GROUPS: {e}")).into())
}

fn field_text(row: &HashMap<String, Value>, field: &str) -> Option<String> {
    row.get(field).and_then(value::as_text)
}

fn field_number(row: &HashMap<String, Value>, field: &str) -> Option<u64> {
    row.get(field).and_then(value::as_u64)
}

/// `XPENDING key group` summary: (count, oldest id). 0 when the group (or the stream) does not
/// exist: a retry stream appears with the group's first worker.
fn pending(v: Value) -> Result<(u64, Option<String>), DispatchError> {
    if let Some(e) = server_error(&v) {
        return if e.code() == Some("NOGROUP") {
            Ok((0, None))
        } else {
            Err(e.into())
        };
    }
    let Value::Array(items) = v else {
        return Ok((0, None));
    };
    Ok((
        items.first().and_then(value::as_u64).unwrap_or(0),
        items.get(1).and_then(value::as_text),
    ))
}

/// The id of the first entry of an `XRANGE` reply.
fn first_id(v: Value) -> Result<Option<String>, DispatchError> {
    let v = ok(v)?;
    let Value::Array(entries) = v else {
        return Ok(None);
    };
    Ok(entries.into_iter().next().and_then(|entry| match entry {
        Value::Array(parts) => parts.into_iter().next().and_then(value::into_string),
        _ => None,
    }))
}

fn age(now_ms: u64, entry_id: Option<&str>) -> Duration {
    entry_id.and_then(entry_ms).map_or(Duration::ZERO, |ms| {
        Duration::from_millis(now_ms.saturating_sub(ms))
    })
}

/// Read one topic's queue state: two pipelined round trips to the node holding the topic.
pub(crate) async fn read_topic(
    redis: &RedisHandle,
    topic: &str,
    keys: &TopicKeys,
) -> Result<TopicSnapshot, DispatchError> {
    let mut conn = redis.clone();
    // Errors come back in place (a missing stream fails XINFO GROUPS): handled one by one.
    let mut first = redis::pipe();
    first
        .ignore_errors()
        .cmd("XLEN")
        .arg(keys.stream.as_slice())
        .cmd("ZCARD")
        .arg(keys.delayed.as_slice())
        .cmd("XLEN")
        .arg(keys.dead.as_slice())
        .cmd("TIME")
        .cmd("XINFO")
        .arg("GROUPS")
        .arg(keys.stream.as_slice());
    let replies: Vec<Value> = first.query_async(&mut conn).await?;
    let [xlen, zcard, dead, time, info]: [Value; 5] = replies.try_into().map_err(|r: Vec<_>| {
        RedisError::Protocol(format!("{} replies to 5 queue-state commands", r.len()))
    })?;
    let stream_length = number(xlen, "XLEN")?;
    let delayed = number(zcard, "ZCARD")?;
    let dead_letters = number(dead, "XLEN")?;
    let now_ms = match ok(time)? {
        Value::Array(t) if t.len() == 2 => {
            let secs = value::as_u64(&t[0]).unwrap_or(0);
            let micros = value::as_u64(&t[1]).unwrap_or(0);
            secs * 1000 + micros / 1000
        }
        other => return Err(RedisError::Protocol(format!("TIME reply {other:?}")).into()),
    };
    let rows = groups(info)?;
    let mut named = Vec::with_capacity(rows.len());
    let mut second = redis::pipe();
    second.ignore_errors();
    for row in rows {
        let Some(group) = field_text(&row, "name") else {
            continue;
        };
        let last = field_text(&row, "last-delivered-id").unwrap_or_else(|| "0-0".to_owned());
        let retry_stream = keys.retry_stream(&group);
        second
            .cmd("XPENDING")
            .arg(keys.stream.as_slice())
            .arg(&group)
            .cmd("XPENDING")
            .arg(retry_stream.as_slice())
            .arg(&group)
            .cmd("ZCARD")
            .arg(keys.retry_delayed(&group))
            .cmd("XINFO")
            .arg("GROUPS")
            .arg(retry_stream.as_slice())
            // The first entry after the group's position: the oldest undelivered one.
            .cmd("XRANGE")
            .arg(keys.stream.as_slice())
            .arg(format!("({last}"))
            .arg("+")
            .arg("COUNT")
            .arg(1);
        named.push((group, row));
    }
    let mut out = TopicSnapshot {
        topic: topic.to_owned(),
        stream_length,
        delayed,
        dead_letters,
        groups: Vec::with_capacity(named.len()),
    };
    if named.is_empty() {
        return Ok(out);
    }
    let replies: Vec<Value> = second.query_async(&mut conn).await?;
    if replies.len() != named.len() * 5 {
        return Err(RedisError::Protocol(format!(
            "{} replies to {} queue-state commands",
            replies.len(),
            named.len() * 5
        ))
        .into());
    }
    let mut replies = replies.into_iter();
    for (group, row) in named {
        let mut next = || replies.next().unwrap_or(Value::Nil);
        let (topic_pending, topic_oldest) = pending(next())?;
        let (retry_pending, retry_oldest) = pending(next())?;
        let retry_delayed = number(next(), "ZCARD")?;
        let retry_rows = groups(next())?;
        let undelivered = first_id(next())?;
        let retry_lag = retry_rows
            .iter()
            .find(|r| field_text(r, "name").as_deref() == Some(group.as_str()))
            .map_or(Some(0), |r| field_number(r, "lag"));
        let lag = match (field_number(&row, "lag"), retry_lag) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        let oldest = [topic_oldest, retry_oldest]
            .into_iter()
            .flatten()
            .min_by_key(|id| entry_ms(id).unwrap_or(u64::MAX));
        out.groups.push(GroupSnapshot {
            pending: topic_pending + retry_pending,
            lag,
            oldest_pending_age: age(now_ms, oldest.as_deref()),
            queue_latency: age(now_ms, undelivered.as_deref()),
            retry_delayed,
            consumers: field_number(&row, "consumers").unwrap_or(0),
            group,
        });
    }
    Ok(out)
}
