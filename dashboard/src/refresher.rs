//! The one task that reads Redis: once per refresh interval (or at once after an action), for
//! every open page together, publishing each [`Snapshot`] through a `watch` channel. Pages and
//! API calls read the latest snapshot; they never read Redis for it themselves.

use std::sync::Arc;

use sluice_dispatcher::Dispatcher;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::snapshot::{self, Cache, Snapshot};

/// A snapshot and its JSON, serialized once for every subscriber.
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) snapshot: Snapshot,
    pub(crate) json: Arc<str>,
}

/// The latest snapshot (`None` before the first read).
pub(crate) type Latest = watch::Receiver<Option<Arc<Published>>>;

/// Handles to the running refresher.
#[derive(Debug, Clone)]
pub(crate) struct Refresher {
    pub(crate) latest: Latest,
    kick: Arc<Notify>,
}

impl Refresher {
    /// Start the task; it ends with `shutdown` (and with it every event stream).
    pub(crate) fn spawn(
        dispatcher: Dispatcher,
        every: std::time::Duration,
        read_only: bool,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, latest) = watch::channel(None);
        let kick = Arc::new(Notify::new());
        let task = tokio::spawn(run(
            dispatcher,
            every,
            read_only,
            tx,
            kick.clone(),
            shutdown,
        ));
        (Self { latest, kick }, task)
    }

    /// Read Redis now (after an action), instead of at the next tick.
    pub(crate) fn refresh_now(&self) {
        self.kick.notify_one();
    }

    /// The latest snapshot, waiting for the first one.
    pub(crate) async fn current(&self) -> Option<Arc<Published>> {
        let mut rx = self.latest.clone();
        let seen = rx.wait_for(Option::is_some).await.ok()?;
        seen.clone()
    }
}

async fn run(
    dispatcher: Dispatcher,
    every: std::time::Duration,
    read_only: bool,
    tx: watch::Sender<Option<Arc<Published>>>,
    kick: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut cache = Cache::default();
    loop {
        let snapshot = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            s = snapshot::read(&dispatcher, &mut cache, read_only) => s,
        };
        for e in &snapshot.errors {
            tracing::warn!(error = %e, "dashboard refresh");
        }
        let json: Arc<str> = match serde_json::to_string(&snapshot) {
            Ok(json) => json.into(),
            Err(e) => {
                tracing::error!(error = %e, "snapshot did not serialize");
                Arc::from("{}")
            }
        };
        tx.send_replace(Some(Arc::new(Published { snapshot, json })));
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = kick.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}
