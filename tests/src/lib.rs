//! Real Redis for tests: no mocks.
//!
//! * [`standalone_url`] and [`cluster_urls`] return servers shared by every test of a process.
//!   When `scripts/redis-up` has written its env file (`.redis-test/env` at the workspace root,
//!   or the file named by `SLUICE_REDIS_ENV`) and its servers answer, those are used; otherwise
//!   the fixture starts its own on free 127.0.0.1 ports, each watched by a tiny shell process
//!   that kills it when the test process exits.
//! * [`RedisServer`] and [`RedisCluster`] are private servers a test owns: it may kill them
//!   (`SIGKILL`) and restart them on the same port, and they die on `Drop`.
//! * Tests isolate themselves with [`unique_prefix`], not with separate servers.
//! * [`topology_test!`] turns one test body into two test cases, `<name>_standalone` and
//!   `<name>_cluster`, so a failure on one topology never hides the other's result.
//! * [`flush_scripts`] empties every node's script cache (the `NOSCRIPT` paths).
//! * [`tls::TlsFiles`] makes certificates (good and bad) for [`RedisServer::start_tls`].
#![allow(clippy::unwrap_used)] // a fixture that can't start Redis should fail the test loudly

pub mod acl;
pub mod tls;

use std::{
    collections::HashMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    thread::sleep,
    time::{Duration, Instant},
};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The env file `scripts/redis-up` writes.
pub fn env_file() -> PathBuf {
    std::env::var_os("SLUICE_REDIS_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".redis-test").join("env"))
}

/// A fresh key prefix, so concurrent tests never share keys.
pub fn unique_prefix(test: &str) -> String {
    format!(
        "t{}-{}-{:08x}",
        std::process::id(),
        test,
        rand::random::<u32>()
    )
}

fn read_env_file() -> Option<HashMap<String, String>> {
    let text = std::fs::read_to_string(env_file()).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

fn answers(url: &str) -> bool {
    redis::Client::open(url)
        .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(500)))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

/// URL of the shared standalone server (`redis://127.0.0.1:PORT`).
pub fn standalone_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Some(url) = read_env_file().and_then(|env| env.get("SLUICE_REDIS_URL").cloned()) {
            if answers(&url) {
                return url;
            }
            eprintln!("sluice-tests: {url} from the env file does not answer; starting a server");
        }
        let server = RedisServer::start_watched();
        let url = server.url();
        std::mem::forget(server); // lives as long as the process; the watcher reaps it
        url
    })
    .clone()
}

/// Seed URLs of the shared 3-master cluster.
pub fn cluster_urls() -> Vec<String> {
    static URLS: OnceLock<Vec<String>> = OnceLock::new();
    URLS.get_or_init(|| {
        if let Some(urls) = read_env_file().and_then(|env| env.get("SLUICE_CLUSTER_URLS").cloned())
        {
            let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
            if urls.iter().all(|u| answers(u)) {
                return urls;
            }
            eprintln!("sluice-tests: cluster from the env file does not answer; starting one");
        }
        let cluster = RedisCluster::start_watched(3);
        let urls = cluster.urls();
        std::mem::forget(cluster);
        urls
    })
    .clone()
}

/// The cluster as one connection string for `RedisConfig::parse` (comma-separated URLs).
pub fn cluster_spec() -> String {
    cluster_urls().join(",")
}

/// Both topologies, as `(name, connection string)`: every integration test runs on each.
pub fn topologies() -> Vec<(&'static str, String)> {
    vec![
        ("standalone", standalone_url()),
        ("cluster", cluster_spec()),
    ]
}

