//! Audit events and the SHA-256 hash chain that makes them tamper-evident.
//!
//! Each event carries the hash of the one before it and its own hash over
//! every field. Editing an event changes its hash; deleting or inserting one
//! breaks the sequence numbers or the link to its neighbour. [`verify`] finds
//! the first place where any of that happened.

mod data;

use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

pub use data::{AuditData, FailedSignIn, SignIn};

use crate::request::{Actor, Request};
use crate::Timestamp;

/// What happened. The set is closed so that every consumer (the store, the
/// file sink, auditors' tools) can rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Requested,
    Approved,
    Denied,
    Cancelled,
    Activated,
    Opened,
    OpenFailed,
    Closed,
    CloseFailed,
    Expired,
    Revoked,
    Released,
    TimedOut,
    Login,
    LoginFailed,
    /// Someone signed out: their token stopped working.
    Logout,
    /// An admin ended every session of a user.
    TokensRevoked,
    /// An SSO user's groups at the identity provider differ from those
    /// ajar last saw (first login included).
    GroupsChanged,
    Connection,
    ConnectionRefused,
    ConfigReloaded,
    ConfigRejected,
    ServerStarted,
    AgentTokenCreated,
    AgentEnrolled,
    AgentRefused,
    AgentRevoked,
    AgentRenewed,
    AgentConnected,
    AgentDisconnected,
    AgentConverged,
}

