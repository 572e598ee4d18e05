//! A kernel DNAT target as both drivers see it, and the checks and answers
//! that do not depend on which tool writes the rules.

use std::net::SocketAddr;

use ajar_domain::{DriverKind, DriverSettings, SourceNet, Target};
use ajar_enforce::{DriverError, Opened};

/// One target's DNAT: clients connect to `listen` on the gateway host and
/// are sent on to `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRules {
    pub target: String,
    pub listen: SocketAddr,
    pub destination: SocketAddr,
}

impl TargetRules {
    /// The rules of `target` as the `kind` driver (nftables or iptables)
    /// writes them. A target of any other driver is ajar's own mistake,
    /// reported as such.
    pub fn of(target: &Target, kind: DriverKind) -> Result<Self, DriverError> {
        let nat = settings(target, kind).ok_or_else(|| DriverError::wrong_driver(kind, target))?;
        Ok(Self { target: target.name.to_string(), listen: nat.listen, destination: nat.destination })
    }

    /// Refuses a source of the other IP family: the kernel could never match it.
    pub fn check_source(&self, source: &SourceNet) -> Result<(), DriverError> {
        if source.net().addr().is_ipv4() == self.listen.is_ipv4() {
            return Ok(());
        }
        Err(DriverError::permanent(format!(
            "source {source} and target {} (listening on {}) are of different IP families; request access from an address of the target's family",
            self.target, self.listen
        )))
    }

    /// Where clients connect: the listen address itself.
    pub fn opened(&self) -> Opened {
        opened(&self.listen)
    }
}

/// Where clients connect for `target` if it is served by `kind`.
pub fn connect_info(target: &Target, kind: DriverKind) -> Option<Opened> {
    settings(target, kind).map(|n| opened(&n.listen))
}

/// The DNAT settings of `target` if the `kind` driver serves it.
fn settings(target: &Target, kind: DriverKind) -> Option<&ajar_domain::NatSettings> {
    match (&target.driver, kind) {
        (DriverSettings::Nftables(nat), DriverKind::Nftables)
        | (DriverSettings::Iptables(nat), DriverKind::Iptables) => Some(nat),
        _ => None,
    }
}

fn opened(listen: &SocketAddr) -> Opened {
    Opened { host: listen.ip().to_string(), port: listen.port() }
}

/// One IPv4 and one IPv6 target: what every backend's snapshot tests
/// render, so that the snapshots of both tools describe the same targets.
#[cfg(feature = "fixtures")]
pub fn examples() -> [TargetRules; 2] {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let v4 = |a, b, c, d, port| SocketAddr::from((Ipv4Addr::new(a, b, c, d), port));
    let v6 = |net, host, port| SocketAddr::from((Ipv6Addr::new(0xfd77, net, 0, 0, 0, 0, 0, host), port));
    [
        TargetRules { target: "ssh-prod".into(), listen: v4(10, 77, 1, 1, 2222), destination: v4(10, 77, 2, 2, 22) },
        TargetRules { target: "db.v6".into(), listen: v6(1, 1, 5432), destination: v6(2, 2, 5432) },
    ]
}
