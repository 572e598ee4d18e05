//! The policy engine: default deny, and when several policies cover the same
//! request the most restrictive limit of each kind applies.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::{Catalog, GrantDuration, Name, Policy, SourceNet, Subject, Target};

/// An authenticated person, with the groups they belong to right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: Name,
    pub groups: BTreeSet<Name>,
}

impl Principal {
    pub fn new(name: Name, groups: impl IntoIterator<Item = Name>) -> Self {
        Self { name, groups: groups.into_iter().collect() }
    }

    pub fn is(&self, subject: &Subject) -> bool {
        match subject {
            Subject::User(n) => &self.name == n,
            Subject::Group(g) => self.groups.contains(g),
        }
    }

    pub fn is_any(&self, subjects: &[Subject]) -> bool {
        subjects.iter().any(|s| self.is(s))
    }

    pub fn is_admin(&self, catalog: &Catalog) -> bool {
        self.is_any(&catalog.access.admins)
    }

    /// Admins and auditors may read the whole audit log.
    pub fn may_read_all_audit(&self, catalog: &Catalog) -> bool {
        self.is_admin(catalog) || self.is_any(&catalog.access.auditors)
    }
}

/// What a requester asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub target: String,
    pub duration: GrantDuration,
    pub reason: String,
    /// An explicitly requested source network; `None` binds the grant to
    /// the requester's own address.
    pub source: Option<SourceNet>,
}

/// The policy engine's "yes": what it takes for the request to become a
/// grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub target: Name,
    pub source: SourceNet,
    /// The longest duration every applicable policy allows.
    pub max_duration: GrantDuration,
    pub approvals_required: u32,
    /// An approver must match one subject of every set.
    pub approver_sets: Vec<Vec<Subject>>,
    pub policies: Vec<Name>,
}

/// The policy engine's and the state machine's "no", in words a user can
/// act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Deliberately the same for a target that does not exist and one the
    /// caller may not request, so that the answer leaks nothing.
    #[error("there is no target {target:?} that you may request; `ajar targets` lists the ones you may")]
    UnknownTarget { target: String },
    #[error("duration {requested} is longer than policy {policy:?} allows ({max}); ask for {max} or less")]
    DurationTooLong { requested: GrantDuration, max: GrantDuration, policy: String },
    #[error("policy {policy:?} requires a reason; say why you need access, for example an incident or ticket number")]
    ReasonRequired { policy: String },
    #[error("the {field} is {length} characters long; keep it to {max} or fewer (put long detail in a ticket and give its number)")]
    TextTooLong { field: &'static str, length: usize, max: usize },
    #[error(
        "the {field} contains {character} at character {position}; write it on one line, without control characters"
    )]
    ForbiddenCharacter { field: &'static str, character: String, position: usize },
    #[error("source {net} is not allowed by policy {policy:?}: {allowed}")]
    SourceNotAllowed { net: SourceNet, policy: String, allowed: String },
    #[error("you cannot approve your own request; someone else among the approvers must")]
    SelfApproval,
    #[error("you are not among the approvers of this request ({approvers})")]
    NotAnApprover { approvers: String },
    #[error("you have already approved this request; another approver must approve it")]
    AlreadyApproved,
    #[error("only the requester may {action} this request")]
    NotRequester { action: &'static str },
    #[error("only an approver of this request or an admin may revoke it")]
    MayNotRevoke,
    #[error("the request is {state}, so it cannot be {action}")]
    WrongState { state: &'static str, action: &'static str },
    #[error("the request is no longer allowed by policy: {0}")]
    NoLongerAllowed(String),
    #[error("you already have {max} pending requests, the most this server allows at once; cancel one you no longer need (`ajar ls --state pending`, then `ajar cancel ID`) or wait until approvers decide")]
    TooManyPending { max: u32 },
}

impl Rejected {
    /// A stable, URL-safe slug for each kind of rejection.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejected::UnknownTarget { .. } => "unknown-target",
            Rejected::DurationTooLong { .. } => "duration-too-long",
            Rejected::ReasonRequired { .. } => "reason-required",
            Rejected::TextTooLong { field: "reason", .. } => "reason-too-long",
            Rejected::TextTooLong { .. } => "comment-too-long",
            Rejected::ForbiddenCharacter { field: "reason", .. } => "forbidden-character-in-reason",
            Rejected::ForbiddenCharacter { .. } => "forbidden-character-in-comment",
            Rejected::SourceNotAllowed { .. } => "source-not-allowed",
            Rejected::SelfApproval => "self-approval",
            Rejected::NotAnApprover { .. } => "not-an-approver",
            Rejected::AlreadyApproved => "already-approved",
            Rejected::NotRequester { .. } => "not-requester",
            Rejected::MayNotRevoke => "may-not-revoke",
            Rejected::WrongState { .. } => "wrong-state",
            Rejected::NoLongerAllowed(_) => "no-longer-allowed",
            Rejected::TooManyPending { .. } => "too-many-pending",
        }
    }

    /// Whether the caller is refused a power (403) rather than sending a
    /// request that cannot be satisfied (400/409/404).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            Rejected::SelfApproval
                | Rejected::NotAnApprover { .. }
                | Rejected::NotRequester { .. }
                | Rejected::MayNotRevoke
        )
    }
}

