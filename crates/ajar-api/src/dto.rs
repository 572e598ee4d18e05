//! The JSON shapes of the API, separate from the domain types so that the
//! wire format changes only on purpose.

use ajar_core::{RequestView, TargetView};
use ajar_domain::AuditEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// No `Debug`: the password must never reach a log line.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub username: String,
}

/// The answer to ending every session of a user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokensRevoked {
    pub user: String,
    /// How many tokens stopped working.
    pub revoked: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub username: String,
    pub groups: Vec<String>,
    pub admin: bool,
    pub auditor: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Connect {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalDto {
    pub approver: String,
    pub at: DateTime<Utc>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnforcementDto {
    /// `none`, `opening`, `open`, `closing`, `closed` or `failed`.
    pub status: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    pub state: String,
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

impl RequestDto {
    /// `host` replaces an empty connect host (a gateway listening on a
    /// wildcard address): the name the client used to reach the API.
    pub fn from_view(view: RequestView, host: &str) -> Self {
        let r = view.request;
        RequestDto {
            id: r.id.to_string(),
            target: r.target.to_string(),
            requester: r.requester.to_string(),
            reason: r.reason,
            source: r.source.to_string(),
            duration_seconds: r.duration.as_secs(),
            state: r.state.as_str().to_owned(),
            created_at: r.created_at,
            decide_by: r.decide_by,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            approvals_required: r.approvals_required,
            approvals: r
                .approvals
                .into_iter()
                .map(|a| ApprovalDto { approver: a.approver.to_string(), at: a.at, comment: a.comment })
                .collect(),
            closed_by: r.closed_by,
            close_comment: r.close_comment,
            policies: r.policies.iter().map(|p| p.to_string()).collect(),
            enforcement: EnforcementDto {
                status: r.enforcement.status.as_str().to_owned(),
                error: r.enforcement.error,
            },
            connect: view.connect.map(|c| connect(c, host)),
        }
    }
}

fn connect(opened: ajar_enforce::Opened, host: &str) -> Connect {
    Connect { host: if opened.host.is_empty() { host.to_owned() } else { opened.host }, port: opened.port }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

impl TargetDto {
    pub fn from_view(view: TargetView, host: &str) -> Self {
        TargetDto {
            name: view.target.name.to_string(),
            driver: view.target.driver.to_string(),
            labels: view.target.labels,
            max_duration: view.max_duration.to_string(),
            max_duration_seconds: view.max_duration.as_secs(),
            reason_required: view.reason_required,
            approvals_required: view.approvals_required,
            approvers: view.approvers,
            policies: view.policies,
            connect: view.connect.map(|c| connect(c, host)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditEvent> for AuditEventDto {
    fn from(e: AuditEvent) -> Self {
        AuditEventDto {
            seq: e.seq,
            at: e.at,
            actor: e.actor,
            action: e.action.as_str().to_owned(),
            target: e.target,
            source: e.source,
            request_id: e.request_id,
            subject: e.subject,
            reason: e.reason,
            data: e.data,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<AuditEventDto>,
    /// Pass as `after` to read on.
    pub next_after: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SsoInfo {
    pub enabled: bool,
    /// Whether the identity provider offers the device authorization grant.
    pub device_flow: bool,
    /// Whether local users may still sign in with a password.
    pub local_users: bool,
}

/// A device sign-in started at the identity provider (RFC 8628).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SsoDevice {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SsoDevicePoll {
    pub device_code: String,
}

/// Where a CLI sign-in stands: `pending` (poll again) or `done` with a token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SsoStatus {
    Pending,
    Done(LoginResponse),
}

/// The one-time code of a loopback sign-in and the verifier that goes with it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SsoHandoff {
    pub code: String,
    pub verifier: String,
}
