//! What an operator looks at beyond [`crate::TopicStats`]: which topics exist, each group's
//! consumers (pending, idle), queue latency and pause flag, and the next delayed jobs.

use std::{collections::HashMap, time::Duration};

use redis::Value;
use serde::Serialize;
use sluice_shared::{Keyspace, RedisError, RedisHandle};

use crate::{
    dispatcher::Dispatcher,
    error::DispatchError,
    job::{Meta, entry_ms},
    topic::{TopicKeys, check_name},
    value,
};

/// The `COUNT` hint of one `SCAN` step of [`Dispatcher::topics`].
const SCAN_COUNT: u32 = 1000;
/// Bound on the `SCAN` steps per node of one [`Dispatcher::topics`].
const MAX_SCAN_STEPS: u32 = 100_000;
/// Most topics [`Dispatcher::topics`] returns.
pub const MAX_TOPICS: usize = 10_000;

/// One consumer of a group: [`GroupDetail::consumers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ConsumerStats {
    /// The consumer's name ([`crate::WorkerConfig::consumer`]).
    pub name: String,
    /// Jobs delivered to it and not yet acknowledged (topic stream and retries).
    pub pending: u64,
    /// Since its last read or claim attempt (`XINFO CONSUMERS` `idle`).
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// Since its last successful read or claim (`inactive`, Redis 7.2+; `None` before).
    #[serde(with = "humantime_serde")]
    pub inactive: Option<Duration>,
}

/// A consumer group beyond its depth: [`Dispatcher::group_details`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GroupDetail {
    /// The group's name.
    pub group: String,
    /// Whether the group is paused ([`Dispatcher::pause_group`]).
    pub paused: bool,
    /// How long the next job of the topic stream has waited for this group: the age of its
    /// oldest undelivered entry (zero when nothing waits).
    #[serde(with = "humantime_serde")]
    pub queue_latency: Option<Duration>,
    /// The group's consumers, by name.
    pub consumers: Vec<ConsumerStats>,
}

/// A job waiting for its time: [`Dispatcher::delayed_jobs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DelayedJob {
    /// The job's id.
    pub job_id: String,
    /// When it is due, unix ms.
    pub due_ms: u64,
    /// Attempts already made (0 for a job enqueued with a delay; more for a retry).
    pub attempts: u32,
    /// For a retry: the group that will run it. `None` for a job of the whole topic.
    pub group: Option<String>,
    /// The payload bytes.
    #[serde(serialize_with = "payload_as_text")]
    pub payload: Vec<u8>,
}

fn payload_as_text<S: serde::Serializer>(payload: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(payload))
}

/// `bytes` with the glob characters of `SCAN MATCH` escaped, to match literally.
pub(crate) fn glob_escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 4);
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// The topic of a topic-stream key `<prefix>:{<tag>}:stream`, unescaped.
fn topic_of(key: &[u8], keyspace: &Keyspace) -> Option<String> {
    let rest = key
        .strip_prefix(keyspace.prefix().as_bytes())?
        .strip_prefix(b":{")?
        .strip_suffix(b"}:stream")?;
    if rest.contains(&b'}') {
        return None;
    }
    let tag = std::str::from_utf8(rest).ok()?;
    let topic = tag.replace("%7D", "}").replace("%25", "%");
    check_name("topic", &topic).ok()?;
    Some(topic)
}

