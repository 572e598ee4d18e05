//! What the iptables driver writes into the kernel, rendered as text and
//! argument lists with no I/O, so that tests can pin it down and `ipt` only
//! has to run it.
//!
//! ajar owns two chains per address family, `AJAR-PREROUTING` in the `nat`
//! table and `AJAR-FORWARD` in the `filter` table, one jump to each from
//! the built-in chain of the same name (commented `ajar`), and one ipset
//! per target and family (`hash:net`, `timeout`, `comment`). Per target:
//!
//! - `AJAR-PREROUTING`: a new connection to the target's listen address and
//!   port from a source in the set is DNATed to the target; anyone else is
//!   not translated and meets the gateway host's own closed port.
//! - `AJAR-FORWARD`: every packet of a flow this DNAT created is looked up
//!   again, the original direction by its source and the reply direction by
//!   its destination (both are the client); once the client has left the
//!   set (closed by ajar, or expired in the kernel while ajar was down) the
//!   packet is answered with a TCP reset, which cuts established
//!   connections at once.
//!
//! The same semantics as the nftables driver's table `inet ajar`.

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;

/// The chain in the `nat` table that DNATs granted sources.
pub const PREROUTING_CHAIN: &str = "AJAR-PREROUTING";
/// The chain in the `filter` table that cuts flows whose grant has ended.
pub const FORWARD_CHAIN: &str = "AJAR-FORWARD";
/// The comment on the jump rules from the built-in chains.
pub const JUMP_COMMENT: &str = "ajar";
/// The longest name the kernel accepts for an ipset.
pub const MAX_SET_NAME: usize = 31;
/// The longest element timeout ipset accepts, in seconds (about 24 days).
pub const MAX_TIMEOUT_SECS: u32 = 2_147_483;

/// IPv4 (iptables) or IPv6 (ip6tables); each has its own tables, chains and
/// sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The program that edits this family's rules.
    pub fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    /// The program that applies a whole table at once.
    pub fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    /// The program that prints this family's whole ruleset.
    pub fn save(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    fn ipset_family(self) -> &'static str {
        match self {
            Family::V4 => "inet",
            Family::V6 => "inet6",
        }
    }

    /// Every set ajar owns starts with this; nothing else may.
    pub fn set_prefix(self) -> &'static str {
        match self {
            Family::V4 => "ajar4-",
            Family::V6 => "ajar6-",
        }
    }

    fn host_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// Whether `set` is a set ajar owns, and of which family.
pub fn set_family(set: &str) -> Option<Family> {
    Family::ALL.into_iter().find(|f| set.starts_with(f.set_prefix()))
}

pub use ajar_netfilter::rules::TargetRules;

/// The address family `t` is served in.
pub fn family_of(t: &TargetRules) -> Family {
    Family::of(t.listen.ip())
}

/// The set of granted sources for `t`.
pub fn set_of(t: &TargetRules) -> String {
    set_name(&t.target, family_of(t))
}

