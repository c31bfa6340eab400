//! [`RateLimit`]: the service the layer wraps around an inner one, and what it answers.

use std::{
    fmt,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderValue, Request, Response, StatusCode, header::CONTENT_TYPE};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use redis::aio::ConnectionLike;
use sluice_limiter::{Check, LimitError};
use sluice_shared::RedisHandle;
use tower::Service;

use super::{
    body::ResponseBody,
    future::ResponseFuture,
    key::route_of,
    layer::{Config, MissingKey, OnLimiterError},
};
use crate::headers::{self, PolicyStatus};

/// The service a [`RateLimitLayer`](super::RateLimitLayer) makes: checks each request's
/// route rules for its key, then calls the inner service or answers itself. Clones share the
/// layer's config and limiter.
pub struct RateLimit<S, C = RedisHandle> {
    inner: S,
    config: Arc<Config<C>>,
}

impl<S, C> RateLimit<S, C> {
    pub(crate) fn new(inner: S, config: Arc<Config<C>>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, consuming the layer's.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C> Clone for RateLimit<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for RateLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, C, B, ResBody> Service<Request<B>> for RateLimit<S, C>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    ResBody: Send + 'static,
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The service polled ready is the one to call: keep it, leave a fresh clone behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        ResponseFuture::new(async move { config.handle(inner, req).await })
    }
}

/// What the layer decided before (maybe) calling the inner service.
enum Verdict {
    /// Call the inner service; add these headers to its response.
    Pass(Vec<(&'static str, String)>),
    /// Answer this instead.
    Answer(Response<String>),
}

impl<C> Config<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn handle<S, B, ResBody>(
        &self,
        mut inner: S,
        req: Request<B>,
    ) -> Result<Response<ResponseBody<ResBody>>, S::Error>
    where
        S: Service<Request<B>, Response = Response<ResBody>>,
    {
        let (parts, body) = req.into_parts();
        let verdict = self.decide(&parts).await;
        let req = Request::from_parts(parts, body);
        match verdict {
            Verdict::Pass(headers) => {
                let mut response = inner.call(req).await?.map(ResponseBody::inner);
                headers::append_to(response.headers_mut(), headers);
                Ok(response)
            }
            Verdict::Answer(answer) => Ok(answer.map(ResponseBody::own)),
        }
    }

    async fn decide(&self, parts: &http::request::Parts) -> Verdict {
        let grpc = is_grpc(parts);
        let route = route_of(parts);
        let Some(set) = self.rules.find(route) else {
            return Verdict::Pass(Vec::new());
        };
        let cost = self.cost.as_ref().map_or(1, |cost| cost(parts));
        if cost == 0 {
            return Verdict::Pass(Vec::new());
        }
        let key = match self.key.extract(parts) {
            Ok(key) => key,
            Err(missing) => {
                return match self.missing_key {
                    MissingKey::Skip => Verdict::Pass(Vec::new()),
                    MissingKey::Reject => Verdict::Answer(self.problem(
                        grpc,
                        StatusCode::BAD_REQUEST,
                        format!("the rate-limit key can't be read from this request: {missing} is missing"),
                        None,
                        Vec::new(),
                    )),
                };
            }
        };
        let id = set.id(&key);
        let checks: Vec<Check<'_>> = set
            .rules()
            .iter()
            .map(|rule| Check::new(rule, &id).cost(cost))
            .collect();
        let checked = self.limiter.check_all(&checks).await;
        let failed = checked.as_ref().is_err_and(|e| e.is_unavailable());
        // A load first: the shared flag is written only when it changes, not per request.
        if self.failing.load(Ordering::Relaxed) != failed
            && self.failing.swap(failed, Ordering::Relaxed) != failed
        {
            match &checked {
                Err(error) => {
                    tracing::warn!(%error, route, on_error = ?self.on_error, "rate limiter unavailable")
                }
                Ok(_) => tracing::info!("rate limiter available again"),
            }
        }
        match checked {
            Ok(multi) => {
                let policies: Vec<PolicyStatus> = set
                    .rules()
                    .iter()
                    .zip(&multi.decisions)
                    .map(|(rule, decision)| PolicyStatus::from_rule(rule, decision))
                    .collect();
                if multi.allowed {
                    return Verdict::Pass(headers::headers(&policies, None, self.style));
                }
                let retry_after = multi.retry_after();
                let denied_by = multi
                    .denied_by
                    .and_then(|i| set.rules().get(i))
                    .map_or("", |rule| rule.name());
                let detail = match retry_after {
                    Some(after) => format!(
                        "rate limit '{denied_by}' exceeded for route {route}; retry in {} s",
                        headers::seconds_up(after)
                    ),
                    None => format!("rate limit '{denied_by}' exceeded for route {route}"),
                };
                Verdict::Answer(self.problem(
                    grpc,
                    StatusCode::TOO_MANY_REQUESTS,
                    detail,
                    retry_after,
                    headers::headers(&policies, retry_after, self.style),
                ))
            }
            Err(LimitError::InsufficientCapacity {
                rule,
                cost,
                capacity,
            }) => Verdict::Answer(self.problem(
                grpc,
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "this request costs {cost} units, more than rule '{rule}' allows ({capacity}): it can never be admitted"
                ),
                None,
                Vec::new(),
            )),
            Err(error) => {
                if !error.is_unavailable() {
                    tracing::warn!(%error, route, "rate limiter refused the check");
                }
                match self.on_error {
                    OnLimiterError::FailOpen => Verdict::Pass(Vec::new()),
                    OnLimiterError::Unavailable => Verdict::Answer(self.problem(
                        grpc,
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the rate limiter is unavailable".to_owned(),
                        None,
                        Vec::new(),
                    )),
                }
            }
        }
    }

