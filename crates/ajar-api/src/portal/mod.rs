//! The web portal: server-rendered pages (maud) over the same core calls
//! as the JSON API, with a little hand-written JavaScript for live updates
//! (server-sent events) and countdowns. Every action works without
//! JavaScript.
//!
//! The browser's SSO sign-in (`sso`) is part of the portal; what the
//! portal shares with the JSON routes (cookies, problems, the caller's
//! address) is in `crate::edge`.
//!
//! Security: the session is the same kind of bearer token the API issues,
//! kept in an `HttpOnly; SameSite=Strict` cookie (`Secure` behind TLS);
//! every state-changing form carries a CSRF token derived from the session;
//! responses carry a strict Content-Security-Policy (no inline script or
//! style); maud escapes every interpolated value.

mod pages;
mod session;
mod sso;
mod view;

use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use self::pages::actions::{self, Act};
use self::pages::{access, admin, approvals, audit, export, live, sign_in, targets};
use crate::AppState;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(sign_in::home))
        .route("/login", get(sign_in::login_form).post(sign_in::login))
        .route("/logout", post(sign_in::logout))
        .route("/sso/start", get(sso::start))
        .route("/sso/callback", get(sso::callback))
        .route("/targets", get(targets::targets))
        .route("/targets/{name}/request", post(targets::request))
        .route("/access", get(access::access))
        .route("/access/{id}/release", actions::route(Act::Release))
        .route("/access/{id}/cancel", actions::route(Act::Cancel))
        .route("/approvals", get(approvals::approvals))
        .route("/approvals/{id}/approve", actions::route(Act::Approve))
        .route("/approvals/{id}/deny", actions::route(Act::Deny))
        .route("/admin", get(admin::admin))
        .route("/admin/{id}/revoke", actions::route(Act::Revoke))
        .route("/audit", get(audit::audit))
        .route("/audit/export", get(export::audit_export))
        .route("/events", get(live::events))
        .route("/static/app.css", get(live::stylesheet))
        .route("/static/app.js", get(live::script))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers every portal response carries.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}