/// The set of granted sources for `target`: `ajar4-<target>` or
/// `ajar6-<target>`. A target name too long for the kernel's 31 characters
/// keeps its first 16 and gets a hash of the whole name, so two long names
/// with one beginning still get two sets.
pub fn set_name(target: &str, family: Family) -> String {
    let whole = format!("{}{target}", family.set_prefix());
    if whole.len() <= MAX_SET_NAME {
        return whole;
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = target.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let head: String = target.chars().take(16).collect();
    format!("{}{head}~{hash:08x}", family.set_prefix())
}

/// `ipset` arguments that create the set for `target` unless it exists
/// (keeping the elements, and so the grants, of an existing one).
pub fn create_set(set: &str, family: Family) -> Vec<String> {
    args(&["-exist", "create", set, "hash:net", "family", family.ipset_family(), "timeout", "0", "comment"])
}

/// `ipset` arguments that add `source` to `set`, or replace its timeout and
/// comment when it is there already (one kernel operation).
pub fn add_element(set: &str, source: &IpNet, timeout_secs: u32, note: &str) -> Vec<String> {
    let timeout = timeout_secs.min(MAX_TIMEOUT_SECS).to_string();
    args(&["-exist", "add", set, &element(source), "timeout", &timeout, "comment", note])
}

/// `ipset` arguments that remove `source` from `set` (a no-op when absent).
pub fn delete_element(set: &str, source: &IpNet) -> Vec<String> {
    args(&["-exist", "del", set, &element(source)])
}

/// A source as ipset writes it: a bare address for a host, a prefix
/// otherwise.
pub fn element(source: &IpNet) -> String {
    if source.prefix_len() == source.max_prefix_len() {
        source.addr().to_string()
    } else {
        source.trunc().to_string()
    }
}

/// The input for `iptables-restore --noflush` (or `ip6tables-restore`) that
/// rewrites both of ajar's chains of `family` for `targets` in one commit
/// per table. Declaring a chain empties it first, so the rules of targets
/// that are gone disappear in the same step; nothing outside these chains is
/// named.
pub fn restore(family: Family, targets: &[TargetRules]) -> String {
    let mine: Vec<&TargetRules> = targets.iter().filter(|t| family_of(t) == family).collect();
    let mut out = format!("*nat\n:{PREROUTING_CHAIN} - [0:0]\n");
    for t in &mine {
        let _ = writeln!(
            out,
            "-A {PREROUTING_CHAIN} -d {}/{} -p tcp -m tcp --dport {} -m set --match-set {} src -m comment --comment \"ajar target {}\" -j DNAT --to-destination {}",
            t.listen.ip(),
            family.host_len(),
            t.listen.port(),
            set_of(t),
            t.target,
            t.destination,
        );
    }
    let _ = write!(out, "COMMIT\n*filter\n:{FORWARD_CHAIN} - [0:0]\n");
    for t in &mine {
        for (dir, client) in [("ORIGINAL", "src"), ("REPLY", "dst")] {
            let _ = writeln!(
                out,
                "-A {FORWARD_CHAIN} -p tcp -m conntrack --ctstate DNAT --ctorigdst {} --ctorigdstport {} --ctdir {dir} -m set ! --match-set {} {client} -m comment --comment \"ajar target {}\" -j REJECT --reject-with tcp-reset",
                t.listen.ip(),
                t.listen.port(),
                set_of(t),
                t.target,
            );
        }
    }
    out.push_str("COMMIT\n");
    out
}

/// The jumps from the built-in chains into ajar's: (table, built-in chain,
/// ajar's chain).
pub const JUMPS: [(&str, &str, &str); 2] =
    [("nat", "PREROUTING", PREROUTING_CHAIN), ("filter", "FORWARD", FORWARD_CHAIN)];

/// `iptables` arguments for the jump `(table, from, to)` with `action`:
/// `-C` to check, `-D` to delete, or `-I` to insert it first in `from`, so
/// that an established flow meets ajar's cut before any of the host's own
/// accept rules.
pub fn jump(action: &str, (table, from, to): (&str, &str, &str)) -> Vec<String> {
    let mut a = args(&["-w", "-t", table, action, from]);
    if action == "-I" {
        a.push("1".into());
    }
    a.extend(args(&["-m", "comment", "--comment", JUMP_COMMENT, "-j", to]));
    a
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

/// One element of an ajar set as `ipset save` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedElement {
    pub set: String,
    pub source: IpNet,
    /// The comment, if the element has one.
    pub comment: Option<String>,
}

/// The sets ajar owns and their elements, from `ipset save` output. Sets of
/// anyone else are skipped.
pub fn parse_save(text: &str) -> Vec<(String, Vec<SavedElement>)> {
    let mut sets: Vec<(String, Vec<SavedElement>)> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("create"), Some(set)) if set_family(set).is_some() => sets.push((set.to_owned(), Vec::new())),
            (Some("add"), Some(set)) if set_family(set).is_some() => {
                let Some(source) = words.next().and_then(parse_source) else { continue };
                // ipset quotes the comment and it is last on the line; a
                // note has spaces, so take everything between the quotes.
                let comment =
                    line.split_once(" comment \"").and_then(|(_, rest)| rest.strip_suffix('"')).map(str::to_owned);
                if let Some((_, elements)) = sets.iter_mut().find(|(s, _)| s == set) {
                    elements.push(SavedElement { set: set.to_owned(), source, comment });
                }
            }
            _ => {}
        }
    }
    sets
}

