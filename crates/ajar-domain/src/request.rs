//! Requests and the grants they become: the state machine.
//!
//! ```text
//! pending ──approve×N──▶ active ──▶ expired | revoked | released
//!    └──▶ denied | cancelled | timed_out
//! ```
//!
//! Every transition is a method that takes the current time and returns a
//! [`Change`] (the next request, the audit events it implies and the effect
//! on the network) or a [`Rejected`] that says why not. That includes what
//! the drivers report afterwards ([`Request::opened`], [`Request::closed`],
//! and their failures). Nothing here is persisted or enforced; `ajar-core`
//! does that with what these return.

use std::fmt;
use std::net::IpAddr;

use crate::audit::{Action, AuditData, NewAuditEvent};
use crate::policy::{check_approver, Ask, Principal, Rejected, Verdict};
use crate::{GrantDuration, Name, SourceNet, Timestamp};

/// A request's identifier: `r` followed by 12 lowercase letters and digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == 13
            && text.starts_with('r')
            && text[1..].chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        ok.then(|| Self(text.to_owned()))
    }

    /// Builds an id from twelve random bytes (the caller supplies the
    /// randomness, so the domain stays pure).
    pub fn from_random(bytes: [u8; 12]) -> Self {
        const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
        let mut id = String::with_capacity(13);
        id.push('r');
        id.extend(bytes.iter().map(|b| ALPHABET[usize::from(b % 32)] as char));
        Self(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        RequestId::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not a request id (r and 12 letters or digits)"))
        })
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
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

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether nothing can happen to the request any more.
    pub fn is_final(self) -> bool {
        !matches!(self, RequestState::Pending | RequestState::Active)
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the network path of a grant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementStatus {
    /// Not a grant (yet, or ever): nothing to enforce.
    None,
    Opening,
    Open,
    Closing,
    Closed,
    /// The driver failed; `error` says how. The reconciler retries.
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

    pub fn parse(text: &str) -> Option<Self> {
        [
            EnforcementStatus::None,
            EnforcementStatus::Opening,
            EnforcementStatus::Open,
            EnforcementStatus::Closing,
            EnforcementStatus::Closed,
            EnforcementStatus::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Enforcement {
    pub status: EnforcementStatus,
    pub error: Option<String>,
}

impl Enforcement {
    pub const NONE: Enforcement = Enforcement { status: EnforcementStatus::None, error: None };

    pub fn status(status: EnforcementStatus) -> Self {
        Self { status, error: None }
    }

    pub fn failed(error: &str) -> Self {
        Self { status: EnforcementStatus::Failed, error: Some(error.to_owned()) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Approval {
    pub approver: Name,
    pub at: Timestamp,
    pub comment: Option<String>,
}

/// Who caused a change: a person, or ajar itself (expiry, timeouts, reloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    User(Name),
    System,
}

impl Actor {
    /// How the actor appears in the audit log. `ajar:system` cannot collide
    /// with a user name because names never contain a colon.
    pub fn label(&self) -> String {
        match self {
            Actor::User(n) => n.to_string(),
            Actor::System => "ajar:system".to_owned(),
        }
    }
}

/// A request for access and, once active, its grant.
///
/// Its fields are read through [`RequestRecord`] (`request.state`,
/// `request.ends_at`, ...) but only the transitions below make a changed
/// request: nothing outside the domain can write one. A store rebuilds
/// what it saved with [`Request::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request(RequestRecord);

impl std::ops::Deref for Request {
    type Target = RequestRecord;

    fn deref(&self) -> &RequestRecord {
        &self.0
    }
}

/// A request's fields, as a store saves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub id: RequestId,
    pub target: Name,
    pub requester: Name,
    /// The requester's groups when they asked; used to re-check the policy
    /// when the config changes.
    pub requester_groups: Vec<Name>,
    /// The address the request came from.
    pub requester_addr: IpAddr,
    pub reason: String,
    pub source: SourceNet,
    pub duration: GrantDuration,
    pub state: RequestState,
    pub created_at: Timestamp,
    /// A pending request times out at this instant.
    pub decide_by: Timestamp,
    pub starts_at: Option<Timestamp>,
    /// When the grant ends: the scheduled end while active, the actual end
    /// once closed (never later than the scheduled one).
    pub ends_at: Option<Timestamp>,
    pub approvals_required: u32,
    pub approvals: Vec<Approval>,
    /// Who denied, cancelled, revoked or released it, and what they said.
    pub closed_by: Option<String>,
    pub close_comment: Option<String>,
    pub policies: Vec<Name>,
    pub enforcement: Enforcement,
}

/// What the network must do after a change is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Open,
    Close,
}

/// The outcome of a transition: the next request, the audit events it
/// implies (in order, each naming who caused it and what they said), and
/// its effect on the network.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub next: Request,
    pub events: Vec<NewAuditEvent>,
    pub effect: Option<Effect>,
}

impl Change {
    /// The actions of the change's events, in order.
    pub fn actions(&self) -> Vec<Action> {
        self.events.iter().map(NewAuditEvent::action).collect()
    }

    fn only(next: Request, event: AuditData, actor: &Actor, reason: Option<String>, now: Timestamp) -> Self {
        let event = NewAuditEvent::request(now, actor, &next, reason, event);
        Change { next, events: vec![event], effect: None }
    }
}

impl Request {
    /// A request as a store saved it. Only stores call this, with what
    /// they wrote from [`Request::record`]; everything else gets requests
    /// from the transitions.
    pub fn restore(record: RequestRecord) -> Self {
        Self(record)
    }

    /// The request's fields, to save.
    pub fn record(&self) -> &RequestRecord {
        &self.0
    }

    /// The request's fields, taken apart (to show them).
    pub fn into_record(self) -> RequestRecord {
        self.0
    }

    /// A copy of the request with `edit` applied: the one way this module
    /// makes a changed request.
    fn with(&self, edit: impl FnOnce(&mut RequestRecord)) -> Self {
        let mut next = self.0.clone();
        edit(&mut next);
        Self(next)
    }

    /// A new request, already active when the verdict needs no approval.
    pub fn create(
        id: RequestId,
        requester: &Principal,
        requester_addr: IpAddr,
        ask: &Ask,
        verdict: &Verdict,
        now: Timestamp,
        approval_timeout: GrantDuration,
    ) -> Change {
        let request = Request(RequestRecord {
            id,
            target: verdict.target.clone(),
            requester: requester.name.clone(),
            requester_groups: requester.groups.iter().cloned().collect(),
            requester_addr,
            reason: ask.reason.trim().to_owned(),
            source: verdict.source,
            duration: ask.duration.min(verdict.max_duration),
            state: RequestState::Pending,
            created_at: now,
            decide_by: now + approval_timeout.as_chrono(),
            starts_at: None,
            ends_at: None,
            approvals_required: verdict.approvals_required,
            approvals: Vec::new(),
            closed_by: None,
            close_comment: None,
            policies: verdict.policies.clone(),
            enforcement: Enforcement::NONE,
        });
        let actor = Actor::User(requester.name.clone());
        let mut change = if verdict.approvals_required == 0 {
            request.activate(verdict, now, &actor)
        } else {
            Change { next: request, events: Vec::new(), effect: None }
        };
        let r = &change.next;
        let requested = AuditData::Requested {
            duration_seconds: r.duration.as_secs(),
            approvals_required: r.approvals_required,
            policies: r.policies.clone(),
        };
        change.events.insert(0, NewAuditEvent::request(now, &actor, r, Some(r.reason.clone()), requested));
        change
    }

    /// The requester as the policy engine sees them, with the groups they
    /// had when they asked.
    pub fn requester_principal(&self) -> Principal {
        Principal::new(self.requester.clone(), self.requester_groups.iter().cloned())
    }

    /// The request as the policy engine saw it, so that it can be
    /// evaluated again under a changed config.
    pub fn ask(&self) -> Ask {
        let own = SourceNet::host(self.requester_addr);
        Ask {
            target: self.target.to_string(),
            duration: self.duration,
            reason: self.reason.clone(),
            source: (self.source != own).then_some(self.source),
        }
    }

    fn activate(&self, verdict: &Verdict, now: Timestamp, actor: &Actor) -> Change {
        let duration = self.duration.min(verdict.max_duration);
        let next = self.with(|r| {
            r.state = RequestState::Active;
            r.duration = duration;
            r.starts_at = Some(now);
            r.ends_at = Some(now + duration.as_chrono());
            r.enforcement = Enforcement::status(EnforcementStatus::Opening);
        });
        let activated =
            AuditData::Activated { starts_at: next.starts_at, ends_at: next.ends_at, approvals: next.approvals.len() };
        Change { effect: Some(Effect::Open), ..Change::only(next, activated, actor, None, now) }
    }

    fn require(&self, state: RequestState, action: &'static str) -> Result<(), Rejected> {
        if self.state == state {
            Ok(())
        } else {
            Err(Rejected::WrongState { state: self.state.as_str(), action })
        }
    }

    fn require_pending_in_time(&self, now: Timestamp, action: &'static str) -> Result<(), Rejected> {
        self.require(RequestState::Pending, action)?;
        if now >= self.decide_by {
            return Err(Rejected::WrongState { state: RequestState::TimedOut.as_str(), action });
        }
        Ok(())
    }

    /// Whether `approver` may decide on this request now, saying `comment`.
    fn check_decision(
        &self,
        approver: &Principal,
        verdict: &Verdict,
        comment: Option<&str>,
        now: Timestamp,
        action: &'static str,
    ) -> Result<(), Rejected> {
        self.require_pending_in_time(now, action)?;
        check_approver(verdict, &self.requester, approver)?;
        check_comment(comment)
    }

    /// One approver approves. `verdict` is the policy engine's current view
    /// of this request; when enough distinct approvers have approved, the
    /// grant starts now.
    pub fn approve(
        &self,
        approver: &Principal,
        verdict: &Verdict,
        comment: Option<String>,
        now: Timestamp,
    ) -> Result<Change, Rejected> {
        self.check_decision(approver, verdict, comment.as_deref(), now, "approved")?;
        if self.approvals.iter().any(|a| a.approver == approver.name) {
            return Err(Rejected::AlreadyApproved);
        }
        let next = self.with(|r| {
            r.approvals.push(Approval { approver: approver.name.clone(), at: now, comment: comment.clone() });
            r.approvals_required = verdict.approvals_required;
        });
        let actor = Actor::User(approver.name.clone());
        let counted = u32::try_from(next.approvals.len()).unwrap_or(u32::MAX);
        if counted >= verdict.approvals_required {
            let mut change = next.activate(verdict, now, &actor);
            let approved = NewAuditEvent::request(now, &actor, &change.next, comment, AuditData::Approved {});
            change.events.insert(0, approved);
            Ok(change)
        } else {
            Ok(Change::only(next, AuditData::Approved {}, &actor, comment, now))
        }
    }

    pub fn deny(
        &self,
        approver: &Principal,
        verdict: &Verdict,
        comment: Option<String>,
        now: Timestamp,
    ) -> Result<Change, Rejected> {
        self.check_decision(approver, verdict, comment.as_deref(), now, "denied")?;
        Ok(self.finish(RequestState::Denied, AuditData::Denied {}, Actor::User(approver.name.clone()), comment, now))
    }

    pub fn cancel(&self, by: &Principal, now: Timestamp) -> Result<Change, Rejected> {
        self.require(RequestState::Pending, "cancelled")?;
        if by.name != self.requester {
            return Err(Rejected::NotRequester { action: "cancel" });
        }
        Ok(self.finish(RequestState::Cancelled, AuditData::Cancelled {}, Actor::User(by.name.clone()), None, now))
    }

    /// The requester ends their own grant early.
    pub fn release(&self, by: &Principal, now: Timestamp) -> Result<Change, Rejected> {
        self.require(RequestState::Active, "released")?;
        if by.name != self.requester {
            return Err(Rejected::NotRequester { action: "release" });
        }
        Ok(self.finish(RequestState::Released, AuditData::Released {}, Actor::User(by.name.clone()), None, now))
    }

    /// An approver or admin ends a grant. `allowed` is the caller's right to
    /// do so, decided by [`may_revoke`].
    pub fn revoke(
        &self,
        by: &Principal,
        allowed: bool,
        comment: Option<String>,
        now: Timestamp,
    ) -> Result<Change, Rejected> {
        self.require(RequestState::Active, "revoked")?;
        if !allowed {
            return Err(Rejected::MayNotRevoke);
        }
        check_comment(comment.as_deref())?;
        Ok(self.finish(RequestState::Revoked, AuditData::Revoked {}, Actor::User(by.name.clone()), comment, now))
    }

    /// ajar itself withdraws a request the config no longer allows: an
    /// active grant is revoked, a pending request denied.
    pub fn withdraw(&self, why: String, now: Timestamp) -> Option<Change> {
        match self.state {
            RequestState::Active => {
                Some(self.finish(RequestState::Revoked, AuditData::Revoked {}, Actor::System, Some(why), now))
            }
            RequestState::Pending => {
                Some(self.finish(RequestState::Denied, AuditData::Denied {}, Actor::System, Some(why), now))
            }
            _ => None,
        }
    }

    /// The grant's time is up. `None` while it is not due or not active.
    pub fn expire(&self, now: Timestamp) -> Option<Change> {
        let due = self.state == RequestState::Active && self.ends_at.is_some_and(|end| now >= end);
        due.then(|| {
            // The grant ended at its scheduled end, even if ajar noticed late.
            let expired = AuditData::Expired { ends_at: self.ends_at };
            let mut change = self.finish(RequestState::Expired, expired, Actor::System, None, now);
            change.next.0.ends_at = self.ends_at;
            change
        })
    }

    /// Nobody decided in time. `None` while not due or not pending.
    pub fn time_out(&self, now: Timestamp) -> Option<Change> {
        let due = self.state == RequestState::Pending && now >= self.decide_by;
        due.then(|| self.finish(RequestState::TimedOut, AuditData::TimedOut {}, Actor::System, None, now))
    }

    fn finish(
        &self,
        state: RequestState,
        event: AuditData,
        actor: Actor,
        comment: Option<String>,
        now: Timestamp,
    ) -> Change {
        let was_active = self.state == RequestState::Active;
        let next = self.with(|r| {
            r.state = state;
            r.closed_by = Some(actor.label());
            r.close_comment = comment.clone();
            if was_active {
                r.ends_at = r.ends_at.map(|end| end.min(now));
                r.enforcement = Enforcement::status(EnforcementStatus::Closing);
            }
        });
        Change { effect: was_active.then_some(Effect::Close), ..Change::only(next, event, &actor, comment, now) }
    }

    // ---- what the drivers report ------------------------------------------

    /// The driver opened the grant's path; clients reach it at `host:port`.
    /// `open_ms` is how long opening took (an instance launch takes
    /// seconds).
    pub fn opened(&self, host: String, port: u16, open_ms: u64, now: Timestamp) -> Change {
        let next = self.with(|r| r.enforcement = Enforcement::status(EnforcementStatus::Open));
        Change::only(next, AuditData::Opened { host, port, open_ms }, &Actor::System, None, now)
    }

    /// The driver could not open the grant's path. `None` when the grant
    /// already records this very failure: the reconciler retries a failed
    /// open every pass, and the same failure again is not audited again,
    /// so that an hour of a full security group is one event, not hundreds.
    pub fn open_failed(&self, error: &str, transient: bool, open_ms: u64, now: Timestamp) -> Option<Change> {
        if self.enforcement.status == EnforcementStatus::Failed && self.enforcement.error.as_deref() == Some(error) {
            return None;
        }
        let next = self.with(|r| r.enforcement = Enforcement::failed(error));
        let failed = AuditData::OpenFailed { error: error.to_owned(), transient, open_ms };
        Some(Change::only(next, failed, &Actor::System, None, now))
    }

    /// The driver closed the ended grant's path and cut its connections.
    pub fn closed(&self, now: Timestamp) -> Change {
        let next = self.with(|r| r.enforcement = Enforcement::status(EnforcementStatus::Closed));
        Change::only(next, AuditData::Closed {}, &Actor::System, None, now)
    }

    /// The driver could not close the ended grant's path; the reconciler
    /// closes it again every pass, each failure audited.
    pub fn close_failed(&self, error: &str, transient: bool, now: Timestamp) -> Change {
        let next = self.with(|r| r.enforcement = Enforcement::failed(error));
        let failed = AuditData::CloseFailed { error: error.to_owned(), transient };
        Change::only(next, failed, &Actor::System, None, now)
    }
}

/// Whether `by` may revoke `request`: an admin, or someone who could approve
/// it under `verdict` (the requester releases instead).
pub fn may_revoke(request: &Request, by: &Principal, verdict: Option<&Verdict>, is_admin: bool) -> bool {
    is_admin || verdict.is_some_and(|v| check_approver(v, &request.requester, by).is_ok())
}

/// An approver's or revoker's comment: free text, bounded and printable.
fn check_comment(comment: Option<&str>) -> Result<(), Rejected> {
    comment.map_or(Ok(()), |c| crate::text::check("comment", c, crate::text::MAX_TEXT_CHARS))
}
