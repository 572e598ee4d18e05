//! Operational endpoints: health, readiness, metrics and the OpenAPI
//! document.

use std::fmt::Write;

use ajar_domain::RequestState;
use ajar_store::RequestFilter;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use utoipa::OpenApi;

use crate::{ApiDoc, AppState, Problem};

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers.
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, Problem> {
    state.core.store().ping().await.map_err(|e| {
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

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, Problem> {
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
    let live = core
        .store()
        .list_requests(&RequestFilter {
            states: vec![RequestState::Pending, RequestState::Active],
            ..Default::default()
        })
        .await
        .map_err(|e| Problem::from(ajar_core::CoreError::from(e)))?;
    let _ = writeln!(out, "# HELP ajar_requests Requests that are pending or active now.");
    let _ = writeln!(out, "# TYPE ajar_requests gauge");
    for state in [RequestState::Pending, RequestState::Active] {
        let n = live.iter().filter(|r| r.state == state).count();
        let _ = writeln!(out, "ajar_requests{{state=\"{state}\"}} {n}");
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
