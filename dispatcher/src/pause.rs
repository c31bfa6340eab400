//! Pausing a consumer group: a flag in Redis (`P:{T}:group:<G>:paused`, under the topic's hash
//! tag) that every worker of the group reads once per poll interval, beside its housekeeping.
//! A paused worker takes no new jobs (no reads, no reclaims) and finishes the ones it holds;
//! delayed jobs and retries still become due, so the group's lag grows until it is resumed.
//!
//! The flag has no TTL, like the streams: a pause that expired by itself would resume a group
//! nobody asked to resume. It goes with [`Dispatcher::resume_group`] or
//! [`Dispatcher::delete_topic`].

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use sluice_shared::{RedisError, RedisHandle};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{dispatcher::Dispatcher, error::DispatchError, topic::check_name};

impl Dispatcher {
    /// Pause consumer group `group` of `topic`: its workers stop taking new jobs within one
    /// poll interval and finish the ones they hold. Idempotent.
    pub async fn pause_group(&self, topic: &str, group: &str) -> Result<(), DispatchError> {
        check_name("topic", topic)?;
        check_name("group", group)?;
        let mut conn = self.redis().clone();
        let () = redis::cmd("SET")
            .arg(self.keys(topic).paused(group))
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        Ok(())
    }

    /// Resume a paused group (a no-op when it is not paused).
    pub async fn resume_group(&self, topic: &str, group: &str) -> Result<(), DispatchError> {
        check_name("topic", topic)?;
        check_name("group", group)?;
        let mut conn = self.redis().clone();
        let _: u64 = redis::cmd("DEL")
            .arg(self.keys(topic).paused(group))
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        Ok(())
    }

    /// Whether `group` of `topic` is paused.
    pub async fn is_paused(&self, topic: &str, group: &str) -> Result<bool, DispatchError> {
        check_name("topic", topic)?;
        check_name("group", group)?;
        let mut conn = self.redis().clone();
        let n: u64 = redis::cmd("EXISTS")
            .arg(self.keys(topic).paused(group))
            .query_async(&mut conn)
            .await
            .map_err(RedisError::from)?;
        Ok(n > 0)
    }
}

/// A worker's view of its group's pause flag: read from Redis by housekeeping, checked by the
/// read loop before every read (an atomic load).
#[derive(Debug)]
pub(crate) struct PauseFlag {
    key: Vec<u8>,
    paused: AtomicBool,
    resumed: Notify,
}

impl PauseFlag {
    pub(crate) fn new(key: Vec<u8>) -> Self {
        Self {
            key,
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
        }
    }

    /// As last read from Redis.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Read the flag (one `EXISTS`). On a failed read the last value stands.
    pub(crate) async fn refresh(&self, conn: &mut RedisHandle) {
        let read: Result<u64, _> = redis::cmd("EXISTS")
            .arg(self.key.as_slice())
            .query_async(conn)
            .await;
        match read {
            Ok(n) => {
                let paused = n > 0;
                let was = self.paused.swap(paused, Ordering::Relaxed);
                if was != paused {
                    tracing::info!(paused, "group pause flag changed");
                }
                if was && !paused {
                    self.resumed.notify_waiters();
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the pause flag failed; will try again"),
        }
    }

    /// While paused: wait for a resume, `poll` at most (then the caller looks again). False on
    /// shutdown.
    pub(crate) async fn wait(&self, shutdown: &CancellationToken, poll: Duration) -> bool {
        let resumed = self.resumed.notified();
        if !self.is_paused() {
            return true;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => false,
            _ = resumed => true,
            _ = tokio::time::sleep(poll) => true,
        }
    }
}
