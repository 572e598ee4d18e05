//! The report `ajar check-config` prints for a good file: counts, where the
//! server listens, and one line per policy saying who may request what.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ajar_domain::{Catalog, DriverKind, Policy, TargetSelector};

use crate::Config;

/// A few lines describing a checked config, such as
///
/// ```text
/// ok: 3 users, 2 targets (gateway: 2), 1 policy; listening on 127.0.0.1:8080
///   policy dev-prod-db: group:dev may request env=prod (db-prod, db-replica) for up to 1h; reason required; needs 1 approval from group:sre; sources within 10.8.0.0/16
/// ```
pub fn summary(config: &Config) -> String {
    let catalog = &config.catalog;
    let mut drivers: BTreeMap<DriverKind, usize> = BTreeMap::new();
    for target in &catalog.targets {
        *drivers.entry(target.kind()).or_default() += 1;
    }
    let drivers: Vec<String> = drivers.iter().map(|(kind, n)| format!("{kind}: {n}")).collect();
    let drivers = if drivers.is_empty() { String::new() } else { format!(" ({})", drivers.join(", ")) };
    let server = &config.server;
    let tls = if server.tls.is_some() { " with TLS" } else { "" };
    let mut out = format!(
        "ok: {}, {}{drivers}, {}; listening on {}{tls}",
        count(catalog.users.len(), "user", "users"),
        count(catalog.targets.len(), "target", "targets"),
        count(catalog.policies.len(), "policy", "policies"),
        server.listen,
    );
    for policy in &catalog.policies {
        // Writing to a String cannot fail.
        let _ = write!(out, "\n  {}", describe(catalog, policy));
    }
    out
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One sentence: who may request which targets, for how long, on what terms.
fn describe(catalog: &Catalog, policy: &Policy) -> String {
    let subjects = join(&policy.subjects);
    let targets: Vec<String> = policy
        .targets
        .iter()
        .map(|selector| match selector {
            TargetSelector::Name(name) => name.to_string(),
            TargetSelector::Label { .. } => {
                let matched: Vec<&str> =
                    catalog.targets.iter().filter(|t| selector.matches(t)).map(|t| t.name.as_str()).collect();
                format!("{selector} ({})", matched.join(", "))
            }
        })
        .collect();
    let reason = if policy.reason_required { "reason required" } else { "no reason needed" };
    let approval = match policy.approvals {
        0 => "approved automatically".to_owned(),
        n => format!("needs {} from {}", count(n as usize, "approval", "approvals"), join(&policy.approvers)),
    };
    let sources = if policy.sources.is_empty() {
        "bound to the requester's own address".to_owned()
    } else {
        format!("sources within {}", join(&policy.sources))
    };
    format!(
        "policy {}: {subjects} may request {} for up to {}; {reason}; {approval}; {sources}",
        policy.name,
        targets.join(", "),
        policy.max_duration
    )
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
