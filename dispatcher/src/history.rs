//! Jobs processed and failed per minute, per topic and group, kept in Redis for 25 hours so
//! that charts cover every worker and survive restarts of whoever draws them.
//!
//! Each worker counts in memory (two atomic adds per outcome) and its housekeeping adds the
//! counts to Redis once per poll interval, when there is anything to add: one `lua/history.lua`
//! call (`HINCRBY` into the hash of the current hour, field `<group>:p|f:<minute>`, and
//! `EXPIRE` 25 h), so the ack path sends nothing more. The minute is the server's (`TIME`);
//! the hour's key is picked among the caller's hour and its two neighbours, so every key still
//! comes through `KEYS`. Counts of a worker that dies between two flushes (at most one poll
//! interval's worth) are lost: history is for charts, not for accounting.
//!
//! Keys: `P:{T}:history:<unix hour>`, a hash; its TTL is renewed by every write.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use sluice_shared::{ConfigError, RedisError, RedisHandle};

use crate::{
    dispatcher::Dispatcher,
    error::DispatchError,
    scripts,
    topic::{TopicKeys, check_name},
};

/// How long a history hash lives after its last write: 25 hours, so the last 24 hours are
/// always whole.
pub const HISTORY_TTL: Duration = Duration::from_secs(25 * 3600);
/// The longest window [`Dispatcher::history`] reads: 24 hours.
pub const MAX_HISTORY_MINUTES: u32 = 24 * 60;

/// Per-minute counts of one topic: [`Dispatcher::history`]. Index `i` of every series is the
/// minute starting at unix minute `start_minute + i`; the last is the current (partial) minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TopicHistory {
    /// The topic's name.
    pub topic: String,
    /// The first minute, in minutes since the unix epoch.
    pub start_minute: u64,
    /// Jobs processed per minute, all groups together.
    pub processed: Vec<u64>,
    /// Failed attempts (retried or dead-lettered) per minute, all groups together.
    pub failed: Vec<u64>,
    /// The same, per consumer group (groups with any count in the window).
    pub groups: Vec<GroupHistory>,
}

/// Per-minute counts of one consumer group (see [`TopicHistory`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GroupHistory {
    /// The group's name.
    pub group: String,
    /// Jobs processed per minute.
    pub processed: Vec<u64>,
    /// Failed attempts per minute.
    pub failed: Vec<u64>,
}

impl Dispatcher {
    /// Jobs processed and failed per minute over the last `minutes` minutes (1 to
    /// [`MAX_HISTORY_MINUTES`]), the current minute last, as counted by every worker of `topic`.
    /// One pipeline of `HGETALL`s, one per hour covered.
    pub async fn history(&self, topic: &str, minutes: u32) -> Result<TopicHistory, DispatchError> {
        check_name("topic", topic)?;
        if minutes == 0 || minutes > MAX_HISTORY_MINUTES {
            return Err(ConfigError::new("minutes", "must be 1 to 1440").into());
        }
        let keys = self.keys(topic);
        let mut conn = self.redis().clone();
        let (secs, _): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        let now_minute = secs / 60;
        let start_minute = now_minute + 1 - u64::from(minutes);
        let hours: Vec<u64> = (start_minute / 60..=now_minute / 60).collect();
        let mut pipe = redis::pipe();
        for hour in &hours {
            pipe.cmd("HGETALL").arg(keys.history(*hour));
        }
        let hashes: Vec<HashMap<String, u64>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        let len = minutes as usize;
        let mut history = TopicHistory {
            topic: topic.to_owned(),
            start_minute,
            processed: vec![0; len],
            failed: vec![0; len],
            groups: Vec::new(),
        };
        for (hour, hash) in hours.iter().zip(hashes) {
            for (field, count) in hash {
                let Some((group, kind, minute)) = parse_field(&field) else {
                    continue;
                };
                let at = hour * 60 + minute;
                if at < start_minute || at > now_minute {
                    continue;
                }
                let i = (at - start_minute) as usize;
                let g = match history.groups.iter().position(|g| g.group == group) {
                    Some(g) => g,
                    None => {
                        history.groups.push(GroupHistory {
                            group: group.to_owned(),
                            processed: vec![0; len],
                            failed: vec![0; len],
                        });
                        history.groups.len() - 1
                    }
                };
                let (total, own) = match kind {
                    Kind::Processed => (&mut history.processed, &mut history.groups[g].processed),
                    Kind::Failed => (&mut history.failed, &mut history.groups[g].failed),
                };
                total[i] += count;
                own[i] += count;
            }
        }
        history.groups.sort_by(|a, b| a.group.cmp(&b.group));
        Ok(history)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Processed,
    Failed,
}

/// `<group>:p:<minute>` or `<group>:f:<minute>` (group names hold no `:`).
fn parse_field(field: &str) -> Option<(&str, Kind, u64)> {
    let mut parts = field.rsplitn(3, ':');
    let minute: u64 = parts.next()?.parse().ok().filter(|m| *m < 60)?;
    let kind = match parts.next()? {
        "p" => Kind::Processed,
        "f" => Kind::Failed,
        _ => return None,
    };
    Some((parts.next()?, kind, minute))
}

/// A worker's counts not yet added to Redis.
#[derive(Debug)]
pub(crate) struct HistoryCounter {
    keys: TopicKeys,
    group: String,
    processed: AtomicU64,
    failed: AtomicU64,
}

impl HistoryCounter {
    pub(crate) fn new(keys: TopicKeys, group: &str) -> Self {
        Self {
            keys,
            group: group.to_owned(),
            processed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// `n` jobs were processed (acknowledged after success).
    pub(crate) fn processed(&self, n: u64) {
        self.processed.fetch_add(n, Ordering::Relaxed);
    }

    /// One attempt failed (scheduled for retry, or dead-lettered).
    pub(crate) fn failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Add what was counted since the last flush to Redis (nothing is sent when there is
    /// nothing to add). On failure the counts are kept for the next flush.
    pub(crate) async fn flush(&self, conn: &mut RedisHandle) {
        let processed = self.processed.swap(0, Ordering::Relaxed);
        let failed = self.failed.swap(0, Ordering::Relaxed);
        if processed == 0 && failed == 0 {
            return;
        }
        let hour = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() / 3600)
            .unwrap_or(1)
            .max(1);
        let written: Result<u64, _> = scripts::HISTORY
            .key(self.keys.history(hour - 1))
            .key(self.keys.history(hour))
            .key(self.keys.history(hour + 1))
            .arg(hour)
            .arg(self.group.as_str())
            .arg(processed)
            .arg(failed)
            .arg(HISTORY_TTL.as_secs())
            .invoke_async(conn)
            .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "writing job history failed; will try again");
            self.processed.fetch_add(processed, Ordering::Relaxed);
            self.failed.fetch_add(failed, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_parse() {
        assert_eq!(
            parse_field("mailer:p:7"),
            Some(("mailer", Kind::Processed, 7))
        );
        assert_eq!(parse_field("a.b-c:f:59"), Some(("a.b-c", Kind::Failed, 59)));
        assert_eq!(parse_field("g:p:60"), None);
        assert_eq!(parse_field("g:x:1"), None);
        assert_eq!(parse_field("p:1"), None);
    }
}
