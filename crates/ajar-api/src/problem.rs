//! RFC 9457 problem details: every error the API returns.

use ajar_core::CoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::error;

/// An error response. `type` is stable (`urn:ajar:problem:<slug>`) so that
/// clients can branch on it; `detail` is a sentence for a person.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:ajar:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.retry_after;
        let mut response = (status, axum::Json(self)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<CoreError> for Problem {
    fn from(e: CoreError) -> Self {
        let detail = e.to_string();
        match &e {
            CoreError::Rejected(r) => {
                let status = if r.is_forbidden() {
                    StatusCode::FORBIDDEN
                } else {
                    match r {
                        ajar_domain::Rejected::WrongState { .. }
                        | ajar_domain::Rejected::AlreadyApproved
                        | ajar_domain::Rejected::NoLongerAllowed(_) => StatusCode::CONFLICT,
                        _ => StatusCode::UNPROCESSABLE_ENTITY,
                    }
                };
                Problem::new(status, r.kind(), detail)
            }
            CoreError::NotFound { .. } => Problem::new(StatusCode::NOT_FOUND, "not-found", detail),
            CoreError::Unauthenticated(_) => Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail),
            CoreError::RateLimited { retry_after_secs } => {
                let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", detail);
                p.retry_after = Some(*retry_after_secs);
                p
            }
            CoreError::Invalid(_) => Problem::new(StatusCode::BAD_REQUEST, "invalid", detail),
            CoreError::Unprocessable(_) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", detail),
            CoreError::Busy { retry_after_secs } => {
                let mut p = Problem::new(StatusCode::TOO_MANY_REQUESTS, "busy", detail);
                p.retry_after = Some(*retry_after_secs);
                p
            }
            CoreError::Forbidden(_) => Problem::new(StatusCode::FORBIDDEN, "forbidden", detail),
            CoreError::Conflict => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            CoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "the database is unreachable");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
            }
            CoreError::Internal(cause) => {
                // Logged once, here, with its cause; the caller learns nothing
                // about the inside.
                error!(%cause, "internal error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "ajar hit an internal error; the server log has the details",
                )
            }
        }
    }
}
