//! Signing in and out: the sign-in page (password, and SSO when it is
//! configured), the page a failed SSO sign-in ends on, and sign-out.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use super::shared::{core_failure, csrf_refused, render, CsrfForm};
use crate::edge::caller::ClientAddr;
use crate::edge::cookies::{self, cookie, same, Cookies};
use crate::portal::session::{self, Session};
use crate::portal::view::{self, Nav};
use crate::{AppState, Problem};

pub async fn home(State(state): State<AppState>, headers: HeaderMap) -> Redirect {
    if cookie(&headers, Cookies::of(&state).session()).is_some() {
        Redirect::to("/access")
    } else {
        Redirect::to("/login")
    }
}

/// The sign-in page after a failed SSO sign-in.
pub fn sign_in_failure(status: StatusCode, detail: &str) -> Response {
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
    cookies::add(&mut response, &Cookies::of(state).set_login_csrf(&csrf, 3600));
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
    if expected.is_empty() || !same(&expected, &form.csrf) {
        return login_page(
            &state,
            StatusCode::FORBIDDEN,
            &form.username,
            Some("This sign-in form is out of date; please try again."),
        );
    }
    match state.core.login(&form.username, &form.password, addr).await {
        Ok((token, expires_at)) => {
            let max_age = cookies::max_age(expires_at, state.core.now());
            let mut response = Redirect::to("/access").into_response();
            cookies::add(&mut response, &cookies.set_session(Some(&token), max_age));
            cookies::add(&mut response, &cookies.set_login_csrf("", 0));
            response
        }
        Err(e) => {
            let problem = Problem::from(e);
            login_page(&state, problem.status(), &form.username, Some(&problem.detail))
        }
    }
}

pub async fn logout(State(state): State<AppState>, session: Session, Form(form): Form<CsrfForm>) -> Response {
    if !session.check_csrf(&form.csrf) {
        return csrf_refused(&session, "/access");
    }
    if let Err(e) = state.core.logout(&session.principal, &session.token, session.addr).await {
        return core_failure(&session, e, "/access");
    }
    let mut response = Redirect::to("/login").into_response();
    cookies::add(&mut response, &Cookies::of(&state).set_session(None, 0));
    response
}
