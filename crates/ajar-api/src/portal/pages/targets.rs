//! Asking for access: the targets the signed-in person may request, each
//! with its request form, and the form's action.

use ajar_core::CoreError;
use ajar_domain::policy::Ask;
use ajar_domain::{GrantDuration, SourceNet};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::shared::{core_failure, csrf_refused, render};
use crate::portal::session::Session;
use crate::portal::view::{self, Nav};
use crate::AppState;

/// Duration choices up to the policy's longest.
fn duration_choices(max: GrantDuration) -> Vec<(String, u64)> {
    let mut choices: Vec<u64> = [300, 900, 1800, 3600, 7200, 14_400, 28_800, 43_200, 86_400]
        .into_iter()
        .filter(|s| *s <= max.as_secs())
        .collect();
    if choices.last() != Some(&max.as_secs()) {
        choices.push(max.as_secs());
    }
    // The label is also the form value, so it must parse back exactly.
    choices.into_iter().filter_map(|s| GrantDuration::from_secs(s).ok().map(|d| (d.to_string(), s))).collect()
}

/// Errors of one request form, by field.
#[derive(Default)]
struct FormErrors {
    target: String,
    duration: Option<String>,
    reason: Option<String>,
    source: Option<String>,
    general: Option<String>,
}

fn field_error(id: &str, error: &Option<String>) -> Markup {
    html! { @if let Some(e) = error { p class="field-error" id=(id) { (e) } } }
}

fn targets_page(state: &AppState, session: &Session, errors: Option<&FormErrors>, status: StatusCode) -> Response {
    let targets = state.core.targets(&session.principal);
    let content = html! {
        h1 { "Request access" }
        p class="lead" { "These are the servers you may ask for. Access opens only for your address, " code { (session.addr) } ", and closes on time." }
        @if targets.is_empty() { (view::empty("No policy lets you request any target yet. Ask an admin.")) }
        div class="cards" {
            @for t in &targets {
                @let errs = errors.filter(|e| e.target == t.target.name.as_str());
                @let id = t.target.name.as_str();
                section class="card target" aria-labelledby={ "t-" (id) } {
                    h2 id={ "t-" (id) } { (id) }
                    ul class="chips" {
                        @for (k, v) in &t.target.labels { li { (k) "=" (v) } }
                    }
                    dl class="facts" {
                        dt { "Longest" } dd { (t.max_duration) }
                        dt { "Approval" } dd {
                            @if t.approvals_required == 0 { "automatic" }
                            @else { (t.approvals_required) " from " (t.approvers.join(", ")) }
                        }
                        dt { "Reason" } dd { @if t.reason_required { "required" } @else { "optional" } }
                    }
                    @if let Some(e) = errs.and_then(|e| e.general.as_ref()) { (view::notice("error", e)) }
                    form method="post" action={ "/targets/" (id) "/request" } class="stack" {
                        (view::csrf_field(session))
                        label for={ "dur-" (id) } { "For how long" }
                        select id={ "dur-" (id) } name="duration" aria-describedby={ "dur-err-" (id) } {
                            @for (label, secs) in duration_choices(t.max_duration) {
                                @if secs == t.max_duration.as_secs().min(1800) || (t.max_duration.as_secs() < 1800 && secs == t.max_duration.as_secs()) {
                                    option value=(label) selected { (label) }
                                } @else {
                                    option value=(label) { (label) }
                                }
                            }
                        }
                        (field_error(&format!("dur-err-{id}"), &errs.and_then(|e| e.duration.clone())))
                        label for={ "reason-" (id) } { "Reason" @if t.reason_required { " (required)" } }
                        textarea id={ "reason-" (id) } name="reason" rows="2" maxlength="1000" required[t.reason_required]
                            placeholder="Incident or ticket, e.g. INC-4411" aria-describedby={ "reason-err-" (id) } {}
                        (field_error(&format!("reason-err-{id}"), &errs.and_then(|e| e.reason.clone())))
                        label for={ "source-" (id) } { "From address or network" }
                        input id={ "source-" (id) } name="source" type="text" value=(session.addr)
                            aria-describedby={ "source-help-" (id) " source-err-" (id) };
                        p class="help" id={ "source-help-" (id) } { "The address ajar sees for you. Change it only if the policy allows another network." }
                        (field_error(&format!("source-err-{id}"), &errs.and_then(|e| e.source.clone())))
                        button class="button primary" type="submit" {
                            @if t.approvals_required == 0 { "Open access" } @else { "Ask for approval" }
                        }
                    }
                }
            }
        }
    };
    render(status, view::page("Request access", Nav::Targets, Some(session), content))
}

pub async fn targets(State(state): State<AppState>, session: Session) -> Response {
    targets_page(&state, &session, None, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct RequestForm {
    #[serde(default)]
    csrf: String,
    duration: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    source: String,
}

pub async fn request(
    State(state): State<AppState>,
    session: Session,
    Path(name): Path<String>,
    Form(form): Form<RequestForm>,
) -> Response {
    if !session.check_csrf(&form.csrf) {
        return csrf_refused(&session, "/targets");
    }
    let mut errors = FormErrors { target: name.clone(), ..Default::default() };
    let duration = GrantDuration::parse(&form.duration).map_err(|e| errors.duration = Some(e.to_string())).ok();
    let source_text = form.source.trim();
    let source = if source_text.is_empty() {
        Some(None)
    } else {
        match SourceNet::parse(source_text) {
            // Your own address is the default, not an explicit source.
            Ok(net) if net == SourceNet::host(session.addr) => Some(None),
            Ok(net) => Some(Some(net)),
            Err(e) => {
                errors.source = Some(e.to_string());
                None
            }
        }
    };
    let (Some(duration), Some(source)) = (duration, source) else {
        return targets_page(&state, &session, Some(&errors), StatusCode::UNPROCESSABLE_ENTITY);
    };
    let ask = Ask { target: name, duration, reason: form.reason, source };
    match state.core.create_request(&session.principal, session.addr, ask).await {
        Ok(_) => Redirect::to("/access?done=requested").into_response(),
        Err(CoreError::Rejected(rejected)) => {
            let text = Some(rejected.to_string());
            match rejected.kind() {
                "duration-too-long" => errors.duration = text,
                "reason-required" | "reason-too-long" | "forbidden-character-in-reason" => errors.reason = text,
                "source-not-allowed" => errors.source = text,
                _ => errors.general = text,
            }
            targets_page(&state, &session, Some(&errors), StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(e) => core_failure(&session, e, "/targets"),
    }
}
