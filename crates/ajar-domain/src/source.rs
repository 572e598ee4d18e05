//! Source networks a grant is bound to.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The network a grant admits traffic from. Usually a single address (`/32`
/// or `/128`); never the whole internet. Host bits are always zero, so two
/// equal networks compare equal however they were written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceNet(IpNet);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSource {
    #[error("{0:?} is not an IP address or CIDR network: write an address such as 10.8.1.7 or a network such as 10.8.0.0/24")]
    Syntax(String),
    #[error("{0} would admit every address; ajar never grants access to the whole internet, so name your own address or network")]
    Everything(String),
    #[error("{value} has host bits set: did you mean {suggestion}?")]
    HostBits { value: String, suggestion: String },
}

impl SourceNet {
    /// Parses an address (`10.8.1.7`, meaning exactly that host) or a CIDR
    /// network (`10.8.0.0/24`). IPv4-mapped IPv6 addresses and networks
    /// (`::ffff:10.0.0.0/104`) are treated as the IPv4 address or network
    /// they carry (`10.0.0.0/8`): clients are compared in canonical IPv4
    /// form, so a mapped network kept as IPv6 would never match one.
    pub fn parse(text: &str) -> Result<Self, InvalidSource> {
        let text = text.trim();
        let net = if text.contains('/') {
            let net: IpNet = text.parse().map_err(|_| InvalidSource::Syntax(text.to_owned()))?;
            let net = canonical(net);
            if net.prefix_len() == 0 {
                return Err(InvalidSource::Everything(text.to_owned()));
            }
            if net.trunc() != net {
                return Err(InvalidSource::HostBits { value: text.to_owned(), suggestion: net.trunc().to_string() });
            }
            net
        } else {
            let ip: IpAddr = text.parse().map_err(|_| InvalidSource::Syntax(text.to_owned()))?;
            return Ok(Self::host(ip));
        };
        Ok(Self(net))
    }

    /// The network that holds exactly `ip`.
    pub fn host(ip: IpAddr) -> Self {
        Self(IpNet::from(ip.to_canonical()))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }

    /// Whether every address of `self` also lies in `outer`.
    pub fn within(&self, outer: &SourceNet) -> bool {
        outer.0.contains(&self.0)
    }

    pub fn is_single_host(&self) -> bool {
        self.0.prefix_len() == self.0.max_prefix_len()
    }

    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    pub fn net(&self) -> IpNet {
        self.0
    }
}

/// An IPv6 network inside `::ffff:0:0/96` as the IPv4 network it maps
/// (prefix − 96); any other network as it is. Host bits are kept, so that
/// the caller's check still sees them.
fn canonical(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map(IpNet::V4).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

impl fmt::Display for SourceNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for SourceNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_and_networks() {
        assert_eq!(SourceNet::parse("10.8.1.7").map(|s| s.to_string()), Ok("10.8.1.7/32".into()));
        assert_eq!(SourceNet::parse("::1").map(|s| s.to_string()), Ok("::1/128".into()));
        assert_eq!(SourceNet::parse("::ffff:10.0.0.1").map(|s| s.to_string()), Ok("10.0.0.1/32".into()));
        assert_eq!(SourceNet::parse("10.8.0.0/16").map(|s| s.prefix_len()), Ok(16));
    }

    #[test]
    fn ipv4_mapped_networks_are_ipv4_networks() {
        let cases = [
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:10.8.0.0/112", "10.8.0.0/16"),
            ("::ffff:192.0.2.7/128", "192.0.2.7/32"),
            ("::FFFF:0a08:0000/120", "10.8.0.0/24"),
        ];
        for (text, want) in cases {
            let net = SourceNet::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(net.to_string(), want, "{text}");
            assert_eq!(net, SourceNet::parse(want).expect("valid"), "{text} equals its IPv4 form");
        }
        let mapped = SourceNet::parse("::ffff:10.0.0.0/104").expect("valid");
        assert!(mapped.contains("10.1.2.3".parse().expect("ip")), "a canonical IPv4 client matches");
        assert!(mapped.contains("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!mapped.contains("11.0.0.1".parse().expect("ip")));
        // The whole mapped range is the whole IPv4 internet.
        assert!(matches!(SourceNet::parse("::ffff:0.0.0.0/96"), Err(InvalidSource::Everything(_))));
        // Host bits are found in the IPv4 form, and the hint is in that form.
        assert_eq!(
            SourceNet::parse("::ffff:10.0.0.1/104"),
            Err(InvalidSource::HostBits { value: "::ffff:10.0.0.1/104".into(), suggestion: "10.0.0.0/8".into() })
        );
        // Other IPv6 networks stay IPv6.
        assert_eq!(SourceNet::parse("2001:db8::/32").map(|s| s.to_string()), Ok("2001:db8::/32".into()));
        assert_eq!(SourceNet::parse("::/96").map(|s| s.to_string()), Ok("::/96".into()));
    }

    #[test]
    fn refuses_everything_garbage_and_host_bits() {
        assert!(matches!(SourceNet::parse("0.0.0.0/0"), Err(InvalidSource::Everything(_))));
        assert!(matches!(SourceNet::parse("::/0"), Err(InvalidSource::Everything(_))));
        assert!(matches!(SourceNet::parse("10.8.0.1/16"), Err(InvalidSource::HostBits { .. })));
        for bad in ["", "10.8", "10.8.0.0/33", "host.example", "10.0.0.1/x"] {
            assert!(matches!(SourceNet::parse(bad), Err(InvalidSource::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn containment() {
        let wide = SourceNet::parse("10.8.0.0/16").expect("valid");
        let narrow = SourceNet::parse("10.8.3.0/24").expect("valid");
        assert!(narrow.within(&wide));
        assert!(!wide.within(&narrow));
        assert!(wide.contains("10.8.200.1".parse().expect("ip")));
        assert!(!wide.contains("10.9.0.1".parse().expect("ip")));
    }
}
