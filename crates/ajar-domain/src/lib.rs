//! ajar's pure domain: targets, policies, requests, grants, the policy engine,
//! the request state machine and the audit hash chain.
//!
//! Nothing in this crate does I/O, spawns tasks or reads the clock: the
//! current time is always a parameter. That is what lets the property tests
//! in `tests/` explore the state machine exhaustively.

pub mod agent;
pub mod audit;
pub mod catalog;
pub mod connection;
pub mod duration;
pub mod identity;
pub mod name;
pub mod policy;
pub mod request;
pub mod source;
pub mod text;

pub use agent::{AgentRecord, AgentToken, LinkState, OfflineMode};
pub use audit::{Action, AuditData, AuditEvent, ChainBreak, NewAuditEvent};
pub use catalog::{
    Access, Catalog, DriverKind, DriverSettings, Placement, Policy, Subject, Target, TargetSelector, User,
};
pub use catalog::{AwsApi, AwsInstanceSettings, AwsSgSettings, GatewaySettings, IpProtocol, NatSettings};
pub use duration::GrantDuration;
pub use identity::ExternalIdentity;
pub use name::Name;
pub use policy::{Ask, Principal, Rejected, Verdict};
pub use request::{Change, Effect, Enforcement, EnforcementStatus, Request, RequestId, RequestRecord, RequestState};
pub use source::SourceNet;

/// Wall-clock instants, always UTC and truncated to milliseconds by the
/// clock that produces them so that they survive a round trip through any
/// store unchanged.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
