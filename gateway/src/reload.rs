//! Config reloads: [`watch`] polls the config path (a file, or a directory of files) and puts
//! a changed config in force without dropping a request; a config that fails to load is
//! refused (a log line, the reload-failed metric) and the old one stays in force.
//!
//! Polling, not file-system events: it needs no platform API, sees edits made through
//! symlinks (Kubernetes ConfigMaps swap a `..data` link) and on network file systems, and one
//! pass over a few small files a second costs nothing. A change is a change of the files'
//! contents (or of which files there are), so an editor's save that keeps the size and the
//! modification time is seen too.

use std::{
    collections::hash_map::DefaultHasher,
    fs,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::{config::load, service::RateLimitService};

/// A digest of what the config files hold now; `None` when they can't be read (a reload then
/// reports why).
pub fn fingerprint(path: &Path) -> Option<u64> {
    let files = load::files(path).ok()?;
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        fs::read(&file).ok()?.hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// Every `interval`, until `token` is cancelled: reload `path` into `service` when its files
/// changed since the last look (the first look is taken when the watch starts).
pub async fn watch(
    service: Arc<RateLimitService>,
    path: PathBuf,
    interval: Duration,
    token: CancellationToken,
) {
    let mut seen = fingerprint(&path);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = fingerprint(&path);
        if now == seen {
            continue;
        }
        seen = now;
        // The error is logged and counted by `reload`.
        let _ = service.reload(&path);
    }
}
