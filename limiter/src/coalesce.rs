//! Request coalescing: under concurrency, single checks that are waiting at the same moment
//! travel to Redis together, as one script call in batch mode (`ARGV[2] = 2`), which evaluates
//! them one after another exactly as if they had been sent separately at the same instant.
//!
//! Batches form by themselves: at most `max_in_flight` batches are outstanding, each
//! holding a permit; while they are, new requests queue, and the next call takes everything
//! queued (up to `max_batch`, grouped by algorithm and, on a Cluster, by slot: one script
//! call per group, the batch's calls all sent at once under its one permit, so on a Cluster
//! they reach each master pipelined together). A lone request goes out at once, so an idle
//! limiter adds only a channel hop; a busy one pays Redis' per-call costs (parsing, script
//! entry, the reply) once per batch instead of once per request.
//!
//! The background task ends by itself when the last limiter clone is dropped (its channel
//! closes); in-flight calls finish on their own, bounded by the limiter's timeout. If the task
//! is gone while limiters remain (its runtime shut down), checks fail with
//! [`LimitError::CoalescerStopped`], which the outage policy answers.

use std::{collections::HashMap, sync::Arc, time::Duration};

use redis::aio::ConnectionLike;
use sluice_shared::{ConfigError, RedisError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    algorithm::Algorithm,
    call::{self, BatchItem},
    decision::Answer,
    error::LimitError,
};

/// Limits for batch formation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalescing {
    max_batch: usize,
    max_in_flight: usize,
}

impl Default for Coalescing {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_in_flight: 4,
        }
    }
}

impl Coalescing {
    /// Most values either limit may take.
    const MAX: usize = 1000;

    /// At most `max_batch` requests per batch (1 to 1,000; default 64) and at most
    /// `max_in_flight` batches outstanding (1 to 1,000; default 4). A batch is one script
    /// call, or on a Cluster one per slot it spans. A value out of range is refused with an
    /// error naming it.
    pub fn new(max_batch: usize, max_in_flight: usize) -> Result<Self, ConfigError> {
        let in_range = |field: &'static str, value: usize| {
            if (1..=Self::MAX).contains(&value) {
                Ok(value)
            } else {
                Err(ConfigError::new(
                    field,
                    format!("must be 1 to {}, not {value}", Self::MAX),
                ))
            }
        };
        Ok(Self {
            max_batch: in_range("max_batch", max_batch)?,
            max_in_flight: in_range("max_in_flight", max_in_flight)?,
        })
    }

    /// Most requests per script call.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Most script calls outstanding.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

/// One queued single check.
struct Pending {
    algorithm: Algorithm,
    slot: u16,
    key: Vec<u8>,
    /// limit, window_us, param, cost
    args: [u64; 4],
    consume: bool,
    reply: oneshot::Sender<Result<Answered, RedisError>>,
}

/// A batched check's answer and the clock reading it was made at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answered {
    pub(crate) now_us: u64,
    pub(crate) answer: Answer,
}

/// The queue of a batching task, shared by a limiter's clones.
#[derive(Debug)]
pub(crate) struct Coalescer {
    queue: mpsc::UnboundedSender<Pending>,
    timeout: Duration,
    /// Group a batch by Cluster slot (one script call per slot). A standalone server takes
    /// any keys in one call, so there a batch splits only by algorithm.
    per_slot: bool,
}

