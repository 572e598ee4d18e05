//! RFC 9457 problem details: every error the API returns, and how the
//! core's and the identity provider's errors become one.

use ajar_core::CoreError;
use ajar_oidc::SsoError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};
use tracing::error;

/// An error response. `type` is stable (`urn:ajar:problem:<slug>`) so that
/// clients can branch on it; `detail` is a sentence for a person.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    #[serde(serialize_with = "status_code")]
    #[schema(value_type = u16)]
    status: StatusCode,
    pub detail: String,
    #[serde(skip)]
    retry_after: Option<u64>,
}

fn status_code<S: Serializer>(status: &StatusCode, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u16(status.as_u16())
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:ajar:problem:{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, slug, detail)
    }

    /// The HTTP status this problem answers with (and names in its body).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// What a failure of single sign-on tells the caller. A failure of the
    /// provider itself is logged here, once.
    pub(crate) fn from_sso(e: &SsoError) -> Self {
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
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status;
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
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", detail).retry_after(*retry_after_secs)
            }
            CoreError::Invalid(_) => Problem::new(StatusCode::BAD_REQUEST, "invalid", detail),
            CoreError::Unprocessable(_) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", detail),
            CoreError::Busy { retry_after_secs } => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "busy", detail).retry_after(*retry_after_secs)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_body_names_the_status_as_a_number() {
        let problem = Problem::from(CoreError::RateLimited { retry_after_secs: 7 });
        assert_eq!(problem.status(), StatusCode::TOO_MANY_REQUESTS);
        let body = serde_json::to_value(&problem).unwrap();
        assert_eq!(body["status"], 429);
        assert_eq!(body["type"], "urn:ajar:problem:rate-limited");
        assert!(body.get("retry_after").is_none());
        let response = problem.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    }
}
