//! Checks that need the whole file: unique names, references between
//! sections, policies that could never be used and gateway addresses that
//! clash. Then, when nothing is wrong, the drafts become a [`Config`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use ajar_domain::{Access, Catalog, Name, Subject, TargetSelector};

use crate::decode::{Drafts, PolicyDraft};
use crate::reader::{closest, Located, Reader};
use crate::Config;

/// Runs every cross-reference check, recording what fails.
pub(crate) fn check(r: &mut Reader<'_>, d: &Drafts) {
    unique_names(r, "user", d.users.iter().map(|u| u.name.as_ref()));
    unique_names(r, "target", d.targets.iter().map(|t| t.name.as_ref()));
    unique_names(r, "policy", d.policies.iter().map(|p| p.name.as_ref()));

    let directory = Directory::new(d);
    for subject in d.access.admins.iter().chain(&d.access.auditors) {
        directory.check(r, subject);
    }
    for policy in &d.policies {
        for subject in &policy.subjects {
            directory.check(r, subject);
        }
        // Every approver is checked, not only up to the first unknown one.
        let mut approvers_exist = true;
        for approver in &policy.approvers {
            approvers_exist &= directory.check(r, approver);
        }
        for selector in &policy.selectors {
            check_selector(r, d, selector);
        }
        if approvers_exist {
            approvals_reachable(r, &directory, policy);
        }
    }
    gateway_addresses(r, d);
}

/// Builds the config from drafts that passed every check. `None` means a
/// draft is incomplete although no error was recorded, which the decoding
/// functions never allow; the caller reports it rather than panicking.
pub(crate) fn assemble(d: Drafts) -> Option<Config> {
    let values = |items: &[Located<Subject>]| items.iter().map(|i| i.value.clone()).collect();
    Some(Config {
        server: d.server?,
        oidc: d.oidc?,
        agents: d.agents?.map(|(settings, _)| settings),
        catalog: Catalog {
            access: Access { admins: values(&d.access.admins), auditors: values(&d.access.auditors) },
            users: d.users.into_iter().map(|u| u.user).collect::<Option<_>>()?,
            targets: d.targets.into_iter().map(|t| t.target).collect::<Option<_>>()?,
            policies: d.policies.into_iter().map(|p| p.policy).collect::<Option<_>>()?,
        },
    })
}

/// Reports every name that an earlier entry of the same kind already used,
/// at the later one.
fn unique_names<'d>(r: &mut Reader<'_>, kind: &str, names: impl Iterator<Item = Option<&'d Located<Name>>>) {
    let mut seen: BTreeMap<&Name, usize> = BTreeMap::new();
    for name in names.flatten() {
        match seen.get(&name.value) {
            Some(&first) => {
                let line = r.line(first);
                r.error(
                    &name.loc,
                    format!(
                        "the {kind} name {:?} is already used on line {line}; every {kind} needs its own name",
                        name.value.as_str()
                    ),
                );
            }
            None => {
                seen.insert(&name.value, name.loc.offset);
            }
        }
    }
}

/// Who exists: local users with their groups, and groups declared to exist
/// without local members.
struct Directory<'d> {
    users: BTreeMap<&'d Name, &'d [Name]>,
    external_groups: BTreeSet<&'d Name>,
    /// Groups `oidc.group_map` gives to users who sign in through SSO.
    mapped_groups: Vec<Name>,
}

impl<'d> Directory<'d> {
    fn new(d: &'d Drafts) -> Self {
        let users = d.users.iter().filter_map(|u| Some((&u.name.as_ref()?.value, u.groups.as_slice()))).collect();
        let external_groups = d.access.groups.iter().map(|g| &g.value).collect();
        let mapped_groups = crate::oidc::mapped_groups(d.oidc.as_ref().unwrap_or(&None));
        Self { users, external_groups, mapped_groups }
    }

    fn has_local_member(&self, group: &Name) -> bool {
        self.users.values().any(|groups| groups.contains(group))
    }

    /// Whether `subject` names a user or group that exists; reports it when
    /// not.
    fn check(&self, r: &mut Reader<'_>, subject: &Located<Subject>) -> bool {
        let message = match &subject.value {
            Subject::User(name) if !self.users.contains_key(name) => {
                let known: Vec<&str> = self.users.keys().map(|n| n.as_str()).collect();
                let hint = match closest(name.as_str(), &known) {
                    Some(near) => format!(" (did you mean {near:?}?)"),
                    None => String::new(),
                };
                format!(
                    "no user is named {:?}{hint}; declare it in a [[users]] section, or write \"group:{name}\" if you mean a group",
                    name.as_str()
                )
            }
            Subject::Group(group)
                if !self.has_local_member(group)
                    && !self.external_groups.contains(group)
                    && !self.mapped_groups.contains(group) =>
            {
                format!(
                    "no user is in group {:?} and access.groups does not list it; add it to a user's groups, or to access.groups (or oidc.group_map) if its members come from elsewhere, such as the identity provider",
                    group.as_str()
                )
            }
            _ => return true,
        };
        r.error(&subject.loc, message);
        false
    }

