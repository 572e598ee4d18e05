//! The catalog: what the config file declares about users, targets and
//! policies, already validated. Every other module reads it; only
//! `ajar-config` builds it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::{GrantDuration, Name, SourceNet};

/// A protected endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: Name,
    /// `host:port` of the critical server, as the data plane reaches it.
    pub address: String,
    pub labels: BTreeMap<String, String>,
    /// Which driver enforces this target, with that driver's settings.
    pub driver: DriverSettings,
    /// The agents that enforce this target in their own network (`ajar
    /// agent`); `None` when this server's own driver does.
    pub agent_group: Option<Name>,
}

impl Target {
    /// Which driver enforces this target.
    pub fn kind(&self) -> DriverKind {
        self.driver.kind()
    }

    /// Who runs the driver: this server, or the agents of a group.
    pub fn placement(&self) -> Placement {
        match self.agent_group {
            Some(_) => Placement::Agents,
            None => Placement::Local(self.kind()),
        }
    }

    /// Where a grant on this target reaches, in words: the address, and for
    /// the AWS drivers what else decides which machine that is (the security
    /// group, protocol and ports a rule opens; the subnet an app server runs
    /// in) and the region. Approvals are given for this destination, so a
    /// reload that changes it withdraws the grants given for the old one.
    /// The listen side (gateway or DNAT address, app server port) is not part
    /// of it: it changes how clients come in, not what they reach.
    pub fn destination(&self) -> String {
        let region = |api: &AwsApi| {
            let mut at =
                api.region.as_deref().map_or_else(|| "the default region".to_owned(), |r| format!("region {r}"));
            if let Some(endpoint) = &api.endpoint_url {
                at.push_str(&format!(" at {endpoint}"));
            }
            at
        };
        match &self.driver {
            DriverSettings::AwsSg(sg) => {
                let ports: Vec<String> = sg.ports.iter().map(u16::to_string).collect();
                format!(
                    "{} (security group {} in {}, {} port {})",
                    self.address,
                    sg.security_group_id,
                    region(&sg.api),
                    sg.protocol.as_str(),
                    ports.join(",")
                )
            }
            DriverSettings::AwsInstance(i) => {
                format!("{} (from subnet {} in {})", self.address, i.subnet_id, region(&i.api))
            }
            DriverSettings::Gateway(_) | DriverSettings::Nftables(_) | DriverSettings::Iptables(_) => {
                match &self.agent_group {
                    // The same address in another network is another machine.
                    Some(group) => format!("{} (in the network of agent group {group})", self.address),
                    None => self.address.clone(),
                }
            }
        }
    }
}

/// The driver of a target with its settings: a target has exactly the
/// settings of its own driver, so no driver has to ask whether they are
/// there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverSettings {
    /// `driver = "gateway"`: ajar's own userspace TCP gateway.
    Gateway(GatewaySettings),
    /// `driver = "nftables"`: kernel DNAT in nftables' table `inet ajar`.
    Nftables(NatSettings),
    /// `driver = "iptables"`: kernel DNAT in ajar's iptables chains.
    Iptables(NatSettings),
    /// `driver = "aws-sg"`: ingress rules in a security group.
    AwsSg(AwsSgSettings),
    /// `driver = "aws-instance"`: an app server per grant.
    AwsInstance(AwsInstanceSettings),
}

impl DriverSettings {
    /// Which driver these settings are for.
    pub fn kind(&self) -> DriverKind {
        match self {
            DriverSettings::Gateway(_) => DriverKind::Gateway,
            DriverSettings::Nftables(_) => DriverKind::Nftables,
            DriverSettings::Iptables(_) => DriverKind::Iptables,
            DriverSettings::AwsSg(_) => DriverKind::AwsSg,
            DriverSettings::AwsInstance(_) => DriverKind::AwsInstance,
        }
    }

    /// The gateway's settings, for a gateway target.
    pub fn gateway(&self) -> Option<&GatewaySettings> {
        match self {
            DriverSettings::Gateway(g) => Some(g),
            _ => None,
        }
    }

    /// The DNAT settings, for a target of either kernel DNAT driver.
    pub fn nat(&self) -> Option<&NatSettings> {
        match self {
            DriverSettings::Nftables(n) | DriverSettings::Iptables(n) => Some(n),
            _ => None,
        }
    }
}

/// Shows the driver's name, as the config writes it (`driver = "..."`).
impl fmt::Display for DriverSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind().fmt(f)
    }
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

/// Which AWS endpoint a driver talks to. `None` falls back to the SDK's
/// standard chain (`AWS_REGION`, the profile, instance metadata) and to the
/// region's public endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AwsApi {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

/// The transport protocol a security-group rule admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    Tcp,
    Udp,
}

impl IpProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            IpProtocol::Tcp => "tcp",
            IpProtocol::Udp => "udp",
        }
    }
}

/// `driver = "aws-sg"`: an ingress rule for the grant's source in one
/// security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSgSettings {
    pub api: AwsApi,
    pub security_group_id: String,
    pub protocol: IpProtocol,
    /// The ports each grant opens, one rule per port.
    pub ports: Vec<u16>,
    /// How many inbound rules the group may hold (the account's "inbound
    /// rules per security group" quota); ajar refuses to open past it.
    pub rule_quota: u32,
    /// The target's network interfaces, whose established-TCP tracking
    /// timeout ajar checks at start (it bounds how long a connection
    /// outlives its rule).
    pub network_interface_ids: Vec<String>,
}

