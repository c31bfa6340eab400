//! Request coalescing: under concurrency, single checks that are waiting at the same moment
//! travel to Redis together, as one script call in batch mode (`ARGV[2] = 2`), which evaluates
//! them one after another exactly as if they had been sent separately at the same instant.
//!
//! Batches form by themselves: at most `max_in_flight` script calls are outstanding; while
//! they are, new requests queue, and the next call takes everything queued (up to
//! `max_batch`, grouped by algorithm and Cluster slot). A lone request goes out at once, so
//! an idle limiter adds only a channel hop; a busy one pays Redis' per-call costs (parsing,
//! script entry, the reply) once per batch instead of once per request.
//!
//! The background task ends by itself when the last limiter clone is dropped (its channel
//! closes); in-flight calls finish on their own, bounded by the limiter's timeout.

use std::{collections::HashMap, sync::Arc, time::Duration};

use redis::aio::ConnectionLike;
use sluice_shared::RedisError;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    call::{self, CallItem},
    local::Answer,
    rule::AlgorithmKind,
};

/// One queued single check.
pub(crate) struct Pending {
    pub(crate) kind: AlgorithmKind,
    pub(crate) slot: u16,
    pub(crate) key: Vec<u8>,
    /// limit, window_us, param, cost
    pub(crate) args: [u64; 4],
    pub(crate) consume: bool,
    pub(crate) reply: oneshot::Sender<Result<(u64, Answer), RedisError>>,
}

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
    /// At most `max_batch` requests per script call (1 to 1,000; default 64) and at most
    /// `max_in_flight` script calls outstanding (1 to 1,000; default 4). Out-of-range values are
    /// clamped.
    pub fn new(max_batch: usize, max_in_flight: usize) -> Self {
        Self {
            max_batch: max_batch.clamp(1, 1000),
            max_in_flight: max_in_flight.clamp(1, 1000),
        }
    }
}

/// Start the batching task on the current runtime; returns its queue.
pub(crate) fn spawn<C>(
    conn: C,
    timeout: Duration,
    limits: Coalescing,
) -> mpsc::UnboundedSender<Pending>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(batcher(rx, conn, timeout, limits));
    tx
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
        let mut groups: HashMap<(AlgorithmKind, u16), Vec<Pending>> = HashMap::new();
        for p in queue.drain(..) {
            groups.entry((p.kind, p.slot)).or_default().push(p);
        }
        let mut groups = groups.into_values();
        // The permit covers the first group; further groups (other slots or algorithms, rare
        // under a hot key) go out alongside it.
        if let Some(group) = groups.next() {
            let conn = conn.clone();
            tokio::spawn(async move {
                send(group, conn, timeout).await;
                drop(permit);
            });
        }
        for group in groups {
            tokio::spawn(send(group, conn.clone(), timeout));
        }
    }
}

async fn send<C>(group: Vec<Pending>, mut conn: C, timeout: Duration)
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    let Some(first) = group.first() else { return };
    let kind = first.kind;
    let items: Vec<CallItem<'_>> = group
        .iter()
        .map(|p| CallItem {
            key: &p.key,
            args: p.args,
            consume: Some(p.consume),
        })
        .collect();
    let cmd = call::evalsha(kind, 0, call::BATCH, &items);
    drop(items);
    let result = match tokio::time::timeout(timeout, call::invoke(&mut conn, kind, &cmd)).await {
        Ok(Ok(reply)) => call::parse(&reply, group.len()),
        Ok(Err(e)) => Err(RedisError::from(e)),
        Err(_) => Err(RedisError::Timeout(timeout)),
    };
    match result {
        Ok(reply) => {
            for (p, answer) in group.into_iter().zip(reply.answers) {
                // The caller may have given up (timeout); nothing to do then.
                let _ = p.reply.send(Ok((reply.now_us, answer)));
            }
        }
        Err(e) => {
            for p in group {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}
