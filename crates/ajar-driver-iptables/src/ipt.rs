//! The iptables backend of the kernel DNAT driver: writes ajar's chains
//! with `iptables-restore --noflush` (one commit per table), keeps granted
//! sources in ipsets whose elements time out in the kernel, and reads them
//! back with `ipset save`, so the kernel is the only copy of what is open.

use std::process::Stdio;

use ajar_domain::{DriverKind, Target};
use ajar_enforce::DriverError;
use ajar_netfilter::note;
use ajar_netfilter::{host, Backend, Element, Sets};
use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use crate::render::{self, Family, SavedElement, TargetRules};

/// iptables and ipset, run as programs.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ipt;

#[async_trait::async_trait]
impl Backend for Ipt {
    const KIND: DriverKind = DriverKind::Iptables;
    const TOOL: &'static str = "iptables";
    const NOTE_HOLDER: &'static str = "ajar records in one element's comment";

    fn installed() -> bool {
        host::on_path("ipset") && host::on_path("iptables")
    }

    /// ipset, and the iptables and restore programs of each family a target
    /// uses.
    fn programs(rules: &[TargetRules]) -> Vec<(&'static str, &'static str)> {
        let mut programs = vec![("ipset", "ipset")];
        for family in Family::ALL {
            if rules.iter().any(|r| render::family_of(r) == family) {
                programs.extend([(family.iptables(), "iptables"), (family.restore(), "iptables")]);
            }
        }
        programs
    }

    fn set_name(rules: &TargetRules) -> String {
        render::set_of(rules)
    }

    async fn sets(&self) -> Result<Sets, DriverError> {
        Ok(saved_sets()
            .await?
            .into_iter()
            .map(|(set, elements)| {
                let elements = elements
                    .into_iter()
                    .map(|SavedElement { source, comment, .. }| Element {
                        source,
                        notes: comment.as_deref().and_then(note::parse),
                    })
                    .collect();
                (set, elements)
            })
            .collect())
    }

    async fn apply(&self, rules: &[TargetRules], stale: &[String]) -> Result<(), DriverError> {
        apply(rules, stale).await
    }

    /// One ipset command: `add -exist` replaces the timeout and comment of
    /// an element that is there, `del -exist` is a no-op for one that is
    /// not, so whether the element `exists` does not matter.
    async fn put(&self, set: &str, source: &IpNet, _exists: bool, to: Option<(u32, &str)>) -> Result<(), DriverError> {
        let args = match to {
            Some((secs, note)) => render::add_element(set, source, secs, note),
            None => render::delete_element(set, source),
        };
        run("ipset", &args, None).await.map(drop)
    }

    /// Deletes ajar's jump rules, chains and sets in both families, and so
    /// every rule and granted source ajar installed.
    async fn cleanup(&self, targets: &[Target]) -> Result<Vec<String>, DriverError> {
        // Every run of this driver leaves ipsets, so without ipset there is
        // nothing of ajar's unless a target uses iptables, and then the
        // check below says what is missing.
        if targets.is_empty() && !host::on_path("ipset") {
            return Ok(Vec::new());
        }
        let removed = remove_all().await.map_err(|e| e.context("cannot remove ajar's iptables chains and ipsets"))?;
        Ok(removed
            .then(|| {
                "removed ajar's iptables chains (AJAR-PREROUTING, AJAR-FORWARD), their jump rules and ajar's ipsets: every DNAT rule and granted source ajar had installed is gone"
                    .to_owned()
            })
            .into_iter()
            .collect())
    }
}

/// Removes ajar's jumps, chains and sets; returns whether there was
/// anything to remove.
async fn remove_all() -> Result<bool, DriverError> {
    host::require_programs(Ipt::KIND.as_str(), &[("iptables", "iptables"), ("ipset", "ipset")])?;
    host::require_net_admin(Ipt::TOOL)?;
    let mut removed = false;
    for family in Family::ALL {
        // Read first, so that a host where ajar never ran iptables gets
        // no table created by the deletes below.
        if !host::on_path(family.save()) || !run(family.save(), &[], None).await?.contains(":AJAR-") {
            continue;
        }
        for jump in render::JUMPS {
            // A jump inserted twice (by hand, or by two racing starts)
            // goes too; deleting stops at the first failure.
            while run(family.iptables(), &render::jump("-D", jump), None).await.is_ok() {
                removed = true;
            }
        }
        for (table, _, chain) in render::JUMPS {
            let flush = ["-w", "-t", table, "-F", chain].map(str::to_owned);
            if run(family.iptables(), &flush, None).await.is_ok() {
                let delete = ["-w", "-t", table, "-X", chain].map(str::to_owned);
                run(family.iptables(), &delete, None).await?;
                removed = true;
            }
        }
    }
    for (set, _) in saved_sets().await? {
        run("ipset", &["destroy".to_owned(), set], None).await?;
        removed = true;
    }
    Ok(removed)
}

/// Brings the kernel to `rules`: sets first (a rule cannot name a missing
/// set), then each family's chains in one restore per family, then the
/// jumps, and last the `stale` sets, which no rule names any more. A family
/// is touched only when a target or a stale set uses it, and gets its jumps
/// only when a target uses it.
async fn apply(rules: &[TargetRules], stale: &[String]) -> Result<(), DriverError> {
    for r in rules {
        run("ipset", &render::create_set(&render::set_of(r), render::family_of(r)), None).await?;
    }
    for family in Family::ALL {
        let serves = rules.iter().any(|r| render::family_of(r) == family);
        if !serves && !stale.iter().any(|s| render::set_family(s) == Some(family)) {
            continue;
        }
        let input = render::restore(family, rules);
        run(family.restore(), &["-w".to_owned(), "--noflush".to_owned()], Some(&input)).await?;
        if !serves {
            // Emptied only to free the stale sets; no jump is needed.
            continue;
        }
        for jump in render::JUMPS {
            if run(family.iptables(), &render::jump("-C", jump), None).await.is_err() {
                run(family.iptables(), &render::jump("-I", jump), None).await?;
            }
        }
    }
    for set in stale {
        run("ipset", &["destroy".to_owned(), set.clone()], None).await?;
    }
    Ok(())
}

/// ajar's sets and their elements, read from the kernel.
async fn saved_sets() -> Result<Vec<(String, Vec<SavedElement>)>, DriverError> {
    Ok(render::parse_save(&run("ipset", &["save".to_owned()], None).await?))
}

/// Runs `program args`, feeding it `input`, and returns its stdout; a
/// failure carries the program's own complaint.
async fn run(program: &str, args: &[String], input: Option<&str>) -> Result<String, DriverError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DriverError::permanent(format!(
                    "the iptables driver runs {program} but it is not on PATH; install it (on Debian: apt-get install iptables ipset)"
                ))
            } else {
                DriverError::transient(format!("cannot run {program}: {e}"))
            }
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| DriverError::transient(format!("cannot feed {program}: {e}")))?;
    }
    let out =
        child.wait_with_output().await.map_err(|e| DriverError::transient(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        debug!(program, args = %args.join(" "), input = input.unwrap_or_default(), "a firewall command failed");
        Err(DriverError::transient(format!("{program} {} failed: {}", args.join(" "), stderr.trim())))
    }
}
