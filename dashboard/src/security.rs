//! What guards every request: the `Host` check (against DNS rebinding, when bound to
//! loopback), HTTP basic auth (when configured), and for `POST`s the read-only switch (405) and
//! the CSRF token (403). The token is random per process and handed to the page by
//! `GET /api/session`, which another site's script cannot read (same-origin policy); every
//! mutation must send it back in the `X-CSRF-Token` header.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine;

use crate::{
    config::{BasicAuth, constant_time_eq},
    error::ApiError,
};

/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What the guard checks against.
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) auth: Option<BasicAuth>,
    pub(crate) read_only: bool,
    pub(crate) csrf_token: String,
    /// `Host` values accepted (empty: any).
    pub(crate) hosts: Vec<String>,
}

impl Guard {
    pub(crate) fn new(
        auth: Option<BasicAuth>,
        read_only: bool,
        addr: std::net::SocketAddr,
    ) -> Self {
        let hosts = if addr.ip().is_loopback() {
            let port = addr.port();
            vec![
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ]
        } else {
            Vec::new()
        };
        Self {
            auth,
            read_only,
            csrf_token: format!("{:032x}", rand::random::<u128>()),
            hosts,
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(auth) = &self.auth else {
            return true;
        };
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(encoded) = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        auth.accepts(&decoded[..colon], &decoded[colon + 1..])
    }
}

/// The middleware.
pub(crate) async fn guard(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if !guard.hosts.is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !guard.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "unexpected Host {host:?}: open the dashboard at http://{}/",
                    guard.hosts[0]
                ),
            )
            .into_response();
        }
    }
    if !guard.authorized(headers) {
        let mut response =
            ApiError::new(StatusCode::UNAUTHORIZED, "sign in (HTTP basic auth)").into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sluice dashboard\", charset=\"UTF-8\""),
        );
        return response;
    }
    if request.method() == Method::POST {
        if guard.read_only {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "the dashboard is read-only (--read-only): no actions",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        let token = headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if !constant_time_eq(token, guard.csrf_token.as_bytes()) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token header (get it from GET /api/session)",
            )
            .into_response();
        }
    }
    next.run(request).await
}
