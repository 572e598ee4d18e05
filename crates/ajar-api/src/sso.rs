//! Single sign-on over HTTP: the portal's "Sign in with SSO" (authorization
//! code with PKCE, state and nonce; the pending sign-in travels in a
//! short-lived cookie so any replica can finish it), the CLI's device and
//! loopback sign-ins, and JWT bearer tokens for automation.

use std::net::IpAddr;
use std::sync::Arc;

use ajar_domain::policy::Principal;
use ajar_oidc::{answer, Pending, Sso, SsoError};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;

use crate::caller::ClientAddr;
use crate::dto::{SsoDevice, SsoDevicePoll, SsoHandoff, SsoInfo, SsoStatus};
use crate::portal::session::{self, Cookies};
use crate::{AppState, Problem};

/// The cookie that holds a browser sign-in in flight. `SameSite=Lax`, not
/// `Strict`: it must come back on the provider's top-level redirect.
const SSO_COOKIE: &str = "ajar_sso";

fn sso(state: &AppState) -> Result<&Arc<Sso>, Problem> {
    state.sso.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "sso-not-configured",
            "single sign-on is not configured on this server; an administrator can add an [oidc] section to the config",
        )
    })
}

fn now(state: &AppState) -> i64 {
    state.core.now().timestamp()
}

/// Where the provider sends the browser back: `oidc.redirect_url`, which
/// the config requires. Never the request's `Host` header: a client picks
/// that, and the provider would send the code wherever it names.
fn redirect_uri(sso: &Sso) -> &str {
    &sso.settings().redirect_url
}

fn provider_problem(e: &SsoError) -> Problem {
    match e {
        SsoError::Provider(p) => {
            tracing::warn!(error = %p, "single sign-on: the identity provider failed");
            Problem::new(StatusCode::BAD_GATEWAY, "identity-provider", p.to_string())
        }
        SsoError::Token(t) => Problem::new(StatusCode::UNAUTHORIZED, "invalid-token", t.to_string()),
        SsoError::Refused(r) => Problem::new(StatusCode::FORBIDDEN, "sign-in-refused", r.to_string()),
        SsoError::NoIdToken => Problem::new(StatusCode::BAD_GATEWAY, "identity-provider", e.to_string()),
    }
}

/// Audits a failed sign-in and turns it into the problem the caller sees.
async fn failed(state: &AppState, addr: IpAddr, method: &str, e: SsoError) -> Problem {
    let why = match &e {
        SsoError::Token(t) => format!("{}: {t}", t.kind()),
        other => other.to_string(),
    };
    if let Err(audit) = state.core.record_failed_sign_in(None, addr, method, &why).await {
        tracing::error!(error = %audit, "cannot audit a failed sign-in");
    }
    provider_problem(&e)
}

// ---- portal ---------------------------------------------------------------

#[derive(Deserialize)]
pub struct StartQuery {
    /// Set by `ajar login --sso` for a loopback sign-in: the port it
    /// listens on and the PKCE challenge of its own verifier.
    cli_port: Option<u16>,
    cli_challenge: Option<String>,
}

