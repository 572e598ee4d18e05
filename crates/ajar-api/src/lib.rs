//! ajar's HTTP API: an axum router over the core's use cases, JSON in and
//! out, errors as `application/problem+json`, an OpenAPI document generated
//! from the handlers, health and Prometheus endpoints.
//!
//! The same router serves the web portal (`portal`): server-rendered pages
//! over the same core calls, for people who would rather not use a CLI.
//!
//! The API never talks SQL and never decides policy: it authenticates,
//! works out the caller's address, parses input into domain types and maps
//! the core's answers to HTTP.

mod caller;
pub mod dto;
mod handlers;
mod ops;
mod portal;
mod problem;
mod sso;

use std::sync::Arc;

use ajar_core::Core;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use ipnet::IpNet;

pub use handlers::ApiDoc;
pub use problem::Problem;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
    /// Peers whose `X-Forwarded-For` header is believed.
    pub trusted_proxies: Arc<Vec<IpNet>>,
    /// Whether the server speaks HTTPS, so portal cookies are `Secure`.
    pub tls: bool,
    /// Single sign-on, when `[oidc]` is configured.
    pub sso: Option<Arc<ajar_oidc::Sso>>,
}

/// The whole HTTP surface. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// so that handlers see the peer address.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/login", post(handlers::login))
        .route("/logout", post(handlers::logout))
        .route("/users/{name}/revoke-tokens", post(handlers::revoke_tokens))
        .route("/sso", get(sso::info))
        .route("/sso/device", post(sso::device_start))
        .route("/sso/device/token", post(sso::device_poll))
        .route("/sso/loopback/token", post(sso::loopback_token))
        .route("/targets", get(handlers::targets))
        .route("/requests", post(handlers::create_request).get(handlers::list_requests))
        .route("/requests/{id}", get(handlers::get_request))
        .route("/requests/{id}/approve", post(handlers::approve))
        .route("/requests/{id}/deny", post(handlers::deny))
        .route("/requests/{id}/cancel", post(handlers::cancel))
        .route("/requests/{id}/release", post(handlers::release))
        .route("/requests/{id}/revoke", post(handlers::revoke))
        .route("/audit", get(handlers::audit))
        .route("/audit/verify", get(handlers::verify_audit))
        .route("/whoami", get(handlers::whoami))
        .route("/openapi.json", get(ops::openapi))
        .fallback(ops::not_found);
    Router::new()
        .nest("/api/v1", api)
        .merge(portal::routes(state.clone()))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        // Nothing ajar accepts is anywhere near this large.
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
