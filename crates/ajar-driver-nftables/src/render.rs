//! The nftables ruleset ajar installs, rendered as nft JSON with no I/O, so
//! that tests can pin it down and `apply` only has to hand it to `nft`.
//!
//! ajar owns the table `inet ajar` and nothing else. Per target it keeps one
//! set of granted sources (`flags interval, timeout`, so every element
//! expires in the kernel on its own) and two rules:
//!
//! - `prerouting` (nat, dstnat): a new connection to the target's listen
//!   address and port from a source in the set is DNATed to the target;
//!   anyone else is not translated and meets the gateway host's own closed
//!   port.
//! - `forward` (filter): every packet of a flow this DNAT created, in both
//!   directions, is looked up again by its original source; once that source
//!   has left the set (closed by ajar, or expired in the kernel while ajar
//!   was down) the packet is answered with a TCP reset, which cuts
//!   established connections at once.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde_json::{json, Value};

/// The table ajar owns; it never writes outside it.
pub const TABLE: &str = "ajar";
pub const FAMILY: &str = "inet";
const PREROUTING: &str = "prerouting";
const FORWARD: &str = "forward";

pub use ajar_netfilter::rules::TargetRules;

/// The set of granted sources for `target`; the family is part of the name
/// so that moving a target from IPv4 to IPv6 makes a new set rather than
/// clashing with the old one's type.
pub fn set_name(target: &str, listen: &SocketAddr) -> String {
    let family = if listen.is_ipv4() { "v4" } else { "v6" };
    format!("{family}_{target}")
}

