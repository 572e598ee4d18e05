//! What each audit event says beyond who, what and where: one typed payload
//! per [`Action`].
//!
//! The enum is tagged the way events are stored, the action beside its
//! `data` (`{"action": "opened", "data": {"host": …, "port": …}}`), so an
//! event's action and payload cannot disagree and every payload has one
//! shape, written in one place. The hash chain covers the stored JSON
//! value (`AuditEvent::data`), so this type decides only what new events
//! say; events written before it was introduced read back as the same
//! variants (tested against a database written by an earlier ajar).

use crate::connection::ConnectionEvent;
use crate::{Action, Name, Timestamp};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", content = "data", rename_all = "snake_case")]
pub enum AuditData {
    /// A request was created; its reason is the event's `reason`.
    Requested {
        duration_seconds: u64,
        approvals_required: u32,
        policies: Vec<Name>,
    },
    /// The approver's comment, if any, is the event's `reason`.
    Approved {},
    Denied {},
    Cancelled {},
    /// The grant's window began; `approvals` counts the distinct approvers.
    Activated {
        starts_at: Option<Timestamp>,
        ends_at: Option<Timestamp>,
        approvals: usize,
    },
    /// A driver opened the path; `host:port` is where clients connect.
    Opened {
        host: String,
        port: u16,
        open_ms: u64,
    },
    OpenFailed {
        error: String,
        transient: bool,
        open_ms: u64,
    },
    Closed {},
    CloseFailed {
        error: String,
        transient: bool,
    },
    /// The grant ran out; `ends_at` is its scheduled end, even when ajar
    /// noticed later (after a restart, say).
    Expired {
        ends_at: Option<Timestamp>,
    },
    Revoked {},
    Released {},
    TimedOut {},
    Login(SignIn),
    LoginFailed(FailedSignIn),
    Logout {},
    TokensRevoked {},
    /// An SSO user's groups differ from those of their previous sign-in
    /// (or this is their first).
    GroupsChanged {
        before: Vec<Name>,
        after: Vec<Name>,
        added: Vec<Name>,
        removed: Vec<Name>,
        first_sign_in: bool,
    },
    /// A connection through the gateway ended, or reached no upstream.
    Connection(ConnectionEvent),
    /// The gateway refused a source without a grant.
    ConnectionRefused(ConnectionEvent),
    ConfigReloaded {
        targets: usize,
        policies: usize,
        withdrawn: usize,
    },
    /// A reload was refused whole; the running config stays.
    ConfigRejected {
        errors: Vec<String>,
    },
    ServerStarted {
        version: String,
        config: String,
    },
    /// An admin created a one-time enrolment token for an agent of `group`.
    AgentTokenCreated {
        group: Name,
        expires_at: Timestamp,
    },
    /// An agent enrolled with a token and got its first certificate.
    AgentEnrolled {
        agent: Name,
        group: Name,
        serial: String,
        not_after: Timestamp,
    },
    /// An agent (or something claiming to be one) was turned away; `agent`
    /// is the name it claimed, escaped. The event's `reason` says why.
    AgentRefused {
        agent: String,
    },
    /// An admin revoked an agent: its certificate is refused from now on.
    AgentRevoked {
        agent: Name,
        group: Name,
    },
    /// An agent renewed its certificate (at half its life).
    AgentRenewed {
        agent: Name,
        serial: String,
        not_after: Timestamp,
    },
    /// An agent connected; `enforced` counts the grants it said it enforces.
    AgentConnected {
        agent: Name,
        group: Name,
        version: String,
        enforced: usize,
    },
    /// An agent's stream ended; the event's `reason` says why.
    AgentDisconnected {
        agent: Name,
        group: Name,
    },
    /// What an agent that came back enforced differently from the grants of
    /// its group, and was corrected: grants it had ended or never received
    /// (`opened`), and grants it still enforced that had ended (`closed`).
    AgentConverged {
        agent: Name,
        opened: Vec<String>,
        closed: Vec<String>,
    },
}

/// How someone signed in.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum SignIn {
    /// Through the identity provider (`method`: `sso`, `sso-device`,
    /// `sso-loopback`, `jwt`), with the groups it vouched for.
    Provider { method: String, issuer: String, groups: Vec<Name> },
    /// With a local user's password.
    Password {},
}

/// A sign-in that failed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum FailedSignIn {
    /// The repeats of a failure of one kind from one address within a
    /// window, audited as one event.
    Repeated { method: String, repeats: u64, window_seconds: u64 },
    /// Through the identity provider or with a bearer token.
    Provider { method: String },
    /// With a password; the event's `reason` says why.
    Password {},
}

