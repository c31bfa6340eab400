//! Dead letters: why a job was given up on, and listing and replaying them.

use std::collections::HashMap;

use redis::{Value, streams::StreamRangeReply};
use serde::Serialize;
use sluice_shared::RedisHandle;

use crate::{error::DispatchError, job::Meta, scripts, topic::TopicKeys, value};

/// Why a job went to the dead-letter stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadReason {
    /// Every attempt failed.
    Exhausted,
    /// The handler said not to retry ([`crate::JobError::fatal`]).
    Fatal,
    /// Delivered more than `max_deliveries` times without finishing (it keeps killing or
    /// stalling workers).
    Poison,
    /// The stored job could not be decoded.
    Decode,
}

impl DeadReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeadReason::Exhausted => "exhausted",
            DeadReason::Fatal => "fatal",
            DeadReason::Poison => "poison",
            DeadReason::Decode => "decode",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exhausted" => DeadReason::Exhausted,
            "fatal" => DeadReason::Fatal,
            "poison" => DeadReason::Poison,
            "decode" => DeadReason::Decode,
            _ => return None,
        })
    }
}

/// One entry of a topic's dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the dead-letter stream (what [`crate::Dispatcher::replay_dead_letter`] takes).
    pub id: String,
    /// The job's id (empty when its metadata could not be decoded).
    pub job_id: String,
    /// The consumer group that gave up on it.
    pub group: String,
    /// Why (`None` for a reason written by a newer version).
    pub reason: Option<DeadReason>,
    /// The last error: the handler's message, the panic, the decode error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
    /// The stream entry id of the failed delivery.
    pub entry_id: String,
    /// The original payload bytes, as enqueued.
    #[serde(serialize_with = "payload_as_text")]
    pub payload: Vec<u8>,
}

/// JSON output shows the payload as (lossy) text; codecs' binary payloads are still kept
/// byte-exact in Redis and in [`DeadLetter::payload`].
fn payload_as_text<S: serde::Serializer>(payload: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(payload))
}

/// A field of a dead letter as text (empty when missing).
fn text(map: &HashMap<String, Value>, field: &str) -> String {
    map.get(field).and_then(value::as_text).unwrap_or_default()
}

/// A field of a dead letter as bytes (empty when missing).
fn bytes(map: &HashMap<String, Value>, field: &str) -> Vec<u8> {
    map.get(field)
        .and_then(value::as_bytes)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// Up to `count` dead letters with ids after `after` (`None`: from the oldest).
pub(crate) async fn list(
    redis: &RedisHandle,
    keys: &TopicKeys,
    after: Option<&str>,
    count: usize,
) -> Result<Vec<DeadLetter>, DispatchError> {
    let mut conn = redis.clone();
    let start = match after {
        Some(id) => format!("({id}"),
        None => "-".to_owned(),
    };
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys.dead.as_slice())
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(&mut conn)
        .await?;
    Ok(reply
        .ids
        .into_iter()
        .map(|entry| DeadLetter {
            job_id: text(&entry.map, "job_id"),
            group: text(&entry.map, "group"),
            reason: DeadReason::parse(&text(&entry.map, "reason")),
            error: text(&entry.map, "error"),
            attempts: text(&entry.map, "attempts").parse().unwrap_or(0),
            entry_id: text(&entry.map, "entry_id"),
            payload: bytes(&entry.map, "payload"),
            id: entry.id,
        })
        .collect())
}

/// Move one dead letter back into its group's retry stream, attempts reset. Returns the new
/// stream entry id.
pub(crate) async fn replay(
    redis: &RedisHandle,
    keys: &TopicKeys,
    id: &str,
) -> Result<String, DispatchError> {
    let mut conn = redis.clone();
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(keys.dead.as_slice())
        .arg(id)
        .arg(id)
        .query_async(&mut conn)
        .await?;
    let Some(entry) = reply.ids.into_iter().next() else {
        return Err(DispatchError::NoSuchDeadLetter(id.to_owned()));
    };
    let group = text(&entry.map, "group");
    if crate::topic::check_name("group", &group).is_err() {
        return Err(DispatchError::Decode(format!(
            "dead letter {id} names no valid group ({group:?})"
        )));
    }
    // Keep the job's id and enqueue time (so handlers' idempotency keys still match); reset
    // the attempts. Undecodable metadata gets a fresh id.
    let meta = match serde_json::from_slice::<Meta>(&bytes(&entry.map, "meta")) {
        Ok(meta) => Meta {
            attempts: 0,
            ..meta
        },
        Err(_) => Meta {
            id: crate::job::new_job_id(),
            attempts: 0,
            enqueued_at_ms: crate::job::unix_ms(std::time::SystemTime::now()),
            retry: None,
        },
    };
    let new_id: Option<String> = scripts::REPLAY
        .key(keys.dead.as_slice())
        .key(keys.retry_stream(&group))
        .arg(id)
        .arg(meta.to_json())
        .invoke_async(&mut conn)
        .await?;
    new_id.ok_or_else(|| DispatchError::NoSuchDeadLetter(id.to_owned()))
}

/// Delete one dead letter; [`DispatchError::NoSuchDeadLetter`] when it is not there.
pub(crate) async fn delete(
    redis: &RedisHandle,
    keys: &TopicKeys,
    id: &str,
) -> Result<(), DispatchError> {
    let mut conn = redis.clone();
    let deleted: Result<u64, redis::RedisError> = redis::cmd("XDEL")
        .arg(keys.dead.as_slice())
        .arg(id)
        .query_async(&mut conn)
        .await;
    match deleted {
        Ok(0) => Err(DispatchError::NoSuchDeadLetter(id.to_owned())),
        Ok(_) => Ok(()),
        // A malformed id names no dead letter either.
        Err(e) if e.to_string().contains("Invalid stream ID") => {
            Err(DispatchError::NoSuchDeadLetter(id.to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Delete every dead letter of the topic (the stream itself). Returns how many there were.
pub(crate) async fn purge(redis: &RedisHandle, keys: &TopicKeys) -> Result<u64, DispatchError> {
    let mut conn = redis.clone();
    let (len, _): (u64, u64) = redis::pipe()
        .atomic()
        .cmd("XLEN")
        .arg(keys.dead.as_slice())
        .cmd("UNLINK")
        .arg(keys.dead.as_slice())
        .query_async(&mut conn)
        .await?;
    Ok(len)
}
