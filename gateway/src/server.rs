//! [`Server`]: the gRPC and HTTP listeners and the config watch around one
//! [`RateLimitService`], until a [`CancellationToken`] says stop: then no new connection is
//! accepted, calls in flight are answered (gRPC and HTTP graceful shutdown), and `run`
//! returns, or gives up after the drain deadline.

use std::{io, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use prometheus::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{grpc::GrpcService, http, reload, service::RateLimitService};

/// Where to listen and how to stop.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerOptions {
    /// The gRPC address (Envoy's `ShouldRateLimit`); `None`: no gRPC listener.
    pub grpc_addr: Option<SocketAddr>,
    /// The HTTP address (`/v1/check`, `/metrics`, `/healthz`); `None`: no HTTP listener.
    pub http_addr: Option<SocketAddr>,
    /// After the stop signal, the longest wait for calls in flight (default 10 s).
    pub drain_timeout: Duration,
    /// The config path to watch for changes; `None`: no reloads.
    pub watch: Option<PathBuf>,
    /// How often the config path is looked at (default 1 s).
    pub reload_interval: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            grpc_addr: None,
            http_addr: None,
            drain_timeout: Duration::from_secs(10),
            watch: None,
            reload_interval: Duration::from_secs(1),
        }
    }
}

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[source] io::Error),
    /// Calls were still in flight when the drain deadline passed.
    #[error("calls still in flight {0:?} after the stop signal; stopped without them")]
    DrainTimeout(Duration),
}

/// The listeners, bound (so their addresses are known before serving, e.g. port 0 in tests).
#[derive(Debug)]
pub struct Server {
    service: Arc<RateLimitService>,
    registry: Registry,
    grpc: Option<TcpListener>,
    http: Option<TcpListener>,
    options: ServerOptions,
}

async fn bind(addr: Option<SocketAddr>) -> Result<Option<TcpListener>, ServeError> {
    match addr {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|source| ServeError::Bind { addr, source }),
    }
}

impl Server {
    /// Bind the listeners `options` asks for. `/metrics` shows `registry` (where the service
    /// registered its metrics, and whatever else the caller put there).
    pub async fn bind(
        service: Arc<RateLimitService>,
        registry: Registry,
        options: ServerOptions,
    ) -> Result<Self, ServeError> {
        Ok(Self {
            grpc: bind(options.grpc_addr).await?,
            http: bind(options.http_addr).await?,
            service,
            registry,
            options,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serve until `token` is cancelled, then drain (see the module docs).
    pub async fn run(self, token: CancellationToken) -> Result<(), ServeError> {
        let Server {
            service,
            registry,
            grpc,
            http,
            options,
        } = self;
        let watch = options.watch.clone().map(|path| {
            tokio::spawn(reload::watch(
                Arc::clone(&service),
                path,
                options.reload_interval,
                token.child_token(),
            ))
        });
        let grpc = {
            let (service, token) = (Arc::clone(&service), token.clone());
            async move {
                let Some(listener) = grpc else { return Ok(()) };
                tonic::transport::Server::builder()
                    .add_service(GrpcService::server(service))
                    .serve_with_incoming_shutdown(
                        // Replies go out at once: without TCP_NODELAY a reply can wait
                        // ~40 ms for the client's delayed ACK (Nagle).
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        token.cancelled_owned(),
                    )
                    .await
                    .map_err(ServeError::Grpc)
            }
        };
        let http = {
            let token = token.clone();
            async move {
                let Some(listener) = http else { return Ok(()) };
                axum::serve(listener, http::router(service, registry))
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
                    .map_err(ServeError::Http)
            }
        };
        let both = async { tokio::try_join!(grpc, http).map(|_| ()) };
        let deadline = async {
            token.cancelled().await;
            tokio::time::sleep(options.drain_timeout).await;
        };
        let result = tokio::select! {
            result = both => result,
            () = deadline => Err(ServeError::DrainTimeout(options.drain_timeout)),
        };
        if let Some(watch) = watch {
            watch.abort();
        }
        result
    }
}