impl Coalescer {
    /// Start the batching task on the current runtime.
    pub(crate) fn spawn<C>(conn: C, timeout: Duration, limits: Coalescing) -> Self
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        // Only a Sluice handle says which topology it is; any other connection may be a
        // cluster's, so it gets per-slot calls.
        let per_slot = (&conn as &dyn std::any::Any)
            .downcast_ref::<sluice_shared::RedisHandle>()
            .is_none_or(sluice_shared::RedisHandle::is_cluster);
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(batcher(rx, conn, timeout, limits));
        Self {
            queue,
            timeout,
            per_slot,
        }
    }

    /// Queue one check of `key` (script arguments `args`) and wait, at most the timeout, for
    /// its answer.
    pub(crate) async fn submit(
        &self,
        algorithm: Algorithm,
        key: Vec<u8>,
        args: [u64; 4],
        consume: bool,
    ) -> Result<Answered, LimitError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            algorithm,
            slot: if self.per_slot {
                sluice_shared::slot(&key)
            } else {
                0
            },
            key,
            args,
            consume,
            reply,
        };
        self.queue
            .send(pending)
            .map_err(|_| LimitError::CoalescerStopped)?;
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(result)) => Ok(result?),
            // The task dropped the request unanswered: it is gone.
            Ok(Err(_)) => Err(LimitError::CoalescerStopped),
            Err(_) => Err(LimitError::Redis(RedisError::Timeout(self.timeout))),
        }
    }
}

async fn batcher<C>(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    conn: C,
    timeout: Duration,
    limits: Coalescing,
) where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_in_flight));
    let mut queue: Vec<Pending> = Vec::with_capacity(limits.max_batch);
    while let Some(first) = rx.recv().await {
        // Wait for a free call slot; meanwhile more requests queue up in the channel.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        queue.push(first);
        while queue.len() < limits.max_batch {
            match rx.try_recv() {
                Ok(p) => queue.push(p),
                Err(_) => break,
            }
        }
        let mut groups: HashMap<(Algorithm, u16), Vec<Pending>> = HashMap::new();
        for p in queue.drain(..) {
            groups.entry((p.algorithm, p.slot)).or_default().push(p);
        }
        // One script call per group (per algorithm and, on a Cluster, per slot), all sent at
        // once under the batch's one permit: on a Cluster with keys spread over many slots a
        // batch becomes many single-slot calls, which the cluster connection pipelines to
        // each master together, instead of each call waiting for a permit of its own.
        let conn = conn.clone();
        tokio::spawn(async move {
            if groups.len() == 1 {
                for group in groups.into_values() {
                    send(group, conn.clone(), timeout).await;
                }
            } else {
                let mut calls = tokio::task::JoinSet::new();
                for group in groups.into_values() {
                    calls.spawn(send(group, conn.clone(), timeout));
                }
                while calls.join_next().await.is_some() {}
            }
            drop(permit);
        });
    }
}

async fn send<C>(group: Vec<Pending>, mut conn: C, timeout: Duration)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let Some(first) = group.first() else { return };
    let algorithm = first.algorithm;
    let items: Vec<BatchItem<'_>> = group
        .iter()
        .map(|p| BatchItem {
            key: &p.key,
            args: p.args,
            consume: p.consume,
        })
        .collect();
    let cmd = call::evalsha_batch(algorithm, &items);
    drop(items);
    let script = crate::script::script_for(algorithm);
    let result = call::within(timeout, call::invoke(&mut conn, script, &cmd))
        .await
        .and_then(|reply| call::parse(&reply, group.len()));
    match result {
        Ok(reply) => {
            for (p, answer) in group.into_iter().zip(reply.answers) {
                // The caller may have given up (timeout); nothing to do then.
                let _ = p.reply.send(Ok(Answered {
                    now_us: reply.now_us,
                    answer,
                }));
            }
        }
        Err(e) => {
            for p in group {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_limits_are_refused_not_clamped() {
        assert_eq!(Coalescing::new(64, 4), Ok(Coalescing::default()));
        assert_eq!(Coalescing::new(1, 1000).unwrap().max_in_flight(), 1000);
        assert_eq!(Coalescing::new(0, 4).unwrap_err().field(), "max_batch");
        assert_eq!(Coalescing::new(1001, 4).unwrap_err().field(), "max_batch");
        assert_eq!(Coalescing::new(8, 0).unwrap_err().field(), "max_in_flight");
        assert_eq!(
            Coalescing::new(8, 5000).unwrap_err().field(),
            "max_in_flight"
        );
    }
}