fn parse_source(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>().ok().or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ajar_netfilter::rules::examples;

    /// Both families' restore input for one IPv4 and one IPv6 target. A
    /// change here is a change to what runs in the kernel: review it as such.
    #[test]
    fn the_rules_snapshot() {
        let got = format!(
            "# iptables-restore --noflush\n{}# ip6tables-restore --noflush\n{}",
            restore(Family::V4, &examples()),
            restore(Family::V6, &examples())
        );
        let want = include_str!("../tests/snapshots/restore.rules");
        assert_eq!(got.trim(), want.trim(), "the rendered rules changed:\n{got}");
    }

    /// With no target of a family its chains are still declared, which
    /// empties them: that is how the rules of a removed target go.
    #[test]
    fn no_targets_empties_the_chains() {
        assert_eq!(
            restore(Family::V6, &examples()[..1]),
            "*nat\n:AJAR-PREROUTING - [0:0]\nCOMMIT\n*filter\n:AJAR-FORWARD - [0:0]\nCOMMIT\n"
        );
    }

    #[test]
    fn ipset_commands() {
        let host: IpNet = "10.77.0.2/32".parse().unwrap();
        let net: IpNet = "fd77::5/64".parse().unwrap();
        assert_eq!(
            create_set("ajar6-db.v6", Family::V6).join(" "),
            "-exist create ajar6-db.v6 hash:net family inet6 timeout 0 comment"
        );
        assert_eq!(
            add_element("ajar4-ssh-prod", &host, 30, "r0 r1").join(" "),
            "-exist add ajar4-ssh-prod 10.77.0.2 timeout 30 comment r0 r1"
        );
        assert_eq!(add_element("s", &net, u32::MAX, "n")[5], MAX_TIMEOUT_SECS.to_string());
        assert_eq!(delete_element("ajar6-db.v6", &net).join(" "), "-exist del ajar6-db.v6 fd77::/64");
        assert_eq!(
            jump("-I", JUMPS[1]).join(" "),
            "-w -t filter -I FORWARD 1 -m comment --comment ajar -j AJAR-FORWARD"
        );
        assert_eq!(
            jump("-C", JUMPS[0]).join(" "),
            "-w -t nat -C PREROUTING -m comment --comment ajar -j AJAR-PREROUTING"
        );
    }

    #[test]
    fn set_names_fit_the_kernel_and_stay_apart() {
        assert_eq!(set_name("ssh-prod", Family::V4), "ajar4-ssh-prod");
        let long_a = set_name(&format!("{}-a", "x".repeat(60)), Family::V6);
        let long_b = set_name(&format!("{}-b", "x".repeat(60)), Family::V6);
        assert!(long_a.len() <= MAX_SET_NAME && long_b.len() <= MAX_SET_NAME, "{long_a} {long_b}");
        assert_ne!(long_a, long_b);
        assert_eq!(set_family(&long_a), Some(Family::V6));
        assert_eq!(set_family("keepme"), None);
    }

    /// Real `ipset save` output (ipset 7.17), with a set of someone else's.
    #[test]
    fn saved_sets_are_read_back() {
        let text = "create keepme hash:ip family inet hashsize 1024 maxelem 65536\n\
add keepme 192.0.2.1\n\
create ajar4-t hash:net family inet hashsize 1024 maxelem 65536 timeout 0 comment bucketsize 12 initval 0x613e1538\n\
add ajar4-t 10.1.1.2 timeout 99 comment \"rabcdefghijkm@1700000000.250 rbcdefghijkmn@1700000001.000\"\n\
add ajar4-t 10.2.0.0/16 timeout 5\n\
create ajar6-t hash:net family inet6 hashsize 1024 maxelem 65536 timeout 0 comment bucketsize 12 initval 0xfd391024\n";
        let sets = parse_save(text);
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].0, "ajar4-t");
        assert_eq!(sets[0].1.len(), 2);
        assert_eq!(sets[0].1[0].source, "10.1.1.2/32".parse::<IpNet>().unwrap());
        assert_eq!(sets[0].1[0].comment.as_deref(), Some("rabcdefghijkm@1700000000.250 rbcdefghijkmn@1700000001.000"));
        assert_eq!(sets[0].1[1].source, "10.2.0.0/16".parse::<IpNet>().unwrap());
        assert_eq!(sets[0].1[1].comment, None);
        assert_eq!(sets[1], ("ajar6-t".to_owned(), Vec::new()));
    }
}