impl Action {
    pub const ALL: [Action; 31] = [
        Action::Requested,
        Action::Approved,
        Action::Denied,
        Action::Cancelled,
        Action::Activated,
        Action::Opened,
        Action::OpenFailed,
        Action::Closed,
        Action::CloseFailed,
        Action::Expired,
        Action::Revoked,
        Action::Released,
        Action::TimedOut,
        Action::Login,
        Action::LoginFailed,
        Action::Logout,
        Action::TokensRevoked,
        Action::GroupsChanged,
        Action::Connection,
        Action::ConnectionRefused,
        Action::ConfigReloaded,
        Action::ConfigRejected,
        Action::ServerStarted,
        Action::AgentTokenCreated,
        Action::AgentEnrolled,
        Action::AgentRefused,
        Action::AgentRevoked,
        Action::AgentRenewed,
        Action::AgentConnected,
        Action::AgentDisconnected,
        Action::AgentConverged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Requested => "requested",
            Action::Approved => "approved",
            Action::Denied => "denied",
            Action::Cancelled => "cancelled",
            Action::Activated => "activated",
            Action::Opened => "opened",
            Action::OpenFailed => "open_failed",
            Action::Closed => "closed",
            Action::CloseFailed => "close_failed",
            Action::Expired => "expired",
            Action::Revoked => "revoked",
            Action::Released => "released",
            Action::TimedOut => "timed_out",
            Action::Login => "login",
            Action::LoginFailed => "login_failed",
            Action::Logout => "logout",
            Action::TokensRevoked => "tokens_revoked",
            Action::GroupsChanged => "groups_changed",
            Action::Connection => "connection",
            Action::ConnectionRefused => "connection_refused",
            Action::ConfigReloaded => "config_reloaded",
            Action::ConfigRejected => "config_rejected",
            Action::ServerStarted => "server_started",
            Action::AgentTokenCreated => "agent_token_created",
            Action::AgentEnrolled => "agent_enrolled",
            Action::AgentRefused => "agent_refused",
            Action::AgentRevoked => "agent_revoked",
            Action::AgentRenewed => "agent_renewed",
            Action::AgentConnected => "agent_connected",
            Action::AgentDisconnected => "agent_disconnected",
            Action::AgentConverged => "agent_converged",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event before the store gives it a place in the chain.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NewAuditEvent {
    pub at: Timestamp,
    pub actor: String,
    pub target: Option<String>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    /// Whose request it concerns, so that requesters can read their own
    /// trail without reading everyone's.
    pub subject: Option<String>,
    pub reason: Option<String>,
    /// What happened, with its action-specific detail (bytes transferred,
    /// driver errors, ...).
    #[serde(flatten)]
    pub data: AuditData,
}

/// An event in the chain.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEvent {
    pub seq: i64,
    pub at: Timestamp,
    pub actor: String,
    pub action: Action,
    pub target: Option<String>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    pub subject: Option<String>,
    pub reason: Option<String>,
    pub data: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

impl NewAuditEvent {
    /// Something ajar did on its own account (a start, a reload), about no
    /// request and no person.
    pub fn system(at: Timestamp, data: AuditData) -> Self {
        Self {
            at,
            actor: Actor::System.label(),
            target: None,
            source: None,
            request_id: None,
            subject: None,
            reason: None,
            data,
        }
    }

    /// Something that happened to `request`, caused by `actor`.
    pub fn request(at: Timestamp, actor: &Actor, request: &Request, reason: Option<String>, data: AuditData) -> Self {
        Self {
            at,
            actor: actor.label(),
            target: Some(request.target.to_string()),
            source: Some(request.source.to_string()),
            request_id: Some(request.id.to_string()),
            subject: Some(request.requester.to_string()),
            reason,
            data,
        }
    }

    /// Something `actor` did about `subject`'s sign-in or sessions from
    /// `addr` (signing in, out, failing to, ending sessions). Names that
    /// were claimed rather than proven must already be escaped.
    pub fn session(at: Timestamp, actor: String, subject: Option<String>, addr: IpAddr, data: AuditData) -> Self {
        Self { at, actor, target: None, source: Some(addr.to_string()), request_id: None, subject, reason: None, data }
    }

    /// The same event with `reason` shown beside it.
    pub fn with_reason(self, reason: impl Into<String>) -> Self {
        Self { reason: Some(reason.into()), ..self }
    }

    pub fn action(&self) -> Action {
        self.data.action()
    }

    /// Places the event after `prev` (sequence `prev_seq`, hash `prev_hash`).
    pub fn chain(self, prev_seq: i64, prev_hash: &str) -> AuditEvent {
        let mut event = AuditEvent {
            seq: prev_seq + 1,
            at: self.at,
            actor: self.actor,
            action: self.data.action(),
            target: self.target,
            source: self.source,
            request_id: self.request_id,
            subject: self.subject,
            reason: self.reason,
            data: self.data.to_value(),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        event.hash = event.compute_hash();
        event
    }
}

impl AuditEvent {
    /// SHA-256 over a canonical JSON rendering of every field but `hash`.
    /// serde_json orders object keys, so `data` renders the same way however
    /// it was built.
    pub fn compute_hash(&self) -> String {
        #[derive(serde::Serialize)]
        struct Canonical<'a> {
            seq: i64,
            at: String,
            actor: &'a str,
            action: &'a str,
            target: &'a Option<String>,
            source: &'a Option<String>,
            request_id: &'a Option<String>,
            subject: &'a Option<String>,
            reason: &'a Option<String>,
            data: &'a serde_json::Value,
            prev_hash: &'a str,
        }
        let canonical = Canonical {
            seq: self.seq,
            at: self.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            actor: &self.actor,
            action: self.action.as_str(),
            target: &self.target,
            source: &self.source,
            request_id: &self.request_id,
            subject: &self.subject,
            reason: &self.reason,
            data: &self.data,
            prev_hash: &self.prev_hash,
        };
        // Serializing plain strings, integers and a Value cannot fail.
        let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }
}

/// The first place where the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("event {seq} was edited: its content no longer matches its hash")]
    Edited { seq: i64 },
    #[error("event {seq} does not link to the event before it: an event before it was deleted, inserted or edited")]
    Relinked { seq: i64 },
    #[error("expected event {expected} but found event {found}: events were deleted or inserted")]
    Gap { expected: i64, found: i64 },
}

impl ChainBreak {
    pub fn seq(&self) -> i64 {
        match self {
            ChainBreak::Edited { seq } | ChainBreak::Relinked { seq } => *seq,
            ChainBreak::Gap { expected, .. } => *expected,
        }
    }
}

/// Walks a chain in sequence order, starting after `prev` (`None` for the
/// genesis). Returns the last event's `(seq, hash)` when it is intact, so
/// that long chains can be verified page by page.
pub fn verify<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
    prev: Option<(i64, String)>,
) -> Result<(i64, String), ChainBreak> {
    let (mut seq, mut hash) = prev.unwrap_or((0, GENESIS.to_owned()));
    for event in events {
        if event.seq != seq + 1 {
            return Err(ChainBreak::Gap { expected: seq + 1, found: event.seq });
        }
        if event.compute_hash() != event.hash {
            return Err(ChainBreak::Edited { seq: event.seq });
        }
        if event.prev_hash != hash {
            return Err(ChainBreak::Relinked { seq: event.seq });
        }
        seq = event.seq;
        hash = event.hash.clone();
    }
    Ok((seq, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<AuditEvent> {
        let mut out: Vec<AuditEvent> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out.last().map(|e| (e.seq, e.hash.clone())).unwrap_or((0, GENESIS.into()));
            let event = NewAuditEvent {
                at: chrono::DateTime::from_timestamp(1_700_000_000 + i as i64, 0).unwrap_or_default(),
                actor: "alice".into(),
                target: Some("db".into()),
                source: None,
                request_id: None,
                subject: None,
                reason: Some(format!("r{i}")),
                data: AuditData::Requested { duration_seconds: i as u64, approvals_required: 1, policies: vec![] },
            };
            out.push(event.chain(seq, &hash));
        }
        out
    }

    #[test]
    fn intact_chain_verifies() {
        let events = chain(5);
        assert_eq!(verify(&events, None).map(|(s, _)| s), Ok(5));
    }

    #[test]
    fn finds_edit_deletion_and_insertion() {
        let mut edited = chain(5);
        edited[2].reason = Some("nothing to see".into());
        assert_eq!(verify(&edited, None), Err(ChainBreak::Edited { seq: 3 }));

        let mut deleted = chain(5);
        deleted.remove(2);
        assert_eq!(verify(&deleted, None), Err(ChainBreak::Gap { expected: 3, found: 4 }));

        // An insertion that renumbers everything after it and recomputes the
        // inserted event's own hash still breaks the link that follows.
        let mut inserted = chain(5);
        let mut forged = inserted[1].clone();
        forged.reason = Some("forged".into());
        forged.seq = 3;
        forged.prev_hash = inserted[1].hash.clone();
        forged.hash = forged.compute_hash();
        inserted.insert(2, forged);
        for (i, e) in inserted.iter_mut().enumerate().skip(3) {
            e.seq = i as i64 + 1;
            e.hash = e.compute_hash();
        }
        assert_eq!(verify(&inserted, None), Err(ChainBreak::Relinked { seq: 4 }));
    }
}
