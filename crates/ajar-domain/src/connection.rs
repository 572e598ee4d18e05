//! What the gateway tells the rest of ajar about connections: the typed
//! events that become audit entries (the payload of `connection` and
//! `connection_refused`) and metrics.

use std::net::SocketAddr;

use crate::RequestId;

/// One thing that happened to one TCP connection at the gateway.
///
/// Serialized flat, for example
/// `{"target":"db","peer":"10.0.0.7:51234","grant":"r…","event":"closed","bytes_up":12,…}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConnectionEvent {
    /// The target's name.
    pub target: String,
    /// The client's address, with IPv4-mapped IPv6 turned back into IPv4.
    pub peer: SocketAddr,
    /// The grant that admitted the connection (the covering grant with the
    /// latest deadline when it was last checked); `None` for refusals.
    pub grant: Option<RequestId>,
    #[serde(flatten)]
    pub kind: ConnectionEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConnectionEventKind {
    /// A granted connection ended. `bytes_up` counts client→target bytes,
    /// `bytes_down` target→client bytes; both are exact even when the
    /// connection was cut.
    Closed { bytes_up: u64, bytes_down: u64, duration_ms: u64, ended_by: EndedBy },
    /// A connection from a source without an active grant, closed at once
    /// without reading or writing a byte. At most one such event is emitted
    /// per target and source address every ten seconds, so that a port scan
    /// cannot flood the audit log; `suppressed` counts the refusals from the
    /// same source and target that were not reported since the previous
    /// event.
    Refused { suppressed: u64 },
    /// The connection was granted but the target could not be reached; the
    /// client was closed. No `Closed` event follows.
    UpstreamFailed { error: String },
}

/// Why a granted connection ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The client closed its side first (and the target then finished).
    Client,
    /// The target closed its side first (and the client then finished).
    Target,
    /// No grant covers the connection any more: its deadline passed, it was
    /// closed, or the target was removed from the gateway.
    GrantEnded,
    /// A read or write failed; the text says which side and why.
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_flat_for_the_audit_log() {
        let event = ConnectionEvent {
            target: "db".into(),
            peer: SocketAddr::from(([10, 0, 0, 7], 51234)),
            grant: None,
            kind: ConnectionEventKind::Closed {
                bytes_up: 3,
                bytes_down: 4,
                duration_ms: 5,
                ended_by: EndedBy::Error("reading from client: reset".into()),
            },
        };
        let json = serde_json::to_value(&event).ok();
        let want = serde_json::json!({
            "target": "db", "peer": "10.0.0.7:51234", "grant": null, "event": "closed",
            "bytes_up": 3, "bytes_down": 4, "duration_ms": 5,
            "ended_by": {"error": "reading from client: reset"},
        });
        assert_eq!(json, Some(want));
        let refused = ConnectionEvent { kind: ConnectionEventKind::Refused { suppressed: 2 }, ..event };
        let json = serde_json::to_value(&refused).ok();
        let want = serde_json::json!({
            "target": "db", "peer": "10.0.0.7:51234", "grant": null, "event": "refused", "suppressed": 2,
        });
        assert_eq!(json, Some(want));
    }
}
