//! Jobs as handlers see them, their metadata in Redis, and handler verdicts.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use sluice_shared::ConfigError;

use crate::retry::RetryPolicy;

/// Metadata stored next to each payload (field `meta` of a stream entry, compact JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Meta {
    /// The job's id: random, fixed for its whole life (retries and replays keep it).
    pub(crate) id: String,
    /// Attempts already made (0 for a fresh job).
    pub(crate) attempts: u32,
    /// When the job was first enqueued, unix ms.
    pub(crate) enqueued_at_ms: u64,
    /// The job's own retry policy, overriding the topic's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) retry: Option<RetryPolicy>,
}

impl Meta {
    pub(crate) fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

pub(crate) fn new_job_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The millisecond part of a stream entry id (`<ms>-<seq>`).
pub(crate) fn entry_ms(entry_id: &str) -> Option<u64> {
    entry_id.split('-').next()?.parse().ok()
}

/// One delivery of a job to a handler.
#[derive(Clone)]
pub struct Job<T> {
    pub(crate) payload: T,
    pub(crate) id: String,
    pub(crate) attempt: u32,
    pub(crate) enqueued_at: SystemTime,
    pub(crate) entry_id: String,
    pub(crate) topic: Arc<str>,
    pub(crate) group: Arc<str>,
}

impl<T: fmt::Debug> fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("entry_id", &self.entry_id)
            .field("payload", &self.payload)
            .finish()
    }
}

impl<T> Job<T> {
    /// The decoded payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Take the payload out.
    pub fn into_payload(self) -> T {
        self.payload
    }

    /// The job id: random, the same on every attempt, retry and replay. Use it to make
    /// handlers idempotent (delivery is at-least-once).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which attempt this is, starting at 1. Redeliveries after a crash do not count as
    /// attempts (Redis counts those deliveries; too many make the job poison).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the job was first enqueued.
    pub fn enqueued_at(&self) -> SystemTime {
        self.enqueued_at
    }

    /// The Redis stream entry id of this delivery (changes on retries).
    pub fn entry_id(&self) -> &str {
        &self.entry_id
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The consumer group handling it.
    pub fn group(&self) -> &str {
        &self.group
    }
}

/// A handler's verdict on a failed attempt: retry (after the policy's backoff or a given delay)
/// or give up at once.
///
/// Any `std::error::Error` converts into a plain retry, so `?` works in handlers. `JobError`
/// itself deliberately does not implement `std::error::Error` (that would clash with this
/// conversion).
#[derive(Debug)]
pub struct JobError {
    pub(crate) message: String,
    pub(crate) kind: FailureKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Retry(Option<Duration>),
    Fatal,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl JobError {
    /// Retry after the policy's backoff (if attempts remain).
    pub fn retry(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            kind: FailureKind::Retry(None),
        }
    }

    /// Retry after `delay` instead of the policy's backoff (if attempts remain), e.g. when a
    /// downstream service said `Retry-After`.
    pub fn retry_after(message: impl fmt::Display, delay: Duration) -> Self {
        Self {
            message: message.to_string(),
            kind: FailureKind::Retry(Some(delay)),
        }
    }

    /// Don't retry: the job goes to the dead-letter stream now.
    pub fn fatal(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            kind: FailureKind::Fatal,
        }
    }

    /// The error text stored with a dead letter.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True for [`JobError::fatal`].
    pub fn is_fatal(&self) -> bool {
        self.kind == FailureKind::Fatal
    }
}

impl<E: std::error::Error> From<E> for JobError {
    fn from(err: E) -> Self {
        JobError::retry(err)
    }
}

/// The longest delay a job may be given, [`EnqueueOptions::delay`] or
/// [`EnqueueOptions::run_at`] (365 days), and the longest dedup TTL
/// ([`EnqueueOptions::dedup`]). Longer ones are refused: a job parked for decades is a typo
/// (`10000y` for `10000s`), not a plan, and due times must stay exact unix milliseconds.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Options of one enqueue: delay, dedup, retry override.
///
/// The builders never fail; the values are checked when the job is enqueued (or earlier with
/// [`EnqueueOptions::check`]), and a refused one is a [`crate::DispatchError::Config`] naming
/// the field (`delay`, `run_at`, `dedup_ttl`).
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    pub(crate) when: When,
    pub(crate) dedup: Option<(String, Duration)>,
    pub(crate) retry: Option<RetryPolicy>,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) enum When {
    #[default]
    Now,
    At(SystemTime),
    In(Duration),
}

fn days(d: Duration) -> u64 {
    d.as_secs() / 86_400
}

impl EnqueueOptions {
    /// Run as soon as possible (the default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Run no earlier than `at` (the producer's clock). A past time means now; more than
    /// [`MAX_DELAY`] ahead is refused (field `run_at`).
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.when = When::At(at);
        self
    }

    /// Run after `delay`, counted on the Redis server's clock; at most [`MAX_DELAY`] (field
    /// `delay`).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.when = When::In(delay);
        self
    }

    /// Drop this job if another one with the same `key` was enqueued on this topic within
    /// `ttl` (the key expires after it). `ttl` must be 1 ms to [`MAX_DELAY`] (field
    /// `dedup_ttl`): a zero TTL would silently disable dedup, so it is refused.
    pub fn dedup(mut self, key: impl Into<String>, ttl: Duration) -> Self {
        self.dedup = Some((key.into(), ttl));
        self
    }

    /// Retry this job with `policy` instead of the topic's.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Check the values now (enqueueing checks them too): a delay or `run_at` more than
    /// [`MAX_DELAY`] ahead, or a dedup TTL under 1 ms or over [`MAX_DELAY`], is refused with an
    /// error naming the field.
    pub fn check(&self) -> Result<(), ConfigError> {
        // Built only on a refusal: this runs for every enqueued job.
        let limit = || format!("must be at most {} days", days(MAX_DELAY));
        match self.when {
            When::Now => {}
            When::In(delay) if delay > MAX_DELAY => {
                return Err(ConfigError::new("delay", limit()));
            }
            When::In(_) => {}
            When::At(at) => {
                let ahead = at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                if ahead > MAX_DELAY {
                    return Err(ConfigError::new(
                        "run_at",
                        format!("{} ahead ({} days given)", limit(), days(ahead)),
                    ));
                }
            }
        }
        if let Some((_, ttl)) = &self.dedup {
            if *ttl < Duration::from_millis(1) {
                return Err(ConfigError::new(
                    "dedup_ttl",
                    "must be at least 1ms (a zero TTL would disable dedup)",
                ));
            }
            if *ttl > MAX_DELAY {
                return Err(ConfigError::new("dedup_ttl", limit()));
            }
        }
        Ok(())
    }
}

/// What happened to an enqueued job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Enqueued {
    /// In the stream now.
    Queued {
        /// The new job's id.
        job_id: String,
        /// Its stream entry id.
        entry_id: String,
    },
    /// In the delayed set; moved into the stream when due.
    Delayed {
        /// The new job's id.
        job_id: String,
        /// When it is due, unix ms.
        due_ms: u64,
    },
    /// Dropped: a job with the same dedup key was enqueued within the TTL.
    Duplicate {
        /// The id of the job that holds the dedup key.
        existing_job_id: String,
    },
}

impl Enqueued {
    /// The id of the job this call created, if it created one.
    pub fn job_id(&self) -> Option<&str> {
        match self {
            Enqueued::Queued { job_id, .. } | Enqueued::Delayed { job_id, .. } => Some(job_id),
            Enqueued::Duplicate { .. } => None,
        }
    }
}