impl AuditData {
    pub fn action(&self) -> Action {
        match self {
            AuditData::Requested { .. } => Action::Requested,
            AuditData::Approved {} => Action::Approved,
            AuditData::Denied {} => Action::Denied,
            AuditData::Cancelled {} => Action::Cancelled,
            AuditData::Activated { .. } => Action::Activated,
            AuditData::Opened { .. } => Action::Opened,
            AuditData::OpenFailed { .. } => Action::OpenFailed,
            AuditData::Closed {} => Action::Closed,
            AuditData::CloseFailed { .. } => Action::CloseFailed,
            AuditData::Expired { .. } => Action::Expired,
            AuditData::Revoked {} => Action::Revoked,
            AuditData::Released {} => Action::Released,
            AuditData::TimedOut {} => Action::TimedOut,
            AuditData::Login(_) => Action::Login,
            AuditData::LoginFailed(_) => Action::LoginFailed,
            AuditData::Logout {} => Action::Logout,
            AuditData::TokensRevoked {} => Action::TokensRevoked,
            AuditData::GroupsChanged { .. } => Action::GroupsChanged,
            AuditData::Connection(_) => Action::Connection,
            AuditData::ConnectionRefused(_) => Action::ConnectionRefused,
            AuditData::ConfigReloaded { .. } => Action::ConfigReloaded,
            AuditData::ConfigRejected { .. } => Action::ConfigRejected,
            AuditData::ServerStarted { .. } => Action::ServerStarted,
            AuditData::AgentTokenCreated { .. } => Action::AgentTokenCreated,
            AuditData::AgentEnrolled { .. } => Action::AgentEnrolled,
            AuditData::AgentRefused { .. } => Action::AgentRefused,
            AuditData::AgentRevoked { .. } => Action::AgentRevoked,
            AuditData::AgentRenewed { .. } => Action::AgentRenewed,
            AuditData::AgentConnected { .. } => Action::AgentConnected,
            AuditData::AgentDisconnected { .. } => Action::AgentDisconnected,
            AuditData::AgentConverged { .. } => Action::AgentConverged,
        }
    }

    /// The payload as the event stores it (the `data` beside the action).
    pub fn to_value(&self) -> serde_json::Value {
        // Serializing names, numbers, strings and timestamps cannot fail,
        // and every variant has content, so `data` is always there.
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut tagged)) => {
                tagged.remove("data").unwrap_or_else(|| serde_json::Value::Object(Default::default()))
            }
            _ => serde_json::Value::Object(Default::default()),
        }
    }

    /// Reads a stored payload back as its variant; `None` unless it has
    /// exactly the shape its action's payload has (no field missing, none
    /// extra), so that writing the variant again gives the same value.
    pub fn from_stored(action: Action, data: &serde_json::Value) -> Option<Self> {
        let tagged = serde_json::json!({ "action": action.as_str(), "data": data });
        let parsed: AuditData = serde_json::from_value(tagged).ok()?;
        (parsed.to_value() == *data).then_some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(data: &AuditData) -> serde_json::Value {
        data.to_value()
    }

    #[test]
    fn payloads_keep_the_shapes_events_always_had() {
        let name = |s: &str| Name::parse(s).expect("valid");
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 250_000_000).unwrap_or_default();
        let cases = [
            (
                AuditData::Requested { duration_seconds: 60, approvals_required: 1, policies: vec![name("p")] },
                json!({"duration_seconds": 60, "approvals_required": 1, "policies": ["p"]}),
            ),
            (AuditData::Approved {}, json!({})),
            (
                AuditData::Activated { starts_at: Some(at), ends_at: None, approvals: 2 },
                json!({"starts_at": at, "ends_at": null, "approvals": 2}),
            ),
            (
                AuditData::OpenFailed { error: "full".into(), transient: true, open_ms: 3 },
                json!({"error": "full", "transient": true, "open_ms": 3}),
            ),
            (AuditData::Login(SignIn::Password {}), json!({})),
            (
                AuditData::Login(SignIn::Provider { method: "sso".into(), issuer: "https://i".into(), groups: vec![] }),
                json!({"method": "sso", "issuer": "https://i", "groups": []}),
            ),
            (AuditData::LoginFailed(FailedSignIn::Password {}), json!({})),
            (AuditData::LoginFailed(FailedSignIn::Provider { method: "jwt".into() }), json!({"method": "jwt"})),
            (
                AuditData::LoginFailed(FailedSignIn::Repeated { method: "sso".into(), repeats: 4, window_seconds: 60 }),
                json!({"method": "sso", "repeats": 4, "window_seconds": 60}),
            ),
            (AuditData::ConfigRejected { errors: vec!["x".into()] }, json!({"errors": ["x"]})),
        ];
        for (data, want) in cases {
            assert_eq!(stored(&data), want, "{data:?}");
            assert_eq!(AuditData::from_stored(data.action(), &want), Some(data.clone()), "{want}");
        }
    }

    #[test]
    fn a_payload_of_another_shape_is_not_read_as_its_action() {
        assert_eq!(AuditData::from_stored(Action::Opened, &json!({"host": "h"})), None);
        assert_eq!(AuditData::from_stored(Action::Approved, &json!({"extra": 1})), None);
    }

    #[test]
    fn agent_payloads_read_back_as_their_variants() {
        let name = |s: &str| Name::parse(s).expect("valid");
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let cases = [
            AuditData::AgentTokenCreated { group: name("vpc-a"), expires_at: at },
            AuditData::AgentEnrolled { agent: name("a1"), group: name("vpc-a"), serial: "4f".into(), not_after: at },
            AuditData::AgentRefused { agent: "a1".into() },
            AuditData::AgentRevoked { agent: name("a1"), group: name("vpc-a") },
            AuditData::AgentRenewed { agent: name("a1"), serial: "50".into(), not_after: at },
            AuditData::AgentConnected { agent: name("a1"), group: name("vpc-a"), version: "0.1.0".into(), enforced: 2 },
            AuditData::AgentDisconnected { agent: name("a1"), group: name("vpc-a") },
            AuditData::AgentConverged { agent: name("a1"), opened: vec!["r1".into()], closed: vec![] },
        ];
        for data in cases {
            let stored = data.to_value();
            assert_eq!(AuditData::from_stored(data.action(), &stored), Some(data.clone()), "{stored}");
            assert!(Action::parse(data.action().as_str()).is_some());
        }
    }
}