/// Write a test once, run it as two: `<name>_standalone` on [`standalone_url`] and
/// `<name>_cluster` on [`cluster_spec`]. The body sees `$topology` (`"standalone"` or
/// `"cluster"`, for assertion messages) and `$spec` (`&str`, for `RedisConfig::parse`).
/// Attributes (the test attribute included) apply to both cases; `fn` and `async fn` both work,
/// and one invocation may hold several tests.
///
/// ```ignore
/// sluice_tests::topology_test! {
///     #[tokio::test]
///     async fn counts_to_three(topology, spec) {
///         let handle = connect(spec).await;
///         assert_eq!(count(&handle).await, 3, "{topology}");
///     }
/// }
/// ```
#[macro_export]
macro_rules! topology_test {
    () => {};
    (
        $(#[$attr:meta])*
        async fn $name:ident($topology:ident, $spec:ident) $body:block
        $($rest:tt)*
    ) => {
        $crate::__pastey::paste! {
            $(#[$attr])*
            async fn [<$name _standalone>]() {
                let $topology: &str = "standalone";
                let __spec = $crate::standalone_url();
                let $spec: &str = &__spec;
                $body
            }

            $(#[$attr])*
            async fn [<$name _cluster>]() {
                let $topology: &str = "cluster";
                let __spec = $crate::cluster_spec();
                let $spec: &str = &__spec;
                $body
            }
        }
        $crate::topology_test! { $($rest)* }
    };
    (
        $(#[$attr:meta])*
        fn $name:ident($topology:ident, $spec:ident) $body:block
        $($rest:tt)*
    ) => {
        $crate::__pastey::paste! {
            $(#[$attr])*
            fn [<$name _standalone>]() {
                let $topology: &str = "standalone";
                let __spec = $crate::standalone_url();
                let $spec: &str = &__spec;
                $body
            }

            $(#[$attr])*
            fn [<$name _cluster>]() {
                let $topology: &str = "cluster";
                let __spec = $crate::cluster_spec();
                let $spec: &str = &__spec;
                $body
            }
        }
        $crate::topology_test! { $($rest)* }
    };
}

#[doc(hidden)]
pub use pastey as __pastey;

/// `SCRIPT FLUSH` on every node of `spec` (one URL, or comma-separated cluster URLs), so the
/// next script call meets `NOSCRIPT`.
pub fn flush_scripts(spec: &str) {
    for url in spec.split(',') {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    }
}

/// `CONFIG SET name value` on the server at `url` (a private server: the shared ones serve
/// every test at once).
pub fn config_set(url: &str, name: &str, value: &str) {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(&mut c)
        .unwrap();
}

/// The `field` of every entry of the stream `key`, as stored, oldest first, on `spec` (one URL
/// or comma-separated cluster URLs).
pub fn stream_field(spec: &str, key: &[u8], field: &str) -> Vec<Vec<u8>> {
    type Entry = (String, Vec<(String, Vec<u8>)>);
    let mut xrange = redis::cmd("XRANGE");
    xrange.arg(key).arg("-").arg("+");
    let entries: Vec<Entry> = if spec.contains(',') {
        let nodes: Vec<&str> = spec.split(',').collect();
        let mut c = redis::cluster::ClusterClient::new(nodes)
            .unwrap()
            .get_connection()
            .unwrap();
        xrange.query(&mut c).unwrap()
    } else {
        let mut c = redis::Client::open(spec).unwrap().get_connection().unwrap();
        xrange.query(&mut c).unwrap()
    };
    entries
        .into_iter()
        .map(|(_, fields)| {
            fields
                .into_iter()
                .find(|(k, _)| k == field)
                .map(|(_, v)| v)
                .unwrap()
        })
        .collect()
}

/// A free loopback port whose cluster-bus twin (`port + 10000`) is free as well.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let port = rand::random_range(20_000..30_000u16);
        let ok = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if ok {
            return port;
        }
    }
    panic!("no free loopback port pair found");
}

fn redis_server_binary() -> String {
    std::env::var("SLUICE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

/// A redis-server process owned by the caller: killed on `Drop`.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    cluster: bool,
    child: Option<Child>,
    watched: bool,
    /// `--tls-port` and the TLS arguments, for a server that also speaks TLS.
    tls: Option<(u16, Vec<String>)>,
    /// More `redis-server` arguments (`--appendonly yes`, `--replicaof ...`), kept for restarts.
    extra: Vec<String>,
}

impl RedisServer {
    /// Start a standalone server on a free port in a fresh temp dir.
    pub fn start() -> Self {
        Self::start_in(false, false)
    }

    fn start_watched() -> Self {
        Self::start_in(false, true)
    }

    fn start_in(cluster: bool, watched: bool) -> Self {
        let base = workspace_root().join(".redis-test");
        std::fs::create_dir_all(&base).unwrap();
        for _ in 0..5 {
            let port = free_port();
            let dir = base.join(format!("{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut server = Self {
                port,
                dir,
                cluster,
                child: None,
                watched,
                tls: None,
                extra: Vec::new(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start (is it installed? run scripts/setup)");
    }

    /// A standalone server that also listens for TLS on a second free port
    /// ([`RedisServer::tls_url`]), presenting `cert` (signed by `ca`, which it also uses to
    /// check client certificates); with `require_client_cert` it refuses clients without one
    /// (`tls-auth-clients yes`). Its plain port stays open for the fixture's own checks.
    pub fn start_tls(cert: &tls::CertPair, ca: &Path, require_client_cert: bool) -> Self {
        let mut server = Self::start();
        server.kill();
        let tls_port = free_port();
        let path = |p: &Path| p.to_str().unwrap().to_owned();
        let args = vec![
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            path(&cert.cert),
            "--tls-key-file".to_owned(),
            path(&cert.key),
            "--tls-ca-cert-file".to_owned(),
            path(ca),
            "--tls-auth-clients".to_owned(),
            if require_client_cert { "yes" } else { "no" }.to_owned(),
        ];
        server.tls = Some((tls_port, args));
        server.restart();
        server
    }

    /// A standalone server started with more `redis-server` arguments (for example
    /// `["--appendonly", "yes", "--appendfsync", "always"]`); they are kept for
    /// [`RedisServer::restart`].
    pub fn start_with_args<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut server = Self::start();
        server.kill();
        server.extra = args.into_iter().map(Into::into).collect();
        server.restart();
        server
    }

    /// A replica of `master` (`--replicaof 127.0.0.1 PORT`), plus `args`; it returns once the
    /// replica answers (the initial sync may still be under way: see
    /// [`RedisServer::wait_replica_synced`]).
    pub fn start_replica_of(master: &RedisServer, args: &[&str]) -> Self {
        let mut all = vec![
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master.port().to_string(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        Self::start_with_args(all)
    }

    /// Wait until this replica reports `master_link_status:up` (panics after `limit`).
    pub fn wait_replica_synced(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let up = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| {
                    redis::cmd("INFO")
                        .arg("replication")
                        .query::<String>(&mut c)
                })
                .map(|info| info.contains("master_link_status:up"))
                .unwrap_or(false);
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica on {} did not sync within {limit:?}",
                self.port
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// `SIGSTOP` the server: it keeps its sockets open and answers nothing (a stall, not a crash).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// `SIGCONT` a server stopped by [`RedisServer::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .arg(sig)
                .arg(pid.to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {sig} {pid} failed");
        }
    }

    /// `rediss://127.0.0.1:TLS_PORT` of a server made by [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _)| format!("rediss://127.0.0.1:{port}"))
    }

    /// Arguments for a server on `port` keeping its files in `dir`.
    pub fn args(port: u16, dir: &Path, cluster: bool) -> Vec<String> {
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.to_str().unwrap(),
            "--logfile",
            "redis.log",
            "--pidfile",
            "redis.pid",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if cluster {
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-require-full-coverage",
                    "yes",
                ]
                .map(String::from),
            );
        }
        args
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new(redis_server_binary())
            .args(Self::args(self.port, &self.dir, self.cluster))
            .args(self.tls.iter().flat_map(|(_, args)| args))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        if self.watched {
            // Reap the server when this (test) process ends, however it ends.
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill -9 {child} 2>/dev/null; rm -rf '{dir}'",
                    parent = std::process::id(),
                    child = child.id(),
                    dir = self.dir.display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
        }
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if answers(&self.url()) {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false; // exited: port taken, most likely
            }
            sleep(Duration::from_millis(20));
        }
        false
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding its files (log, pid file, cluster config).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `SIGKILL` the server (no shutdown, no save) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port and directory (a cluster node keeps its identity).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on {}",
                self.port
            );
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if !self.watched {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A private Redis Cluster of `n` masters (no replicas), all slots assigned.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Start `n` masters and join them into one cluster covering all 16384 slots.
    pub fn start(n: usize) -> Self {
        Self::start_with(n, false)
    }

    fn start_watched(n: usize) -> Self {
        Self::start_with(n, true)
    }

    fn start_with(n: usize, watched: bool) -> Self {
        assert!(n >= 1);
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| RedisServer::start_in(true, watched))
            .collect();
        let cluster = Self { nodes };
        cluster.form();
        cluster
    }

    /// A cluster of `n` masters that also speaks TLS: each node listens on a plain port (for
    /// the fixture) and a TLS port presenting `cert` (signed by `ca`); the cluster bus and
    /// replication run over TLS, and TLS clients are shown the TLS ports in `CLUSTER SLOTS`,
    /// so a `rediss://` client stays on TLS. See [`RedisCluster::tls_urls`].
    pub fn start_tls(n: usize, cert: &tls::CertPair, ca: &Path) -> Self {
        assert!(n >= 1);
        let path = |p: &Path| p.to_str().unwrap().to_owned();
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                let mut node = RedisServer::start_in(true, false);
                node.kill();
                let tls_port = free_port();
                let args = vec![
                    "--tls-port".to_owned(),
                    tls_port.to_string(),
                    "--tls-cluster".to_owned(),
                    "yes".to_owned(),
                    "--tls-replication".to_owned(),
                    "yes".to_owned(),
                    "--tls-cert-file".to_owned(),
                    path(&cert.cert),
                    "--tls-key-file".to_owned(),
                    path(&cert.key),
                    "--tls-ca-cert-file".to_owned(),
                    path(ca),
                    "--tls-auth-clients".to_owned(),
                    "no".to_owned(),
                ];
                node.tls = Some((tls_port, args));
                node.restart();
                node
            })
            .collect();
        let cluster = Self { nodes };
        cluster.form();
        cluster
    }

    /// `rediss://127.0.0.1:TLS_PORT` of every node of a cluster made by
    /// [`RedisCluster::start_tls`].
    pub fn tls_urls(&self) -> Vec<String> {
        self.nodes.iter().filter_map(RedisServer::tls_url).collect()
    }

    fn conn(url: &str) -> redis::Connection {
        redis::Client::open(url)
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }

    fn form(&self) {
        let n = self.nodes.len();
        let per = 16384 / n;
        for (i, node) in self.nodes.iter().enumerate() {
            let start = i * per;
            let end = if i + 1 == n { 16383 } else { (i + 1) * per - 1 };
            let mut c = Self::conn(&node.url());
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("ADDSLOTS");
            for slot in start..=end {
                cmd.arg(slot);
            }
            let _: () = cmd.query(&mut c).unwrap();
        }
        let mut first = Self::conn(&self.nodes[0].url());
        for node in &self.nodes[1..] {
            // With `tls-cluster yes` the bus listens on the TLS port + 10000.
            let port = node.tls.as_ref().map_or(node.port(), |(tls, _)| *tls);
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(port)
                .query(&mut first)
                .unwrap();
        }
        self.wait_healthy(Duration::from_secs(30));
    }

    /// Block until every node reports `cluster_state:ok` and knows all masters.
    pub fn wait_healthy(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let healthy = self.nodes.iter().all(|node| {
                let Ok(client) = redis::Client::open(node.url()) else {
                    return false;
                };
                let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(500))
                else {
                    return false;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut c)
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
                    && info.contains("cluster_slots_ok:16384")
            });
            if healthy {
                return;
            }
            assert!(Instant::now() < deadline, "cluster did not become healthy");
            sleep(Duration::from_millis(50));
        }
    }

    /// Seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The cluster as one connection string (comma-separated URLs).
    pub fn spec(&self) -> String {
        self.urls().join(",")
    }

    /// Node `i`, to kill or restart.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// The index of the node that serves `slot`.
    pub fn node_for_slot(&self, slot: u16) -> usize {
        let per = 16384 / self.nodes.len();
        (usize::from(slot) / per).min(self.nodes.len() - 1)
    }
}
