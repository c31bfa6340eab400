//! The acknowledger: one task per worker that takes finished entries off a bounded queue and
//! acknowledges them in batches (one `XACK` per stream for whatever queued up meanwhile).

use std::sync::{Arc, atomic::Ordering};

use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::Inner;
use crate::{codec::Codec, delivery::Source};

/// Finished entries on their way to the acknowledger.
pub(super) type AckSender = mpsc::Sender<(Source, String)>;

/// Most entry ids in one `XACK`.
pub(super) const ACK_BATCH: usize = 1024;

impl<T, C> Inner<T, C>
where
    T: DeserializeOwned + Send + 'static,
    C: Codec,
{
    /// The acknowledger task: takes finished entries off the queue and acknowledges them, as
    /// many as have queued up while the previous `XACK` was in flight in one `XACK` per stream.
    /// No timer: a lone job is acknowledged at once. Ends when every sender is gone and the
    /// queue is empty.
    pub(super) async fn acknowledge(self: Arc<Self>, mut queue: mpsc::Receiver<(Source, String)>) {
        let mut topic_ids: Vec<String> = Vec::with_capacity(ACK_BATCH);
        let mut retry_ids: Vec<String> = Vec::new();
        while let Some((source, id)) = queue.recv().await {
            let mut next = Some((source, id));
            while let Some((source, id)) = next.take() {
                match source {
                    Source::Topic => topic_ids.push(id),
                    Source::Retry => retry_ids.push(id),
                }
                if topic_ids.len() + retry_ids.len() < ACK_BATCH {
                    next = queue.try_recv().ok();
                }
            }
            for (source, ids) in [
                (Source::Topic, &mut topic_ids),
                (Source::Retry, &mut retry_ids),
            ] {
                if !ids.is_empty() {
                    self.ack(source, ids).await;
                    ids.clear();
                }
            }
        }
    }

    async fn ack(&self, source: Source, ids: &[String]) {
        let stream = self.stream_of(source);
        let acked = self
            .with_retries("ack", |mut conn| async move {
                redis::cmd("XACK")
                    .arg(stream)
                    .arg(self.config.group())
                    .arg(ids)
                    .query_async::<u64>(&mut conn)
                    .await
            })
            .await;
        if acked.is_some() {
            self.history.processed(ids.len() as u64);
            self.counters
                .completed
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            self.metrics.completed(ids.len() as u64);
        }
    }
}
