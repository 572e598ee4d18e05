//! A kernel DNAT target as both drivers see it, and the checks and answers
//! that do not depend on which tool writes the rules.

use std::net::SocketAddr;

use ajar_domain::{DriverKind, SourceNet, Target};
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
    /// The rules of `target`, which must carry its driver's table (`nftables
    /// = { listen = ... }` or `iptables = { ... }`).
    pub fn of(target: &Target) -> Result<Self, DriverError> {
        let nat = target.nat.as_ref().ok_or_else(|| {
            DriverError::permanent(format!(
                "target {} has no {kind} table: add {kind} = {{ listen = \"ADDRESS:PORT\" }} to it",
                target.name,
                kind = target.driver.as_str()
            ))
        })?;
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
    (target.driver == kind).then(|| target.nat.as_ref().map(|n| opened(&n.listen))).flatten()
}

fn opened(listen: &SocketAddr) -> Opened {
    Opened { host: listen.ip().to_string(), port: listen.port() }
}
