//! One job from delivery to outcome: decode it, run the handler (a panic is a failed attempt),
//! then queue the acknowledgement, schedule a retry (`lua/retry.lua`) or write a dead letter
//! (`lua/dead_letter.lua`).

use std::{
    any::Any,
    panic::AssertUnwindSafe,
    sync::{Arc, atomic::Ordering},
};

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use tokio::sync::OwnedSemaphorePermit;

use super::{Inner, ack::AckSender};
use crate::{
    codec::Codec,
    dead::DeadReason,
    delivery::{self, Delivery, Source},
    job::{FailureKind, JobError, Meta},
    scripts,
};

/// A delivery that goes to the dead letters without running.
struct Undeliverable {
    /// The metadata, when it decoded.
    meta: Option<Meta>,
    reason: DeadReason,
    error: String,
}

impl<T, C> Inner<T, C>
where
    T: DeserializeOwned + Send + 'static,
    C: Codec,
{
    /// The metadata and payload of a delivery, or why it goes straight to the dead letters:
    /// metadata or payload that does not decode, or too many deliveries (poison).
    fn decode(
        &self,
        raw_meta: &[u8],
        payload: &[u8],
        delivered: Option<u64>,
    ) -> Result<(Meta, T), Undeliverable> {
        let meta = delivery::decode_meta(raw_meta).map_err(|error| Undeliverable {
            meta: None,
            reason: DeadReason::Decode,
            error,
        })?;
        if let Some(delivered) = delivered {
            if delivered > u64::from(self.config.max_deliveries()) {
                let error = format!(
                    "delivered {delivered} times without finishing (max_deliveries {})",
                    self.config.max_deliveries()
                );
                return Err(Undeliverable {
                    meta: Some(meta),
                    reason: DeadReason::Poison,
                    error,
                });
            }
        }
        match delivery::decode_payload(&self.codec, payload) {
            Ok(payload) => Ok((meta, payload)),
            Err(error) => Err(Undeliverable {
                meta: Some(meta),
                reason: DeadReason::Decode,
                error,
            }),
        }
    }

    pub(super) async fn process(
        self: Arc<Self>,
        source: Source,
        entry: Delivery,
        delivered: Option<u64>,
        permit: OwnedSemaphorePermit,
        acks: AckSender,
    ) {
        let Delivery {
            id: entry_id,
            meta: raw_meta,
            payload: payload_bytes,
        } = entry;
        let (meta, payload) = match self.decode(&raw_meta, &payload_bytes, delivered) {
            Ok(decoded) => decoded,
            Err(Undeliverable {
                meta,
                reason,
                error,
            }) => {
                // Boxed: rare paths stay out of the per-job future (smaller to spawn).
                Box::pin(self.dead_letter(
                    source,
                    &entry_id,
                    meta.as_ref(),
                    &raw_meta,
                    &payload_bytes,
                    reason,
                    &error,
                ))
                .await;
                return;
            }
        };
        let job = delivery::job(payload, &meta, &entry_id, &self.topic_name, &self.group);
        let handler = self.handler.clone();
        // The handler is called inside the guarded future, so a panic while building its
        // future is caught as well as one while it runs.
        let run = AssertUnwindSafe(async move { handler(job).await }).catch_unwind();
        let timer = self.metrics.handler_started();
        let outcome = tokio::select! {
            biased;
            outcome = run => outcome,
            _ = self.hard_stop.cancelled() => {
                self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        timer.finished();
        let failure = match outcome {
            Ok(Ok(())) => {
                // Queued for the acknowledger, which batches acknowledgements into one XACK;
                // the runner is freed once the entry is queued (the queue is bounded).
                if acks.send((source, entry_id)).await.is_err() {
                    tracing::warn!("acknowledger gone; the job stays pending");
                }
                drop(permit);
                return;
            }
            Ok(Err(err)) => err,
            Err(panic) => JobError::retry(format!("handler panicked: {}", panic_message(&*panic))),
        };
        Box::pin(self.fail(source, &entry_id, meta, &raw_meta, payload_bytes, failure)).await;
    }

    async fn fail(
        &self,
        source: Source,
        entry_id: &str,
        meta: Meta,
        raw_meta: &[u8],
        payload: Vec<u8>,
        failure: JobError,
    ) {
        self.metrics.failed();
        let attempt = meta.attempts.saturating_add(1);
        let policy = meta
            .retry
            .clone()
            .unwrap_or_else(|| self.topic.retry().clone());
        let delay = match failure.kind {
            FailureKind::Fatal => None,
            _ if attempt >= policy.max_attempts() => None,
            FailureKind::Retry(Some(after)) => Some(after),
            FailureKind::Retry(None) => Some(policy.backoff(attempt)),
        };
        let Some(delay) = delay else {
            let reason = if failure.is_fatal() {
                DeadReason::Fatal
            } else {
                DeadReason::Exhausted
            };
            let mut final_meta = meta;
            final_meta.attempts = attempt;
            self.dead_letter(
                source,
                entry_id,
                Some(&final_meta),
                raw_meta,
                &payload,
                reason,
                failure.message(),
            )
            .await;
            return;
        };
        tracing::debug!(job = %meta.id, attempt, ?delay, error = failure.message(), "retrying");
        let next = Meta {
            attempts: attempt,
            ..meta
        };
        let mut member = next.to_json().into_bytes();
        member.push(b'\n');
        member.extend_from_slice(&payload);
        let stream = self.stream_of(source);
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let member = &member;
        let scheduled = self
            .with_retries("retry", |mut conn| async move {
                scripts::RETRY
                    .key(stream)
                    .key(self.retry_delayed.as_slice())
                    .arg(self.config.group())
                    .arg(entry_id)
                    .arg(delay_ms)
                    .arg(member.as_slice())
                    .invoke_async::<u64>(&mut conn)
                    .await
            })
            .await;
        if scheduled == Some(1) {
            self.history.failed();
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            self.metrics.retried();
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn dead_letter(
        &self,
        source: Source,
        entry_id: &str,
        meta: Option<&Meta>,
        raw_meta: &[u8],
        payload: &[u8],
        reason: DeadReason,
        error: &str,
    ) {
        tracing::warn!(
            entry = entry_id,
            reason = reason.as_str(),
            error,
            "dead-lettering job"
        );
        let stored_meta = meta
            .map(|m| m.to_json().into_bytes())
            .unwrap_or_else(|| raw_meta.to_vec());
        let job_id = meta.map(|m| m.id.as_str()).unwrap_or("");
        let attempts = meta.map(|m| m.attempts).unwrap_or(0).to_string();
        let stream = self.stream_of(source);
        let stored_meta = &stored_meta;
        let attempts = &attempts;
        let written = self
            .with_retries("dead-letter", |mut conn| async move {
                scripts::DEAD_LETTER
                    .key(stream)
                    .key(self.keys.dead.as_slice())
                    .arg(self.config.group())
                    .arg(entry_id)
                    .arg(self.topic.dead_letter_max_len())
                    .arg("job_id")
                    .arg(job_id)
                    .arg("group")
                    .arg(self.config.group())
                    .arg("reason")
                    .arg(reason.as_str())
                    .arg("error")
                    .arg(error)
                    .arg("attempts")
                    .arg(attempts.as_str())
                    .arg("entry_id")
                    .arg(entry_id)
                    .arg("meta")
                    .arg(stored_meta.as_slice())
                    .arg("payload")
                    .arg(payload)
                    .invoke_async::<u64>(&mut conn)
                    .await
            })
            .await;
        if written == Some(1) {
            self.history.failed();
            self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            self.metrics.dead_lettered();
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
