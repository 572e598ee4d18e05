//! The form actions on one request — release and cancel (my access),
//! approve and deny (approvals), revoke (approvals and admin) — which go
//! back to the page the form was on with a notice, or show what went
//! wrong.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{post, MethodRouter};
use axum::Form;
use serde::Deserialize;

use super::shared::{core_failure, csrf_refused};
use crate::portal::session::Session;
use crate::AppState;

/// What a form does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Release,
    Cancel,
    Approve,
    Deny,
    Revoke,
}

impl Act {
    /// The page the form is on, to go back to.
    fn back(self, form: &ActForm) -> &'static str {
        match self {
            Act::Release | Act::Cancel => "/access",
            Act::Approve | Act::Deny => "/approvals",
            // Only our own pages are valid places to return to.
            Act::Revoke if form.back == "/approvals" => "/approvals",
            Act::Revoke => "/admin",
        }
    }
}

/// Every action's form: its CSRF token, and for a decision or a revoke an
/// optional comment and the page to return to.
#[derive(Deserialize)]
pub struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    back: String,
}

impl ActForm {
    /// The comment as recorded: trimmed, at most 500 characters, none if
    /// empty.
    fn comment(&self) -> Option<String> {
        let c = self.comment.trim();
        (!c.is_empty()).then(|| c.chars().take(500).collect())
    }
}

/// The `POST` route that does `act` to the request its path names.
pub fn route(act: Act) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>, session: Session, Path(id): Path<String>, Form(form): Form<ActForm>| async move {
            perform(act, &state, &session, &id, &form).await
        },
    )
}

async fn perform(act: Act, state: &AppState, session: &Session, id: &str, form: &ActForm) -> Response {
    let back = act.back(form);
    if !session.check_csrf(&form.csrf) {
        return csrf_refused(session, back);
    }
    let (core, who) = (&state.core, &session.principal);
    let (outcome, done) = match act {
        Act::Release => (core.release(who, id).await, "released"),
        Act::Cancel => (core.cancel(who, id).await, "cancelled"),
        Act::Approve => (core.approve(who, id, form.comment()).await, "approved"),
        Act::Deny => (core.deny(who, id, form.comment()).await, "denied"),
        Act::Revoke => (core.revoke(who, id, form.comment()).await, "revoked"),
    };
    match outcome {
        Ok(_) => Redirect::to(&format!("{back}?done={done}")).into_response(),
        Err(e) => core_failure(session, e, back),
    }
}
