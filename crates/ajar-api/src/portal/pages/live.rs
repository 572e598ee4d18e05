//! Live updates and the portal's static files.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;

use crate::portal::session::Session;
use crate::portal::view;
use crate::AppState;

/// Server-sent events: one `change` event whenever anything is audited. The
/// event carries only a sequence number; the page then reloads what its
/// viewer may see.
pub async fn events(
    State(state): State<AppState>,
    _session: Session,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.core.subscribe();
    let stream = futures::stream::unfold(receiver, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(seq) => return Some((Ok(Event::default().event("change").data(seq.to_string())), rx)),
                // Missed some: one signal is as good as many.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    // Keep-alives come often enough that the idle timeout never closes a
    // live page's stream.
    let every =
        (state.idle_timeout / 3).clamp(std::time::Duration::from_millis(250), std::time::Duration::from_secs(15));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(every))
}

pub async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], view::STYLESHEET)
}

pub async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "max-age=300")], view::SCRIPT)
}
