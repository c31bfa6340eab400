//! The actions, all `POST` (behind the CSRF token; 405 when read-only): replay, delete, replay
//! all and purge dead letters; pause and resume a group. Each answers with what it did, or a
//! JSON error saying why nothing was changed (a dead letter already gone: 404; an unknown group:
//! 404). After an action the refresher reads Redis at once.
//!
//! | path | answer |
//! |---|---|
//! | `/api/topics/{topic}/dead-letters/{id}/replay` | `{"replayed": id, "entry_id": new}` |
//! | `/api/topics/{topic}/dead-letters/{id}/delete` | `{"deleted": id}` |
//! | `/api/topics/{topic}/dead-letters/replay-all` | `{"replayed": n}` |
//! | `/api/topics/{topic}/dead-letters/purge` | `{"purged": n}` |
//! | `/api/topics/{topic}/groups/{group}/pause` | `{"group": g, "paused": true}` |
//! | `/api/topics/{topic}/groups/{group}/resume` | `{"group": g, "paused": false}` |

use axum::{
    Json,
    extract::{Path, State},
};
use serde_json::{Value, json};

use crate::{error::ApiError, routes::AppState};

/// Most dead letters one replay-all moves.
const REPLAY_ALL_LIMIT: usize = 100_000;

fn done(state: &AppState, answer: Value) -> Json<Value> {
    state.refresher.refresh_now();
    Json(answer)
}

pub(crate) async fn replay(
    State(state): State<AppState>,
    Path((topic, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let entry_id = state.dispatcher.replay_dead_letter(&topic, &id).await?;
    tracing::info!(topic, id, entry_id, "dashboard: dead letter replayed");
    Ok(done(
        &state,
        json!({ "replayed": id, "entry_id": entry_id }),
    ))
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Path((topic, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    state.dispatcher.delete_dead_letter(&topic, &id).await?;
    tracing::info!(topic, id, "dashboard: dead letter deleted");
    Ok(done(&state, json!({ "deleted": id })))
}

pub(crate) async fn replay_all(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = state
        .dispatcher
        .replay_all(&topic, REPLAY_ALL_LIMIT)
        .await?;
    tracing::info!(topic, n, "dashboard: dead letters replayed");
    Ok(done(&state, json!({ "replayed": n })))
}

pub(crate) async fn purge(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = state.dispatcher.purge_dead_letters(&topic).await?;
    tracing::info!(topic, n, "dashboard: dead letters purged");
    Ok(done(&state, json!({ "purged": n })))
}

/// The group must exist: pausing a typo would leave a flag no worker reads.
async fn existing_group(state: &AppState, topic: &str, group: &str) -> Result<(), ApiError> {
    let stats = state.dispatcher.stats(topic).await?;
    if stats.group(group).is_none() {
        return Err(ApiError::not_found(format!(
            "no consumer group {group:?} on topic {topic:?}; nothing was changed"
        )));
    }
    Ok(())
}

pub(crate) async fn pause(
    State(state): State<AppState>,
    Path((topic, group)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    existing_group(&state, &topic, &group).await?;
    state.dispatcher.pause_group(&topic, &group).await?;
    tracing::info!(topic, group, "dashboard: group paused");
    Ok(done(&state, json!({ "group": group, "paused": true })))
}

pub(crate) async fn resume(
    State(state): State<AppState>,
    Path((topic, group)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    existing_group(&state, &topic, &group).await?;
    state.dispatcher.resume_group(&topic, &group).await?;
    tracing::info!(topic, group, "dashboard: group resumed");
    Ok(done(&state, json!({ "group": group, "paused": false })))
}
