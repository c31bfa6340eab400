//! Whether the server may evict the limiter's keys: asked once per limiter, in the background.
//!
//! A key Redis evicts under memory pressure forgets what it admitted, so the limiter
//! under-counts (a denied key comes back allowed). Only a [`RedisHandle`] can be asked (other
//! connection types are left alone); the answer is logged once per process and kept for
//! [`crate::Limiter::server_eviction`].

use std::{
    any::Any,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use sluice_shared::{Eviction, RedisHandle};
use tokio::sync::watch;

/// The probe's state, shared by a limiter's clones.
#[derive(Debug)]
pub(crate) struct EvictionProbe {
    started: AtomicBool,
    /// `None` while the check runs (or has not started); then its answer, `None` when there is
    /// none (Redis unreachable, or not a [`RedisHandle`]).
    tx: watch::Sender<Option<Option<Eviction>>>,
}

/// Warnings already given in this process (a program often builds several limiters).
static WARNED_POSSIBLE: AtomicBool = AtomicBool::new(false);
static WARNED_UNKNOWN: AtomicBool = AtomicBool::new(false);

impl EvictionProbe {
    pub(crate) fn new() -> Self {
        Self {
            started: AtomicBool::new(false),
            tx: watch::channel(None).0,
        }
    }

    /// Start the check on the current runtime, once, if `conn` is a [`RedisHandle`]. Without a
    /// runtime it is left for a later call.
    pub(crate) fn start<C: Clone + Send + 'static>(&self, conn: &C, timeout: Duration) {
        if self.started.load(Ordering::Relaxed) {
            return;
        }
        let Some(handle) = (conn as &dyn Any).downcast_ref::<RedisHandle>() else {
            self.started.store(true, Ordering::Relaxed);
            self.tx.send_replace(Some(None));
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut handle = handle.clone();
        let tx = self.tx.clone();
        runtime.spawn(async move {
            // CONFIG GET is cheap; a slow server still gets a second.
            let wait = timeout.max(Duration::from_secs(1));
            let answer = match tokio::time::timeout(wait, handle.eviction()).await {
                Ok(Ok(eviction)) => {
                    report(&eviction);
                    Some(eviction)
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "maxmemory-policy not checked");
                    None
                }
                Err(_) => {
                    tracing::debug!("maxmemory-policy not checked: timed out");
                    None
                }
            };
            tx.send_replace(Some(answer));
        });
    }

    /// The answer, once the check has run.
    pub(crate) fn get(&self) -> Option<Eviction> {
        self.tx.borrow().clone().flatten()
    }

    /// The answer, waiting at most `wait` for the check to finish.
    pub(crate) async fn wait(&self, wait: Duration) -> Option<Eviction> {
        let mut rx = self.tx.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        self.get()
    }
}

/// Log what matters, once per process.
fn report(eviction: &Eviction) {
    match eviction {
        Eviction::Possible { .. } => {
            if !WARNED_POSSIBLE.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "{}: an evicted limiter key forgets what it admitted, so the limiter \
                     under-counts (a denied key may be allowed again)",
                    eviction.describe()
                );
            }
        }
        Eviction::Unknown { .. } => {
            if !WARNED_UNKNOWN.swap(true, Ordering::Relaxed) {
                tracing::warn!("{}", eviction.describe());
            }
        }
        _ => tracing::debug!("{}", eviction.describe()),
    }
}
