//! Whether Redis may evict the dispatcher's keys: checked when a dispatcher connects and when a
//! worker starts.
//!
//! Every key the dispatcher writes has a TTL or lives in a stream, and under memory pressure any
//! `maxmemory-policy` but `noeviction` (the `volatile-*` ones too) may drop it: queued jobs,
//! retries and dead letters vanish without a trace. So a policy that can evict is refused unless
//! the user opted in ([`crate::DispatcherOptions::allow_eviction`]). A policy that can't be
//! read (`CONFIG GET` refused by an ACL) is logged once and accepted.

use std::sync::atomic::{AtomicBool, Ordering};

use sluice_shared::{Eviction, RedisHandle};

use crate::error::DispatchError;

/// The opt-in and the "warned once" flag, shared by a dispatcher, its clones and its workers.
#[derive(Debug, Default)]
pub(crate) struct EvictionGuard {
    allow: bool,
    warned: AtomicBool,
}

impl EvictionGuard {
    pub(crate) fn new(allow: bool) -> Self {
        Self {
            allow,
            warned: AtomicBool::new(false),
        }
    }

    /// Read the policy; refuse one that can evict unless allowed. A policy allowed anyway, or
    /// one that can't be read, is logged once per dispatcher.
    pub(crate) async fn check(&self, redis: &RedisHandle) -> Result<Eviction, DispatchError> {
        let eviction = redis.clone().eviction().await?;
        match &eviction {
            Eviction::Never => {}
            Eviction::Possible { policy } if !self.allow => {
                return Err(DispatchError::EvictionPossible {
                    policy: policy.clone(),
                });
            }
            other => self.warn_once(other),
        }
        Ok(eviction)
    }

    fn warn_once(&self, eviction: &Eviction) {
        if self.warned.swap(true, Ordering::Relaxed) {
            return;
        }
        let what = eviction.describe();
        if matches!(eviction, Eviction::Possible { .. }) {
            tracing::warn!("{what}; allowed by allow_eviction: queued jobs may vanish");
        } else {
            tracing::warn!("{what}; going on");
        }
    }
}