    /// Local users that `subjects` name, directly or through a group.
    fn matching(&self, subjects: &[Located<Subject>]) -> Vec<&'d Name> {
        self.users
            .iter()
            .filter(|(name, groups)| {
                subjects.iter().any(|s| match &s.value {
                    Subject::User(n) => n == **name,
                    Subject::Group(g) => groups.contains(g),
                })
            })
            .map(|(name, _)| *name)
            .collect()
    }
}

/// A policy's target entry must name a declared target or match one by
/// label; otherwise it is a typo that silently grants nothing.
fn check_selector(r: &mut Reader<'_>, d: &Drafts, selector: &Located<TargetSelector>) {
    let message = match &selector.value {
        TargetSelector::Name(name) => {
            let names: Vec<&str> = d.targets.iter().filter_map(|t| Some(t.name.as_ref()?.value.as_str())).collect();
            if names.contains(&name.as_str()) {
                return;
            }
            let hint = match closest(name.as_str(), &names) {
                Some(near) => format!(" (did you mean {near:?}?)"),
                None => String::new(),
            };
            format!(
                "no target is named {:?}{hint}; name a target declared in [[targets]] or use a label selector such as \"env=prod\"",
                name.as_str()
            )
        }
        TargetSelector::Label { key, value } => {
            if d.targets.iter().any(|t| t.labels.get(key) == Some(value)) {
                return;
            }
            format!(
                "no target has the label {key}={value}, so this selector matches nothing; check the targets' labels"
            )
        }
    };
    r.error(&selector.loc, message);
}

/// A policy must not ask for more approvals than there are local users who
/// could give them. Groups declared in `access.groups` may have members
/// ajar does not know yet, so policies they approve for are not counted.
fn approvals_reachable(r: &mut Reader<'_>, directory: &Directory<'_>, policy: &PolicyDraft) {
    let Some(approvals) = &policy.approvals else {
        return;
    };
    let external = policy.approvers.iter().any(|a| {
        matches!(&a.value, Subject::Group(g) if directory.external_groups.contains(g) || directory.mapped_groups.contains(g))
    });
    if approvals.value == 0 || policy.approvers.is_empty() || external {
        return;
    }
    let able = directory.matching(&policy.approvers);
    let wanted = usize::try_from(approvals.value).unwrap_or(usize::MAX);
    if wanted <= able.len() {
        return;
    }
    let approvers: Vec<String> = policy.approvers.iter().map(|a| a.value.to_string()).collect();
    let who: Vec<&str> = able.iter().map(|n| n.as_str()).collect();
    let users = match able.len() {
        1 => format!("only 1 user ({})", who.join(", ")),
        n => format!("only {n} users ({})", who.join(", ")),
    };
    r.error(
        &approvals.loc,
        format!(
            "approvals = {} can never be met: {users} match the approvers {}; lower approvals or add approvers",
            approvals.value,
            approvers.join(", ")
        ),
    );
}

/// No two gateway targets, nor a gateway and the server, may listen on the
/// same address. Port 0 asks the OS for a free port, so it never clashes.
fn gateway_addresses(r: &mut Reader<'_>, d: &Drafts) {
    let mut taken: Vec<(&Located<SocketAddr>, String)> = Vec::new();
    if let Some(listen) = &d.server_listen {
        taken.push((listen, "the server (server.listen)".to_owned()));
    }
    if let Some(Some((_, listen))) = &d.agents {
        taken.push((listen, "the agent listener (agents.listen)".to_owned()));
    }
    for target in &d.targets {
        if let Some(listen) = &target.listen {
            let owner = match &target.name {
                Some(name) => format!("target {:?}", name.value.as_str()),
                None => "another target".to_owned(),
            };
            taken.push((listen, owner));
        }
    }
    for (i, (addr, _)) in taken.iter().enumerate() {
        let earlier = taken[..i].iter().find(|(other, _)| clash(addr.value, other.value));
        if let Some((other, owner)) = earlier {
            let line = r.line(other.loc.offset);
            let what = if other.value == addr.value {
                format!("{} is already taken by {owner} on line {line}", addr.value)
            } else {
                format!("{} overlaps {}, which {owner} listens on (line {line})", addr.value, other.value)
            };
            r.error(&addr.loc, format!("{what}; give each gateway target its own port"));
        }
    }
}

/// Whether two listeners would fight over the same port: same port and
/// address, or one of them a wildcard that covers the other. An IPv6
/// wildcard also covers IPv4, as Linux binds it dual-stack by default.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |wild: IpAddr, other: IpAddr| wild.is_unspecified() && (wild.is_ipv6() || other.is_ipv4());
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clashes_are_same_port_and_overlapping_addresses() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("socket address");
        let cases = [
            ("0.0.0.0:15432", "0.0.0.0:15432", true),
            ("0.0.0.0:15432", "127.0.0.1:15432", true),
            ("[::]:15432", "127.0.0.1:15432", true),
            ("10.0.0.1:15432", "10.0.0.2:15432", false),
            ("0.0.0.0:15432", "[2001:db8::1]:15432", false),
            ("0.0.0.0:15432", "0.0.0.0:15433", false),
            ("127.0.0.1:0", "127.0.0.1:0", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(clash(addr(a), addr(b)), want, "{a} {b}");
            assert_eq!(clash(addr(b), addr(a)), want, "{b} {a}");
        }
    }
}
