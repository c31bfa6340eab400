//! `sluice dashboard`: a web UI over the dispatcher, served by the binary itself.
//!
//! Pages: an overview of every topic and consumer group (depth, lag, pending, oldest pending
//! age, queue latency, delayed, dead letters, consumers and their idle times, processed and
//! failed per minute over the last hour and 24 hours), a page per topic (groups with pause and
//! resume, consumers, next delayed jobs, dead letters with replay, delete, replay all, purge)
//! and a job lookup by id. Plain HTML, CSS and JavaScript compiled into the binary; charts are
//! inline SVG drawn by the page's own script; nothing is fetched from elsewhere.
//!
//! One task reads Redis per refresh interval for every open page and publishes the snapshot
//! through a `watch` channel; pages follow it over Server-Sent Events. Everything a page shows
//! or does is also a JSON API under `/api/` (see `routes.rs` and `actions.rs`, and
//! `docs/DASHBOARD.md`).
//!
//! Safety: it listens on 127.0.0.1 unless told otherwise (and then checks the `Host` header
//! against DNS rebinding), takes optional HTTP basic auth, accepts actions only as `POST` with
//! the session's CSRF token, and with [`DashboardConfig::set_read_only`] hides every action and
//! answers 405 to the mutating endpoints.
//!
//! # Quick start
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let server = sluice_tests::standalone_url();
//! # let prefix = sluice_tests::unique_prefix("dashdoc");
//! use sluice_dashboard::{Dashboard, DashboardConfig};
//! use sluice_dispatcher::Dispatcher;
//! use sluice_shared::{Keyspace, RedisConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! let dispatcher = Dispatcher::connect(RedisConfig::parse(&server)?, Keyspace::new(prefix)?).await?;
//! let config = DashboardConfig::new().set_addr("127.0.0.1:0".parse()?); // any free port
//! let shutdown = CancellationToken::new();
//! let dashboard = Dashboard::start(dispatcher, config, shutdown.clone()).await?;
//! println!("open http://{}/", dashboard.addr());
//! shutdown.cancel();
//! dashboard.wait().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Layout
//!
//! - `config.rs`: [`DashboardConfig`], [`BasicAuth`].
//! - `error.rs`: [`DashboardError`]; the JSON error of the API.
//! - `snapshot.rs`: [`Snapshot`], everything the pages show, read in one pass.
//! - `refresher.rs`: the one task reading Redis, publishing snapshots through `watch`.
//! - `security.rs`: `Host` check, basic auth, read-only and CSRF checks (a middleware).
//! - `assets.rs`: the embedded page, script and style sheet (`assets/`).
//! - `routes.rs`: the router and the read endpoints.
//! - `events.rs`: `GET /api/events`, the Server-Sent Events stream.
//! - `actions.rs`: the `POST` endpoints.
//!
//! # Dependencies and why
//! - `axum`: the HTTP server (the gateway's too), with its SSE response type.
//! - `tokio-stream`: `WatchStream`, the refresher's channel as the SSE stream.
//! - `futures-util`: `take_until`, so event streams end at shutdown.
//! - `base64`: decoding the basic auth header.
//! - `percent-encoding`: query parameters.
//! - `rand`: the CSRF token.
//! - `serde`, `serde_json`: the API's JSON; `thiserror`: [`DashboardError`].
#![warn(missing_docs)]

mod actions;
mod assets;
mod config;
mod error;
mod events;
mod refresher;
mod routes;
mod security;
mod snapshot;

use std::{net::SocketAddr, sync::Arc};

use sluice_dispatcher::Dispatcher;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{BasicAuth, DEFAULT_ADDR, DEFAULT_REFRESH, DashboardConfig};
pub use error::DashboardError;
pub use security::CSRF_HEADER;
pub use snapshot::{
    SNAPSHOT_DEAD_LETTERS, SNAPSHOT_DELAYED, SNAPSHOT_PAYLOAD_BYTES, Snapshot, TopicView,
};

/// A running dashboard.
#[derive(Debug)]
pub struct Dashboard {
    addr: SocketAddr,
    server: JoinHandle<Result<(), std::io::Error>>,
    refresher: JoinHandle<()>,
}

impl Dashboard {
    /// Bind the address and start serving (and reading Redis) until `shutdown` is cancelled.
    pub async fn start(
        dispatcher: Dispatcher,
        config: DashboardConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, DashboardError> {
        let listener = tokio::net::TcpListener::bind(config.addr())
            .await
            .map_err(|source| DashboardError::Bind {
                addr: config.addr(),
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DashboardError::Bind {
                addr: config.addr(),
                source,
            })?;
        let (refresher, refresher_task) = refresher::Refresher::spawn(
            dispatcher.clone(),
            config.refresh(),
            config.read_only(),
            shutdown.clone(),
        );
        let state = routes::AppState {
            dispatcher,
            refresher,
            guard: Arc::new(security::Guard::new(
                config.auth().cloned(),
                config.read_only(),
                addr,
            )),
            shutdown: shutdown.clone(),
            refresh: config.refresh(),
        };
        let app = routes::router(state);
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        });
        Ok(Self {
            addr,
            server,
            refresher: refresher_task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Wait until it has stopped (after `shutdown`).
    pub async fn wait(self) -> Result<(), DashboardError> {
        if let Err(e) = self.refresher.await {
            tracing::error!(error = %e, "dashboard refresher failed");
        }
        match self.server.await {
            Ok(result) => result.map_err(DashboardError::Serve),
            Err(e) => Err(DashboardError::Serve(std::io::Error::other(e))),
        }
    }
}
