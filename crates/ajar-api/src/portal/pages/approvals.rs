//! Approvals: the requests waiting for the signed-in person's decision,
//! and the open access they may end.

use std::collections::HashMap;

use ajar_core::{RequestQuery, RequestView};
use ajar_domain::RequestState;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::shared::{core_failure, done_notice, grant_table, render};
use crate::portal::session::Session;
use crate::portal::view::{self, Nav};
use crate::AppState;

pub async fn approvals(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let open =
        RequestQuery { states: vec![RequestState::Pending, RequestState::Active], limit: 500, ..Default::default() };
    let visible = match state.core.find_requests(&session.principal, &open).await {
        Ok(r) => r,
        Err(e) => return core_failure(&session, e, "/approvals"),
    };
    let core = &state.core;
    let pending: Vec<&RequestView> =
        visible.iter().filter(|v| core.can_approve(&session.principal, &v.request)).collect();
    let revocable: Vec<&RequestView> = visible
        .iter()
        .filter(|v| v.request.requester != session.principal.name && core.can_revoke(&session.principal, &v.request))
        .collect();
    let now = state.core.now();
    let content = html! {
        h1 { "Approvals" }
        (done_notice(query.get("done")))
        div data-live="" {
            @if pending.is_empty() { (view::empty("Nothing is waiting for your approval.")) }
            @for v in &pending {
                @let r = &v.request;
                article class="card request pending" id=(r.id) {
                    (view::request_summary(r))
                    p class="muted" {
                        "Asked " (view::when(r.created_at)) "; " (r.approvals.len()) " of " (r.approvals_required)
                        " approvals; times out " (view::clock(r.decide_by)) " (" (view::countdown(r.decide_by, now)) ")"
                    }
                    form method="post" class="decide" {
                        (view::csrf_field(&session))
                        label for={ "comment-" (r.id) } { "Comment (optional)" }
                        input id={ "comment-" (r.id) } name="comment" type="text" maxlength="500";
                        div class="row" {
                            button class="button primary" type="submit" formaction={ "/approvals/" (r.id) "/approve" } { "Approve" }
                            button class="button danger" type="submit" formaction={ "/approvals/" (r.id) "/deny" } { "Deny" }
                        }
                    }
                }
            }
            @if !revocable.is_empty() {
                h2 { "Open access you can end" }
                (grant_table(&session, &revocable, now, "/approvals"))
            }
        }
    };
    render(StatusCode::OK, view::page("Approvals", Nav::Approvals, Some(&session), content))
}
