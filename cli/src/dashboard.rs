//! `sluice dashboard`: the web UI over the dispatcher's topics (`sluice-dashboard`), until
//! SIGTERM or Ctrl-C.
//!
//! Settings: the `[dashboard]` section of `--settings` and `SLUICE_DASHBOARD__*` (see
//! `settings.rs`): `addr`, `refresh`, `read_only`, `user` and `password` (basic auth; both or
//! neither); flags over both.

use std::{net::SocketAddr, time::Duration};

use clap::Args;
use sluice_dashboard::{BasicAuth, DEFAULT_ADDR, Dashboard, DashboardConfig};
use sluice_dispatcher::{Dispatcher, DispatcherOptions};
use tokio_util::sync::CancellationToken;

use crate::{
    Failure,
    args::{ConnArgs, DEFAULT_PREFIX},
    output, parse_duration, settings,
};

/// `sluice dashboard` flags.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Where to listen [default: dashboard.addr of --settings, else 127.0.0.1:8090].
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<SocketAddr>,
    /// Hide every action; the mutating endpoints answer 405 [default: dashboard.read_only].
    #[arg(long)]
    read_only: bool,
    /// How often Redis is read for the open pages, 100ms to 1m [default: dashboard.refresh,
    /// else 1s].
    #[arg(long, value_parser = parse_duration)]
    refresh: Option<Duration>,
}

/// The dashboard's config from flags over settings; errors name the flag or the setting.
fn config(args: &DashboardArgs) -> Result<DashboardConfig, Failure> {
    let s = &settings::get().dashboard;
    let default_addr: SocketAddr = DEFAULT_ADDR
        .parse()
        .map_err(|_| Failure::new("the default dashboard address does not parse"))?;
    let mut config = DashboardConfig::new()
        .set_addr(args.addr.or(s.addr).unwrap_or(default_addr))
        .set_read_only(args.read_only || s.read_only.unwrap_or(false));
    if let Some(refresh) = args.refresh.or(s.refresh) {
        config = config.set_refresh(refresh).map_err(|e| {
            if args.refresh.is_some() {
                Failure::flag("refresh", e.reason())
            } else {
                Failure::new(format!("settings: {}: {}", e.field(), e.reason()))
            }
        })?;
    }
    let auth = match (&s.user, &s.password) {
        (None, None) => None,
        (Some(user), Some(password)) => Some(
            BasicAuth::new(user.as_str(), password.as_str())
                .map_err(|e| Failure::new(format!("settings: {}: {}", e.field(), e.reason())))?,
        ),
        _ => {
            return Err(Failure::new(
                "settings: dashboard.user and dashboard.password go together (basic auth): \
                 give both or neither",
            ));
        }
    };
    Ok(config.set_auth(auth))
}

pub(crate) async fn run(args: DashboardArgs) -> Result<i32, Failure> {
    let config = config(&args)?;
    let redis = args.conn.config()?;
    let keyspace = args.conn.keyspace(DEFAULT_PREFIX)?;
    // The dashboard only looks (and replays what is already there): a server that may evict
    // keys is shown in every topic's stats rather than refused.
    let dispatcher = Dispatcher::connect_with(
        redis,
        keyspace.clone(),
        DispatcherOptions::new().allow_eviction(true),
    )
    .await
    .map_err(|e| Failure::new(format!("redis: {e}")))?;
    let token = CancellationToken::new();
    let read_only = config.read_only();
    let auth = config.auth().is_some();
    let dashboard = Dashboard::start(dispatcher, config, token.clone())
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    output::line(format_args!(
        "sluice dashboard: http://{}/ (redis {}, prefix {}{}{})",
        dashboard.addr(),
        args.conn.redis_shown(),
        keyspace.prefix(),
        if read_only { ", read-only" } else { "" },
        if auth { ", basic auth" } else { "" },
    ))?;
    tokio::spawn(crate::serve::stop_on_signal(token));
    dashboard
        .wait()
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    Ok(0)
}
