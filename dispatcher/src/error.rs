//! Typed errors of the dispatcher.

use sluice_shared::{ConfigError, RedisError, SAFE_EVICTION_POLICY};

/// What went wrong in a dispatcher call, sorted by what a caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// Talking to Redis failed; [`RedisError::is_unavailable`] tells whether a retry may help.
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// A setting was refused; the error names the field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The encoded job is larger than the topic allows. Nothing was written.
    #[error("payload of {size} bytes exceeds the topic's limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the encoded payload.
        size: usize,
        /// The topic's `max_payload_bytes`.
        limit: usize,
    },
    /// The job could not be encoded by the codec. Nothing was written.
    #[error("could not encode the payload: {0}")]
    Encode(String),
    /// A message or stored job could not be decoded.
    #[error("could not decode the payload: {0}")]
    Decode(String),
    /// Redis may evict keys under memory pressure (its `maxmemory-policy` is not
    /// `noeviction`), so queued jobs could vanish; refused unless the user opted in with
    /// [`crate::DispatcherOptions::allow_eviction`].
    #[error(
        "maxmemory-policy is {policy}: Redis may evict queued jobs under memory pressure and \
         they would vanish without a trace; set maxmemory-policy to {SAFE_EVICTION_POLICY} \
         (every Sluice key has a TTL, so volatile-* policies evict them too), or opt in to \
         eviction (allow_eviction)"
    )]
    EvictionPossible {
        /// The server's `maxmemory-policy` (on a cluster, the first master's that can evict).
        policy: String,
    },
    /// A dead letter with this id does not exist (already replayed, or trimmed).
    #[error("no dead letter with id {0}")]
    NoSuchDeadLetter(String),
}

impl From<redis::RedisError> for DispatchError {
    fn from(err: redis::RedisError) -> Self {
        DispatchError::Redis(err.into())
    }
}

impl DispatchError {
    /// True when the failure is about reaching Redis (down, slow, failing over): retrying the
    /// same call later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DispatchError::Redis(e) if e.is_unavailable())
    }
}
