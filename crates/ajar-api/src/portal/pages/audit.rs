//! The audit log page: a filtered, paged view of the events the signed-in
//! person may read, with the state of the hash chain for auditors, and the
//! filter form the export shares.

use ajar_core::AuditQuery;
use ajar_domain::Action;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{NaiveDateTime, TimeZone, Utc};
use maud::html;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::shared::{core_failure, render};
use crate::portal::session::Session;
use crate::portal::view::{self, Nav};
use crate::AppState;

/// The audit page's filter form (as its query string), which the export
/// link repeats.
#[derive(Deserialize, Default)]
pub struct AuditForm {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    before: Option<i64>,
    /// `all`: verify the whole log now rather than the new events only.
    #[serde(default)]
    verify: String,
    /// Export: only events after this sequence number.
    pub after: Option<i64>,
    /// Export: at most this many events.
    pub limit: Option<u64>,
}

/// `datetime-local` values (`2026-11-22T14:03`), read as UTC.
fn parse_local(text: &str) -> Result<Option<chrono::DateTime<Utc>>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .map(|t| Some(Utc.from_utc_datetime(&t)))
        .map_err(|_| format!("{text:?} is not a time; use the form 2026-11-22T14:03 (UTC)"))
}

/// The core's query for the filters of `q`, or a sentence that says which
/// one is wrong.
pub fn audit_query(q: &AuditForm) -> Result<AuditQuery, String> {
    let action = match q.action.trim() {
        "" => None,
        a => Some(Action::parse(a).ok_or_else(|| format!("{a:?} is not an event kind"))?),
    };
    let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    Ok(AuditQuery {
        actor: opt(&q.actor),
        target: opt(&q.target),
        action,
        since: parse_local(&q.since)?,
        until: parse_local(&q.until)?,
    })
}

const AUDIT_PAGE: u32 = 50;

pub async fn audit(State(state): State<AppState>, session: Session, Query(query): Query<AuditForm>) -> Response {
    let (filter, error) = match audit_query(&query) {
        Ok(f) => (f, None),
        Err(e) => (AuditQuery::default(), Some(e)),
    };
    let before = query.before.unwrap_or(i64::MAX);
    let events = match state.core.search_audit(&session.principal, &filter, before, AUDIT_PAGE).await {
        Ok(e) => e,
        Err(e) => return core_failure(&session, e, "/audit"),
    };
    // The banner checks only the events written since the last check (see
    // `Core::verify_audit_recent`); "Verify the whole log" walks all of it.
    let verification = match (session.auditor, query.verify.as_str()) {
        (false, _) => None,
        (true, "all") => state.core.verify_audit().await.ok(),
        (true, _) => state.core.verify_audit_recent().await.ok(),
    };
    let export_query = format!(
        "actor={}&target={}&action={}&since={}&until={}",
        encode(&query.actor),
        encode(&query.target),
        encode(&query.action),
        encode(&query.since),
        encode(&query.until)
    );
    let older = events.last().map(|e| e.seq).filter(|_| events.len() == AUDIT_PAGE as usize);
    let content = html! {
        h1 { "Audit log" }
        @if let Some(v) = &verification {
            @if v.ok {
                (view::notice("ok", &format!("Hash chain verified: {} events, intact. Head {}…", v.events, &v.head_hash[..16.min(v.head_hash.len())])))
            } @else if let Some(p) = &v.problem {
                (view::notice("error", &format!("The audit log is BROKEN at event {}: {}", p.seq, p.message)))
            }
            p class="muted" {
                @if let Some(at) = v.whole_log_checked_at { "Whole log last verified " (view::when(at)) "; new events are verified on every view. " }
                a href="/audit?verify=all" { "Verify the whole log now" }
            }
        }
        @if !session.auditor { p class="muted" { "You see the events you caused and those about your own requests." } }
        @if let Some(e) = &error { (view::notice("error", e)) }
        form method="get" action="/audit" class="filters" {
            div { label for="f-actor" { "Actor" } input id="f-actor" name="actor" type="text" value=(query.actor); }
            div { label for="f-target" { "Target" } input id="f-target" name="target" type="text" value=(query.target); }
            div {
                label for="f-action" { "Event" }
                select id="f-action" name="action" {
                    option value="" { "any" }
                    @for a in Action::ALL {
                        @if a.as_str() == query.action { option value=(a.as_str()) selected { (a.as_str()) } }
                        @else { option value=(a.as_str()) { (a.as_str()) } }
                    }
                }
            }
            div { label for="f-since" { "From (UTC)" } input id="f-since" name="since" type="datetime-local" value=(query.since); }
            div { label for="f-until" { "Until (UTC)" } input id="f-until" name="until" type="datetime-local" value=(query.until); }
            div class="row" {
                button class="button" type="submit" { "Filter" }
                a class="button quiet" href={ "/audit/export?" (export_query) } download="ajar-audit.jsonl" { "Export JSON lines" }
            }
        }
        div data-live="" {
            @if events.is_empty() { (view::empty("No events match.")) } @else {
                table class="table audit" {
                    thead { tr {
                        th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Actor" } th scope="col" { "Event" }
                        th scope="col" { "Target" } th scope="col" { "Source" } th scope="col" { "Request" } th scope="col" { "Reason / detail" }
                    } }
                    tbody {
                        @for e in &events {
                            tr {
                                td { (e.seq) }
                                td class="nowrap" { (view::when(e.at)) }
                                td { (e.actor) }
                                td { span class={ "badge ev-" (e.action.as_str()) } { (e.action.as_str()) } }
                                td { (e.target.as_deref().unwrap_or("")) }
                                td { @if let Some(source) = &e.source { code { (source) } } }
                                td { @if let Some(id) = &e.request_id { code { (id) } } }
                                td {
                                    (e.reason.as_deref().unwrap_or(""))
                                    @if e.data.as_object().is_some_and(|o| !o.is_empty()) { " " span class="muted data" { (e.data.to_string()) } }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(seq) = older {
            p { a class="button" href={ "/audit?" (export_query) "&before=" (seq) } { "Older events" } }
        }
    };
    render(StatusCode::OK, view::page("Audit", Nav::Audit, Some(&session), content))
}

/// What a filter value keeps as it is in the export and paging links:
/// letters, digits and `-_.:` (a time such as `2026-11-22T14:03` reads as
/// typed); every other byte is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b':');

fn encode(text: &str) -> percent_encoding::PercentEncode<'_> {
    utf8_percent_encode(text, QUERY_VALUE)
}
