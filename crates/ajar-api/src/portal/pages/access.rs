//! "My access": the signed-in person's open and waiting requests, with
//! where to connect and buttons to release or cancel, and their earlier
//! requests.

use std::collections::HashMap;

use ajar_core::{RequestQuery, RequestView};
use ajar_domain::RequestState;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::shared::{core_failure, done_notice, render};
use crate::edge::host::Host;
use crate::portal::session::Session;
use crate::portal::view::{self, Nav};
use crate::AppState;

pub async fn access(
    State(state): State<AppState>,
    session: Session,
    Host(host): Host,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mine = RequestQuery { requester: Some(session.principal.name.to_string()), limit: 50, ..Default::default() };
    let requests = match state.core.find_requests(&session.principal, &mine).await {
        Ok(r) => r,
        Err(e) => return core_failure(&session, e, "/access"),
    };
    let (live, past): (Vec<RequestView>, Vec<RequestView>) =
        requests.into_iter().partition(|v| !v.request.state.is_final());
    let now = state.core.now();
    let addr = session.addr.to_string();
    let content = html! {
        h1 { "My access" }
        (done_notice(query.get("done")))
        div data-live="" {
            @if live.is_empty() {
                (view::empty("You have no access open or waiting."))
                p { a class="button primary" href="/targets" { "Request access" } }
            }
            @for v in &live {
                @let r = &v.request;
                article class={ "card request " (r.state.as_str()) } id=(r.id) {
                    (view::request_summary(r))
                    @if r.state == RequestState::Pending {
                        p class="muted" {
                            (r.approvals.len()) " of " (r.approvals_required) " approvals; waiting until "
                            (view::clock(r.decide_by)) " (" (view::countdown(r.decide_by, now)) ")"
                        }
                        form method="post" action={ "/access/" (r.id) "/cancel" } {
                            (view::csrf_field(&session))
                            button class="button" type="submit" { "Cancel request" }
                        }
                    }
                    @if r.state == RequestState::Active {
                        (view::connect_line(v, &addr, &host, now))
                        form method="post" action={ "/access/" (r.id) "/release" } {
                            (view::csrf_field(&session))
                            button class="button danger" type="submit" { "Release now" }
                        }
                    }
                }
            }
            @if !past.is_empty() {
                h2 { "Earlier" }
                table class="table" {
                    thead { tr { th scope="col" { "Target" } th scope="col" { "State" } th scope="col" { "Asked" } th scope="col" { "Ended" } th scope="col" { "Reason" } } }
                    tbody {
                        @for v in past.iter().take(20) {
                            @let r = &v.request;
                            tr {
                                td { (r.target) }
                                td { (view::state_badge(r.state)) }
                                td { (view::when(r.created_at)) }
                                td { @if let Some(e) = r.ends_at { (view::when(e)) } @else { "—" } }
                                td { (r.reason) }
                            }
                        }
                    }
                }
            }
        }
    };
    render(StatusCode::OK, view::page("My access", Nav::Access, Some(&session), content))
}
