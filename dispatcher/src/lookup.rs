//! Where a job is, by its id: waiting in a stream, pending at a consumer, delayed, scheduled for
//! a retry, dead-lettered; or held nowhere any more (finished and trimmed, or never enqueued).
//!
//! Job ids live inside each entry's metadata, not in the key layout, so a lookup reads: the
//! topic stream and each group's retry stream (`XRANGE` in pages, at most
//! [`MAX_LOOKUP_ENTRIES`] entries each; acknowledged entries are trimmed, so these hold little
//! more than the work in progress), the delayed sets (`ZSCAN MATCH` on the id) and the
//! dead-letter stream (the same bound). A job beyond the bound is reported as not found.

use std::time::Duration;

use redis::{Value, streams::StreamRangeReply};
use serde::Serialize;
use sluice_shared::{RedisError, RedisHandle};

use crate::{
    dead::DeadReason,
    dispatcher::Dispatcher,
    error::DispatchError,
    inspect::{glob_escape, split_member},
    job::Meta,
    topic::check_name,
    value,
};

/// Most entries a lookup reads from each stream.
pub const MAX_LOOKUP_ENTRIES: usize = 100_000;
/// Entries per `XRANGE` page.
const PAGE: usize = 500;

/// One place a job is held (a job can be in several: one per consumer group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobPlace {
    /// In a stream, not yet delivered to `group`.
    Waiting {
        /// The group.
        group: String,
        /// The stream entry id.
        entry_id: String,
        /// True for the group's retry stream.
        retry: bool,
    },
    /// Delivered to `consumer` of `group`, not yet acknowledged.
    Pending {
        /// The group.
        group: String,
        /// The consumer holding it.
        consumer: String,
        /// The stream entry id.
        entry_id: String,
        /// True for the group's retry stream.
        retry: bool,
        /// Since its last delivery.
        #[serde(with = "humantime_serde")]
        idle: Duration,
        /// Times delivered.
        deliveries: u64,
    },
    /// Done with by `group` in this stream (acknowledged: it succeeded, or moved on to a retry
    /// or the dead letters, which show as places of their own), its entry not yet trimmed.
    Acknowledged {
        /// The group.
        group: String,
        /// The stream entry id.
        entry_id: String,
    },
    /// Waiting for its time: enqueued with a delay (`group` is `None`), or a retry of `group`.
    Delayed {
        /// For a retry: the group.
        group: Option<String>,
        /// When it is due, unix ms.
        due_ms: u64,
        /// Attempts already made.
        attempts: u32,
    },
    /// In the dead-letter stream.
    Dead {
        /// The dead letter's id (for replay or delete).
        dead_letter_id: String,
        /// The group that gave up on it.
        group: String,
        /// Why.
        reason: Option<DeadReason>,
        /// The last error.
        error: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// [`Dispatcher::locate_job`]: every place a job is held; none when it is held nowhere (done
/// and trimmed, or never enqueued).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct JobLocation {
    /// The job id looked up.
    pub job_id: String,
    /// Where it is; empty: no longer held.
    pub places: Vec<JobPlace>,
}

/// Stream entries (id, metadata) whose job id is `job_id`, at most [`MAX_LOOKUP_ENTRIES`]
/// read.
async fn find_in_stream(
    conn: &mut RedisHandle,
    stream: &[u8],
    job_id: &str,
    field: &str,
) -> Result<Vec<(String, redis::streams::StreamId)>, DispatchError> {
    let mut found = Vec::new();
    let mut start = "-".to_owned();
    let mut read = 0;
    while read < MAX_LOOKUP_ENTRIES {
        let page: StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg(start.as_str())
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(conn)
            .await
            .map_err(RedisError::from)?;
        let n = page.ids.len();
        read += n;
        let Some(last) = page.ids.last().map(|e| e.id.clone()) else {
            break;
        };
        for entry in page.ids {
            let raw = entry
                .map
                .get(field)
                .and_then(value::as_bytes)
                .unwrap_or(b"");
            let matches = if field == "meta" {
                serde_json::from_slice::<Meta>(raw).is_ok_and(|m| m.id == job_id)
            } else {
                raw == job_id.as_bytes()
            };
            if matches {
                found.push((entry.id.clone(), entry));
            }
        }
        if n < PAGE {
            break;
        }
        start = format!("({last}");
    }
    Ok(found)
}

