//! The router: pages, the JSON API under `/api/` (reads from the latest snapshot, plus the few
//! on-demand reads a snapshot does not carry) and the actions (`POST`, see `actions.rs`).
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/` | the page (overview, topic pages and job lookup are client-side routes) |
//! | GET | `/api/session` | `read_only`, `csrf_token`, `prefix`, `refresh_ms` |
//! | GET | `/api/overview` | the latest snapshot: every topic and group |
//! | GET | `/api/events` | the snapshots as Server-Sent Events |
//! | GET | `/api/topics/{topic}` | one topic of the snapshot |
//! | GET | `/api/topics/{topic}/history?minutes=N` | processed/failed per minute, N ≤ 1440 |
//! | GET | `/api/topics/{topic}/dead-letters?after=ID&count=N` | dead letters, full payloads |
//! | GET | `/api/topics/{topic}/delayed?count=N` | the next delayed jobs |
//! | GET | `/api/topics/{topic}/jobs/{job_id}` | where a job is |

use std::{sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderValue, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use percent_encoding::percent_decode_str;
use sluice_dispatcher::Dispatcher;
use tokio_util::sync::CancellationToken;

use crate::{
    actions, assets,
    error::ApiError,
    events,
    refresher::{Published, Refresher},
    security::{self, Guard},
};

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) dispatcher: Dispatcher,
    pub(crate) refresher: Refresher,
    pub(crate) guard: Arc<Guard>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) refresh: Duration,
}

pub(crate) fn router(state: AppState) -> Router {
    let guard = state.guard.clone();
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/app.js", get(assets::app_js))
        .route("/assets/style.css", get(assets::style_css))
        .route("/favicon.ico", get(assets::favicon))
        .route("/api/session", get(session))
        .route("/api/overview", get(overview))
        .route("/api/events", get(events::events))
        .route("/api/topics/{topic}", get(topic))
        .route("/api/topics/{topic}/history", get(history))
        .route("/api/topics/{topic}/dead-letters", get(dead_letters))
        .route("/api/topics/{topic}/delayed", get(delayed))
        .route("/api/topics/{topic}/jobs/{job_id}", get(locate))
        .route(
            "/api/topics/{topic}/dead-letters/replay-all",
            post(actions::replay_all),
        )
        .route(
            "/api/topics/{topic}/dead-letters/purge",
            post(actions::purge),
        )
        .route(
            "/api/topics/{topic}/dead-letters/{id}/replay",
            post(actions::replay),
        )
        .route(
            "/api/topics/{topic}/dead-letters/{id}/delete",
            post(actions::delete),
        )
        .route(
            "/api/topics/{topic}/groups/{group}/pause",
            post(actions::pause),
        )
        .route(
            "/api/topics/{topic}/groups/{group}/resume",
            post(actions::resume),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(guard, security::guard))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such page or endpoint")
}

/// One query parameter, percent-decoded (`None` when absent).
pub(crate) fn param(raw: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    for pair in raw.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return percent_decode_str(&v.replace('+', " "))
                .decode_utf8()
                .map(|s| Some(s.into_owned()))
                .map_err(|_| ApiError::bad_request(format!("{name} is not UTF-8")));
        }
    }
    Ok(None)
}

fn number(raw: Option<&str>, name: &str, default: u32, max: u32) -> Result<u32, ApiError> {
    match param(raw, name)? {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name} must be a whole number 1 to {max}, not {v:?}"
                ))
            }),
    }
}

async fn latest(state: &AppState) -> Result<Arc<Published>, ApiError> {
    state.refresher.current().await.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the dashboard is shutting down",
        )
    })
}

fn json_text(json: &str) -> Response {
    let mut response = json.to_owned().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn session(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "read_only": state.guard.read_only,
        "csrf_token": state.guard.csrf_token,
        "prefix": state.dispatcher.keyspace().prefix(),
        "refresh_ms": state.refresh.as_millis() as u64,
    }))
}

async fn overview(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(json_text(&latest(&state).await?.json))
}

async fn topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    let published = latest(&state).await?;
    let view = published
        .snapshot
        .topics
        .iter()
        .find(|t| t.topic == topic)
        .ok_or_else(|| ApiError::not_found(format!("no topic {topic:?} under this prefix")))?;
    Ok(Json(view).into_response())
}

async fn history(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let minutes = number(query.as_deref(), "minutes", 60, 1440)?;
    Ok(Json(state.dispatcher.history(&topic, minutes).await?).into_response())
}

async fn dead_letters(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let count = number(query.as_deref(), "count", 100, 1000)?;
    let after = param(query.as_deref(), "after")?;
    let letters = state
        .dispatcher
        .dead_letters(&topic, after.as_deref(), count as usize)
        .await?;
    Ok(Json(letters).into_response())
}

async fn delayed(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let count = number(query.as_deref(), "count", 20, 1000)?;
    Ok(Json(
        state
            .dispatcher
            .delayed_jobs(&topic, count as usize)
            .await?,
    )
    .into_response())
}

async fn locate(
    State(state): State<AppState>,
    Path((topic, job_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(Json(state.dispatcher.locate_job(&topic, &job_id).await?).into_response())
}
