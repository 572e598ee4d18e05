//! The JSON shapes of ajar's HTTP API, shared by the server (`ajar-api`)
//! and the client (`ajar-client`) so that the two cannot disagree about a
//! field, and kept apart from the domain types so that the wire format
//! changes only on purpose.
//!
//! This crate knows nothing of the domain: `ajar-api` converts domain
//! values into these types. Request and enforcement states are enums here
//! too (spelled as on the wire), so that clients match on them instead of
//! comparing strings. With the `schema` feature every type also describes
//! itself for the server's OpenAPI document (utoipa); the client builds
//! without it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// No `Debug`: the password must never reach a log line.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub username: String,
}

/// The answer to ending every session of a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TokensRevoked {
    pub user: String,
    /// How many tokens stopped working.
    pub revoked: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    pub username: String,
    pub groups: Vec<String>,
    pub admin: bool,
    pub auditor: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRequestBody {
    /// Name of the target.
    pub target: String,
    /// How long, such as `15m`, `1h30m` or `90s`.
    pub duration: String,
    #[serde(default)]
    pub reason: String,
    /// An address or network the grant binds to instead of your own
    /// address; the policy says which are allowed.
    pub source: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Connect {
    pub host: String,
    pub port: u16,
    /// Other addresses that reach the same target (each agent of the
    /// target's group has its own); any of them works.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<Endpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct ApprovalDto {
    pub approver: String,
    pub at: DateTime<Utc>,
    pub comment: Option<String>,
}

/// Where a request stands, spelled as on the wire (`timed_out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Pending,
    Active,
    Expired,
    Revoked,
    Released,
    Denied,
    Cancelled,
    TimedOut,
}

impl RequestState {
    pub const ALL: [RequestState; 8] = [
        RequestState::Pending,
        RequestState::Active,
        RequestState::Expired,
        RequestState::Revoked,
        RequestState::Released,
        RequestState::Denied,
        RequestState::Cancelled,
        RequestState::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Active => "active",
            RequestState::Expired => "expired",
            RequestState::Revoked => "revoked",
            RequestState::Released => "released",
            RequestState::Denied => "denied",
            RequestState::Cancelled => "cancelled",
            RequestState::TimedOut => "timed_out",
        }
    }

    /// Whether nothing can happen to the request any more: everything but
    /// pending and active.
    pub fn is_final(self) -> bool {
        !matches!(self, RequestState::Pending | RequestState::Active)
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no request state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState(pub String);

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<&str> = RequestState::ALL.iter().map(|s| s.as_str()).collect();
        write!(f, "{:?} is not a state; use one of {}", self.0, all.join(", "))
    }
}

impl std::error::Error for UnknownState {}

impl FromStr for RequestState {
    type Err = UnknownState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RequestState::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| UnknownState(text.to_owned()))
    }
}

/// Where the network path of a grant stands, spelled as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementStatus {
    /// Not a grant (yet, or ever): nothing to enforce.
    None,
    Opening,
    Open,
    Closing,
    Closed,
    /// The driver failed; the reconciler retries.
    Failed,
}

impl EnforcementStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcementStatus::None => "none",
            EnforcementStatus::Opening => "opening",
            EnforcementStatus::Open => "open",
            EnforcementStatus::Closing => "closing",
            EnforcementStatus::Closed => "closed",
            EnforcementStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for EnforcementStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct EnforcementDto {
    /// `none`, `opening`, `open`, `closing`, `closed` or `failed`.
    // Documented as the string it is on the wire, as the document always
    // described it.
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub status: EnforcementStatus,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct RequestDto {
    pub id: String,
    pub target: String,
    pub requester: String,
    pub reason: String,
    /// The network the grant admits, in CIDR form.
    pub source: String,
    pub duration_seconds: u64,
    /// `pending`, `active`, `expired`, `revoked`, `released`, `denied`,
    /// `cancelled` or `timed_out`.
    #[cfg_attr(feature = "schema", schema(value_type = String))]
    pub state: RequestState,
    pub created_at: DateTime<Utc>,
    /// A pending request times out at this instant.
    pub decide_by: DateTime<Utc>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub approvals_required: u32,
    pub approvals: Vec<ApprovalDto>,
    pub closed_by: Option<String>,
    pub close_comment: Option<String>,
    pub policies: Vec<String>,
    pub enforcement: EnforcementDto,
    /// Where to connect, once the path is open.
    pub connect: Option<Connect>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct TargetDto {
    pub name: String,
    pub driver: String,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The longest grant you may request.
    pub max_duration: String,
    pub max_duration_seconds: u64,
    pub reason_required: bool,
    /// 0 means requests are approved automatically.
    pub approvals_required: u32,
    pub approvers: Vec<String>,
    pub policies: Vec<String>,
    /// Where to connect once a grant is open.
    pub connect: Option<Connect>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct AuditEventDto {
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    pub subject: Option<String>,
    pub reason: Option<String>,
    #[cfg_attr(feature = "schema", schema(value_type = Object))]
    pub data: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub events: Vec<AuditEventDto>,
    /// Pass as `after` to read on.
    pub next_after: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct AuditVerifyDto {
    pub ok: bool,
    /// How many events verified.
    pub events: i64,
    pub head_hash: String,
    /// The first event that was edited, inserted or deleted.
    pub first_bad_seq: Option<i64>,
    pub problem: Option<String>,
}

/// Whether and how the server signs people in through SSO.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SsoInfo {
    pub enabled: bool,
    /// Whether the identity provider offers the device authorization grant.
    pub device_flow: bool,
    /// Whether local users may still sign in with a password.
    pub local_users: bool,
}

/// A device sign-in started at the identity provider (RFC 8628).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SsoDevice {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SsoDevicePoll {
    pub device_code: String,
}

/// Where a CLI sign-in stands: `pending` (poll again) or `done` with a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SsoStatus {
    Pending,
    Done(LoginResponse),
}

/// The one-time code of a loopback sign-in and the verifier that goes with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub struct SsoHandoff {
    pub code: String,
    pub verifier: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn states_are_spelled_as_on_the_wire() {
        for state in RequestState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<RequestState>(&json).unwrap(), state);
            assert_eq!(state.as_str().parse::<RequestState>(), Ok(state));
        }
        assert_eq!(RequestState::TimedOut.to_string(), "timed_out");
        for status in [
            EnforcementStatus::None,
            EnforcementStatus::Opening,
            EnforcementStatus::Open,
            EnforcementStatus::Closing,
            EnforcementStatus::Closed,
            EnforcementStatus::Failed,
        ] {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(serde_json::from_str::<EnforcementStatus>(&json).unwrap(), status);
        }
    }

    #[test]
    fn an_unknown_state_names_the_known_ones() {
        let error = "done".parse::<RequestState>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"done\" is not a state; use one of pending, active, expired, revoked, released, denied, cancelled, timed_out"
        );
    }

    #[test]
    fn only_pending_and_active_are_open() {
        let open: Vec<RequestState> = RequestState::ALL.into_iter().filter(|s| !s.is_final()).collect();
        assert_eq!(open, [RequestState::Pending, RequestState::Active]);
    }
}