/// One atomic batch that creates the table if needed, keeps every existing
/// set (and so every granted source, which the kernel kept while ajar was
/// down), deletes sets of targets that are gone, and rewrites both chains.
pub fn configure(targets: &[TargetRules], stale_sets: &[String]) -> Value {
    let mut cmds = vec![json!({"add": {"table": {"family": FAMILY, "name": TABLE}}})];
    for t in targets {
        let addr_type = if t.listen.is_ipv4() { "ipv4_addr" } else { "ipv6_addr" };
        cmds.push(json!({"add": {"set": {
            "family": FAMILY, "table": TABLE, "name": set_name(&t.target, &t.listen),
            "type": addr_type, "flags": ["interval", "timeout"],
        }}}));
    }
    for (chain, kind, hook, prio) in [(PREROUTING, "nat", "prerouting", -100), (FORWARD, "filter", "forward", 0)] {
        cmds.push(json!({"add": {"chain": {
            "family": FAMILY, "table": TABLE, "name": chain,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept",
        }}}));
        cmds.push(json!({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": chain}}}));
    }
    // After the flush nothing refers to a stale set any more, so deleting it
    // in the same transaction succeeds.
    for set in stale_sets {
        // nft needs only the name; the type is there for the schema.
        let addr_type = if set.starts_with("v6_") { "ipv6_addr" } else { "ipv4_addr" };
        cmds.push(json!({"delete": {"set": {"family": FAMILY, "table": TABLE, "name": set, "type": addr_type}}}));
    }
    for t in targets {
        cmds.push(rule(PREROUTING, &t.target, dnat_rule(t)));
        cmds.push(rule(FORWARD, &t.target, cut_rule(t)));
    }
    json!({ "nftables": cmds })
}

fn rule(chain: &str, target: &str, expr: Vec<Value>) -> Value {
    json!({"add": {"rule": {
        "family": FAMILY, "table": TABLE, "chain": chain, "expr": expr,
        "comment": format!("ajar target {target}"),
    }}})
}

fn proto(addr: &SocketAddr) -> &'static str {
    if addr.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

fn matches(left: Value, op: &str, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn ip(addr: IpAddr) -> Value {
    Value::String(addr.to_string())
}

/// `ip daddr L tcp dport P ip saddr @set dnat ip to D:Q`
fn dnat_rule(t: &TargetRules) -> Vec<Value> {
    let p = proto(&t.listen);
    vec![
        matches(json!({"payload": {"protocol": p, "field": "daddr"}}), "==", ip(t.listen.ip())),
        matches(json!({"payload": {"protocol": "tcp", "field": "dport"}}), "==", json!(t.listen.port())),
        matches(
            json!({"payload": {"protocol": p, "field": "saddr"}}),
            "==",
            json!(format!("@{}", set_name(&t.target, &t.listen))),
        ),
        json!({"dnat": {"family": p, "addr": t.destination.ip().to_string(), "port": t.destination.port()}}),
    ]
}

/// `ct status dnat meta l4proto tcp ct original ip daddr L ct original
/// proto-dst P ct original ip saddr != @set reject with tcp reset`
fn cut_rule(t: &TargetRules) -> Vec<Value> {
    let p = proto(&t.listen);
    vec![
        matches(json!({"ct": {"key": "status"}}), "in", json!("dnat")),
        matches(json!({"meta": {"key": "l4proto"}}), "==", json!("tcp")),
        matches(json!({"ct": {"key": format!("{p} daddr"), "dir": "original"}}), "==", ip(t.listen.ip())),
        matches(json!({"ct": {"key": "proto-dst", "dir": "original"}}), "==", json!(t.listen.port())),
        matches(
            json!({"ct": {"key": format!("{p} saddr"), "dir": "original"}}),
            "!=",
            json!(format!("@{}", set_name(&t.target, &t.listen))),
        ),
        json!({"reject": {"type": "tcp reset"}}),
    ]
}

/// A source as nft writes it in a set: a bare address for a host, a prefix
/// otherwise.
pub fn element_value(source: &IpNet) -> Value {
    if source.prefix_len() == source.max_prefix_len() {
        ip(source.addr())
    } else {
        json!({"prefix": {"addr": source.network().to_string(), "len": source.prefix_len()}})
    }
}

/// One atomic batch that replaces the element for `source` in `set`: the
/// old one (if `exists`) is deleted and, when `timeout` is given, a new one
/// added. Re-adding alone would not do: adding an existing element does not
/// change its timeout.
pub fn replace_element(set: &str, source: &IpNet, exists: bool, timeout: Option<(u32, &str)>) -> Value {
    let mut cmds = Vec::new();
    if exists {
        cmds.push(json!({"delete": {"element": {
            "family": FAMILY, "table": TABLE, "name": set, "elem": [element_value(source)],
        }}}));
    }
    if let Some((secs, note)) = timeout {
        cmds.push(json!({"add": {"element": {
            "family": FAMILY, "table": TABLE, "name": set,
            "elem": [{"elem": {"val": element_value(source), "timeout": secs, "comment": note}}],
        }}}));
    }
    json!({ "nftables": cmds })
}

/// Removes everything ajar installed (`--cleanup`).
pub fn remove_table() -> Value {
    json!({"nftables": [{"delete": {"table": {"family": FAMILY, "name": TABLE}}}]})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ajar_netfilter::rules::examples;

    /// The whole ruleset for one IPv4 and one IPv6 target, with one stale
    /// set to drop. A change here is a change to what runs in the kernel:
    /// review it as such.
    #[test]
    fn the_ruleset_snapshot() {
        let got = serde_json::to_string_pretty(&configure(&examples(), &["v4_old".into()])).unwrap();
        let want = include_str!("../tests/snapshots/configure.json");
        assert_eq!(got.trim(), want.trim(), "the rendered ruleset changed:\n{got}");
    }

    #[test]
    fn element_replacement_snapshot() {
        let host: IpNet = "10.77.0.2/32".parse().unwrap();
        let net: IpNet = "fd77:0::/64".parse().unwrap();
        let replace = replace_element("v4_ssh-prod", &host, true, Some((30, "r0123456789ab@1700000000.250")));
        let add = replace_element("v6_db.v6", &net, false, Some((5, "r0123456789ab@1700000000.250")));
        let delete = replace_element("v4_ssh-prod", &host, true, None);
        let got = serde_json::to_string_pretty(&json!([replace, add, delete])).unwrap();
        let want = include_str!("../tests/snapshots/elements.json");
        assert_eq!(got.trim(), want.trim(), "the rendered element changes changed:\n{got}");
    }

    /// What `nft -j -f` reads must also be what the nftables crate's schema
    /// accepts, so that a typo in a key is caught here and not by `nft`.
    #[test]
    fn every_batch_fits_the_nftables_schema() {
        let host: IpNet = "10.77.0.2/32".parse().unwrap();
        for batch in [
            configure(&examples(), &["v4_old".into()]),
            replace_element("v4_ssh-prod", &host, true, Some((30, "note"))),
            remove_table(),
        ] {
            let typed: Result<nftables::schema::Nftables, _> = serde_json::from_value(batch.clone());
            assert!(typed.is_ok(), "{batch}: {typed:?}");
        }
    }
}
