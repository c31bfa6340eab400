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
        if config.uses_tls() {
            tls_probe(config).await?;
        }
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
            Ok(Err(e)) => Err(match tls_refusal(&e) {
                Some(reason) => RedisError::Tls(format!(
                    "the handshake with {} failed: {reason}",
                    config.describe()
                )),
                None => e.into(),
            }),
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
                    let Ok(client) = client(url, config) else {
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
                    // A user the ACL doesn't allow to read the slot map: say which command.
                    if let Ok(Err(refused)) = tokio::time::timeout(
                        deadline,
                        redis::cmd("CLUSTER")
                            .arg("SLOTS")
                            .query_async::<Value>(&mut conn),
                    )
                    .await
                        && refused.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
                    {
                        return Err(refused.into());
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
                let client = client(url, config)?;
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
                let client = cluster_builder(urls, config, config.response_timeout())?.build()?;
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
                let client = client(url, config)?;
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
                let client = cluster_builder(urls, config, timeout)?.build()?;
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

    /// Run `cmd` on the master serving `key`'s Cluster slot (on one server: on it). For
    /// commands that name no key but must run where a key lives, such as a `SCAN` for the keys
    /// of one hash tag.
    pub async fn query_on_node_of<T: redis::FromRedisValue>(
        &mut self,
        cmd: Cmd,
        key: &[u8],
    ) -> Result<T, RedisError> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        let route = Route::new(crate::keys::slot(key), SlotAddr::Master);
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
        let value = self.route(cmd, routing).await?;
        if let Value::ServerError(e) = value {
            return Err(redis::RedisError::from(e).into());
        }
        redis::from_redis_value(value).map_err(|e| RedisError::Protocol(e.to_string()))
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

/// A client for `url`, with the config's TLS files when it has them (`rediss://` without them
/// trusts the system's roots).
fn client(url: &str, config: &RedisConfig) -> Result<redis::Client, RedisError> {
    match config.tls() {
        Some(tls) => {
            let certs = tls
                .certificates()
                .map_err(|e| RedisError::Tls(e.to_string()))?;
            Ok(redis::Client::build_with_tls(url, certs)?)
        }
        None => Ok(redis::Client::open(url)?),
    }
}

/// A refused certificate surfaces from redis-rs as an I/O error carrying rustls' reason
/// ("invalid peer certificate: Expired"); say it is TLS, not an outage.
fn tls_refusal(err: &redis::RedisError) -> Option<String> {
    let text = err.to_string();
    [
        "invalid peer certificate",
        "certificate",
        "CertificateRequired",
        "HandshakeFailure",
    ]
    .iter()
    .any(|needle| text.contains(needle))
    .then_some(text)
}

/// One connection to the first TLS address, no retries: a refused certificate is reported at
/// once as [`RedisError::Tls`] instead of being retried by the reconnecting handle until the
/// connect deadline. Other failures are left to the handle's own connect.
async fn tls_probe(config: &RedisConfig) -> Result<(), RedisError> {
    let url = match config.topology() {
        Topology::Standalone { url } => url,
        Topology::Cluster { urls } => match urls.first() {
            Some(url) => url,
            None => return Ok(()),
        },
    };
    let client = client(url, config)?;
    let conn_config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout()))
        .set_response_timeout(Some(config.response_timeout()));
    match client
        .get_multiplexed_async_connection_with_config(&conn_config)
        .await
    {
        Err(e) => match tls_refusal(&e) {
            Some(reason) => Err(RedisError::Tls(format!(
                "the handshake with {} failed: {reason}",
                crate::config::redact(url)
            ))),
            None => Ok(()),
        },
        Ok(_) => Ok(()),
    }
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
) -> Result<ClusterClientBuilder, RedisError> {
    let builder = ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(config.connect_timeout())
        .response_timeout(response_timeout)
        .retries(2)
        .min_retry_wait(10)
        .max_retry_wait(200);
    match config.tls() {
        Some(tls) => {
            let certs = tls
                .certificates()
                .map_err(|e| RedisError::Tls(e.to_string()))?;
            Ok(builder.certs(certs))
        }
        None => Ok(builder),
    }
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