/// `driver = "aws-instance"`: a fresh app server per grant that forwards
/// `listen_port` to the target and admits only the grant's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsInstanceSettings {
    pub api: AwsApi,
    pub ami: String,
    pub instance_type: String,
    pub subnet_id: String,
    pub security_group_ids: Vec<String>,
    pub listen_port: u16,
    /// The critical server (the target's `address`, parsed).
    pub destination: SocketAddr,
    pub instance_profile: Option<String>,
    pub key_name: Option<String>,
    /// Extra tags on every instance (never `ajar:` or `aws:` keys).
    pub tags: BTreeMap<String, String>,
    /// Instances kept running, unassigned, so that a grant opens in seconds.
    pub warm_pool: u32,
    /// How long an instance may take to reach `running`.
    pub launch_timeout: Duration,
    /// When set, an app server that forwards no traffic for this long
    /// powers itself off, and ajar ends (revokes) its grant.
    pub idle_timeout: Option<Duration>,
}

/// Where a target's driver runs: in this server (one driver per kind), or
/// in the agents of the target's `agent_group`, which run the same drivers
/// in their own networks and are reached through one hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placement {
    Local(DriverKind),
    Agents,
}

impl Placement {
    /// Whether the path lives in shared cloud state every replica sees
    /// (see [`DriverKind::is_shared`]); an agent's grants are pushed by
    /// every replica its agents may be connected to, so they are not.
    pub fn is_shared(self) -> bool {
        match self {
            Placement::Local(kind) => kind.is_shared(),
            Placement::Agents => false,
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Local(kind) => write!(f, "{kind}"),
            Placement::Agents => f.write_str("agents"),
        }
    }
}

/// How a path to a target is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DriverKind {
    Gateway,
    Nftables,
    Iptables,
    AwsSg,
    AwsInstance,
}

impl DriverKind {
    pub const ALL: &'static [DriverKind] =
        &[DriverKind::Gateway, DriverKind::Nftables, DriverKind::Iptables, DriverKind::AwsSg, DriverKind::AwsInstance];

    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Gateway => "gateway",
            DriverKind::Nftables => "nftables",
            DriverKind::Iptables => "iptables",
            DriverKind::AwsSg => "aws-sg",
            DriverKind::AwsInstance => "aws-instance",
        }
    }

    /// The key of the target's settings table for this driver.
    pub fn table_key(self) -> &'static str {
        match self {
            DriverKind::AwsSg => "aws_sg",
            DriverKind::AwsInstance => "aws_instance",
            other => other.as_str(),
        }
    }

    /// Whether the driver changes shared cloud resources rather than this
    /// host: every replica sees the same rules and instances, so only the
    /// replica that changes a grant acts on it (and reconcile repairs).
    pub fn is_shared(self) -> bool {
        matches!(self, DriverKind::AwsSg | DriverKind::AwsInstance)
    }

    /// Whether the driver programs the kernel through DNAT (its settings are
    /// [`NatSettings`]).
    /// Whether an `ajar agent` can run this driver for a target of its
    /// group: the ones that act on the host they run on. The AWS drivers
    /// act on the cloud API, which the server reaches itself.
    pub fn runs_on_agents(self) -> bool {
        matches!(self, DriverKind::Gateway | DriverKind::Nftables | DriverKind::Iptables)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(address: &str) -> Target {
        Target {
            name: Name::parse("db").expect("valid"),
            address: address.to_owned(),
            labels: BTreeMap::new(),
            driver: DriverSettings::Gateway(GatewaySettings {
                listen: "127.0.0.1:15432".parse().expect("addr"),
                public_host: None,
            }),
            agent_group: None,
        }
    }

    fn sg(address: &str, group: &str, ports: Vec<u16>) -> Target {
        Target {
            driver: DriverSettings::AwsSg(AwsSgSettings {
                api: AwsApi { region: Some("eu-west-1".into()), endpoint_url: None },
                security_group_id: group.into(),
                protocol: IpProtocol::Tcp,
                ports,
                rule_quota: 60,
                network_interface_ids: Vec::new(),
            }),
            ..target(address)
        }
    }

    #[test]
    fn the_destination_is_what_a_grant_reaches_not_where_it_comes_in() {
        assert_eq!(target("10.0.0.1:5432").destination(), "10.0.0.1:5432");
        assert_ne!(target("10.0.0.1:5432").destination(), target("10.0.0.2:5432").destination());
        let other_listen = Target {
            driver: DriverSettings::Gateway(GatewaySettings {
                listen: "127.0.0.1:25432".parse().expect("addr"),
                public_host: None,
            }),
            labels: [("env".to_owned(), "prod".to_owned())].into(),
            ..target("10.0.0.1:5432")
        };
        assert_eq!(other_listen.destination(), target("10.0.0.1:5432").destination());

        let a = sg("10.0.0.1:5432", "sg-1", vec![5432]);
        assert_eq!(a.destination(), "10.0.0.1:5432 (security group sg-1 in region eu-west-1, tcp port 5432)");
        assert_ne!(a.destination(), sg("10.0.0.1:5432", "sg-2", vec![5432]).destination());
        assert_ne!(a.destination(), sg("10.0.0.1:5432", "sg-1", vec![5432, 22]).destination());
        assert_ne!(a.destination(), target("10.0.0.1:5432").destination(), "another driver reaches it another way");
    }
}
