//! Conversions between domain values and the columns that hold them.

use std::net::IpAddr;

use ajar_domain::request::Approval;
use ajar_domain::{
    Action, AuditEvent, Enforcement, EnforcementStatus, GrantDuration, Name, Request, RequestId, RequestRecord,
    RequestState, SourceNet, Timestamp,
};
use serde::Deserialize;

use crate::StoreError;

pub fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(v: i64) -> Result<Timestamp, StoreError> {
    chrono::DateTime::from_timestamp_micros(v).ok_or_else(|| StoreError::Corrupt(format!("timestamp {v}")))
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {value:?}"))
}

/// A `requests` row as plain column values.
#[derive(Debug, sqlx::FromRow)]
pub struct RequestRow {
    pub id: String,
    pub target: String,
    pub requester: String,
    pub requester_groups: String,
    pub requester_addr: String,
    pub reason: String,
    pub source: String,
    pub duration_seconds: i64,
    pub state: String,
    pub created_at: i64,
    pub decide_by: i64,
    pub starts_at: Option<i64>,
    pub ends_at: Option<i64>,
    pub approvals_required: i64,
    pub approvals: String,
    pub closed_by: Option<String>,
    pub close_comment: Option<String>,
    pub policies: String,
    pub enforcement_status: String,
    pub enforcement_error: Option<String>,
}

#[derive(serde::Serialize, Deserialize)]
struct ApprovalJson {
    approver: String,
    at: i64,
    comment: Option<String>,
}

fn names(json: &str, what: &str) -> Result<Vec<Name>, StoreError> {
    let raw: Vec<String> = serde_json::from_str(json).map_err(|_| corrupt(what, json))?;
    raw.iter().map(|n| Name::parse(n).map_err(|_| corrupt(what, n))).collect()
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Vectors of strings and plain structs always serialize.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".to_owned())
}

impl RequestRow {
    pub fn from_request(r: &Request) -> Self {
        let approvals: Vec<ApprovalJson> = r
            .approvals
            .iter()
            .map(|a| ApprovalJson { approver: a.approver.to_string(), at: micros(a.at), comment: a.comment.clone() })
            .collect();
        let groups: Vec<&str> = r.requester_groups.iter().map(Name::as_str).collect();
        let policies: Vec<&str> = r.policies.iter().map(Name::as_str).collect();
        RequestRow {
            id: r.id.to_string(),
            target: r.target.to_string(),
            requester: r.requester.to_string(),
            requester_groups: to_json(&groups),
            requester_addr: r.requester_addr.to_string(),
            reason: r.reason.clone(),
            source: r.source.to_string(),
            duration_seconds: r.duration.as_secs() as i64,
            state: r.state.as_str().to_owned(),
            created_at: micros(r.created_at),
            decide_by: micros(r.decide_by),
            starts_at: r.starts_at.map(micros),
            ends_at: r.ends_at.map(micros),
            approvals_required: i64::from(r.approvals_required),
            approvals: to_json(&approvals),
            closed_by: r.closed_by.clone(),
            close_comment: r.close_comment.clone(),
            policies: to_json(&policies),
            enforcement_status: r.enforcement.status.as_str().to_owned(),
            enforcement_error: r.enforcement.error.clone(),
        }
    }

    pub fn into_request(self) -> Result<Request, StoreError> {
        let approvals: Vec<ApprovalJson> =
            serde_json::from_str(&self.approvals).map_err(|_| corrupt("approvals", &self.approvals))?;
        let approvals = approvals
            .into_iter()
            .map(|a| {
                Ok(Approval {
                    approver: Name::parse(&a.approver).map_err(|_| corrupt("approver", &a.approver))?,
                    at: from_micros(a.at)?,
                    comment: a.comment,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let addr: IpAddr = self.requester_addr.parse().map_err(|_| corrupt("address", &self.requester_addr))?;
        Ok(Request::restore(RequestRecord {
            id: RequestId::parse(&self.id).ok_or_else(|| corrupt("request id", &self.id))?,
            target: Name::parse(&self.target).map_err(|_| corrupt("target", &self.target))?,
            requester: Name::parse(&self.requester).map_err(|_| corrupt("requester", &self.requester))?,
            requester_groups: names(&self.requester_groups, "groups")?,
            requester_addr: addr,
            reason: self.reason,
            source: SourceNet::parse(&self.source).map_err(|_| corrupt("source", &self.source))?,
            duration: u64::try_from(self.duration_seconds)
                .ok()
                .and_then(|s| GrantDuration::from_secs(s).ok())
                .ok_or_else(|| corrupt("duration", &self.duration_seconds.to_string()))?,
            state: RequestState::parse(&self.state).ok_or_else(|| corrupt("state", &self.state))?,
            created_at: from_micros(self.created_at)?,
            decide_by: from_micros(self.decide_by)?,
            starts_at: self.starts_at.map(from_micros).transpose()?,
            ends_at: self.ends_at.map(from_micros).transpose()?,
            approvals_required: u32::try_from(self.approvals_required)
                .map_err(|_| corrupt("approvals_required", &self.approvals_required.to_string()))?,
            approvals,
            closed_by: self.closed_by,
            close_comment: self.close_comment,
            policies: names(&self.policies, "policies")?,
            enforcement: Enforcement {
                status: EnforcementStatus::parse(&self.enforcement_status)
                    .ok_or_else(|| corrupt("enforcement status", &self.enforcement_status))?,
                error: self.enforcement_error,
            },
        }))
    }
}

/// An `audit_events` row as plain column values.
#[derive(Debug, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    pub subject: Option<String>,
    pub reason: Option<String>,
    pub data: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    pub fn from_event(e: &AuditEvent) -> Self {
        AuditRow {
            seq: e.seq,
            at: micros(e.at),
            actor: e.actor.clone(),
            action: e.action.as_str().to_owned(),
            target: e.target.clone(),
            source: e.source.clone(),
            request_id: e.request_id.clone(),
            subject: e.subject.clone(),
            reason: e.reason.clone(),
            data: e.data.to_string(),
            prev_hash: e.prev_hash.clone(),
            hash: e.hash.clone(),
        }
    }

    /// Reads a row back without judging it: a row someone edited by hand
    /// still loads, so that verification can name it.
    pub fn into_event(self) -> Result<AuditEvent, StoreError> {
        let seq = self.seq;
        let corrupt = |what: &str, value: &str| corrupt(&format!("audit event {seq}: {what}"), value);
        Ok(AuditEvent {
            seq: self.seq,
            at: from_micros(self.at)?,
            actor: self.actor,
            action: Action::parse(&self.action).ok_or_else(|| corrupt("audit action", &self.action))?,
            target: self.target,
            source: self.source,
            request_id: self.request_id,
            subject: self.subject,
            reason: self.reason,
            data: serde_json::from_str(&self.data).map_err(|_| corrupt("audit data", &self.data))?,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}
