//! Errors: [`DashboardError`] for starting the server, and the JSON error every failed API call
//! answers with (`{"error": "..."}` and a status saying whose fault it is).

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use sluice_dispatcher::DispatchError;

/// Why the dashboard could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("dashboard server failed: {0}")]
    Serve(std::io::Error),
}

/// A failed API call: a status and one sentence.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        let status = match &e {
            DispatchError::NoSuchDeadLetter(_) => StatusCode::NOT_FOUND,
            DispatchError::Config(_) => StatusCode::BAD_REQUEST,
            e if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            DispatchError::NoSuchDeadLetter(id) => format!(
                "no dead letter with id {id}: it was already replayed, deleted or trimmed; \
                 nothing was changed"
            ),
            e => e.to_string(),
        };
        Self::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}
