//! What Sluice needs to know about the server it talks to: whether Redis may evict its keys.
//!
//! Every Sluice key has a TTL, so under memory pressure any eviction policy but `noeviction`
//! (the `volatile-*` ones included) may drop them: a dispatcher loses queued jobs, a limiter
//! forgets what it admitted and under-counts. `noeviction` is the only safe value.

use redis::{
    Value,
    aio::ConnectionLike,
    cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo},
};

use crate::{conn::RedisHandle, error::RedisError};

/// The only `maxmemory-policy` under which Redis never drops a Sluice key by itself.
pub const SAFE_EVICTION_POLICY: &str = "noeviction";

/// Whether Redis may evict keys, read from `CONFIG GET maxmemory-policy` on every master.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Eviction {
    /// Every master answers `noeviction`: keys leave only by TTL or deletion.
    Never,
    /// A master may evict keys under memory pressure.
    Possible {
        /// Its `maxmemory-policy` (e.g. `allkeys-lru`).
        policy: String,
    },
    /// `CONFIG GET` was refused (an ACL without `+config|get`, or a renamed command), so the
    /// policy can't be known.
    Unknown {
        /// The server's refusal.
        reason: String,
    },
}

impl Eviction {
    /// One sentence for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Eviction::Never => "maxmemory-policy is noeviction".to_owned(),
            Eviction::Possible { policy } => format!(
                "maxmemory-policy is {policy}: Redis may evict keys under memory pressure \
                 (the safe value is {SAFE_EVICTION_POLICY})"
            ),
            Eviction::Unknown { reason } => format!(
                "maxmemory-policy could not be read ({reason}); make sure it is \
                 {SAFE_EVICTION_POLICY}"
            ),
        }
    }
}

impl RedisHandle {
    /// Read `maxmemory-policy` on the server (on a cluster, on every master).
    pub async fn eviction(&mut self) -> Result<Eviction, RedisError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        let reply = if self.is_cluster() {
            let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            self.route(cmd, routing).await
        } else {
            self.req_packed_command(&cmd).await
        };
        let reply = match reply {
            Ok(v) => v,
            Err(e) if refused(&e) => {
                return Ok(Eviction::Unknown { reason: reason(&e) });
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(e) = first_error(&reply) {
            let e = redis::RedisError::from(e);
            if refused(&e) {
                return Ok(Eviction::Unknown { reason: reason(&e) });
            }
            return Err(e.into());
        }
        let mut policies = Vec::new();
        collect_policies(&reply, &mut policies);
        if policies.is_empty() {
            return Err(RedisError::Protocol(format!(
                "CONFIG GET maxmemory-policy: no policy in {reply:?}"
            )));
        }
        Ok(policies
            .into_iter()
            .find(|p| p != SAFE_EVICTION_POLICY)
            .map_or(Eviction::Never, |policy| Eviction::Possible { policy }))
    }
}

/// The server's words: `NOPERM this user has no permissions to run the 'config|get' command`.
fn reason(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        _ => e.to_string(),
    }
}

/// An ACL refusal, or `CONFIG` renamed away: the question can't be asked here.
fn refused(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("NOPERM"))
        || e.to_string().contains("NOPERM")
        || e.to_string().contains("unknown command")
}

/// An error reply anywhere in `v` (a cluster's per-node replies included).
fn first_error(v: &Value) -> Option<redis::ServerError> {
    match v {
        Value::ServerError(e) => Some(e.clone()),
        Value::Array(items) => items.iter().find_map(first_error),
        Value::Map(pairs) => pairs.iter().find_map(|(_, v)| first_error(v)),
        _ => None,
    }
}

/// The values paired with `maxmemory-policy` anywhere in a reply: a flat `[name, value]` array,
/// a RESP3 map, or a cluster's per-node map or array of those.
fn collect_policies(v: &Value, out: &mut Vec<String>) {
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    match v {
        Value::Array(items) => {
            if items.len() == 2 && text(&items[0]).as_deref() == Some("maxmemory-policy") {
                out.extend(text(&items[1]));
            } else {
                items.iter().for_each(|i| collect_policies(i, out));
            }
        }
        Value::Map(pairs) => {
            for (k, val) in pairs {
                if text(k).as_deref() == Some("maxmemory-policy") {
                    out.extend(text(val));
                } else {
                    collect_policies(val, out);
                }
            }
        }
        _ => {}
    }
}
