//! "Sign in with SSO" in the browser: the authorization code flow with
//! PKCE, state and nonce. The pending sign-in travels in a short-lived
//! cookie so that any replica can finish it; a sign-in the CLI started
//! (`ajar login --sso` without the device grant) ends with a redirect to
//! its loopback listener instead of a session.

use ajar_oidc::{answer, Pending};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::pages::sign_in::sign_in_failure;
use crate::edge::caller::{failed_sign_in, ClientAddr};
use crate::edge::cookies::{self, cookie, Cookies};
use crate::{AppState, Problem};

/// Where the provider sends the browser back: `oidc.redirect_url`, which
/// the config requires. Never the request's `Host` header: a client picks
/// that, and the provider would send the code wherever it names.
fn redirect_uri(sso: &ajar_oidc::Sso) -> &str {
    &sso.settings().redirect_url
}

#[derive(Deserialize)]
pub struct StartQuery {
    /// Set by `ajar login --sso` for a loopback sign-in: the port it
    /// listens on and the PKCE challenge of its own verifier.
    cli_port: Option<u16>,
    cli_challenge: Option<String>,
}

/// `GET /sso/start`: off to the provider.
pub async fn start(State(state): State<AppState>, Query(q): Query<StartQuery>) -> Response {
    let sso = match state.sso() {
        Ok(s) => s.clone(),
        Err(p) => return p.into_response(),
    };
    let (url, pending) = match sso.begin(redirect_uri(&sso)).await {
        Ok(x) => x,
        Err(e) => return Problem::from_sso(&e).into_response(),
    };
    let mut value = pending.encode();
    match (q.cli_port, q.cli_challenge.as_deref()) {
        (Some(port), Some(challenge)) if port > 0 && Pending::decode(&format!("a.b.{challenge}")).is_some() => {
            value.push_str(&format!("~{port}~{challenge}"));
        }
        (None, None) => {}
        _ => {
            return Problem::bad_request(
                "bad-cli-sign-in",
                "cli_port and cli_challenge go together; run `ajar login --sso` again",
            )
            .into_response()
        }
    }
    let mut response = Redirect::to(&url).into_response();
    cookies::add(&mut response, &Cookies::of(&state).set_sso(&value, 600));
    response
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The sign-in page that tells what `problem` says.
fn refused(problem: &Problem) -> Response {
    sign_in_failure(problem.status(), &problem.detail)
}

/// `GET /sso/callback`: the provider sent the browser back.
pub async fn callback(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let sso = match state.sso() {
        Ok(s) => s.clone(),
        Err(p) => return p.into_response(),
    };
    if let Err(e) = state.core.sign_in_allowed(addr) {
        return Problem::from(e).into_response();
    }
    let cookies = Cookies::of(&state);
    let raw = cookie(&headers, cookies.sso()).unwrap_or_default();
    let mut parts = raw.splitn(3, '~');
    let pending = parts.next().and_then(Pending::decode);
    let cli = match (parts.next().and_then(|p| p.parse::<u16>().ok()), parts.next()) {
        (Some(port), Some(challenge)) => Some((port, challenge.to_owned())),
        _ => None,
    };
    if let Some(error) = &q.error {
        // Anyone can send a browser here with any text: the provider's words
        // go to the log only (capped and escaped), and what the user and the
        // audit log read is ajar's, naming only a registered error code.
        let code = answer::registered_error(error);
        tracing::warn!(
            error = %answer::for_log(error),
            description = %answer::for_log(q.error_description.as_deref().unwrap_or("")),
            "single sign-on: the identity provider answered with an error"
        );
        let why = format!("the identity provider answered {}", code.unwrap_or("an unregistered error code"));
        let _ = state.core.record_failed_sign_in(None, addr, "sso", &why).await;
        return sign_in_failure(StatusCode::UNAUTHORIZED, &answer::failure_sentence(error));
    }
    let (Some(pending), Some(code), Some(returned)) = (pending, q.code.as_deref(), q.state.as_deref()) else {
        let _ = state.core.record_failed_sign_in(None, addr, "sso", "callback without a sign-in in progress").await;
        return sign_in_failure(
            StatusCode::BAD_REQUEST,
            "This sign-in is not in progress in this browser (it expired or was started elsewhere). Start again from the sign-in page.",
        );
    };
    if !cookies::same(&pending.state, returned) {
        let _ = state.core.record_failed_sign_in(None, addr, "sso", "state mismatch").await;
        return sign_in_failure(
            StatusCode::BAD_REQUEST,
            "This sign-in answer does not belong to the sign-in this browser started (state mismatch). Start again from the sign-in page.",
        );
    }
    let identity = match sso.finish(code, &pending, redirect_uri(&sso), state.core.now().timestamp()).await {
        Ok(identity) => identity,
        Err(e) => return refused(&failed_sign_in(&state, addr, "sso", e).await),
    };
    let mut response = match cli {
        Some((port, challenge)) => match state.core.sso_handoff(&identity, addr, &challenge).await {
            Ok(code) => Redirect::to(&format!("http://127.0.0.1:{port}/callback?code={code}")).into_response(),
            Err(e) => return refused(&Problem::from(e)),
        },
        None => match state.core.sso_login(&identity, addr, "sso").await {
            Ok((token, expires_at)) => {
                let mut response = Redirect::to("/access").into_response();
                cookies::add(
                    &mut response,
                    &cookies.set_session(Some(&token), cookies::max_age(expires_at, state.core.now())),
                );
                response
            }
            Err(e) => return refused(&Problem::from(e)),
        },
    };
    cookies::add(&mut response, &cookies.set_sso("", 0));
    response
}
