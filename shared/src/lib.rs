//! Shared plumbing for Sluice: connection config, a cheap-to-clone Redis handle for standalone
//! servers and Redis Cluster, typed errors and key naming.
//!
//! # Quick start
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let server = sluice_tests::standalone_url();
//! use sluice_shared::{Keyspace, RedisConfig, RedisHandle};
//!
//! let config = RedisConfig::parse(&server)?; // "redis://127.0.0.1:6379", or a cluster list
//! let mut redis = RedisHandle::connect(&config).await?;
//! let key = Keyspace::new("myapp")?.key(b"user:42", &["visits"]);
//! let visits: i64 = redis::cmd("INCR").arg(&key).query_async(&mut redis).await?;
//! assert!(visits >= 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Layout
//! - [`config`]: [`RedisConfig`], where Redis is (standalone or Cluster seeds) and how long to
//!   wait; parsing of `redis://` / `redis+cluster://` (and `rediss://`) addresses; loading
//!   from files.
//! - [`conn`]: [`RedisHandle`], the shared multiplexed handle, and dedicated connections for
//!   blocking reads; on connect, detection of an address that names the wrong topology.
//! - [`error`]: [`RedisError`] (what went wrong, sorted by what a caller can do) and
//!   [`ConfigError`] (a refused value, naming its field).
//! - [`keys`]: [`Keyspace`], key naming with `{hash tags}`, and the Cluster [`slot`] of a key.
//! - [`server`]: what Sluice must know of the server, e.g. whether it may evict keys
//!   ([`Eviction`]).
//! - [`tls`]: [`Tls`], the CA bundle and client certificate of `rediss://` connections.
//!
//! # Dependencies and why
//! - `redis`: the protocol, `ConnectionManager` (auto-reconnect) and the async cluster client.
//! - `tokio`: the runtime redis-rs' async connections run on; timeouts.
//! - `serde` + `humantime-serde`: configs load from files, with durations written as `250ms`.
//! - `thiserror`: typed, `#[non_exhaustive]` error enums.
//! - `tracing`: structured logs, left to the application to collect.
//! - `url`: parses addresses so a malformed one is refused with the reason (bad port, no host).
//! - `rustls` (through redis' `tokio-rustls-comp`): TLS in pure Rust, no OpenSSL to link; named
//!   here only to pick its `ring` crypto provider, since redis turns rustls' defaults off.

pub mod config;
pub mod conn;
pub mod error;
pub mod keys;
pub mod server;
pub mod tls;

pub use config::{RedisConfig, Topology};
pub use conn::RedisHandle;
pub use error::{ConfigError, RedisError};
pub use keys::{Keyspace, hash_tag, slot};
pub use server::{Eviction, SAFE_EVICTION_POLICY};
pub use tls::Tls;
