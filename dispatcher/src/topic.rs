//! Topics: names, per-topic policy and the Redis keys of a topic.

use serde::{Deserialize, Serialize};
use sluice_shared::{ConfigError, Keyspace};

use crate::retry::RetryPolicy;

/// Default limit on an encoded payload: 512 KiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 512 * 1024;
/// Default (approximate) length cap of a topic's dead-letter stream.
pub const DEFAULT_DEAD_LETTER_MAX_LEN: u64 = 100_000;

/// A topic and its policy: retries, payload limit, dead-letter retention.
///
/// ```
/// use std::{num::NonZeroU32, time::Duration};
/// use sluice_dispatcher::{RetryPolicy, TopicConfig};
///
/// let policy = RetryPolicy::exponential(
///     NonZeroU32::new(3).unwrap(),
///     Duration::from_millis(200),
///     Duration::from_secs(30),
/// )?;
/// let topic = TopicConfig::new("orders")?.set_retry(policy).set_max_payload_bytes(64 * 1024)?;
/// assert_eq!(topic.name(), "orders");
/// assert!(TopicConfig::new("has space").is_err());
/// # Ok::<(), sluice_shared::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTopicConfig", into = "RawTopicConfig")]
pub struct TopicConfig {
    name: String,
    retry: RetryPolicy,
    max_payload_bytes: usize,
    dead_letter_max_len: u64,
}

/// Checks a topic or group name: 1 to 128 printable characters, without braces (they would
/// steal the hash tag), `:` (the key separator), whitespace or control characters.
pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 128 {
        return Err(ConfigError::new(field, "must be 1 to 128 bytes"));
    }
    if name
        .chars()
        .any(|c| matches!(c, '{' | '}' | ':') || c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::new(
            field,
            "must not contain braces, ':', whitespace or control characters",
        ));
    }
    Ok(())
}

impl TopicConfig {
    /// A topic with the default policy ([`RetryPolicy::default`], 512 KiB payloads).
    pub fn new(name: impl Into<String>) -> Result<Self, ConfigError> {
        let name = name.into();
        check_name("topic", &name)?;
        Ok(Self {
            name,
            retry: RetryPolicy::default(),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            dead_letter_max_len: DEFAULT_DEAD_LETTER_MAX_LEN,
        })
    }