/// For every master: one key whose slot it serves (on one server: any key).
async fn one_key_per_master(conn: &mut RedisHandle) -> Result<Vec<Vec<u8>>, DispatchError> {
    if !conn.is_cluster() {
        return Ok(vec![b"sluice".to_vec()]);
    }
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(conn)
        .await
        .map_err(RedisError::from)?;
    let Value::Array(ranges) = slots else {
        return Err(RedisError::Protocol(format!("CLUSTER SLOTS: unexpected {slots:?}")).into());
    };
    let mut masters: HashMap<String, (u16, u16)> = HashMap::new();
    for range in ranges {
        let Value::Array(items) = range else { continue };
        let (Some(start), Some(end), Some(Value::Array(node))) =
            (items.first(), items.get(1), items.get(2))
        else {
            continue;
        };
        let (Some(start), Some(end)) = (value::as_u64(start), value::as_u64(end)) else {
            continue;
        };
        let addr = format!(
            "{}:{}",
            node.first().and_then(value::as_text).unwrap_or_default(),
            node.get(1).and_then(value::as_u64).unwrap_or(0)
        );
        masters
            .entry(addr)
            .or_insert((start as u16, end.min(16383) as u16));
    }
    let mut keys = Vec::new();
    for (start, end) in masters.into_values() {
        // About one key in three lands in a master's range of a 3-master cluster.
        if let Some(key) = (0..1_000_000u32)
            .map(|n| format!("{{sluice-node-{n}}}").into_bytes())
            .find(|k| (start..=end).contains(&sluice_shared::slot(k)))
        {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Names of the consumer groups of the topic stream (none when it does not exist).
async fn group_names(
    conn: &mut RedisHandle,
    keys: &TopicKeys,
) -> Result<Vec<HashMap<String, Value>>, DispatchError> {
    let exists: bool = redis::cmd("EXISTS")
        .arg(keys.stream.as_slice())
        .query_async(conn)
        .await
        .map_err(RedisError::from)?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(keys.stream.as_slice())
        .query_async(conn)
        .await
        .map_err(RedisError::from)?)
}

/// `XINFO CONSUMERS`, empty when the stream or the group does not exist yet.
async fn consumers_of(
    conn: &mut RedisHandle,
    stream: &[u8],
    group: &str,
) -> Result<Vec<HashMap<String, Value>>, DispatchError> {
    let reply: Result<Vec<HashMap<String, Value>>, redis::RedisError> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(conn)
        .await;
    match reply {
        Ok(rows) => Ok(rows),
        Err(e)
            if e.code() == Some("NOGROUP")
                || e.to_string().contains("NOGROUP")
                || e.to_string().to_ascii_lowercase().contains("no such key") =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(RedisError::from(e).into()),
    }
}

impl Dispatcher {
    /// Every topic under this dispatcher's prefix (every topic stream), sorted, at most
    /// [`MAX_TOPICS`]. Found with `SCAN MATCH <prefix>:{*}:stream TYPE stream` on every master,
    /// so the cost grows with the number of keys in the deployment: call it now and then, not
    /// per request.
    pub async fn topics(&self) -> Result<Vec<String>, DispatchError> {
        let mut conn = self.redis().clone();
        let mut pattern = glob_escape(self.keyspace().prefix().as_bytes());
        pattern.extend_from_slice(b":{*}:stream");
        let mut topics = Vec::new();
        for node_key in one_key_per_master(&mut conn).await? {
            let mut cursor = String::from("0");
            for _ in 0..MAX_SCAN_STEPS {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor.as_str())
                    .arg("MATCH")
                    .arg(pattern.as_slice())
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .arg("TYPE")
                    .arg("stream");
                let (next, found): (String, Vec<Vec<u8>>) =
                    conn.query_on_node_of(scan, &node_key).await?;
                topics.extend(found.iter().filter_map(|k| topic_of(k, self.keyspace())));
                if next == "0" || topics.len() >= MAX_TOPICS {
                    break;
                }
                cursor = next;
            }
        }
        topics.sort();
        topics.dedup();
        topics.truncate(MAX_TOPICS);
        Ok(topics)
    }

    /// Every consumer group of `topic` with its consumers, queue latency and pause flag.
    pub async fn group_details(&self, topic: &str) -> Result<Vec<GroupDetail>, DispatchError> {
        check_name("topic", topic)?;
        let keys = self.keys(topic);
        let mut conn = self.redis().clone();
        let (secs, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        let now_ms = secs * 1000 + micros / 1000;
        let mut details = Vec::new();
        for info in group_names(&mut conn, &keys).await? {
            let Some(group) = info.get("name").and_then(value::as_text) else {
                continue;
            };
            let last = info
                .get("last-delivered-id")
                .and_then(value::as_text)
                .unwrap_or_else(|| "0-0".to_owned());
            let (next, paused): (Value, u64) = redis::pipe()
                .cmd("XRANGE")
                .arg(keys.stream.as_slice())
                .arg(format!("({last}"))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .cmd("EXISTS")
                .arg(keys.paused(&group))
                .query_async(&mut conn)
                .await
                .map_err(RedisError::from)?;
            let next_id = match &next {
                Value::Array(entries) => entries.first().and_then(|e| match e {
                    Value::Array(parts) => parts.first().and_then(value::as_text),
                    _ => None,
                }),
                _ => None,
            };
            let queue_latency = Some(
                next_id
                    .as_deref()
                    .and_then(entry_ms)
                    .map(|ms| Duration::from_millis(now_ms.saturating_sub(ms)))
                    .unwrap_or(Duration::ZERO),
            );
            let mut consumers: Vec<ConsumerStats> = Vec::new();
            for stream in [keys.stream.clone(), keys.retry_stream(&group)] {
                for row in consumers_of(&mut conn, &stream, &group).await? {
                    let Some(name) = row.get("name").and_then(value::as_text) else {
                        continue;
                    };
                    let ms = |f: &str| row.get(f).and_then(value::as_u64);
                    let pending = ms("pending").unwrap_or(0);
                    let idle = Duration::from_millis(ms("idle").unwrap_or(0));
                    let inactive = ms("inactive").map(Duration::from_millis);
                    match consumers.iter_mut().find(|c| c.name == name) {
                        Some(c) => {
                            c.pending += pending;
                            c.idle = c.idle.min(idle);
                            c.inactive = match (c.inactive, inactive) {
                                (Some(a), Some(b)) => Some(a.min(b)),
                                (a, b) => a.or(b),
                            };
                        }
                        None => consumers.push(ConsumerStats {
                            name,
                            pending,
                            idle,
                            inactive,
                        }),
                    }
                }
            }
            consumers.sort_by(|a, b| a.name.cmp(&b.name));
            details.push(GroupDetail {
                group,
                paused: paused > 0,
                queue_latency,
                consumers,
            });
        }
        Ok(details)
    }

    /// The next `count` delayed jobs of `topic`, soonest first: jobs enqueued with a delay and
    /// every group's scheduled retries.
    pub async fn delayed_jobs(
        &self,
        topic: &str,
        count: usize,
    ) -> Result<Vec<DelayedJob>, DispatchError> {
        check_name("topic", topic)?;
        let keys = self.keys(topic);
        let mut conn = self.redis().clone();
        let count = count.clamp(1, 1000);
        let mut sets: Vec<(Option<String>, Vec<u8>)> = vec![(None, keys.delayed.clone())];
        for info in group_names(&mut conn, &keys).await? {
            if let Some(group) = info.get("name").and_then(value::as_text) {
                let key = keys.retry_delayed(&group);
                sets.push((Some(group), key));
            }
        }
        let mut jobs = Vec::new();
        for (group, key) in sets {
            let members: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
                .arg(key.as_slice())
                .arg(0)
                .arg(count - 1)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await
                .map_err(RedisError::from)?;
            for (member, score) in members {
                let (meta, payload) = split_member(&member);
                let meta = serde_json::from_slice::<Meta>(meta).ok();
                jobs.push(DelayedJob {
                    job_id: meta.as_ref().map(|m| m.id.clone()).unwrap_or_default(),
                    due_ms: score.max(0.0) as u64,
                    attempts: meta.as_ref().map_or(0, |m| m.attempts),
                    group: group.clone(),
                    payload: payload.to_vec(),
                });
            }
        }
        jobs.sort_by_key(|j| j.due_ms);
        jobs.truncate(count);
        Ok(jobs)
    }
}

/// A delayed-set member `<meta>\n<payload>`, split.
pub(crate) fn split_member(member: &[u8]) -> (&[u8], &[u8]) {
    match member.iter().position(|&b| b == b'\n') {
        Some(cut) => (&member[..cut], &member[cut + 1..]),
        None => (member, &[]),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn topic_names_come_back_from_keys() {
        let ks = Keyspace::new("app").unwrap();
        let keys = TopicKeys::new(&ks, "orders.v2%x");
        assert_eq!(topic_of(&keys.stream, &ks).as_deref(), Some("orders.v2%x"));
        assert_eq!(topic_of(b"app:{a}:dedup:x}:stream", &ks), None);
        assert_eq!(topic_of(b"other:{a}:stream", &ks), None);
        assert_eq!(
            split_member(b"{}\npay\nload"),
            (&b"{}"[..], &b"pay\nload"[..])
        );
    }
}
