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
}
