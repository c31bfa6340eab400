//! [`Worker::run`]: start-up, the read loop and the drain at shutdown.
//!
//! The read loop waits for a free runner, reads as many entries as there are free runners with
//! one blocking `XREADGROUP` of the topic stream and the group's retry stream (on a connection
//! of its own), and spawns one task per entry ([`Inner::process`]). Housekeeping and the
//! acknowledger run as tasks beside it.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use redis::Value;
use serde::de::DeserializeOwned;
use sluice_shared::{RedisConfig, RedisError, RedisHandle};
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    ERROR_BACKOFF, Inner, Worker, WorkerReport,
    ack::{ACK_BATCH, AckSender},
};
use crate::{
    codec::Codec,
    delivery::{self, Delivery, Source},
    error::DispatchError,
    scripts,
};

impl<T, C> Worker<T, C>
where
    T: DeserializeOwned + Send + 'static,
    C: Codec,
{
    /// Run until `shutdown` is cancelled, then stop reading, let in-flight jobs finish until the
    /// drain deadline ([`crate::WorkerConfig::set_shutdown_timeout`]), and return. Jobs still
    /// running at the deadline are cancelled (their futures dropped) and stay pending for other
    /// consumers.
    ///
    /// Transient Redis failures are logged and retried with backoff; the worker keeps going.
    /// Errors are returned only when the worker can't start (no connection, no group), or
    /// when the server's `maxmemory-policy` may evict keys and the dispatcher was not told to
    /// allow it ([`DispatchError::EvictionPossible`]; see
    /// [`crate::DispatcherOptions::allow_eviction`]).
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerReport, DispatchError> {
        let inner = self.inner;
        let mut reader = inner.start(&self.redis_config).await?;

        let tracker = TaskTracker::new();
        let concurrency = inner.config.concurrency();
        let permits = Arc::new(Semaphore::new(concurrency));
        // Finished jobs wait here for the acknowledger; bounded, so at most `concurrency` plus
        // this many entries are finished but not yet acknowledged.
        let (acks, ack_rx) = mpsc::channel(concurrency.saturating_mul(2).max(ACK_BATCH));
        let acker = tokio::spawn(inner.clone().acknowledge(ack_rx));
        // Housekeeping (promote, reclaim, trim) runs beside the reads, never in front of them:
        // an idle worker always sits in its blocking read, so a new job starts at once. It
        // stops with `shutdown`, and also when this future is dropped (the guard).
        let stop_housekeeping = shutdown.child_token();
        let _stop_on_drop = stop_housekeeping.clone().drop_guard();
        let housekeeper = tokio::spawn(inner.clone().housekeeping_loop(
            stop_housekeeping,
            permits.clone(),
            tracker.clone(),
            acks.clone(),
        ));
        tracing::debug!(
            topic = inner.topic.name(),
            group = inner.config.group(),
            consumer = inner.config.consumer(),
            "worker started"
        );

        inner
            .read_loop(&mut reader, &shutdown, &permits, &tracker, &acks)
            .await;

        // Housekeeping stops with the same token; wait for it, so nothing new is spawned.
        if let Err(e) = housekeeper.await {
            tracing::error!(error = %e, "housekeeping task failed");
        }
        inner.drain(tracker, acks, acker).await;
        inner.history.flush(&mut inner.redis.clone()).await;
        Ok(inner.counters.report())
    }
}

/// Wait for a free runner; then the number of free runners, or `None` on shutdown.
async fn free_runners(
    shutdown: &CancellationToken,
    permits: &Semaphore,
    full: bool,
) -> Option<usize> {
    // The runner is not held during the blocking read, so housekeeping can hand it a
    // reclaimed job meanwhile (read entries then wait for the next free runner).
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        permit = permits.acquire() => match permit {
            Ok(permit) => {
                drop(permit);
                if full {
                    // Busy: the last read filled every free runner. Let the jobs just started
                    // run first, so this read fetches for all the runners they free instead of
                    // one (fewer, larger reads; no timer involved).
                    tokio::task::yield_now().await;
                }
                Some(permits.available_permits())
            }
            Err(_) => None,
        },
    }
}

fn is_nogroup(err: &DispatchError) -> bool {
    match err {
        DispatchError::Redis(RedisError::Command(e)) => {
            e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
        }
        _ => false,
    }
}