/// `GET /sso/start`: off to the provider.
pub async fn start(State(state): State<AppState>, Query(q): Query<StartQuery>) -> Response {
    let sso = match sso(&state) {
        Ok(s) => s.clone(),
        Err(p) => return p.into_response(),
    };
    let (url, pending) = match sso.begin(redirect_uri(&sso)).await {
        Ok(x) => x,
        Err(e) => return provider_problem(&e).into_response(),
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
    // Path=/sso keeps it from every other page, which rules out the
    // `__Host-` prefix (that needs Path=/); it is `Secure` like the others.
    let mut cookie = format!("{SSO_COOKIE}={value}; Path=/sso; HttpOnly; SameSite=Lax; Max-Age=600");
    if Cookies::of(&state).secure() {
        cookie.push_str("; Secure");
    }
    let mut response = Redirect::to(&url).into_response();
    if let Ok(v) = cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn sign_in_failed(status: StatusCode, detail: &str) -> Response {
    crate::portal::sso_failure_page(status, detail)
}

/// `GET /sso/callback`: the provider sent the browser back.
pub async fn callback(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let sso = match sso(&state) {
        Ok(s) => s.clone(),
        Err(p) => return p.into_response(),
    };
    if let Err(e) = state.core.sign_in_allowed(addr) {
        return Problem::from(e).into_response();
    }
    let raw = session::cookie(&headers, SSO_COOKIE).unwrap_or_default();
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
        return sign_in_failed(StatusCode::UNAUTHORIZED, &answer::failure_sentence(error));
    }
    let (Some(pending), Some(code), Some(returned)) = (pending, q.code.as_deref(), q.state.as_deref()) else {
        let _ = state.core.record_failed_sign_in(None, addr, "sso", "callback without a sign-in in progress").await;
        return sign_in_failed(
            StatusCode::BAD_REQUEST,
            "This sign-in is not in progress in this browser (it expired or was started elsewhere). Start again from the sign-in page.",
        );
    };
    if !session::same(&pending.state, returned) {
        let _ = state.core.record_failed_sign_in(None, addr, "sso", "state mismatch").await;
        return sign_in_failed(
            StatusCode::BAD_REQUEST,
            "This sign-in answer does not belong to the sign-in this browser started (state mismatch). Start again from the sign-in page.",
        );
    }
    let identity = match sso.finish(code, &pending, redirect_uri(&sso), now(&state)).await {
        Ok(identity) => identity,
        Err(e) => {
            let problem = failed(&state, addr, "sso", e).await;
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::UNAUTHORIZED);
            return sign_in_failed(status, &problem.detail);
        }
    };
    let mut clear = format!("{SSO_COOKIE}=; Path=/sso; HttpOnly; SameSite=Lax; Max-Age=0");
    if Cookies::of(&state).secure() {
        clear.push_str("; Secure");
    }
    let mut response = match cli {
        Some((port, challenge)) => match state.core.sso_handoff(&identity, addr, &challenge).await {
            Ok(code) => Redirect::to(&format!("http://127.0.0.1:{port}/callback?code={code}")).into_response(),
            Err(e) => {
                let problem = Problem::from(e);
                return sign_in_failed(
                    StatusCode::from_u16(problem.status).unwrap_or(StatusCode::FORBIDDEN),
                    &problem.detail,
                );
            }
        },
        None => match state.core.sso_login(&identity, addr, "sso").await {
            Ok((token, expires_at)) => {
                let max_age = u64::try_from((expires_at - Utc::now()).num_seconds()).unwrap_or(0);
                let mut response = Redirect::to("/access").into_response();
                let cookie = Cookies::of(&state).set_session(Some(&token), max_age);
                if let Ok(v) = cookie.parse() {
                    response.headers_mut().append(header::SET_COOKIE, v);
                }
                response
            }
            Err(e) => {
                let problem = Problem::from(e);
                return sign_in_failed(
                    StatusCode::from_u16(problem.status).unwrap_or(StatusCode::FORBIDDEN),
                    &problem.detail,
                );
            }
        },
    };
    if let Ok(v) = clear.parse() {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

// ---- CLI ------------------------------------------------------------------

/// Whether and how this server signs in through SSO.
pub async fn info(State(state): State<AppState>) -> Result<Json<SsoInfo>, Problem> {
    let Some(sso) = &state.sso else {
        return Ok(Json(SsoInfo { enabled: false, device_flow: false, local_users: true }));
    };
    let device_flow = sso.supports_device_flow().await.map_err(|e| provider_problem(&e))?;
    Ok(Json(SsoInfo { enabled: true, device_flow, local_users: sso.local_users() }))
}

/// Starts a device sign-in at the provider on the CLI's behalf (the client
/// secret stays on the server).
pub async fn device_start(State(state): State<AppState>) -> Result<Json<SsoDevice>, Problem> {
    let sso = sso(&state)?;
    let d = sso.device_start().await.map_err(|e| provider_problem(&e))?;
    Ok(Json(SsoDevice {
        device_code: d.device_code,
        user_code: d.user_code,
        verification_uri: d.verification_uri,
        verification_uri_complete: d.verification_uri_complete,
        expires_in: d.expires_in,
        interval: d.interval,
    }))
}

pub async fn device_poll(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<SsoDevicePoll>,
) -> Result<Json<SsoStatus>, Problem> {
    let sso = sso(&state)?;
    match sso.device_poll(&body.device_code, now(&state)).await {
        Ok(Ok(None)) => Ok(Json(SsoStatus::Pending)),
        Ok(Ok(Some(identity))) => {
            let (token, expires_at) = state.core.sso_login(&identity, addr, "sso-device").await?;
            Ok(Json(SsoStatus::Done(crate::dto::LoginResponse {
                token,
                expires_at,
                username: identity.name.to_string(),
            })))
        }
        Ok(Err(why)) => {
            let _ = state.core.record_failed_sign_in(None, addr, "sso-device", &why).await;
            Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "sign-in-failed",
                format!("the device sign-in ended without success: {why}; run `ajar login --sso` again"),
            ))
        }
        Err(e) => Err(failed(&state, addr, "sso-device", e).await),
    }
}

/// Redeems the one-time code of a loopback sign-in.
pub async fn loopback_token(
    State(state): State<AppState>,
    Json(body): Json<SsoHandoff>,
) -> Result<Json<crate::dto::LoginResponse>, Problem> {
    let (username, token, expires_at) = state.core.redeem_handoff(&body.code, &body.verifier).await?;
    Ok(Json(crate::dto::LoginResponse { token, expires_at, username }))
}

// ---- bearer tokens -------------------------------------------------------

/// The principal of a JWT bearer token from a trusted issuer, or a 401 that
/// says why not (audited).
pub async fn bearer(state: &AppState, token: &str, addr: IpAddr) -> Result<Principal, Problem> {
    let Some(sso) = state.sso.as_ref().filter(|s| !s.settings().trusted_tokens.is_empty()) else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "this server accepts no JWT bearer tokens (no oidc.trusted_tokens are configured); run `ajar login`",
        ));
    };
    // An address that keeps sending bad tokens waits before any more of
    // them are verified (or audited).
    state.core.sign_in_allowed(addr)?;
    match sso.verify_bearer(token, now(state)).await {
        Ok(identity) => Ok(state.core.bearer_principal(&identity, token, addr).await?),
        Err(e) => Err(failed(state, addr, "jwt", e).await),
    }
}
