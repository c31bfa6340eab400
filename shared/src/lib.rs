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
//! # Dependencies and why
//! - `redis`: the protocol, `ConnectionManager` (auto-reconnect) and the async cluster client.
//! - `tokio`: the runtime redis-rs' async connections run on; timeouts.
//! - `serde` + `humantime-serde`: configs load from files, with durations written as `250ms`.
//! - `thiserror`: typed, `#[non_exhaustive]` error enums.
//! - `tracing`: structured logs, left to the application to collect.

pub mod config;
pub mod conn;
pub mod error;
pub mod keys;
pub mod server;

pub use config::{RedisConfig, Topology};
pub use conn::RedisHandle;
pub use error::{ConfigError, RedisError};
pub use keys::{Keyspace, hash_tag, slot};
pub use server::{Eviction, SAFE_EVICTION_POLICY};
