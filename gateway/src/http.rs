//! The HTTP front end (axum), for proxies that ask over HTTP (nginx `auth_request`, Traefik
//! ForwardAuth, Envoy's HTTP ext_authz):
//!
//! - `GET /v1/check?domain=D&descriptor=k:v,k:v[&descriptor=...][&hits=N][&deny_status=S]`:
//!   200 when the request may pass, else 429 (or `deny_status`, e.g. 403 for nginx's
//!   `auth_request`, which understands only 2xx, 401 and 403), with the IETF headers,
//!   `Retry-After` on a denial, and a JSON body with the statuses. In a descriptor, `,`
//!   separates entries and the first `:` of an entry its key from its value; a key or value
//!   holding `,`, `:` or `%` writes them percent-encoded (`%2C`, `%3A`, `%25`), and every
//!   other `%XX` is decoded too (`+` is a plain `+`).
//! - `GET /metrics`: the registry's metrics in the Prometheus text format.
//! - `GET /healthz`: 200 when the config is loaded and Redis answers, else 503, with a JSON
//!   body saying why (and Redis' eviction policy).

use std::{borrow::Cow, sync::Arc};

use axum::{
    Json, Router,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response as HttpResponse},
    routing::get,
};
use percent_encoding::percent_decode_str;
use prometheus::{Encoder, Registry, TextEncoder};

use crate::{
    request::RequestDescriptor,
    service::{CheckError, RateLimitService},
};

#[derive(Debug, Clone)]
struct AppState {
    service: Arc<RateLimitService>,
    registry: Registry,
}

/// The axum router: `/v1/check`, `/metrics` (gathered from `registry`), `/healthz`.
pub fn router(service: Arc<RateLimitService>, registry: Registry) -> Router {
    Router::new()
        .route("/v1/check", get(check))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState { service, registry })
}

/// A `/v1/check` query, parsed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckQuery {
    /// `domain`.
    pub domain: String,
    /// Each `descriptor`: its (key, value) entries.
    pub descriptors: Vec<Vec<(String, String)>>,
    /// `hits` (0 when absent: counts 1).
    pub hits: u64,
    /// `deny_status` (429 when absent).
    pub deny_status: u16,
}

fn decode(part: &str, what: &str) -> Result<String, String> {
    percent_decode_str(part)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| format!("{what} is not UTF-8 once percent-decoded: {part:?}"))
}

impl CheckQuery {
    /// Parse a raw query string (see the module docs); the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut query = CheckQuery {
            deny_status: 429,
            ..Default::default()
        };
        let mut domain = None;
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "domain" => domain = Some(decode(value, "domain")?),
                "descriptor" => {
                    let mut entries = Vec::new();
                    for entry in value.split(',') {
                        let Some((k, v)) = entry.split_once(':') else {
                            return Err(format!("descriptor entry {entry:?} must be key:value"));
                        };
                        let key = decode(k, "a descriptor key")?;
                        if key.is_empty() {
                            return Err(format!("descriptor entry {entry:?} has an empty key"));
                        }
                        entries.push((key, decode(v, "a descriptor value")?));
                    }
                    query.descriptors.push(entries);
                }
                "hits" => {
                    query.hits = decode(value, "hits")?
                        .parse()
                        .map_err(|_| format!("hits must be a whole number, not {value:?}"))?;
                }
                "deny_status" => {
                    query.deny_status = decode(value, "deny_status")?
                        .parse()
                        .ok()
                        .filter(|s| (400..=599).contains(s))
                        .ok_or_else(|| {
                            format!("deny_status must be an HTTP status 400 to 599, not {value:?}")
                        })?;
                }
                other => {
                    return Err(format!(
                        "unknown parameter {other:?} (domain, descriptor, hits, deny_status)"
                    ));
                }
            }
        }
        query.domain = domain.ok_or("missing parameter domain")?;
        if query.descriptors.is_empty() {
            return Err("missing parameter descriptor (key:value,key:value)".to_owned());
        }
        Ok(query)
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn check(State(state): State<AppState>, RawQuery(raw): RawQuery) -> HttpResponse {
    let query = match CheckQuery::parse(raw.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(message) => {
            state.service.metrics().error("bad_request");
            return error(StatusCode::BAD_REQUEST, message);
        }
    };
    let descriptors: Vec<RequestDescriptor<'_, (String, String)>> = query
        .descriptors
        .iter()
        .map(|entries| RequestDescriptor::new(entries))
        .collect();
    let response = match state
        .service
        .check(&query.domain, &descriptors, query.hits)
        .await
    {
        Ok(r) => r,
        Err(CheckError::BadRequest(message)) => return error(StatusCode::BAD_REQUEST, message),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let status = if response.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::from_u16(query.deny_status).unwrap_or(StatusCode::TOO_MANY_REQUESTS)
    };
    let mut headers = HeaderMap::new();
    crate::headers::append_to(
        &mut headers,
        response.headers(state.service.options().headers),
    );
    (status, headers, Json(&response)).into_response()
}

async fn metrics(State(state): State<AppState>) -> HttpResponse {
    state.service.refresh_metrics();
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn healthz(State(state): State<AppState>) -> HttpResponse {
    let health = state.service.health().await;
    let status = if health.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn queries_parse_with_percent_encoded_separators() {
        let q = CheckQuery::parse(
            "domain=web&descriptor=remote_address:2001%3Adb8%3A%3A1,path:/a%2Cb%25&descriptor=user:%C3%A9+x&hits=3&deny_status=403",
        )
        .unwrap();
        assert_eq!(q.domain, "web");
        assert_eq!(
            q.descriptors,
            vec![
                entries(&[("remote_address", "2001:db8::1"), ("path", "/a,b%")]),
                entries(&[("user", "é+x")]),
            ]
        );
        assert_eq!((q.hits, q.deny_status), (3, 403));
        let q = CheckQuery::parse("descriptor=k:&domain=d").unwrap();
        assert_eq!(q.descriptors, vec![entries(&[("k", "")])]);
        assert_eq!((q.hits, q.deny_status), (0, 429));
    }

    #[test]
    fn bad_queries_say_what_is_wrong() {
        let err = |raw: &str| CheckQuery::parse(raw).unwrap_err();
        assert!(err("descriptor=k:v").contains("domain"));
        assert!(err("domain=d").contains("descriptor"));
        assert!(err("domain=d&descriptor=k").contains("key:value"));
        assert!(err("domain=d&descriptor=:v").contains("empty key"));
        assert!(err("domain=d&descriptor=k:v&hits=-1").contains("hits"));
        assert!(err("domain=d&descriptor=k:v&deny_status=200").contains("400 to 599"));
        assert!(err("domain=d&descriptor=k:v&dmain=x").contains("unknown parameter"));
        assert!(err("domain=d&descriptor=k:%FF").contains("UTF-8"));
    }
}