/// Members of a delayed set holding `job_id`: (score, attempts).
async fn find_in_delayed(
    conn: &mut RedisHandle,
    key: &[u8],
    job_id: &str,
) -> Result<Vec<(u64, u32)>, DispatchError> {
    let mut pattern = b"*\"id\":\"".to_vec();
    pattern.extend_from_slice(&glob_escape(job_id.as_bytes()));
    pattern.extend_from_slice(b"\"*");
    let mut cursor = "0".to_owned();
    let mut found = Vec::new();
    for _ in 0..100_000 {
        let (next, items): (String, Vec<(Vec<u8>, f64)>) = redis::cmd("ZSCAN")
            .arg(key)
            .arg(cursor.as_str())
            .arg("MATCH")
            .arg(pattern.as_slice())
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(RedisError::from)?;
        for (member, score) in items {
            let (meta, _) = split_member(&member);
            if let Ok(meta) = serde_json::from_slice::<Meta>(meta) {
                if meta.id == job_id {
                    found.push((score.max(0.0) as u64, meta.attempts));
                }
            }
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    Ok(found)
}

/// Compare stream entry ids `<ms>-<seq>`.
fn id_le(a: &str, b: &str) -> bool {
    let parse = |s: &str| -> (u64, u64) {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    parse(a) <= parse(b)
}

impl Dispatcher {
    /// Where job `job_id` of `topic` is held now (see [`JobPlace`]). An empty
    /// [`JobLocation::places`] means no longer held: done by every group and trimmed, or never
    /// enqueued. Reads are bounded (see the module docs), and not atomic: a job moving meanwhile
    /// may show in two places or none.
    pub async fn locate_job(
        &self,
        topic: &str,
        job_id: &str,
    ) -> Result<JobLocation, DispatchError> {
        check_name("topic", topic)?;
        if job_id.is_empty() || job_id.len() > 256 {
            return Err(sluice_shared::ConfigError::new("job_id", "must be 1 to 256 bytes").into());
        }
        let keys = self.keys(topic);
        let mut conn = self.redis().clone();
        let mut places = Vec::new();
        let groups: Vec<(String, String)> = {
            let exists: bool = redis::cmd("EXISTS")
                .arg(keys.stream.as_slice())
                .query_async(&mut conn)
                .await
                .map_err(RedisError::from)?;
            let rows: Vec<std::collections::HashMap<String, Value>> = if exists {
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(keys.stream.as_slice())
                    .query_async(&mut conn)
                    .await
                    .map_err(RedisError::from)?
            } else {
                Vec::new()
            };
            rows.iter()
                .filter_map(|r| {
                    Some((
                        r.get("name").and_then(value::as_text)?,
                        r.get("last-delivered-id")
                            .and_then(value::as_text)
                            .unwrap_or_else(|| "0-0".to_owned()),
                    ))
                })
                .collect()
        };
        // The topic stream: one state per group.
        for (entry_id, _) in find_in_stream(&mut conn, &keys.stream, job_id, "meta").await? {
            for (group, last) in &groups {
                places.push(
                    self.state_in(&mut conn, &keys.stream, group, last, &entry_id, false)
                        .await?,
                );
            }
        }
        // Each group's retry stream and retry delayed set.
        for (group, _) in &groups {
            let retry = keys.retry_stream(group);
            let last: Option<String> = {
                let rows: Result<Vec<std::collections::HashMap<String, Value>>, _> =
                    redis::cmd("XINFO")
                        .arg("GROUPS")
                        .arg(retry.as_slice())
                        .query_async(&mut conn)
                        .await;
                rows.ok().and_then(|rows| {
                    rows.iter()
                        .find(|r| r.get("name").and_then(value::as_text).as_deref() == Some(group))
                        .and_then(|r| r.get("last-delivered-id").and_then(value::as_text))
                })
            };
            let last = last.unwrap_or_else(|| "0-0".to_owned());
            for (entry_id, _) in find_in_stream(&mut conn, &retry, job_id, "meta").await? {
                places.push(
                    self.state_in(&mut conn, &retry, group, &last, &entry_id, true)
                        .await?,
                );
            }
            for (due_ms, attempts) in
                find_in_delayed(&mut conn, &keys.retry_delayed(group), job_id).await?
            {
                places.push(JobPlace::Delayed {
                    group: Some(group.clone()),
                    due_ms,
                    attempts,
                });
            }
        }
        for (due_ms, attempts) in find_in_delayed(&mut conn, &keys.delayed, job_id).await? {
            places.push(JobPlace::Delayed {
                group: None,
                due_ms,
                attempts,
            });
        }
        for (id, entry) in find_in_stream(&mut conn, &keys.dead, job_id, "job_id").await? {
            let text = |f: &str| {
                entry
                    .map
                    .get(f)
                    .and_then(value::as_text)
                    .unwrap_or_default()
            };
            places.push(JobPlace::Dead {
                dead_letter_id: id,
                group: text("group"),
                reason: DeadReason::parse(&text("reason")),
                error: text("error"),
                attempts: text("attempts").parse().unwrap_or(0),
            });
        }
        Ok(JobLocation {
            job_id: job_id.to_owned(),
            places,
        })
    }

    /// The state of entry `entry_id` of `stream` for `group`, whose last delivered id is
    /// `last`.
    async fn state_in(
        &self,
        conn: &mut RedisHandle,
        stream: &[u8],
        group: &str,
        last: &str,
        entry_id: &str,
        retry: bool,
    ) -> Result<JobPlace, DispatchError> {
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg(entry_id)
            .arg(entry_id)
            .arg(1)
            .query_async(conn)
            .await
            .map_err(RedisError::from)?;
        Ok(match pending.into_iter().next() {
            Some((_, consumer, idle, deliveries)) => JobPlace::Pending {
                group: group.to_owned(),
                consumer,
                entry_id: entry_id.to_owned(),
                retry,
                idle: Duration::from_millis(idle),
                deliveries,
            },
            None if id_le(entry_id, last) => JobPlace::Acknowledged {
                group: group.to_owned(),
                entry_id: entry_id.to_owned(),
            },
            None => JobPlace::Waiting {
                group: group.to_owned(),
                entry_id: entry_id.to_owned(),
                retry,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_compare_numerically() {
        assert!(id_le("9-0", "10-0"));
        assert!(id_le("10-1", "10-1"));
        assert!(!id_le("10-2", "10-1"));
    }
}
