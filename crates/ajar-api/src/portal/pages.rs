//! The portal's pages and form actions.

use std::collections::HashMap;
use std::convert::Infallible;

use ajar_core::{CoreError, RequestView};
use ajar_domain::policy::Ask;
use ajar_domain::{Action, AuditEvent, GrantDuration, RequestState, SourceNet};
use ajar_store::{AuditFilter, RequestFilter};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{NaiveDateTime, TimeZone, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::session::{self, cookie, Cookies, Session};
use super::view::{self, Nav};
use crate::caller::ClientAddr;
use crate::{AppState, Problem};

fn render(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A page that says what went wrong, in the API's words, with a way back.
fn failure(session: &Session, status: StatusCode, detail: &str, back: &str) -> Response {
    let content = html! {
        h1 { "That did not work" }
        (view::notice("error", detail))
        p { a class="button" href=(back) { "Back" } }
    };
    render(status, view::page("Error", Nav::None, Some(session), content))
}

fn core_failure(session: &Session, error: CoreError, back: &str) -> Response {
    let problem = Problem::from(error);
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    failure(session, status, &problem.detail, back)
}

fn csrf_refused(session: &Session, back: &str) -> Response {
    failure(
        session,
        StatusCode::FORBIDDEN,
        "This form is out of date or did not come from ajar (its security token does not match). Reload the page and try again.",
        back,
    )
}

fn done_notice(done: Option<&String>) -> Markup {
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

// ---- sign in / out --------------------------------------------------------

pub async fn home(State(state): State<AppState>, headers: HeaderMap) -> Redirect {
    if cookie(&headers, Cookies::of(&state).session()).is_some() {
        Redirect::to("/access")
    } else {
        Redirect::to("/login")
    }
}

/// The sign-in page after a failed SSO sign-in.
pub(crate) fn sign_in_failure(status: StatusCode, detail: &str) -> Response {
    let content = html! {
        section class="signin card" {
            h1 { "Sign-in failed" }
            (view::notice("error", detail))
            p { a class="button primary" href="/login" { "Back to sign-in" } }
        }
    };
    render(status, view::page("Sign-in failed", Nav::None, None, content))
}

fn login_page(state: &AppState, status: StatusCode, username: &str, error: Option<&str>) -> Response {
    let csrf = session::random_token();
    let sso = state.sso.is_some();
    let passwords = state.sso.as_ref().is_none_or(|s| s.local_users());
    let content = html! {
        section class="signin card" {
            h1 { "Sign in to ajar" }
            p class="muted" { "Ask for access to a server, for as long as you need it, and no longer." }
            @if let Some(e) = error { (view::notice("error", e)) }
            @if sso {
                p { a id="sso" class="button primary" href="/sso/start" { "Sign in with SSO" } }
            }
            @if passwords {
            @if sso { p class="muted" { "Or with a local account:" } }
            form method="post" action="/login" class="stack" {
                input type="hidden" name="csrf" value=(csrf);
                label for="username" { "User name" }
                input id="username" name="username" type="text" autocomplete="username" required value=(username) autofocus;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button class="button primary" type="submit" { "Sign in" }
            }
            }
        }
    };
    let mut response = render(status, view::page("Sign in", Nav::None, None, content));
    let cookie = Cookies::of(state).set_login_csrf(&csrf, 3600);
    if let Ok(value) = cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

pub async fn login_form(State(state): State<AppState>) -> Response {
    login_page(&state, StatusCode::OK, "", None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let cookies = Cookies::of(&state);
    let expected = cookie(&headers, cookies.login_csrf()).unwrap_or_default();
    if expected.is_empty() || !session::same(&expected, &form.csrf) {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            &form.username,
            Some("This sign-in form is out of date; please try again."),
        );
    }
    match state.core.login(&form.username, &form.password, addr).await {
        Ok((token, expires_at)) => {
            let max_age = u64::try_from((expires_at - Utc::now()).num_seconds()).unwrap_or(0);
            let mut response = Redirect::to("/access").into_response();
            let headers = response.headers_mut();
            for cookie in [cookies.set_session(Some(&token), max_age), cookies.set_login_csrf("", 0)] {
                if let Ok(value) = cookie.parse() {
                    headers.append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(e) => {
            let problem = Problem::from(e);
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::UNAUTHORIZED);
            login_page(&state, status, &form.username, Some(&problem.detail))
        }
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(State(state): State<AppState>, session: Session, Form(form): Form<CsrfForm>) -> Response {
    if !session.check_csrf(&form.csrf) {
        return csrf_refused(&session, "/access");
    }
    if let Err(e) = state.core.logout(&session.principal, &session.token, session.addr).await {
        return core_failure(&session, e, "/access");
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = Cookies::of(&state).set_session(None, 0).parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

// ---- request access -------------------------------------------------------

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

// ---- my access -------------------------------------------------------------

pub async fn access(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let filter = RequestFilter { requester: Some(session.principal.name.to_string()), limit: 50, ..Default::default() };
    let requests = match state.core.list_requests(&session.principal, filter).await {
        Ok(r) => r,
        Err(e) => return core_failure(&session, e, "/access"),
    };
    let (live, past): (Vec<RequestView>, Vec<RequestView>) =
        requests.into_iter().partition(|v| !v.request.state.is_final());
    let now = Utc::now();
    let host = crate::handlers::request_host(&headers);
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

async fn act(
    session: &Session,
    csrf: &str,
    back: &str,
    done: &str,
    action: impl std::future::Future<Output = Result<RequestView, CoreError>>,
) -> Response {
    if !session.check_csrf(csrf) {
        return csrf_refused(session, back);
    }
    match action.await {
        Ok(_) => Redirect::to(&format!("{back}?done={done}")).into_response(),
        Err(e) => core_failure(session, e, back),
    }
}

pub async fn release(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let core = state.core.clone();
    let fut = core.release(&session.principal, &id);
    act(&session, &form.csrf, "/access", "released", fut).await
}

pub async fn cancel(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let core = state.core.clone();
    let fut = core.cancel(&session.principal, &id);
    act(&session, &form.csrf, "/access", "cancelled", fut).await
}

// ---- approvals -------------------------------------------------------------

pub async fn approvals(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let filter =
        RequestFilter { states: vec![RequestState::Pending, RequestState::Active], limit: 500, ..Default::default() };
    let visible = match state.core.list_requests(&session.principal, filter).await {
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
    let now = Utc::now();
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

fn grant_table(session: &Session, grants: &[&RequestView], now: chrono::DateTime<Utc>, back: &str) -> Markup {
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

#[derive(Deserialize)]
pub struct CommentForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    back: String,
}

fn comment(form: &CommentForm) -> Option<String> {
    let c = form.comment.trim();
    (!c.is_empty()).then(|| c.chars().take(500).collect())
}

pub async fn approve(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CommentForm>,
) -> Response {
    let core = state.core.clone();
    let fut = core.approve(&session.principal, &id, comment(&form));
    act(&session, &form.csrf, "/approvals", "approved", fut).await
}

pub async fn deny(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CommentForm>,
) -> Response {
    let core = state.core.clone();
    let fut = core.deny(&session.principal, &id, comment(&form));
    act(&session, &form.csrf, "/approvals", "denied", fut).await
}

pub async fn revoke(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    Form(form): Form<CommentForm>,
) -> Response {
    // Only our own pages are valid places to return to.
    let back = if form.back == "/approvals" { "/approvals" } else { "/admin" };
    let core = state.core.clone();
    let fut = core.revoke(&session.principal, &id, comment(&form));
    act(&session, &form.csrf, back, "revoked", fut).await
}

// ---- admin -----------------------------------------------------------------

pub async fn admin(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !session.admin {
        return failure(&session, StatusCode::FORBIDDEN, "Only admins may open this page.", "/access");
    }
    let filter = RequestFilter { states: vec![RequestState::Active], limit: 500, ..Default::default() };
    let active = match state.core.list_requests(&session.principal, filter).await {
        Ok(r) => r,
        Err(e) => return core_failure(&session, e, "/admin"),
    };
    let catalog = state.core.catalog();
    let now = Utc::now();
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

// ---- audit -----------------------------------------------------------------

#[derive(Deserialize, Default)]
pub struct AuditQuery {
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
    after: Option<i64>,
    /// Export: at most this many events.
    limit: Option<u64>,
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

fn audit_filter(q: &AuditQuery) -> Result<AuditFilter, String> {
    let action = match q.action.trim() {
        "" => None,
        a => Some(Action::parse(a).ok_or_else(|| format!("{a:?} is not an event kind"))?),
    };
    let opt = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    Ok(AuditFilter {
        actor: opt(&q.actor),
        target: opt(&q.target),
        action,
        since: parse_local(&q.since)?,
        until: parse_local(&q.until)?,
    })
}

const AUDIT_PAGE: u32 = 50;

pub async fn audit(State(state): State<AppState>, session: Session, Query(query): Query<AuditQuery>) -> Response {
    let (filter, error) = match audit_filter(&query) {
        Ok(f) => (f, None),
        Err(e) => (AuditFilter::default(), Some(e)),
    };
    let before = query.before.unwrap_or(i64::MAX);
    let events = match state.core.audit_search(&session.principal, &filter, before, AUDIT_PAGE).await {
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

/// Whether `event` passes `filter`: the same tests the store's search makes.
fn matches(filter: &AuditFilter, event: &AuditEvent) -> bool {
    filter.actor.as_ref().is_none_or(|a| &event.actor == a)
        && filter.target.as_ref().is_none_or(|t| event.target.as_ref() == Some(t))
        && filter.action.is_none_or(|a| event.action == a)
        && filter.since.is_none_or(|s| event.at >= s)
        && filter.until.is_none_or(|u| event.at < u)
}

/// Every matching event as JSON lines, oldest first, streamed page by page
/// from the store so that a long log never sits in memory whole. `after`
/// (a sequence number) and `limit` page through it: the next page starts
/// after the last line's `seq`.
pub async fn audit_export(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<AuditQuery>,
) -> Response {
    let filter = match audit_filter(&query) {
        Ok(f) => f,
        Err(e) => return failure(&session, StatusCode::BAD_REQUEST, &e, "/audit"),
    };
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return failure(&session, StatusCode::BAD_REQUEST, "after must be a sequence number, 0 or more", "/audit");
    }
    let limit = query.limit.unwrap_or(u64::MAX);
    // Fail before the first byte when the store cannot be read at all.
    let first = match state.core.audit_page(&session.principal, after, EXPORT_PAGE).await {
        Ok(page) => page,
        Err(e) => return core_failure(&session, e, "/audit"),
    };
    struct Export {
        state: AppState,
        who: ajar_domain::Principal,
        filter: AuditFilter,
        page: Option<Vec<AuditEvent>>,
        after: i64,
        left: u64,
    }
    let start = Export { state, who: session.principal.clone(), filter, page: Some(first), after, left: limit };
    let stream = futures::stream::unfold(start, |mut x| async move {
        loop {
            if x.left == 0 {
                return None;
            }
            let page = match x.page.take() {
                Some(page) => page,
                None => match x.state.core.audit_page(&x.who, x.after, EXPORT_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        // The answer has started: all that is left is to
                        // break it off, so the download shows as incomplete.
                        tracing::error!(error = %e, after = x.after, "the audit export stopped: the store cannot be read");
                        x.left = 0;
                        return Some((Err(std::io::Error::other(e.to_string())), x));
                    }
                },
            };
            let last = page.last()?.seq;
            x.after = last;
            let mut chunk = String::new();
            for event in page.iter().filter(|e| matches(&x.filter, e)) {
                if x.left == 0 {
                    break;
                }
                x.left -= 1;
                // An AuditEvent always serializes.
                chunk.push_str(&serde_json::to_string(event).unwrap_or_default());
                chunk.push('\n');
            }
            if !chunk.is_empty() {
                return Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(chunk)), x));
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"ajar-audit.jsonl\""),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Events an export reads from the store at a time.
const EXPORT_PAGE: u32 = 1000;

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---- live updates and assets -------------------------------------------------

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
