//! From the core's and the domain's values to the wire types of
//! `ajar-wire`, which know nothing of the domain. Every match here is
//! exhaustive, so a new domain state cannot reach the wire unspelled.

use ajar_core::{RequestView, TargetView};
use ajar_domain::{AuditEvent, EnforcementStatus, RequestState};
use ajar_wire::{ApprovalDto, AuditEventDto, Connect, EnforcementDto, RequestDto, TargetDto};

/// `host` replaces an empty connect host (a gateway listening on a
/// wildcard address): the name the client used to reach the API.
pub fn request(view: RequestView, host: &str) -> RequestDto {
    let r = view.request.into_record();
    RequestDto {
        id: r.id.to_string(),
        target: r.target.to_string(),
        requester: r.requester.to_string(),
        reason: r.reason,
        source: r.source.to_string(),
        duration_seconds: r.duration.as_secs(),
        state: state(r.state),
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
        enforcement: EnforcementDto { status: enforcement(r.enforcement.status), error: r.enforcement.error },
        connect: view.connect.map(|c| connect(c.host, c.port, host, view.also)),
    }
}

pub fn target(view: TargetView, host: &str) -> TargetDto {
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
        connect: view.connect.map(|c| connect(c.host, c.port, host, view.also)),
    }
}

fn connect(opened_host: String, port: u16, host: &str, also: Vec<ajar_core::Opened>) -> Connect {
    let host_of = |h: String| if h.is_empty() { host.to_owned() } else { h };
    Connect {
        host: host_of(opened_host),
        port,
        also: also.into_iter().map(|o| ajar_wire::Endpoint { host: host_of(o.host), port: o.port }).collect(),
    }
}

pub fn audit_event(e: AuditEvent) -> AuditEventDto {
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

pub fn state(s: RequestState) -> ajar_wire::RequestState {
    use ajar_wire::RequestState as Wire;
    match s {
        RequestState::Pending => Wire::Pending,
        RequestState::Active => Wire::Active,
        RequestState::Expired => Wire::Expired,
        RequestState::Revoked => Wire::Revoked,
        RequestState::Released => Wire::Released,
        RequestState::Denied => Wire::Denied,
        RequestState::Cancelled => Wire::Cancelled,
        RequestState::TimedOut => Wire::TimedOut,
    }
}

/// The way back, for states a client names in a query.
pub fn domain_state(s: ajar_wire::RequestState) -> RequestState {
    use ajar_wire::RequestState as Wire;
    match s {
        Wire::Pending => RequestState::Pending,
        Wire::Active => RequestState::Active,
        Wire::Expired => RequestState::Expired,
        Wire::Revoked => RequestState::Revoked,
        Wire::Released => RequestState::Released,
        Wire::Denied => RequestState::Denied,
        Wire::Cancelled => RequestState::Cancelled,
        Wire::TimedOut => RequestState::TimedOut,
    }
}

pub fn enforcement(s: EnforcementStatus) -> ajar_wire::EnforcementStatus {
    use ajar_wire::EnforcementStatus as Wire;
    match s {
        EnforcementStatus::None => Wire::None,
        EnforcementStatus::Opening => Wire::Opening,
        EnforcementStatus::Open => Wire::Open,
        EnforcementStatus::Closing => Wire::Closing,
        EnforcementStatus::Closed => Wire::Closed,
        EnforcementStatus::Failed => Wire::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_keep_their_spelling_on_the_wire() {
        for s in RequestState::ALL {
            assert_eq!(state(s).as_str(), s.as_str());
            assert_eq!(domain_state(state(s)), s);
        }
        for word in ["none", "opening", "open", "closing", "closed", "failed"] {
            let status = EnforcementStatus::parse(word).map(enforcement).map(|s| s.as_str());
            assert_eq!(status, Some(word));
        }
    }
}
