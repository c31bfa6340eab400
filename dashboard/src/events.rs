//! `GET /api/events`: Server-Sent Events, one `snapshot` event per refresh (the JSON of
//! `GET /api/overview`), from the refresher's `watch` channel: a thousand open pages cost the
//! same Redis reads as one. The stream ends when the dashboard shuts down.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::WatchStream;

use crate::routes::AppState;

pub(crate) async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = WatchStream::new(state.refresher.latest.clone())
        .filter_map(|latest| async move {
            latest.map(|p| Ok(Event::default().event("snapshot").data(p.json.as_ref())))
        })
        .take_until(state.shutdown.clone().cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
