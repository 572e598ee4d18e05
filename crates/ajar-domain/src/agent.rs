//! Agents: `ajar agent` processes that run a driver in a private network
//! and connect out to the server, which pushes them the grants of their
//! group. What the server records about them, and how one behaves while it
//! cannot reach the server.

use std::fmt;

use crate::{Name, Timestamp};

/// A one-time enrolment token, as the server keeps it: only the hash of
/// its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentToken {
    /// SHA-256 (hex) of the token's secret.
    pub hash: String,
    /// The group the agent enrolled with it joins.
    pub group: Name,
    pub created_by: Name,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// An enrolled agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    pub name: Name,
    pub group: Name,
    /// The serial (lowercase hex) of the one client certificate the server
    /// accepts from this agent: the latest it issued. An older certificate
    /// (replaced at renewal) is refused.
    pub cert_serial: String,
    pub cert_not_after: Timestamp,
    pub enrolled_at: Timestamp,
    /// The agent's own version, as it said at its latest connection.
    pub version: String,
    /// When it last connected or disconnected.
    pub last_seen: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub revoked_by: Option<Name>,
}

impl AgentRecord {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// What an agent does once it has been cut off from the server for longer
/// than its group's `offline_grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OfflineMode {
    /// Cut every live connection and admit nobody until the server is back
    /// (fail closed: a revoke or a shortened grant could not reach it).
    #[default]
    Cut,
    /// Keep enforcing what it was told until each grant's own end; a revoke
    /// made meanwhile takes effect only once the agent is back.
    KeepUntilEnd,
}

impl OfflineMode {
    pub const ALL: [OfflineMode; 2] = [OfflineMode::Cut, OfflineMode::KeepUntilEnd];

    pub fn as_str(self) -> &'static str {
        match self {
            OfflineMode::Cut => "cut",
            OfflineMode::KeepUntilEnd => "keep-until-end",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

impl fmt::Display for OfflineMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an agent is connected to this server right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Online,
    Offline,
    Revoked,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Online => "online",
            LinkState::Offline => "offline",
            LinkState::Revoked => "revoked",
        }
    }
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an agent certificate issued at `not_before` and valid until
/// `not_after` should be renewed at `now`: from half its life on.
pub fn renewal_due(not_before: Timestamp, not_after: Timestamp, now: Timestamp) -> bool {
    let half = not_before + (not_after - not_before) / 2;
    now >= half
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_from_half_life() {
        let at = |s: i64| chrono::DateTime::from_timestamp(s, 0).unwrap_or_default();
        assert!(!renewal_due(at(0), at(100), at(49)));
        assert!(renewal_due(at(0), at(100), at(50)));
        assert!(renewal_due(at(0), at(100), at(200)));
    }

    #[test]
    fn offline_modes_round_trip() {
        for m in OfflineMode::ALL {
            assert_eq!(OfflineMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(OfflineMode::parse("open"), None);
    }
}