    /// An RFC 9457 problem document (`application/problem+json`): type, title, status,
    /// detail, and `retry_after` (seconds) on a denial, with `headers`. To a gRPC request, a
    /// gRPC status instead ([`grpc_status`]), with the same headers as metadata.
    fn problem(
        &self,
        grpc: bool,
        status: StatusCode,
        detail: String,
        retry_after: Option<Duration>,
        headers: Vec<(&'static str, String)>,
    ) -> Response<String> {
        if grpc {
            return grpc_status(status, &detail, headers);
        }
        let mut body = serde_json::json!({
            "type": self.problem_type,
            "title": status.canonical_reason().unwrap_or(""),
            "status": status.as_u16(),
            "detail": detail,
        });
        if let (Some(after), Some(map)) = (retry_after, body.as_object_mut()) {
            map.insert("retry_after".to_owned(), headers::seconds_up(after).into());
        }
        let mut response = Response::new(body.to_string());
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers::append_to(response.headers_mut(), headers);
        response
    }
}

/// Whether the request is gRPC (`content-type: application/grpc`, `application/grpc+proto`...).
fn is_grpc(parts: &http::request::Parts) -> bool {
    parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Bytes a `grpc-message` can't hold as they are (the gRPC HTTP/2 protocol: printable ASCII
/// but `%`; the rest percent-encoded).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// A gRPC "Trailers-Only" answer: HTTP 200 with `grpc-status` and `grpc-message` in the
/// headers and no body, so a gRPC client sees a status, not a transport error.
/// RESOURCE_EXHAUSTED (8) for a rate limit (429), as Google's APIs answer quota errors,
/// INVALID_ARGUMENT (3) for an unreadable key (400), UNAVAILABLE (14) for the limiter down
/// (503). The rate-limit headers and `retry-after` come along as metadata.
fn grpc_status(
    status: StatusCode,
    detail: &str,
    headers: Vec<(&'static str, String)>,
) -> Response<String> {
    let code: u16 = match status {
        StatusCode::TOO_MANY_REQUESTS => 8,
        StatusCode::BAD_REQUEST => 3,
        _ => 14,
    };
    let mut response = Response::new(String::new());
    let map = response.headers_mut();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    map.insert("grpc-status", HeaderValue::from(code));
    if let Ok(message) =
        HeaderValue::try_from(utf8_percent_encode(detail, GRPC_MESSAGE).to_string())
    {
        map.insert("grpc-message", message);
    }
    // gRPC metadata keys are lowercase; HTTP/2 lowercases header names anyway.
    headers::append_to(map, headers);
    response
}
