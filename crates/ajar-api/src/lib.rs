//! ajar's HTTP API: an axum router over the core's use cases, JSON in and
//! out, errors as `application/problem+json`, an OpenAPI document generated
//! from the handlers, health and Prometheus endpoints.
//!
//! The same router serves the web portal (`portal`): server-rendered pages
//! over the same core calls, for people who would rather not use a CLI.
//!
//! The API never talks SQL and never decides policy: it authenticates,
//! works out the caller's address, parses input into domain types and maps
//! the core's answers to HTTP. The JSON shapes are `ajar-wire`'s (`wire`
//! converts into them); what the JSON routes and the portal share lives in
//! `edge`, so that neither imports the other.

mod edge;
mod handlers;
mod ops;
mod portal;
mod sso;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use ajar_core::Core;
use ajar_oidc::Sso;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use ipnet::IpNet;

pub use edge::problem::Problem;
pub use handlers::ApiDoc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
    /// Peers whose `X-Forwarded-For` header is believed.
    pub trusted_proxies: Arc<Vec<IpNet>>,
    /// Whether the server speaks HTTPS itself (`[server] tls`).
    pub tls: bool,
    /// Single sign-on, when `[oidc]` is configured.
    pub sso: Option<Arc<Sso>>,
    /// `[server] public_url`: the scheme and host browsers reach the server
    /// at, without a trailing slash (`https://ajar.example.com`). When set
    /// it decides whether portal cookies are `Secure` (and `__Host-`
    /// prefixed); without it they are `Secure` exactly when `tls` is on.
    pub public_url: Option<String>,
    /// Who may read `/metrics` through this router.
    pub metrics: MetricsAccess,
    /// The listener's idle timeout (`[server] http_idle_timeout`): a request
    /// body that sends nothing for this long fails, and `/events` sends its
    /// keep-alives well within it so that a live page is never idle.
    pub idle_timeout: Duration,
    /// The API listener's connection counters, for `/metrics`.
    pub connections: Arc<ConnectionStats>,
}

impl AppState {
    /// Single sign-on, or the 404 that says it is not configured.
    fn sso(&self) -> Result<&Arc<Sso>, Problem> {
        self.sso.as_ref().ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_FOUND,
                "sso-not-configured",
                "single sign-on is not configured on this server; an administrator can add an [oidc] section to the config",
            )
        })
    }
}

/// Who may read `/metrics`.
#[derive(Clone, Debug)]
pub enum MetricsAccess {
    /// Callers that present this bearer token.
    Token(MetricsToken),
    /// Callers on this host only: the listener is a loopback address, and a
    /// request that a proxy forwarded (`X-Forwarded-For`, `Forwarded`,
    /// `X-Real-IP`) is refused.
    Local,
    /// Everyone who can connect (the separate `metrics_listen` listener
    /// without a token: its address is the protection).
    Open,
    /// Not on this listener: it is served at `metrics_listen`.
    Elsewhere(SocketAddr),
    /// Nobody: the API listens beyond loopback and no token is configured.
    Closed,
}

/// The bearer token `/metrics` requires; never printed.
#[derive(Clone)]
pub struct MetricsToken(Arc<str>);

impl MetricsToken {
    pub fn new(token: &str) -> Self {
        Self(Arc::from(token))
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken(<redacted>)")
    }
}

/// Counters of the API listener's connections, kept by whoever accepts
/// them (the binary) and shown at `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Open now.
    pub open: AtomicU64,
    /// The cap on open connections.
    pub limit: AtomicU64,
    /// Closed at once because the cap was reached.
    pub refused: AtomicU64,
    /// Closed after the idle timeout.
    pub idle_closed: AtomicU64,
}

/// The whole HTTP surface. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// so that handlers see the peer address.
pub fn router(state: AppState) -> Router {
    let idle = state.idle_timeout;
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
        // A body that stops arriving fails the request rather than holding
        // its connection; the listener does the same for everything else
        // but a request being answered.
        .layer(axum::middleware::map_request(move |request: axum::extract::Request| async move {
            request.map(|body| axum::body::Body::new(tower_http::timeout::TimeoutBody::new(idle, body)))
        }))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// The router of the separate metrics listener (`[server] metrics_listen`):
/// `/metrics` only.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .fallback(ops::only_metrics)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
