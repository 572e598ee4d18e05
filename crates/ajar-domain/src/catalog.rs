//! The catalog: what the config file declares about users, targets and
//! policies, already validated. Every other module reads it; only
//! `ajar-config` builds it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use crate::{GrantDuration, Name, SourceNet};

/// A protected endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: Name,
    /// `host:port` of the critical server, as the data plane reaches it.
    pub address: String,
    pub driver: DriverKind,
    pub labels: BTreeMap<String, String>,
    /// Settings of the built-in gateway, present exactly when `driver` is
    /// [`DriverKind::Gateway`].
    pub gateway: Option<GatewaySettings>,
    /// Settings of the kernel DNAT drivers, present exactly when `driver` is
    /// [`DriverKind::Nftables`] or [`DriverKind::Iptables`].
    pub nat: Option<NatSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Where the gateway listens for this target.
    pub listen: SocketAddr,
    /// The host name clients should connect to, when `listen` is a wildcard
    /// address or not reachable by that name.
    pub public_host: Option<String>,
}

/// Where a kernel DNAT driver (nftables, iptables) takes connections for a
/// target and where it sends them. Both addresses are IP literals of the
/// same family: the kernel translates addresses, it does not resolve names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatSettings {
    /// The gateway host's own address and port that clients connect to.
    pub listen: SocketAddr,
    /// The critical server (the target's `address`, parsed).
    pub destination: SocketAddr,
    /// Whether ajar may turn on IP forwarding at start when it is off,
    /// instead of refusing to start.
    pub enable_forwarding: bool,
}

/// How a path to a target is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DriverKind {
    Gateway,
    Nftables,
    Iptables,
}

impl DriverKind {
    pub const ALL: &'static [DriverKind] = &[DriverKind::Gateway, DriverKind::Nftables, DriverKind::Iptables];

    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Gateway => "gateway",
            DriverKind::Nftables => "nftables",
            DriverKind::Iptables => "iptables",
        }
    }

    /// Whether the driver programs the kernel through DNAT and reads
    /// [`Target::nat`].
    pub fn is_nat(self) -> bool {
        matches!(self, DriverKind::Nftables | DriverKind::Iptables)
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a policy line or an access list names: one user or every member of a
/// group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    User(Name),
    Group(Name),
}

impl Subject {
    /// Parses `alice` or `group:sre`.
    pub fn parse(text: &str) -> Result<Self, crate::name::InvalidName> {
        match text.strip_prefix("group:") {
            Some(group) => Name::parse(group).map(Subject::Group),
            None => Name::parse(text).map(Subject::User),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(n) => write!(f, "{n}"),
            Subject::Group(n) => write!(f, "group:{n}"),
        }
    }
}

/// Which targets a policy covers: one by name, or all with a label value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSelector {
    Name(Name),
    Label { key: String, value: String },
}

impl TargetSelector {
    pub fn matches(&self, target: &Target) -> bool {
        match self {
            TargetSelector::Name(n) => &target.name == n,
            TargetSelector::Label { key, value } => target.labels.get(key) == Some(value),
        }
    }
}

impl fmt::Display for TargetSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSelector::Name(n) => write!(f, "{n}"),
            TargetSelector::Label { key, value } => write!(f, "{key}={value}"),
        }
    }
}

/// Who may request which targets, for how long, with whose approval, and
/// from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: Name,
    pub subjects: Vec<Subject>,
    pub targets: Vec<TargetSelector>,
    pub max_duration: GrantDuration,
    pub reason_required: bool,
    /// How many distinct approvers must approve; 0 means auto-approve.
    pub approvals: u32,
    pub approvers: Vec<Subject>,
    /// Networks an explicitly requested source may lie in. Empty means a
    /// grant binds only to the requester's own address.
    pub sources: Vec<SourceNet>,
}

/// A local user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: Name,
    /// A PHC-format argon2id hash; never the password.
    pub password_hash: String,
    pub groups: Vec<Name>,
}

impl fmt::Debug for User {
    /// Leaves the password hash out so that it never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User").field("name", &self.name).field("groups", &self.groups).finish_non_exhaustive()
    }
}

/// Who holds the standing (non-network) powers of ajar itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// May revoke any grant and read the whole audit log.
    pub admins: Vec<Subject>,
    /// May read the whole audit log.
    pub auditors: Vec<Subject>,
}

/// Everything the config declares that the policy engine reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub access: Access,
    pub users: Vec<User>,
    pub targets: Vec<Target>,
    pub policies: Vec<Policy>,
}

impl Catalog {
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name.as_str() == name)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name.as_str() == name)
    }
}
