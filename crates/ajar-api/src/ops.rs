//! Operational endpoints: health, readiness, metrics and the OpenAPI
//! document.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use ajar_domain::RequestState;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use utoipa::OpenApi;

use sha2::{Digest, Sha256};

use crate::{ApiDoc, AppState, MetricsAccess, Problem};

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers.
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, Problem> {
    state.core.ready().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready: the store does not answer");
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "the database does not answer")
    })?;
    Ok("ready\n")
}

pub async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

pub async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-such-endpoint",
        "there is no such endpoint; GET /api/v1/openapi.json lists them",
    )
}

/// The metrics listener's answer to anything but `/metrics`.
pub async fn only_metrics() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-such-endpoint",
        "this listener (server.metrics_listen) serves only /metrics; the API is on server.listen",
    )
}

/// Headers a proxy adds when it forwards a request.
const FORWARDING_HEADERS: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

/// Whether this caller may read `/metrics`, or the problem to answer.
fn may_read_metrics(access: &MetricsAccess, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Problem> {
    match access {
        MetricsAccess::Open => Ok(()),
        MetricsAccess::Token(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            // Compared as hashes, in time that does not depend on where
            // the two differ.
            let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(token.expose().as_bytes()));
            if !given.is_empty() && a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0 {
                Ok(())
            } else {
                Err(Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "metrics-token",
                    "/metrics needs the metrics token: send Authorization: Bearer <the token in server.metrics_token_env or server.metrics_token_file>",
                ))
            }
        }
        MetricsAccess::Local => {
            let forwarded = FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h));
            if peer.ip().is_loopback() && !forwarded {
                Ok(())
            } else {
                Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "metrics-local-only",
                    "/metrics without a token answers only requests made on this host, not ones forwarded by a proxy; set server.metrics_token_env or server.metrics_token_file to scrape it from elsewhere",
                ))
            }
        }
        MetricsAccess::Elsewhere(addr) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "metrics-elsewhere",
            format!("/metrics is served on its own listener, {addr} (server.metrics_listen)"),
        )),
        MetricsAccess::Closed => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "metrics-closed",
            "/metrics is off on this listener because it is reachable from other hosts and no token is set; set server.metrics_token_env or server.metrics_token_file, or serve it on its own listener with server.metrics_listen = \"127.0.0.1:9464\"",
        )),
    }
}

