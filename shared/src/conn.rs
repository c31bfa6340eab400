//! A cheap-to-clone command handle over a standalone server or a Redis Cluster.

use std::{fmt, time::Duration};

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};

use crate::{
    config::{RedisConfig, Topology},
    error::RedisError,
};

/// A handle to Redis that every Sluice component shares.
///
/// Cloning is cheap: clones multiplex their commands over the same connection(s). On a
/// standalone server it is a redis-rs `ConnectionManager`, which reconnects in the background
/// after a failure; on a cluster it is redis-rs' async cluster connection, which follows slot
/// moves and reconnects to nodes by itself.
///
/// It implements [`redis::aio::ConnectionLike`], so any redis-rs command, pipeline or script
/// runs on it. Blocking commands (`XREADGROUP BLOCK`, `BLPOP`, ...) must not run on this shared
/// handle: take a [`RedisHandle::dedicated`] connection for them.
#[derive(Clone)]
pub struct RedisHandle {
    inner: Inner,
    cluster: bool,
}

#[derive(Clone)]
enum Inner {
    Managed(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Inner::Managed(_) => "managed",
            Inner::Multiplexed(_) => "dedicated",
            Inner::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisHandle").field("kind", &kind).finish()
    }
}

impl RedisHandle {
    /// Connect now; fails if Redis can't be reached within the connect timeout, or with
    /// [`RedisError::Topology`] when the address names the wrong kind of deployment (a cluster
    /// node given as one server, or a standalone server given as a cluster), which would
    /// otherwise fail later, and only for some keys.
    pub async fn connect(config: &RedisConfig) -> Result<Self, RedisError> {
        let handle = Self::connect_lazy(config)?;
        let mut probe = handle.clone();
        let deadline = config.connect_timeout() + config.response_timeout();
        let pinged = match tokio::time::timeout(
            deadline,
            redis::cmd("PING").query_async::<String>(&mut probe),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(RedisError::Timeout(deadline)),
        };
        match (config.topology(), pinged) {
            (Topology::Standalone { url }, Ok(())) => {
                if cluster_enabled(&mut probe, deadline).await == Some(true) {
                    let addr = host_port(url);
                    return Err(RedisError::Topology(format!(
                        "{} is a node of a Redis Cluster: connect with redis+cluster://{addr} \
                         (any node will do; the rest are discovered)",
                        crate::config::redact(url)
                    )));
                }
                Ok(handle)
            }
            (Topology::Cluster { urls }, Err(e)) => {
                // A cluster client pointed at standalone servers fails with "no nodes found"
                // or similar; ask the seeds directly to say what is wrong.
                for url in urls {
                    let Ok(client) = redis::Client::open(url.as_str()) else {
                        continue;
                    };
                    let Ok(Ok(mut conn)) =
                        tokio::time::timeout(deadline, client.get_multiplexed_async_connection())
                            .await
                    else {
                        continue;
                    };
                    if cluster_enabled(&mut conn, deadline).await == Some(false) {
                        return Err(RedisError::Topology(format!(
                            "{} is a standalone server, not a Redis Cluster node: connect with \
                             redis://{}",
                            crate::config::redact(url),
                            host_port(url)
                        )));
                    }
                }
                Err(e)
            }
            (_, result) => result.map(|()| handle),
        }
    }

    /// Build the handle without touching the network: the first command connects. Use this when
    /// a component must start (and apply its outage policy) while Redis is down.
    pub fn connect_lazy(config: &RedisConfig) -> Result<Self, RedisError> {
        match config.topology() {
            Topology::Standalone { url } => {
                let client = redis::Client::open(url.as_str())?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout()))
                    .set_response_timeout(Some(config.response_timeout()))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                let manager = client.get_connection_manager_lazy(manager_config)?;
                Ok(Self {
                    inner: Inner::Managed(manager),
                    cluster: false,
                })
            }
            Topology::Cluster { urls } => {
                let client = cluster_builder(urls, config, config.response_timeout()).build()?;
                // The per-connection config replaces the builder's response timeout (even
                // with None), so state both timeouts here too.
                let cluster_config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(config.connect_timeout())
                    .set_response_timeout(config.response_timeout());
                let conn = client.get_pending_async_connection_with_config(cluster_config);
                Ok(Self {
                    inner: Inner::Cluster(conn),
                    cluster: true,
                })
            }
        }
    }

    /// A connection of its own, for blocking reads (`XREADGROUP BLOCK`, `BLPOP`): it never
    /// shares a socket with other commands. `response_timeout` must exceed the longest block
    /// time used on it (`None`: wait forever, standalone only; a cluster uses one hour).
    pub async fn dedicated(
        config: &RedisConfig,
        response_timeout: Option<Duration>,
    ) -> Result<Self, RedisError> {
        match config.topology() {
            Topology::Standalone { url } => {
                let client = redis::Client::open(url.as_str())?;
                let conn_config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout()))
                    .set_response_timeout(response_timeout);
                let conn = client
                    .get_multiplexed_async_connection_with_config(&conn_config)
                    .await?;
                Ok(Self {
                    inner: Inner::Multiplexed(conn),
                    cluster: false,
                })
            }
            Topology::Cluster { urls } => {
                let timeout = response_timeout.unwrap_or(Duration::from_secs(3600));
                let client = cluster_builder(urls, config, timeout).build()?;
                let conn = client.get_async_connection().await?;
                Ok(Self {
                    inner: Inner::Cluster(conn),
                    cluster: true,
                })
            }
        }
    }

    /// True when connected to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Send `cmd` where `routing` says (several nodes of a cluster, say); on one server the
    /// routing is moot and the command goes to it.
    pub(crate) async fn route(
        &mut self,
        cmd: Cmd,
        routing: redis::cluster_routing::RoutingInfo,
    ) -> redis::RedisResult<Value> {
        match &mut self.inner {
            Inner::Cluster(c) => c.route_command(cmd, routing).await,
            Inner::Managed(c) => c.req_packed_command(&cmd).await,
            Inner::Multiplexed(c) => c.req_packed_command(&cmd).await,
        }
    }
}

/// `Some(true)` on a cluster node, `Some(false)` on a standalone server, `None` when `INFO` is
/// not allowed (an ACL) or does not answer: then nothing is concluded.
async fn cluster_enabled<C: ConnectionLike>(conn: &mut C, deadline: Duration) -> Option<bool> {
    let info = tokio::time::timeout(
        deadline,
        redis::cmd("INFO")
            .arg("cluster")
            .query_async::<String>(conn),
    )
    .await
    .ok()?
    .ok()?;
    info.lines()
        .find_map(|l| l.trim().strip_prefix("cluster_enabled:"))
        .map(|v| v.trim() == "1")
}

/// `host:port` of a URL, for suggestions in errors (credentials never included).
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

fn cluster_builder(
    urls: &[String],
    config: &RedisConfig,
    response_timeout: Duration,
) -> ClusterClientBuilder {
    ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(config.connect_timeout())
        .response_timeout(response_timeout)
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(200)
}

impl ConnectionLike for RedisHandle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Managed(c) => c.req_packed_command(cmd),
            Inner::Multiplexed(c) => c.req_packed_command(cmd),
            Inner::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Inner::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Managed(c) => c.get_db(),
            Inner::Multiplexed(c) => c.get_db(),
            Inner::Cluster(c) => c.get_db(),
        }
    }
}
