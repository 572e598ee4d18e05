//! Admin: every active grant, with a button to revoke it, and the targets
//! with the policies that apply to them.

use std::collections::HashMap;

use ajar_core::{RequestQuery, RequestView};
use ajar_domain::RequestState;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::shared::{core_failure, done_notice, failure, grant_table, render};
use crate::portal::session::Session;
use crate::portal::view::{self, Nav};
use crate::AppState;

pub async fn admin(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !session.admin {
        return failure(&session, StatusCode::FORBIDDEN, "Only admins may open this page.", "/access");
    }
    let active = RequestQuery { states: vec![RequestState::Active], limit: 500, ..Default::default() };
    let active = match state.core.find_requests(&session.principal, &active).await {
        Ok(r) => r,
        Err(e) => return core_failure(&session, e, "/admin"),
    };
    let catalog = state.core.catalog();
    let now = state.core.now();
    let grants: Vec<&RequestView> = active.iter().collect();
    let content = html! {
        h1 { "Admin" }
        (done_notice(query.get("done")))
        section data-live="" {
            h2 { "Active grants" }
            @if grants.is_empty() { (view::empty("No access is open right now.")) } @else { (grant_table(&session, &grants, now, "/admin")) }
        }
        section {
            h2 { "Targets and policies" }
            table class="table" {
                thead { tr { th scope="col" { "Target" } th scope="col" { "Address" } th scope="col" { "Driver" } th scope="col" { "Policies" } } }
                tbody {
                    @for t in &catalog.targets {
                        tr {
                            td { (t.name) }
                            td { code { (t.address) } }
                            td { (t.driver) }
                            td {
                                ul class="plain" {
                                    @for p in catalog.policies.iter().filter(|p| p.targets.iter().any(|s| s.matches(t))) {
                                        li {
                                            strong { (p.name) } ": "
                                            (p.subjects.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "))
                                            " for up to " (p.max_duration) "; "
                                            @if p.approvals == 0 { "automatic" } @else {
                                                (p.approvals) " approval(s) from " (p.approvers.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "))
                                            }
                                            @if !p.sources.is_empty() { "; from " (p.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    render(StatusCode::OK, view::page("Admin", Nav::Admin, Some(&session), content))
}