/// Prometheus text exposition. Everything here is read from memory: no
/// store query per scrape.
pub async fn metrics(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, Problem> {
    may_read_metrics(&state.metrics, peer, &headers)?;
    let core = &state.core;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP ajar_audit_events_total Audit events written since start, by action.");
    let _ = writeln!(out, "# TYPE ajar_audit_events_total counter");
    for (action, count) in core.metrics().events() {
        let _ = writeln!(out, "ajar_audit_events_total{{action=\"{action}\"}} {count}");
    }
    let (sum_ms, count, max_ms) = core.metrics().expiry_lag();
    let _ =
        writeln!(out, "# HELP ajar_expiry_lag_seconds How late grants were closed after their end, by the scheduler.");
    let _ = writeln!(out, "# TYPE ajar_expiry_lag_seconds summary");
    let _ = writeln!(out, "ajar_expiry_lag_seconds_sum {}", sum_ms as f64 / 1000.0);
    let _ = writeln!(out, "ajar_expiry_lag_seconds_count {count}");
    let _ = writeln!(out, "# HELP ajar_expiry_lag_max_seconds The largest expiry lag seen since start.");
    let _ = writeln!(out, "# TYPE ajar_expiry_lag_max_seconds gauge");
    let _ = writeln!(out, "ajar_expiry_lag_max_seconds {}", max_ms as f64 / 1000.0);
    let (pending, active) = core.metrics().live_requests();
    let _ = writeln!(out, "# HELP ajar_requests Requests that are pending or active now.");
    let _ = writeln!(out, "# TYPE ajar_requests gauge");
    let _ = writeln!(out, "ajar_requests{{state=\"{}\"}} {pending}", RequestState::Pending);
    let _ = writeln!(out, "ajar_requests{{state=\"{}\"}} {active}", RequestState::Active);
    let (verified, walks) = core.metrics().verification();
    let _ = writeln!(out, "# HELP ajar_audit_verified_events_total Audit events hashed and compared by verification.");
    let _ = writeln!(out, "# TYPE ajar_audit_verified_events_total counter");
    let _ = writeln!(out, "ajar_audit_verified_events_total {verified}");
    let _ = writeln!(out, "# HELP ajar_audit_whole_log_verifications_total Verifications that walked the whole log.");
    let _ = writeln!(out, "# TYPE ajar_audit_whole_log_verifications_total counter");
    let _ = writeln!(out, "ajar_audit_whole_log_verifications_total {walks}");
    let c = &state.connections;
    let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    let _ = writeln!(out, "# HELP ajar_api_connections API connections open now.");
    let _ = writeln!(out, "# TYPE ajar_api_connections gauge");
    let _ = writeln!(out, "ajar_api_connections {}", load(&c.open));
    let _ = writeln!(out, "# HELP ajar_api_connections_max The cap on open API connections.");
    let _ = writeln!(out, "# TYPE ajar_api_connections_max gauge");
    let _ = writeln!(out, "ajar_api_connections_max {}", load(&c.limit));
    let _ = writeln!(
        out,
        "# HELP ajar_api_connections_refused_total API connections closed at once because the cap was reached."
    );
    let _ = writeln!(out, "# TYPE ajar_api_connections_refused_total counter");
    let _ = writeln!(out, "ajar_api_connections_refused_total {}", load(&c.refused));
    let _ =
        writeln!(out, "# HELP ajar_api_connections_idle_closed_total API connections closed after the idle timeout.");
    let _ = writeln!(out, "# TYPE ajar_api_connections_idle_closed_total counter");
    let _ = writeln!(out, "ajar_api_connections_idle_closed_total {}", load(&c.idle_closed));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::MetricsToken;

    fn check(access: &MetricsAccess, peer: &str, headers: &[(&str, &str)]) -> Result<(), u16> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                axum::http::HeaderValue::from_str(value).unwrap(),
            );
        }
        may_read_metrics(access, peer.parse().unwrap(), &map).map_err(|p| p.status().as_u16())
    }

    #[test]
    fn metrics_are_read_only_by_whom_the_mode_allows() {
        let token = MetricsAccess::Token(MetricsToken::new("s3cret-metrics-token"));
        assert_eq!(check(&token, "203.0.113.5:4000", &[("authorization", "Bearer s3cret-metrics-token")]), Ok(()));
        assert_eq!(check(&token, "127.0.0.1:4000", &[]), Err(401));
        assert_eq!(check(&token, "127.0.0.1:4000", &[("authorization", "Bearer s3cret-metrics-tokeN")]), Err(401));
        assert_eq!(check(&token, "127.0.0.1:4000", &[("authorization", "Bearer ")]), Err(401));
        assert_eq!(check(&token, "127.0.0.1:4000", &[("authorization", "s3cret-metrics-token")]), Err(401));

        assert_eq!(check(&MetricsAccess::Local, "127.0.0.1:4000", &[]), Ok(()));
        assert_eq!(check(&MetricsAccess::Local, "[::1]:4000", &[]), Ok(()));
        for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            assert_eq!(
                check(&MetricsAccess::Local, "127.0.0.1:4000", &[(header, "198.51.100.1")]),
                Err(403),
                "{header}"
            );
        }
        assert_eq!(check(&MetricsAccess::Local, "192.0.2.8:4000", &[]), Err(403));

        // The default on a listener reachable from other hosts: nobody.
        assert_eq!(check(&MetricsAccess::Closed, "127.0.0.1:4000", &[]), Err(403));
        let elsewhere = MetricsAccess::Elsewhere("127.0.0.1:9464".parse().unwrap());
        assert_eq!(check(&elsewhere, "127.0.0.1:4000", &[]), Err(404));
        assert_eq!(check(&MetricsAccess::Open, "192.0.2.8:4000", &[]), Ok(()));
    }
}