    /// The topic's retry policy (jobs may carry their own).
    pub fn set_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Largest accepted encoded payload, 1 byte to 64 MiB.
    pub fn set_max_payload_bytes(mut self, bytes: usize) -> Result<Self, ConfigError> {
        if bytes == 0 || bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::new(
                "max_payload_bytes",
                "must be 1 byte to 64 MiB",
            ));
        }
        self.max_payload_bytes = bytes;
        Ok(self)
    }

    /// Approximate cap on the dead-letter stream's length (oldest dead letters go first).
    pub fn set_dead_letter_max_len(mut self, len: u64) -> Result<Self, ConfigError> {
        if len == 0 {
            return Err(ConfigError::new(
                "dead_letter_max_len",
                "must be greater than zero",
            ));
        }
        self.dead_letter_max_len = len;
        Ok(self)
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic's retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Largest accepted encoded payload.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    /// Approximate cap on the dead-letter stream's length.
    pub fn dead_letter_max_len(&self) -> u64 {
        self.dead_letter_max_len
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopicConfig {
    name: String,
    #[serde(default)]
    retry: Option<RetryPolicy>,
    #[serde(default = "default_max_payload")]
    max_payload_bytes: usize,
    #[serde(default = "default_dead_letter_max_len")]
    dead_letter_max_len: u64,
}

fn default_max_payload() -> usize {
    DEFAULT_MAX_PAYLOAD_BYTES
}

fn default_dead_letter_max_len() -> u64 {
    DEFAULT_DEAD_LETTER_MAX_LEN
}

impl TryFrom<RawTopicConfig> for TopicConfig {
    type Error = ConfigError;
    fn try_from(raw: RawTopicConfig) -> Result<Self, ConfigError> {
        Self::new(raw.name)?
            .set_retry(raw.retry.unwrap_or_default())
            .set_max_payload_bytes(raw.max_payload_bytes)?
            .set_dead_letter_max_len(raw.dead_letter_max_len)
    }
}

impl From<TopicConfig> for RawTopicConfig {
    fn from(c: TopicConfig) -> Self {
        Self {
            name: c.name,
            retry: Some(c.retry),
            max_payload_bytes: c.max_payload_bytes,
            dead_letter_max_len: c.dead_letter_max_len,
        }
    }
}

/// Every Redis key of one topic. All carry the topic's hash tag, so every script sees keys of
/// one Cluster slot.
#[derive(Debug, Clone)]
pub(crate) struct TopicKeys {
    keyspace: Keyspace,
    topic: String,
    /// The topic stream: every job, read by every group.
    pub(crate) stream: Vec<u8>,
    /// Sorted set of delayed jobs, due into `stream`.
    pub(crate) delayed: Vec<u8>,
    /// The dead-letter stream.
    pub(crate) dead: Vec<u8>,
}

impl TopicKeys {
    pub(crate) fn new(keyspace: &Keyspace, topic: &str) -> Self {
        let id = topic.as_bytes();
        Self {
            keyspace: keyspace.clone(),
            topic: topic.to_owned(),
            stream: keyspace.key(id, &["stream"]),
            delayed: keyspace.key(id, &["delayed"]),
            dead: keyspace.key(id, &["dead"]),
        }
    }

    /// The group's own stream of retries (only that group reads it).
    pub(crate) fn retry_stream(&self, group: &str) -> Vec<u8> {
        self.keyspace
            .key(self.topic.as_bytes(), &["group", group, "retry"])
    }

    /// The group's retries waiting for their backoff to pass, due into `retry_stream`.
    pub(crate) fn retry_delayed(&self, group: &str) -> Vec<u8> {
        self.keyspace
            .key(self.topic.as_bytes(), &["group", group, "delayed"])
    }

    /// What every key of the topic starts with: `<prefix>:{<topic>}:`.
    pub(crate) fn key_prefix(&self) -> Vec<u8> {
        let mut prefix = self.keyspace.key(self.topic.as_bytes(), &[]);
        prefix.push(b':');
        prefix
    }

    /// The dedup marker of `key`.
    pub(crate) fn dedup(&self, key: &str) -> Vec<u8> {
        self.keyspace.key(self.topic.as_bytes(), &["dedup", key])
    }

    /// The group's pause flag (`crate::pause`).
    pub(crate) fn paused(&self, group: &str) -> Vec<u8> {
        self.keyspace
            .key(self.topic.as_bytes(), &["group", group, "paused"])
    }

    /// The per-minute counts of unix hour `hour` (`crate::history`).
    pub(crate) fn history(&self, hour: u64) -> Vec<u8> {
        self.keyspace
            .key(self.topic.as_bytes(), &["history", &hour.to_string()])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn all_keys_share_one_slot() {
        let keys = TopicKeys::new(&Keyspace::new("app").unwrap(), "orders.created");
        let slot = sluice_shared::slot(&keys.stream);
        for key in [
            keys.delayed.clone(),
            keys.dead.clone(),
            keys.retry_stream("billing"),
            keys.retry_delayed("billing"),
            keys.dedup("any {thing} at all"),
            keys.paused("billing"),
            keys.history(493_000),
        ] {
            assert_eq!(sluice_shared::slot(&key), slot);
        }
        assert_eq!(keys.stream, b"app:{orders.created}:stream");
        let prefix = keys.key_prefix();
        assert_eq!(prefix, b"app:{orders.created}:");
        for key in [
            &keys.stream,
            &keys.delayed,
            &keys.dead,
            &keys.retry_stream("g"),
            &keys.retry_delayed("g"),
            &keys.dedup("d"),
        ] {
            assert!(key.starts_with(&prefix));
        }
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "a b", "a{b", "a:b", "x\n"] {
            assert!(TopicConfig::new(bad).is_err(), "{bad:?}");
        }
        assert!(TopicConfig::new("orders.created-v2").is_ok());
        assert!(
            TopicConfig::new("t")
                .unwrap()
                .set_max_payload_bytes(0)
                .is_err()
        );
        let c: TopicConfig =
            serde_json::from_str(r#"{"name":"t","max_payload_bytes":10}"#).unwrap();
        assert_eq!(c.max_payload_bytes(), 10);
        assert!(serde_json::from_str::<TopicConfig>(r#"{"name":"a b"}"#).is_err());
    }
}
