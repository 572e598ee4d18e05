//! The gateway's grant table and the pure rule that decides whether a grant
//! covers a connection. The accept loop and every live connection ask the
//! same question, so they can never disagree.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ajar_domain::{RequestId, SourceNet, Timestamp};

/// One admitted grant as the gateway keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GrantEntry {
    pub(crate) target: String,
    pub(crate) source: SourceNet,
    pub(crate) ends_at: Timestamp,
}

/// Every grant the gateway currently honours, by id. Shared through a
/// `tokio::sync::watch` so that live connections notice every change.
pub(crate) type GrantTable = BTreeMap<RequestId, GrantEntry>;

/// The grant that lets `peer` reach `target` at `now`, if any: among the
/// grants for `target` whose source contains `peer` and whose deadline is
/// still ahead, the one that lasts longest (so a connection lives as long as
/// any grant covers it).
pub(crate) fn covering<'a>(
    table: &'a GrantTable,
    target: &str,
    peer: IpAddr,
    now: Timestamp,
) -> Option<(&'a RequestId, Timestamp)> {
    table
        .iter()
        .filter(|(_, g)| g.target == target && g.ends_at > now && g.source.contains(peer))
        .map(|(id, g)| (id, g.ends_at))
        .max_by_key(|(_, ends_at)| *ends_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn at(secs: i64) -> Timestamp {
        DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or_default()
    }

    fn id(i: u8) -> RequestId {
        RequestId::from_random([i; 12])
    }

    fn entry(target: &str, source: &str, ends: i64) -> GrantEntry {
        let source = SourceNet::parse(source).unwrap_or_else(|e| panic!("{e}"));
        GrantEntry { target: target.into(), source, ends_at: at(ends) }
    }

    fn check(table: &[(u8, GrantEntry)], target: &str, peer: &str, now: i64, want: Option<(u8, i64)>) {
        let table: GrantTable = table.iter().map(|(i, g)| (id(*i), g.clone())).collect();
        let peer: IpAddr = peer.parse().unwrap_or_else(|e| panic!("{e}"));
        let got = covering(&table, target, peer, at(now)).map(|(i, e)| (i.clone(), e));
        assert_eq!(got, want.map(|(i, e)| (id(i), at(e))), "{target} {peer} at {now}");
    }

    #[test]
    fn coverage() {
        let table = [
            (1, entry("db", "10.0.0.7", 100)),
            (2, entry("db", "10.0.0.0/24", 200)),
            (3, entry("web", "10.0.0.8", 300)),
        ];
        // The longest-lasting covering grant wins.
        check(&table, "db", "10.0.0.7", 50, Some((2, 200)));
        // A network grant covers its members; an IPv4-mapped peer is the same host.
        check(&table, "db", "10.0.0.9", 50, Some((2, 200)));
        check(&table, "db", "::ffff:10.0.0.7", 150, Some((2, 200)));
        // Other targets and other sources are not covered.
        check(&table, "db", "10.0.1.7", 50, None);
        check(&table, "web", "10.0.0.7", 50, None);
        check(&table, "web", "10.0.0.8", 50, Some((3, 300)));
        // The deadline itself is already outside the grant.
        check(&table, "db", "10.0.0.9", 200, None);
        check(&[(1, entry("db", "10.0.0.7", 100))], "db", "10.0.0.7", 99, Some((1, 100)));
        check(&[(1, entry("db", "10.0.0.7", 100))], "db", "10.0.0.7", 100, None);
    }
}
