//! What several pages share: rendering, the failure page, the notice a
//! form action leaves behind, the CSRF-only form and the table of open
//! grants.

use ajar_core::{CoreError, RequestView};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use crate::portal::session::Session;
use crate::portal::view::{self, Nav};
use crate::Problem;

pub fn render(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A page that says what went wrong, in the API's words, with a way back.
pub fn failure(session: &Session, status: StatusCode, detail: &str, back: &str) -> Response {
    let content = html! {
        h1 { "That did not work" }
        (view::notice("error", detail))
        p { a class="button" href=(back) { "Back" } }
    };
    render(status, view::page("Error", Nav::None, Some(session), content))
}

pub fn core_failure(session: &Session, error: CoreError, back: &str) -> Response {
    let problem = Problem::from(error);
    failure(session, problem.status(), &problem.detail, back)
}

pub fn csrf_refused(session: &Session, back: &str) -> Response {
    failure(
        session,
        StatusCode::FORBIDDEN,
        "This form is out of date or did not come from ajar (its security token does not match). Reload the page and try again.",
        back,
    )
}

/// The notice for `?done=…`, which a form action appends when it sends the
/// browser back.
pub fn done_notice(done: Option<&String>) -> Markup {
    let text = match done.map(String::as_str) {
        Some("requested") => "Request sent.",
        Some("released") => "Access released: the path is closed.",
        Some("cancelled") => "Request cancelled.",
        Some("approved") => "Approved.",
        Some("denied") => "Denied.",
        Some("revoked") => "Access revoked: the path is closed.",
        _ => return html! {},
    };
    view::notice("ok", text)
}

/// A form that carries nothing but its CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// Open grants, each with a button that revokes it and comes back to `back`.
pub fn grant_table(session: &Session, grants: &[&RequestView], now: DateTime<Utc>, back: &str) -> Markup {
    html! {
        table class="table" {
            thead { tr {
                th scope="col" { "Target" } th scope="col" { "Who" } th scope="col" { "From" }
                th scope="col" { "Ends" } th scope="col" { "Network" } th scope="col" { "Reason" } th scope="col" { span class="sr-only" { "Action" } }
            } }
            tbody {
                @for v in grants {
                    @let r = &v.request;
                    tr {
                        td { (r.target) }
                        td { (r.requester) }
                        td { code { (r.source) } }
                        td { @if let Some(e) = r.ends_at { (view::clock(e)) " " (view::countdown(e, now)) } }
                        td {
                            span class={ "badge net-" (r.enforcement.status.as_str()) } { (r.enforcement.status.as_str()) }
                            @if let Some(e) = &r.enforcement.error { div class="field-error" { (e) } }
                        }
                        td { (r.reason) }
                        td {
                            form method="post" action={ "/admin/" (r.id) "/revoke" } {
                                (view::csrf_field(session))
                                input type="hidden" name="back" value=(back);
                                button class="button danger small" type="submit" aria-label={ "Revoke " (r.requester) "'s access to " (r.target) } { "Revoke" }
                            }
                        }
                    }
                }
            }
        }
    }
}