/// The policies that let `principal` request `target`.
pub fn applicable<'c>(catalog: &'c Catalog, principal: &Principal, target: &Target) -> Vec<&'c Policy> {
    catalog
        .policies
        .iter()
        .filter(|p| principal.is_any(&p.subjects) && p.targets.iter().any(|s| s.matches(target)))
        .collect()
}

/// Decides whether `principal`, connecting from `requester_addr`, may have
/// `ask`. Default deny: without an applicable policy the answer is no.
pub fn evaluate(
    catalog: &Catalog,
    principal: &Principal,
    ask: &Ask,
    requester_addr: IpAddr,
) -> Result<Verdict, Rejected> {
    let unknown = || Rejected::UnknownTarget { target: ask.target.clone() };
    let target = catalog.target(&ask.target).ok_or_else(unknown)?;
    let policies = applicable(catalog, principal, target);
    if policies.is_empty() {
        return Err(unknown());
    }

    crate::text::check("reason", &ask.reason, crate::text::MAX_TEXT_CHARS)?;
    let source = ask.source.unwrap_or_else(|| SourceNet::host(requester_addr));

    let mut max_duration = GrantDuration::MAX;
    for policy in &policies {
        if ask.duration > policy.max_duration {
            return Err(Rejected::DurationTooLong {
                requested: ask.duration,
                max: policy.max_duration,
                policy: policy.name.to_string(),
            });
        }
        max_duration = max_duration.min(policy.max_duration);
        if policy.reason_required && ask.reason.trim().is_empty() {
            return Err(Rejected::ReasonRequired { policy: policy.name.to_string() });
        }
        check_source(policy, ask.source, requester_addr)?;
    }

    let approvals_required = policies.iter().map(|p| p.approvals).max().unwrap_or(0);
    let approver_sets = policies.iter().filter(|p| p.approvals > 0).map(|p| p.approvers.clone()).collect();
    Ok(Verdict {
        target: target.name.clone(),
        source,
        max_duration,
        approvals_required,
        approver_sets,
        policies: policies.iter().map(|p| p.name.clone()).collect(),
    })
}

fn check_source(policy: &Policy, explicit: Option<SourceNet>, requester_addr: IpAddr) -> Result<(), Rejected> {
    let Some(source) = explicit else {
        // The requester's own address is always acceptable.
        return Ok(());
    };
    let own = SourceNet::host(requester_addr);
    if source == own || policy.sources.iter().any(|allowed| source.within(allowed)) {
        return Ok(());
    }
    let allowed = if policy.sources.is_empty() {
        format!("it binds grants only to your own address ({own}); leave the source out")
    } else {
        let nets: Vec<String> = policy.sources.iter().map(|s| s.to_string()).collect();
        format!("choose an address or network inside {}", nets.join(", "))
    };
    Err(Rejected::SourceNotAllowed { net: source, policy: policy.name.to_string(), allowed })
}

/// Whether `approver` may approve under `verdict`, the requester being
/// `requester`. Nobody approves their own request.
pub fn check_approver(verdict: &Verdict, requester: &Name, approver: &Principal) -> Result<(), Rejected> {
    if &approver.name == requester {
        return Err(Rejected::SelfApproval);
    }
    if verdict.approver_sets.iter().all(|set| approver.is_any(set)) && !verdict.approver_sets.is_empty() {
        return Ok(());
    }
    let approvers: Vec<String> = verdict
        .approver_sets
        .iter()
        .map(|set| set.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" or "))
        .collect();
    Err(Rejected::NotAnApprover {
        approvers: if approvers.is_empty() { "nobody".to_owned() } else { approvers.join("; and ") },
    })
}

/// The limits a principal sees when listing what they may request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer<'c> {
    pub target: &'c Target,
    pub max_duration: GrantDuration,
    pub reason_required: bool,
    pub approvals_required: u32,
    pub approvers: Vec<Subject>,
    pub policies: Vec<Name>,
}

/// Every target `principal` may request, with the combined limits.
pub fn offers<'c>(catalog: &'c Catalog, principal: &Principal) -> Vec<Offer<'c>> {
    catalog
        .targets
        .iter()
        .filter_map(|target| {
            let policies = applicable(catalog, principal, target);
            if policies.is_empty() {
                return None;
            }
            let mut approvers: Vec<Subject> =
                policies.iter().filter(|p| p.approvals > 0).flat_map(|p| p.approvers.clone()).collect();
            approvers.sort();
            approvers.dedup();
            Some(Offer {
                target,
                max_duration: policies.iter().map(|p| p.max_duration).min().unwrap_or(GrantDuration::MAX),
                reason_required: policies.iter().any(|p| p.reason_required),
                approvals_required: policies.iter().map(|p| p.approvals).max().unwrap_or(0),
                approvers,
                policies: policies.iter().map(|p| p.name.clone()).collect(),
            })
        })
        .collect()
}
