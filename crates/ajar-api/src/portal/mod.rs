//! The web portal: server-rendered pages (maud) over the same core calls
//! as the JSON API, with a little hand-written JavaScript for live updates
//! (server-sent events) and countdowns. Every action works without
//! JavaScript.
//!
//! Security: the session is the same kind of bearer token the API issues,
//! kept in an `HttpOnly; SameSite=Strict` cookie (`Secure` behind TLS);
//! every state-changing form carries a CSRF token derived from the session;
//! responses carry a strict Content-Security-Policy (no inline script or
//! style); maud escapes every interpolated value.

mod pages;
pub(crate) mod session;
mod view;

use axum::http::{header, HeaderValue};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/sso/start", get(crate::sso::start))
        .route("/sso/callback", get(crate::sso::callback))
        .route("/targets", get(pages::targets))
        .route("/targets/{name}/request", post(pages::request))
        .route("/access", get(pages::access))
        .route("/access/{id}/release", post(pages::release))
        .route("/access/{id}/cancel", post(pages::cancel))
        .route("/approvals", get(pages::approvals))
        .route("/approvals/{id}/approve", post(pages::approve))
        .route("/approvals/{id}/deny", post(pages::deny))
        .route("/admin", get(pages::admin))
        .route("/admin/{id}/revoke", post(pages::revoke))
        .route("/audit", get(pages::audit))
        .route("/audit/export", get(pages::audit_export))
        .route("/events", get(pages::events))
        .route("/static/app.css", get(pages::stylesheet))
        .route("/static/app.js", get(pages::script))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// The page a failed SSO sign-in ends on: what went wrong, and the way back.
pub(crate) fn sso_failure_page(status: axum::http::StatusCode, detail: &str) -> Response {
    pages::sign_in_failure(status, detail)
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