impl<T, C> Inner<T, C>
where
    T: DeserializeOwned + Send + 'static,
    C: Codec,
{
    /// The eviction policy, the blocking-read connection, the groups, the scripts: what must
    /// hold before a read.
    async fn start(&self, redis_config: &RedisConfig) -> Result<RedisHandle, DispatchError> {
        self.eviction.check(&self.redis).await?;
        // Blocking reads get a connection of their own; its reply timeout covers the block.
        let reader_timeout =
            self.config.poll_interval() + redis_config.response_timeout() + Duration::from_secs(1);
        let reader = RedisHandle::dedicated(redis_config, Some(reader_timeout)).await?;
        self.ensure_groups().await?;
        let mut writer = self.redis.clone();
        for script in [
            &*scripts::PROMOTE,
            &*scripts::RETRY,
            &*scripts::DEAD_LETTER,
            &*scripts::TRIM,
            &*scripts::HISTORY,
        ] {
            scripts::load(&mut writer, script).await?;
        }
        // A worker started while its group is paused takes nothing, not even one read.
        self.pause.refresh(&mut writer).await;
        Ok(reader)
    }

    /// Read and start jobs until `shutdown`.
    async fn read_loop(
        self: &Arc<Self>,
        reader: &mut RedisHandle,
        shutdown: &CancellationToken,
        permits: &Arc<Semaphore>,
        tracker: &TaskTracker,
        acks: &AckSender,
    ) {
        let poll = self.config.poll_interval();
        let mut failures = 0u32;
        let mut full = false;
        let mut entries = Vec::with_capacity(self.config.concurrency());
        while !shutdown.is_cancelled() {
            let Some(count) = free_runners(shutdown, permits, full).await else {
                return;
            };
            // Checked right before the read: a paused group takes nothing new.
            if self.pause.is_paused() {
                if !self.pause.wait(shutdown, poll).await {
                    return;
                }
                continue;
            }
            let read = tokio::select! {
                biased;
                // Dropping an in-flight read is safe: whatever it delivered stays pending under
                // this consumer and is reclaimed after the visibility timeout.
                _ = shutdown.cancelled() => return,
                read = self.read(reader, count, poll, &mut entries) => read,
            };
            if let Err(e) = read {
                entries.clear();
                failures = failures.saturating_add(1);
                if !self.recover(&e, failures, shutdown).await {
                    return;
                }
                continue;
            }
            failures = 0;
            full = entries.len() >= count;
            if !self
                .start_jobs(&mut entries, shutdown, permits, tracker, acks)
                .await
            {
                return;
            }
        }
    }

    /// After a failed read: recreate a vanished group, then back off. False on shutdown.
    async fn recover(
        &self,
        e: &DispatchError,
        failures: u32,
        shutdown: &CancellationToken,
    ) -> bool {
        if is_nogroup(e) {
            tracing::warn!(error = %e, "group or stream vanished; recreating");
            if let Err(e) = self.ensure_groups().await {
                tracing::warn!(error = %e, "could not recreate the group");
            }
        } else {
            tracing::warn!(error = %e, failures, "read failed; backing off");
        }
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(ERROR_BACKOFF.delay(failures)) => true,
        }
    }

    /// One task per read entry, each with a runner. False on shutdown (the entries not started
    /// stay pending, for reclaim).
    async fn start_jobs(
        self: &Arc<Self>,
        entries: &mut Vec<(Source, Delivery)>,
        shutdown: &CancellationToken,
        permits: &Arc<Semaphore>,
        tracker: &TaskTracker,
        acks: &AckSender,
    ) -> bool {
        let mut read = entries.drain(..);
        while let Some((source, entry)) = read.next() {
            let permit = match permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                // Housekeeping took a runner for a reclaimed job meanwhile: wait.
                Err(_) => tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => {
                        // Read but not started: left pending for reclaim.
                        let left = 1 + read.len() as u64;
                        self.counters.abandoned.fetch_add(left, Ordering::Relaxed);
                        return false;
                    }
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return false,
                    },
                },
            };
            let job = self.clone();
            let acks = acks.clone();
            tracker.spawn(async move { job.process(source, entry, None, permit, acks).await });
        }
        true
    }

    /// Drain: nothing new starts; running jobs get until the deadline, then are dropped; the
    /// acknowledger flushes what is queued.
    async fn drain(&self, tracker: TaskTracker, acks: AckSender, acker: JoinHandle<()>) {
        tracker.close();
        let deadline = self.config.shutdown_timeout();
        if tokio::time::timeout(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?deadline,
                "drain deadline passed; leaving running jobs pending"
            );
            self.hard_stop.cancel();
            // Handlers are dropped at their next await point; this wait is short.
            if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
                .await
                .is_err()
            {
                tracing::error!("job tasks did not stop within 10s of cancellation");
            }
        }
        // Every job task is gone, and with them the other senders: the acknowledger flushes
        // what is queued and ends.
        drop(acks);
        match tokio::time::timeout(Duration::from_secs(10), acker).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "acknowledger task failed"),
            Err(_) => tracing::error!(
                "acknowledgements did not finish within 10s; those jobs stay pending"
            ),
        }
    }

    /// One blocking `XREADGROUP` of both streams; the entries are appended to `out`.
    async fn read(
        &self,
        reader: &mut RedisHandle,
        count: usize,
        block: Duration,
        out: &mut Vec<(Source, Delivery)>,
    ) -> Result<(), DispatchError> {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(self.config.group())
            .arg(self.config.consumer())
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(1000).max(1))
            .arg("STREAMS")
            .arg(self.keys.stream.as_slice())
            .arg(self.retry_stream.as_slice())
            .arg(">")
            .arg(">")
            .query_async(reader)
            .await?;
        delivery::parse_read_reply(reply, &self.retry_stream, out)
            .map_err(|e| RedisError::Protocol(e).into())
    }
}
