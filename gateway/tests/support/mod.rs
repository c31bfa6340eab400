//! A `sluice serve` started in-process on 127.0.0.1:0, a tonic client from the same protos,
//! and a minimal HTTP/1.1 client.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus::Registry;
use sluice_gateway::{
    Config, RateLimitService, ServiceOptions,
    envoy_types::pb::envoy::{
        extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor},
        service::ratelimit::v3::{
            RateLimitRequest, RateLimitResponse, rate_limit_service_client::RateLimitServiceClient,
        },
    },
    server::{ServeError, Server, ServerOptions},
};
use sluice_shared::{RedisConfig, RedisHandle};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub type Client = RateLimitServiceClient<tonic::transport::Channel>;

/// A running server; cancelled (and drained) on drop.
pub struct Running {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub service: Arc<RateLimitService>,
    pub token: CancellationToken,
    pub task: Option<JoinHandle<Result<(), ServeError>>>,
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl Running {
    pub async fn client(&self) -> Client {
        Client::connect(format!("http://{}", self.grpc))
            .await
            .expect("grpc connect")
    }

    /// Cancel and wait for the drain.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        self.token.cancel();
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("drained in time")
            .expect("server task")
    }
}

/// Options with a fresh prefix, so runs never share counters.
pub fn options(test: &str) -> ServiceOptions {
    let mut o = ServiceOptions::default();
    o.prefix = sluice_tests::unique_prefix(test);
    o.timeout = Duration::from_millis(200);
    o
}

pub async fn connect(spec: &str) -> RedisHandle {
    RedisHandle::connect(&RedisConfig::parse(spec).unwrap())
        .await
        .expect("redis")
}

/// Start a server over `redis` with `yaml` as its config file (watched for reloads).
pub async fn start_with(redis: RedisHandle, yaml: &str, options: ServiceOptions) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, yaml).unwrap();
    let config = Config::load(&config_path).expect("config");
    let registry = Registry::new();
    let service = Arc::new(RateLimitService::new(redis, config, options, &registry).unwrap());
    let mut server_options = ServerOptions::default();
    server_options.grpc_addr = Some("127.0.0.1:0".parse().unwrap());
    server_options.http_addr = Some("127.0.0.1:0".parse().unwrap());
    server_options.watch = Some(config_path.clone());
    server_options.reload_interval = Duration::from_millis(100);
    server_options.drain_timeout = Duration::from_secs(5);
    let server = Server::bind(Arc::clone(&service), registry, server_options)
        .await
        .unwrap();
    let (grpc, http) = (server.grpc_addr().unwrap(), server.http_addr().unwrap());
    let token = CancellationToken::new();
    let task = tokio::spawn(server.run(token.clone()));
    Running {
        grpc,
        http,
        service,
        token,
        task: Some(task),
        config_path,
        dir,
    }
}

pub async fn start(spec: &str, yaml: &str, options: ServiceOptions) -> Running {
    start_with(connect(spec).await, yaml, options).await
}

/// A descriptor of (key, value) entries.
pub fn desc(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| rate_limit_descriptor::Entry {
                key: (*k).to_owned(),
                value: (*v).to_owned(),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors,
        hits_addend: 0,
    }
}

pub async fn call(client: &mut Client, req: RateLimitRequest) -> RateLimitResponse {
    client
        .should_rate_limit(req)
        .await
        .expect("ShouldRateLimit")
        .into_inner()
}

/// The value of response header `name`.
pub fn header<'r>(response: &'r RateLimitResponse, name: &str) -> Option<&'r str> {
    response
        .response_headers_to_add
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// An HTTP/1.1 response: status, headers (lowercase names), body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// `GET path` on `addr`, `Connection: close`, within 10 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpReply {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        HttpReply {
            status,
            headers,
            body,
        }
    })
    .await
    .expect("http answered in time")
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    for _ in 0..10_000 {
        let Some((size, rest)) = body.split_once("\r\n") else {
            break;
        };
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Poll `f` every 50 ms until it is true or `limit` passes; true if it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    for _ in 0..10_000 {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The value of metric sample `line_prefix` (a full series, e.g.
/// `sluice_gateway_config_reloads_total{result="ok"}`) in a /metrics text.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}
