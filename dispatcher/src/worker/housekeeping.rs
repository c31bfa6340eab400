//! Housekeeping, beside the blocking reads: due delayed jobs and retries are moved into their
//! streams (`lua/promote.lua`), entries idle past the visibility timeout are taken over with
//! `XAUTOCLAIM` (poison ones dead-lettered), and streams are trimmed (`lua/trim.lua`).

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use redis::Value;
use serde::de::DeserializeOwned;
use sluice_shared::RedisError;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Inner, ack::AckSender, config::WorkerConfig};
use crate::{
    codec::Codec,
    delivery::{self, Source},
    error::DispatchError,
    scripts,
};

/// Most delayed jobs moved per promote call.
const PROMOTE_BATCH: usize = 1000;
/// How often the streams are trimmed.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Timers of the housekeeping step.
struct Housekeeping {
    next: Instant,
    every: Duration,
    next_trim: Instant,
    next_claim: Instant,
    claim_every: Duration,
    cursors: [String; 2],
}

impl Housekeeping {
    fn new(config: &WorkerConfig) -> Self {
        let now = Instant::now();
        Self {
            next: now,
            every: config.poll_interval(),
            next_trim: now,
            next_claim: now,
            claim_every: (config.visibility_timeout() / 4).max(config.poll_interval()),
            cursors: ["0-0".to_owned(), "0-0".to_owned()],
        }
    }

    fn until_due(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }
}

impl<T, C> Inner<T, C>
where
    T: DeserializeOwned + Send + 'static,
    C: Codec,
{
    /// The housekeeping task: every poll interval, until `shutdown`.
    pub(super) async fn housekeeping_loop(
        self: Arc<Self>,
        shutdown: CancellationToken,
        permits: Arc<Semaphore>,
        tracker: TaskTracker,
        acks: AckSender,
    ) {
        let mut state = Housekeeping::new(&self.config);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                // Dropping a step midway is safe: each script is atomic, and entries an
                // interrupted XAUTOCLAIM took stay pending and are reclaimed again.
                _ = self.housekeeping(&mut state, &permits, &tracker, &acks) => {}
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(state.until_due()) => {}
            }
        }
    }

    /// Move due delayed jobs and retries into their streams, reclaim stalled entries, trim.
    async fn housekeeping(
        self: &Arc<Self>,
        state: &mut Housekeeping,
        permits: &Arc<Semaphore>,
        tracker: &TaskTracker,
        acks: &AckSender,
    ) {
        let now = Instant::now();
        state.next = now + state.every;
        let mut conn = self.redis.clone();
        self.pause.refresh(&mut conn).await;
        self.history.flush(&mut conn).await;
        for (from, to) in [
            (&self.keys.delayed, &self.keys.stream),
            (&self.retry_delayed, &self.retry_stream),
        ] {
            let moved: Result<u64, _> = scripts::PROMOTE
                .key(from.as_slice())
                .key(to.as_slice())
                .arg(PROMOTE_BATCH)
                .invoke_async(&mut conn)
                .await;
            if let Err(e) = moved {
                tracing::warn!(error = %e, "moving due jobs failed; will try again");
            }
        }
        // A paused group takes no new jobs, reclaimed ones included.
        if now >= state.next_claim && !self.pause.is_paused() {
            state.next_claim = now + state.claim_every;
            for (i, source) in [Source::Topic, Source::Retry].into_iter().enumerate() {
                if let Err(e) = self
                    .reclaim(source, &mut state.cursors[i], permits, tracker, acks)
                    .await
                {
                    tracing::warn!(error = %e, "reclaiming stalled jobs failed; will try again");
                }
            }
        }
        if now >= state.next_trim {
            state.next_trim = now + TRIM_EVERY;
            for key in [&self.keys.stream, &self.retry_stream] {
                let trimmed: Result<u64, _> = scripts::TRIM
                    .key(key.as_slice())
                    .invoke_async(&mut conn)
                    .await;
                if let Err(e) = trimmed {
                    tracing::warn!(error = %e, "trimming failed; will try again");
                }
            }
        }
    }

    /// `XAUTOCLAIM` entries idle longer than the visibility timeout, as many as there are free
    /// runners; dead-letter the ones delivered too often (poison), run the others.
    async fn reclaim(
        self: &Arc<Self>,
        source: Source,
        cursor: &mut String,
        permits: &Arc<Semaphore>,
        tracker: &TaskTracker,
        acks: &AckSender,
    ) -> Result<(), DispatchError> {
        let free = permits.available_permits();
        if free == 0 {
            return Ok(());
        }
        let stream = self.stream_of(source);
        let mut conn = self.redis.clone();
        let min_idle =
            u64::try_from(self.config.visibility_timeout().as_millis()).unwrap_or(u64::MAX);
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(self.config.group())
            .arg(self.config.consumer())
            .arg(min_idle)
            .arg(cursor.as_str())
            .arg("COUNT")
            .arg(free)
            .query_async(&mut conn)
            .await?;
        let mut claimed = Vec::new();
        *cursor = delivery::parse_autoclaim_reply(reply, source, &mut claimed)
            .map_err(RedisError::Protocol)?;
        if claimed.is_empty() {
            return Ok(());
        }
        // Delivery counts of what was just claimed (XAUTOCLAIM does not return them).
        let mut pipe = redis::pipe();
        for (_, entry) in &claimed {
            pipe.cmd("XPENDING")
                .arg(stream)
                .arg(self.config.group())
                .arg(entry.id.as_str())
                .arg(entry.id.as_str())
                .arg(1);
        }
        let pending: Vec<Vec<(String, String, u64, u64)>> = pipe.query_async(&mut conn).await?;
        let deliveries: HashMap<String, u64> = pending
            .into_iter()
            .flatten()
            .map(|(id, _, _, count)| (id, count))
            .collect();
        for (source, entry) in claimed {
            self.counters.reclaimed.fetch_add(1, Ordering::Relaxed);
            self.metrics.reclaimed();
            let delivered = deliveries.get(&entry.id).copied().unwrap_or(1);
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // No free runner after all: it stays pending here and is reclaimed again.
                continue;
            };
            let job = self.clone();
            let acks = acks.clone();
            tracker.spawn(async move {
                job.process(source, entry, Some(delivered), permit, acks)
                    .await
            });
        }
        Ok(())
    }
}
