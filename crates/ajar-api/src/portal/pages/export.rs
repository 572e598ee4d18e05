//! The audit export: every event the signed-in person may read that the
//! audit page's filters match, as JSON lines, oldest first, streamed page
//! by page from the store so that a long log never sits in memory whole.

use ajar_core::AuditQuery;
use ajar_domain::{AuditEvent, Principal};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::audit::{audit_query, AuditForm};
use super::shared::{core_failure, failure};
use crate::portal::session::Session;
use crate::AppState;

/// Events an export reads from the store at a time.
const EXPORT_PAGE: u32 = 1000;

/// An event the export cannot write as JSON.
#[derive(Debug)]
struct Unwritable {
    seq: i64,
    error: serde_json::Error,
}

impl Unwritable {
    /// Logs why the export stops here, once.
    fn log(&self) {
        tracing::error!(error = %self.error, seq = self.seq, "the audit export stopped: an event cannot be written as JSON");
    }
}

/// One JSON line per event, at most `left` of them (counted down). An
/// event that does not serialize stops the export: a line left out or
/// left empty would make an incomplete copy of the log look whole.
fn lines<'a, T: Serialize + 'a>(
    events: impl IntoIterator<Item = (i64, &'a T)>,
    left: &mut u64,
) -> Result<String, Unwritable> {
    let mut chunk = String::new();
    for (seq, event) in events {
        if *left == 0 {
            break;
        }
        let line = serde_json::to_string(event).map_err(|error| Unwritable { seq, error })?;
        chunk.push_str(&line);
        chunk.push('\n');
        *left -= 1;
    }
    Ok(chunk)
}

/// The lines of the events of `page` that `query` matches.
fn page_lines(page: &[AuditEvent], query: &AuditQuery, left: &mut u64) -> Result<String, Unwritable> {
    lines(page.iter().filter(|e| query.matches(e)).map(|e| (e.seq, e)), left)
}

/// Where an export stands between two pages.
struct Export {
    state: AppState,
    who: Principal,
    query: AuditQuery,
    /// The lines to send next.
    ready: Option<String>,
    /// The sequence number the next page starts after.
    after: i64,
    /// How many more lines may be sent.
    left: u64,
    /// The log has no more events, or the export broke off.
    done: bool,
}

impl Export {
    /// The next piece of the body: lines, an error that breaks the body
    /// off (so that the download shows as incomplete), or the end.
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Self)> {
        loop {
            if let Some(chunk) = self.ready.take().filter(|c| !c.is_empty()) {
                return Some((Ok(Bytes::from(chunk)), self));
            }
            if self.done || self.left == 0 {
                return None;
            }
            let page = match self.state.core.audit_page(&self.who, self.after, EXPORT_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, after = self.after, "the audit export stopped: the store cannot be read");
                    self.done = true;
                    return Some((Err(std::io::Error::other(e.to_string())), self));
                }
            };
            // An empty page: the log has nothing after `after`.
            self.after = page.last()?.seq;
            match page_lines(&page, &self.query, &mut self.left) {
                Ok(chunk) => self.ready = Some(chunk),
                Err(unwritable) => {
                    unwritable.log();
                    self.done = true;
                    let message = format!("audit event {} cannot be written as JSON", unwritable.seq);
                    return Some((Err(std::io::Error::other(message)), self));
                }
            }
        }
    }
}

/// `GET /audit/export`: the audit page's filters, and `after` (a sequence
/// number) and `limit` to page through the export: the next page starts
/// after the last line's `seq`.
pub async fn audit_export(State(state): State<AppState>, session: Session, Query(form): Query<AuditForm>) -> Response {
    let query = match audit_query(&form) {
        Ok(q) => q,
        Err(e) => return failure(&session, StatusCode::BAD_REQUEST, &e, "/audit"),
    };
    let after = form.after.unwrap_or(0);
    if after < 0 {
        return failure(&session, StatusCode::BAD_REQUEST, "after must be a sequence number, 0 or more", "/audit");
    }
    let mut left = form.limit.unwrap_or(u64::MAX);
    // Fail before the first byte when the store cannot be read at all, or
    // the first page cannot be written.
    let first = match state.core.audit_page(&session.principal, after, EXPORT_PAGE).await {
        Ok(page) => page,
        Err(e) => return core_failure(&session, e, "/audit"),
    };
    let ready = match page_lines(&first, &query, &mut left) {
        Ok(chunk) => chunk,
        Err(unwritable) => {
            unwritable.log();
            let detail = format!(
                "Audit event {} cannot be written as JSON, so the export stopped before it began; the server log has the details.",
                unwritable.seq
            );
            return failure(&session, StatusCode::INTERNAL_SERVER_ERROR, &detail, "/audit");
        }
    };
    let start = Export {
        state,
        who: session.principal.clone(),
        query,
        after: first.last().map_or(after, |e| e.seq),
        done: first.is_empty(),
        ready: Some(ready),
        left,
    };
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"ajar-audit.jsonl\""),
        ],
        Body::from_stream(futures::stream::unfold(start, Export::next)),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A value that refuses to be serialized.
    struct Broken;

    impl Serialize for Broken {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("broken on purpose"))
        }
    }

    #[test]
    fn lines_count_down_what_may_still_be_sent() {
        let values = [serde_json::json!({"seq": 1}), serde_json::json!({"seq": 2}), serde_json::json!({"seq": 3})];
        let mut left = 2;
        let text = lines(values.iter().enumerate().map(|(i, v)| (i as i64 + 1, v)), &mut left).unwrap();
        assert_eq!(text, "{\"seq\":1}\n{\"seq\":2}\n");
        assert_eq!(left, 0);
    }

    #[test]
    fn an_event_that_cannot_be_written_stops_the_export_instead_of_leaving_a_blank_line() {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Item {
            Fine(u32),
            Bad(Broken),
        }
        let items = [Item::Fine(1), Item::Bad(Broken), Item::Fine(3)];
        let mut left = u64::MAX;
        let stopped = lines(items.iter().enumerate().map(|(i, v)| (i as i64 + 1, v)), &mut left).unwrap_err();
        assert_eq!(stopped.seq, 2);
        assert!(stopped.error.to_string().contains("broken on purpose"), "{}", stopped.error);
    }
}
